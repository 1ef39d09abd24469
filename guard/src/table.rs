//! One guarded table's builder: discover the column, size and allocate a
//! filter within the memory budget, register it for stream keys, scan it in
//! a consistent snapshot, wait until the stream covers that snapshot, then
//! swap it in. It builds again when asked (DDL, a disabled table, a purged
//! binlog) and every `rebuild_interval_ms` (sheds deleted keys).

use crate::TableGuard;
use crate::column::discover;
use crate::filter::Filter;
use crate::metric as m;
use crate::scan::scan;
use crate::state::{Pending, Shared, Sink, TableCtl, lock};
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

enum Failed {
    /// The table as it is cannot be guarded.
    Refused(String),
    Memory(String),
    /// Connection or server trouble: try again soon.
    Transient(String),
    /// The stream dropped this build (DDL, disable, reset): build again now.
    Superseded,
}

/// Runs until aborted.
pub(crate) async fn run(shared: Arc<Shared>, ctl: Arc<TableCtl>) {
    let mut reason = "initial";
    let mut retry = Duration::from_millis(200);
    loop {
        let mut epoch = shared.epoch.subscribe();
        if epoch.wait_for(|e| *e > 0).await.is_err() {
            return;
        }
        // Requests made before this build started are covered by it.
        ctl.take_rebuild();
        metrics::counter!(m::REBUILDS, "table" => ctl.config.table.clone(), "reason" => reason).increment(1);
        lock(&ctl.status).rebuilds += 1;
        let wait = match build(&shared, &ctl).await {
            Ok(()) => {
                retry = Duration::from_millis(200);
                let interval = shared.settings.load().rebuild_interval_ms;
                tokio::select! {
                    r = ctl.rebuild_requested() => { reason = r; continue; }
                    _ = sleep_ms(interval) => { reason = "interval"; continue; }
                }
            }
            Err(Failed::Superseded) => {
                reason = ctl.take_rebuild().unwrap_or("superseded");
                continue;
            }
            Err(Failed::Refused(why)) => {
                tracing::warn!(table = %ctl.config.table, "guard refuses the table: {why}");
                ctl.set_state("refused", Some(why));
                Duration::from_secs(30)
            }
            Err(Failed::Memory(why)) => {
                tracing::warn!(table = %ctl.config.table, "guard table over the memory limit: {why}");
                ctl.set_state("memory_limit", Some(why));
                Duration::from_secs(10)
            }
            Err(Failed::Transient(why)) => {
                tracing::info!(table = %ctl.config.table, "guard build failed, retrying: {why}");
                ctl.set_state("building", Some(why));
                retry = (retry * 2).min(Duration::from_secs(5));
                retry
            }
        };
        tokio::select! {
            r = ctl.rebuild_requested() => reason = r,
            _ = tokio::time::sleep(wait) => reason = "retry",
        }
    }
}

