//! What reads must see under `read_your_writes = "global"` and
//! `"universal"`. Global: the highest GTID per domain committed through
//! this instance, merged from every session's OK packets. Universal: the
//! primary's `@@gtid_binlog_pos` as of after the read arrived, asked with
//! ONE query for all reads that arrive while the previous one is out (a
//! read never uses an answer to a question asked before it arrived).

use arc_swap::ArcSwap;
use sluice_pool::BackendPool;
use sluice_router::GtidPos;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Positions {
    /// `global`: committed through this instance.
    written: ArcSwap<GtidPos>,
    merge: Mutex<()>,
    /// `universal`: number of position queries started so far.
    started: AtomicU64,
    in_flight: AtomicBool,
    /// (number of the query that answered, its answer; None = it failed).
    latest: tokio::sync::watch::Sender<(u64, Option<Arc<GtidPos>>)>,
}

impl Default for Positions {
    fn default() -> Self {
        Positions {
            written: ArcSwap::from_pointee(GtidPos::default()),
            merge: Mutex::new(()),
            started: AtomicU64::new(0),
            in_flight: AtomicBool::new(false),
            latest: tokio::sync::watch::Sender::new((0, None)),
        }
    }
}

impl Positions {
    /// Records a GTID a session committed (global mode).
    pub fn wrote(&self, gtid: &GtidPos) {
        if self.written.load().covers(gtid) {
            return;
        }
        let _one_writer = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = GtidPos::clone(&self.written.load());
        next.merge(gtid);
        self.written.store(Arc::new(next));
    }

    /// Everything committed through this instance so far.
    pub fn written(&self) -> Arc<GtidPos> {
        self.written.load_full()
    }

    /// The primary's binlog position as of after this call: joins the next
    /// query to start. None when the primary could not be asked within
    /// `limit` (the caller then reads from the primary).
    pub async fn primary_position(
        self: &Arc<Self>,
        pool: &BackendPool,
        limit: Duration,
    ) -> Option<Arc<GtidPos>> {
        // Any query numbered above `ticket` starts after this read arrived.
        let ticket = self.started.load(Ordering::SeqCst);
        let mut rx = self.latest.subscribe();
        let wait = async {
            loop {
                {
                    let (number, answer) = &*rx.borrow_and_update();
                    if *number > ticket {
                        return answer.clone();
                    }
                }
                if !self.in_flight.swap(true, Ordering::SeqCst) {
                    let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::spawn(ask_primary(self.clone(), pool.clone(), number, limit));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }
}

/// Asks once, within `limit` (a frozen primary must not keep every later
/// read waiting: a failed or late answer is `None`, and the next read
/// asks again).
async fn ask_primary(positions: Arc<Positions>, pool: BackendPool, number: u64, limit: Duration) {
    metrics::counter!("sluice_primary_position_queries_total").increment(1);
    let ask = async {
        let mut conn = pool.acquire().await.ok()?;
        // Broken until the answer is read: cut off by the timeout
        // mid-query, the connection must be closed, never reused.
        conn.broken = true;
        let rows = conn.query_rows("SELECT @@gtid_binlog_pos").await.ok()?;
        conn.broken = false;
        let text = rows.first()?.first()?.clone().unwrap_or_default();
        GtidPos::parse(&text).map(Arc::new)
    };
    let answer = tokio::time::timeout(limit, ask).await.ok().flatten();
    positions.in_flight.store(false, Ordering::SeqCst);
    positions.latest.send_replace((number, answer));
}
