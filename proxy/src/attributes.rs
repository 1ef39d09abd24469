//! Client connection attributes forwarded to the backends. Backend
//! connections are shared, so they carry what names the application: its
//! `program_name` and its own keys (names without the leading `_` that
//! drivers reserve for themselves: `_pid`, `_thread`, `_os`, `_client_name`
//! describe one process or the driver, and the backend's driver is Sluice);
//! clients with different such attributes use different pools. The number of
//! distinct attribute sets is bounded so they cannot multiply the backend
//! connections without limit; beyond it clients share Sluice's default pool
//! (counted).

use sluice_pool::ConnectAttrs;
use std::collections::HashSet;
use std::sync::Mutex;

/// Distinct attribute sets that get pools of their own.
pub const MAX_ATTRIBUTE_SETS: usize = 16;

/// Forwarded: the program name and the application's own attributes.
fn forwarded(key: &str) -> bool {
    key == "program_name" || !key.starts_with('_')
}

/// The attribute sets admitted so far.
#[derive(Default)]
pub struct AttributeSets {
    admitted: Mutex<HashSet<ConnectAttrs>>,
}

impl AttributeSets {
    /// The attributes the backend connections of this client carry.
    pub fn forwardable(&self, client: &[(String, String)]) -> ConnectAttrs {
        let mut kept: Vec<(String, String)> = client.iter().filter(|(k, _)| forwarded(k)).cloned().collect();
        if kept.is_empty() {
            return ConnectAttrs::from(kept);
        }
        kept.sort();
        let attrs = ConnectAttrs::from(kept);
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if admitted.contains(&attrs) {
            return attrs;
        }
        if admitted.len() < MAX_ATTRIBUTE_SETS {
            admitted.insert(attrs.clone());
            return attrs;
        }
        metrics::counter!("sluice_connect_attrs_not_forwarded_total").increment(1);
        ConnectAttrs::from(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn driver_attributes_are_dropped_and_sets_bounded() {
        let sets = AttributeSets::default();
        let a = sets.forwardable(&attrs(&[
            ("program_name", "billing"),
            ("_pid", "42"),
            ("_os", "Linux"),
        ]));
        let b = sets.forwardable(&attrs(&[
            ("_pid", "43"),
            ("program_name", "billing"),
            ("_client_name", "x"),
        ]));
        assert_eq!(a, b);
        assert_eq!(&a[..], &attrs(&[("program_name", "billing")])[..]);
        assert!(sets.forwardable(&attrs(&[("_pid", "1")])).is_empty());
        for i in 1..MAX_ATTRIBUTE_SETS {
            assert!(!sets.forwardable(&attrs(&[("app", &i.to_string())])).is_empty());
        }
        assert!(sets.forwardable(&attrs(&[("app", "one too many")])).is_empty());
        assert!(
            !sets
                .forwardable(&attrs(&[("program_name", "billing")]))
                .is_empty()
        );
    }
}