async fn sleep_ms(ms: u64) {
    if ms == 0 {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn transient(e: mysql_async::Error) -> Failed {
    Failed::Transient(e.to_string())
}

async fn build(shared: &Arc<Shared>, ctl: &Arc<TableCtl>) -> Result<(), Failed> {
    let started = Instant::now();
    let table = ctl.config.table.clone();
    if ctl.state() != "ready" {
        ctl.set_state("building", None);
    }
    let Some(address) = shared.writer_address() else {
        return Err(Failed::Transient("no writer known".into()));
    };
    let settings = shared.settings.load_full();
    let mut conn = sluice_pool::monitor::connect(
        &address,
        &settings.user,
        &settings.password,
        &settings.tls_for(&address),
    )
    .await
    .map_err(transient)?;
    let column = match discover(&mut conn, &ctl.config).await.map_err(transient)? {
        Ok(c) => c,
        Err(r) => return Err(Failed::Refused(r.message)),
    };
    let expected = match ctl.config.expected_keys {
        Some(n) => n,
        None => {
            let rows: Option<Option<u64>> = conn
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (ctl.schema.as_str(), ctl.table.as_str()),
                )
                .await
                .map_err(transient)?;
            rows.flatten().unwrap_or(0).saturating_mul(2).saturating_add(1024)
        }
    };
    let fpr = ctl.config.false_positive_rate;
    let limit = settings.max_memory_bytes;
    let Some(filter) = Filter::new(expected, fpr, &shared.budget, limit) else {
        return Err(Failed::Memory(format!(
            "a filter for {expected} keys at {fpr} needs {} bytes; {} of {limit} are in use",
            crate::filter::size_bytes(expected, fpr),
            shared.budget.used()
        )));
    };
    let filter = Arc::new(filter);
    let ready = Arc::new(AtomicBool::new(false));
    // (a) Registered for stream keys before the snapshot is taken. What the
    // stream had applied by then, this filter never received: the snapshot
    // must cover it (it does when both read the same server; after a
    // failover the scan's server may be behind the stream's).
    let (build, applied_before) = {
        let mut reg = lock(&shared.registry);
        let applied_before = shared.applied.load_full();
        reg.next_build += 1;
        let build = reg.next_build;
        let Some(t) = reg.tables.get_mut(&ctl.key) else {
            return Err(Failed::Superseded);
        };
        t.sinks.retain(|s| s.filter.strong_count() > 0);
        t.sinks.push(Sink {
            build,
            ordinal: column.ordinal,
            kind: column.kind.clone(),
            filter: Arc::downgrade(&filter),
            ready: ready.clone(),
        });
        (build, applied_before)
    };
    // (b) The scan.
    let scanned = match scan(
        &mut conn,
        &ctl.schema,
        &ctl.table,
        &column.name,
        &column.kind,
        &filter,
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(why)) => return Err(Failed::Refused(why)),
        Err(e) => return Err(transient(e)),
    };
    // COM_QUIT: the server logs no aborted connection for the scan's.
    conn.disconnect().await.ok();
    if !scanned.snapshot.covers(&applied_before) {
        return Err(Failed::Transient(format!(
            "the scan's snapshot {} on {address} is behind the binlog stream's position {applied_before}: \
             keys between them would be missing; building again",
            scanned.snapshot
        )));
    }
    lock(&ctl.status).snapshot = Some(scanned.snapshot.to_string());
    lock(&ctl.structure_at).merge(&scanned.snapshot);
    if ctl.state() != "ready" {
        ctl.set_state("catching_up", None);
    }
    // (c) Ready once the stream's applied position covers the snapshot.
    let (tx, rx) = oneshot::channel();
    {
        let mut reg = lock(&shared.registry);
        if !reg.has_sink(&ctl.key, build) {
            return Err(Failed::Superseded);
        }
        if let Some(t) = reg.tables.get_mut(&ctl.key) {
            t.pending.push(Pending {
                snapshot: scanned.snapshot.clone(),
                done: tx,
            });
        }
        let applied = shared.applied.load_full();
        reg.release_covered(&applied);
    }
    if rx.await.is_err() {
        return Err(Failed::Superseded);
    }
    // Swap in, unless the stream dropped this build meanwhile or the table
    // changed since its column was discovered (a DDL asked for a rebuild).
    let reg = lock(&shared.registry);
    if !reg.has_sink(&ctl.key, build) || ctl.rebuild_pending() {
        return Err(Failed::Superseded);
    }
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let guard = Arc::new(TableGuard {
        ctl: ctl.clone(),
        column: column.clone(),
        filter: filter.clone(),
        ready,
    });
    shared.change_tables(|tables| {
        let mut tables = tables.clone();
        tables.insert(ctl.key.clone(), guard.clone());
        tables
    });
    drop(reg);
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    {
        let mut s = lock(&ctl.status);
        s.state = "ready";
        s.reason = None;
        s.column = Some(column);
        s.build_ms = Some(ms);
    }
    tracing::info!(
        table = %table,
        rows = scanned.rows,
        keys = filter.keys(),
        bytes = filter.memory_bytes(),
        snapshot = %scanned.snapshot,
        ms,
        "guard filter ready"
    );
    Ok(())
}
