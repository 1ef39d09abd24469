//! Which backend takes writes. Normally the configured primary; with
//! `monitor.follow_read_only`, whichever backend is writable
//! (`@@read_only = 0`), so a promotion is followed without a restart. Never
//! two writers: when more than one backend is writable, there is no writer.

/// One backend as the writer decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCandidate {
    pub configured_primary: bool,
    /// None until the monitor has probed it.
    pub up: Option<bool>,
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// Writes go to this backend.
    Backend(usize),
    /// No backend is writable: writes wait, then fail.
    NoneWritable,
    /// More than one backend is writable: writes are refused.
    Conflict(Vec<usize>),
}

pub fn choose_writer(backends: &[WriterCandidate], follow_read_only: bool) -> Writer {
    let configured = backends.iter().position(|b| b.configured_primary);
    if !follow_read_only {
        return configured.map_or(Writer::NoneWritable, Writer::Backend);
    }
    let writable: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].up == Some(true) && backends[i].read_only == Some(false))
        .collect();
    match writable.as_slice() {
        [one] => Writer::Backend(*one),
        [] => match configured {
            // Before the first probe, trust the config.
            Some(i) if backends[i].up.is_none() => Writer::Backend(i),
            _ => Writer::NoneWritable,
        },
        _ => Writer::Conflict(writable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(primary: bool, up: Option<bool>, read_only: Option<bool>) -> WriterCandidate {
        WriterCandidate {
            configured_primary: primary,
            up,
            read_only,
        }
    }

    #[test]
    fn without_following_the_configured_primary_writes() {
        let b = [
            backend(true, Some(true), Some(true)),
            backend(false, Some(true), Some(false)),
        ];
        assert_eq!(choose_writer(&b, false), Writer::Backend(0));
    }

    #[test]
    fn a_promotion_is_followed() {
        let b = [
            backend(true, Some(true), Some(true)),
            backend(false, Some(true), Some(true)),
            backend(false, Some(true), Some(false)),
        ];
        assert_eq!(choose_writer(&b, true), Writer::Backend(2));
        let dead_primary = [
            backend(true, Some(false), None),
            backend(false, Some(true), Some(false)),
        ];
        assert_eq!(choose_writer(&dead_primary, true), Writer::Backend(1));
    }

    #[test]
    fn two_writable_backends_mean_no_writer() {
        let b = [
            backend(true, Some(true), Some(false)),
            backend(false, Some(true), Some(false)),
        ];
        assert_eq!(choose_writer(&b, true), Writer::Conflict(vec![0, 1]));
    }

    #[test]
    fn nothing_writable() {
        let b = [
            backend(true, Some(false), None),
            backend(false, Some(true), Some(true)),
        ];
        assert_eq!(choose_writer(&b, true), Writer::NoneWritable);
        let read_only_primary = [backend(true, Some(true), Some(true))];
        assert_eq!(choose_writer(&read_only_primary, true), Writer::NoneWritable);
    }

    #[test]
    fn before_the_first_probe_the_config_decides() {
        let b = [backend(true, None, None), backend(false, None, None)];
        assert_eq!(choose_writer(&b, true), Writer::Backend(0));
    }
}
