//! The current statement's digest (`crate::digests`): what it did, noted
//! while it runs and recorded when its answer is complete. COM_QUERY is
//! recorded under the fingerprint the classifier just computed (still in
//! the session's scratch), COM_STMT_EXECUTE under the one its
//! COM_STMT_PREPARE computed.

use super::{End, Session};
use crate::digests::{self, Fingerprint, Route, Sample};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct DigestNote {
    pub key: DigestKey,
    /// Set when the statement reaches a backend or the guard answers it.
    pub route: Route,
    /// The server's answer ended in an error, or Sluice sent one.
    pub error: bool,
    pub rows: u64,
    /// When the answer's last byte went to the client and how long after
    /// the command's arrival, if the statement path read the clock then
    /// (saves reading it again here).
    pub ended: Option<(Instant, Duration)>,
}

#[derive(Default)]
pub(super) enum DigestKey {
    /// Not a statement with a fingerprint (an unknown statement id).
    #[default]
    None,
    /// The hash of the text in `Scratch::normalized`.
    Text(u64),
    Prepared(Arc<Fingerprint>),
}

impl Session {
    /// A statement starts: its digest times it from the command's arrival,
    /// if digests are enabled.
    pub(super) fn digest_start(&mut self) -> Option<Instant> {
        self.digest = DigestNote::default();
        self.config.digests.enabled.then_some(self.command_started)
    }

    /// The statement ended (`ended` is what the command returned).
    /// Nothing reached a backend and no error: Sluice answered it itself.
    pub(super) fn digest_end(&mut self, started: Option<Instant>, ended: &Result<(), End>) {
        let Some(started) = started else {
            return;
        };
        let note = std::mem::take(&mut self.digest);
        let (now, took) = note.ended.unwrap_or_else(|| {
            let now = Instant::now();
            (now, now.saturating_duration_since(started))
        });
        let error = note.error || ended.is_err();
        let route = match note.route {
            Route::None if !error => Route::Local,
            route => route,
        };
        let sample = Sample {
            took,
            at: now,
            error,
            rows: note.rows,
            route,
        };
        let max = self.config.digests.max_entries;
        match &note.key {
            DigestKey::Text(hash) => digests::record(*hash, &self.scratch.normalized, &sample, max),
            DigestKey::Prepared(fp) => digests::record(fp.hash, &fp.text, &sample, max),
            DigestKey::None => {}
        }
    }
}
