//! Millisecond replication lag from a heartbeat table: the monitor writes
//! its own clock (µs since the epoch) into `monitor.heartbeat_table` on the
//! writable primary every `monitor.heartbeat_interval_ms`, remembers what it
//! wrote, and reads its value back on each replica. Only Sluice's clock is
//! involved, so clock skew between servers does not matter.
//!
//! Each instance writes its own row, keyed by a number derived from
//! `server.instance_name`: instances behind one balancer must each read
//! their own clock back, never another's (theirs may be ahead).

use mysql_async::prelude::Queryable;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Heartbeats remembered (at the fastest interval, 10 ms, that is 40 s).
const REMEMBERED: usize = 4096;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The heartbeats the primary acknowledged, oldest first.
#[derive(Debug, Default)]
pub struct Written {
    stamps: VecDeque<u64>,
}

impl Written {
    pub fn push(&mut self, ts_us: u64) {
        if self.stamps.len() == REMEMBERED {
            self.stamps.pop_front();
        }
        self.stamps.push_back(ts_us);
    }

    /// The newest acknowledged heartbeat, if it is recent enough to trust
    /// (`within` of `now_us`).
    pub fn latest_within(&self, now_us: u64, within: Duration) -> Option<u64> {
        let last = *self.stamps.back()?;
        (now_us.saturating_sub(last) <= within.as_micros() as u64).then_some(last)
    }

    /// Lag of a replica whose newest heartbeat is `replica_us`: the age of
    /// the oldest heartbeat it has not applied (0 when it has the newest).
    /// Precise to one heartbeat interval; when the replica is further behind
    /// than Sluice remembers, its own heartbeat's age (an upper bound).
    pub fn lag_ms(&self, replica_us: u64, now_us: u64) -> f64 {
        let age = |ts: u64| now_us.saturating_sub(ts) as f64 / 1000.0;
        match self.stamps.front() {
            Some(&oldest) if replica_us >= oldest => match self.stamps.iter().find(|&&ts| ts > replica_us) {
                Some(&missing) => age(missing),
                None => 0.0,
            },
            _ => age(replica_us),
        }
    }
}

/// Creates the heartbeat table if it does not exist (needs CREATE on the
/// schema; without it, lag comes from Seconds_Behind_Master).
pub async fn ensure_table(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{schema}`"))
        .await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS `{schema}`.`{table}` (\
         id INT UNSIGNED NOT NULL PRIMARY KEY COMMENT 'the Sluice instance (a hash of server.instance_name)', \
         ts BIGINT UNSIGNED NOT NULL COMMENT 'Sluice clock, microseconds since the epoch'\
         ) ENGINE=InnoDB COMMENT='Sluice replication heartbeat'"
    ))
    .await
}

/// Writes one heartbeat into this instance's row; returns the timestamp.
pub async fn beat(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
    instance: u32,
) -> Result<u64, mysql_async::Error> {
    let ts = now_us();
    conn.query_drop(format!(
        "INSERT INTO `{schema}`.`{table}` (id, ts) VALUES ({instance}, {ts}) \
         ON DUPLICATE KEY UPDATE ts = VALUES(ts)"
    ))
    .await?;
    Ok(ts)
}

/// The heartbeat this instance last wrote that a server holds.
pub fn read_sql(schema: &str, table: &str, instance: u32) -> String {
    format!("SELECT ts FROM `{schema}`.`{table}` WHERE id = {instance}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(stamps: &[u64]) -> Written {
        let mut w = Written::default();
        for &s in stamps {
            w.push(s);
        }
        w
    }

    #[test]
    fn a_replica_with_the_newest_heartbeat_has_no_lag() {
        let w = written(&[1_000_000, 1_100_000, 1_200_000]);
        assert_eq!(w.lag_ms(1_200_000, 1_250_000), 0.0);
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_missing_heartbeat() {
        let w = written(&[1_000_000, 1_100_000, 1_200_000, 1_300_000]);
        // Has 1.1 s, misses 1.2 s; now is 3.2 s: two seconds behind.
        assert_eq!(w.lag_ms(1_100_000, 3_200_000), 2000.0);
    }

    #[test]
    fn older_than_remembered_uses_its_own_age() {
        let w = written(&[5_000_000, 5_100_000]);
        assert_eq!(w.lag_ms(1_000_000, 5_200_000), 4200.0);
        assert_eq!(Written::default().lag_ms(1_000_000, 1_500_000), 500.0);
    }

    #[test]
    fn stale_heartbeats_are_not_trusted() {
        let w = written(&[1_000_000]);
        assert_eq!(
            w.latest_within(1_400_000, Duration::from_millis(500)),
            Some(1_000_000)
        );
        assert_eq!(w.latest_within(2_000_000, Duration::from_millis(500)), None);
    }
}
