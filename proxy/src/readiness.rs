//! Readiness for load balancers and systemd: ready once the client
//! listener accepts and the monitor has probed every backend once, not
//! ready again from the moment a stop signal starts draining. `GET /readyz`,
//! the `sluice_ready` gauge and systemd's READY=1 all follow this state.

use crate::shared::Shared;
use crate::systemd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct State {
    probed: bool,
    accepting: bool,
    draining: bool,
}

#[derive(Default)]
pub struct Readiness {
    state: watch::Sender<State>,
    /// READY=1 was sent (reload notifications only follow it).
    announced: AtomicBool,
}

impl Readiness {
    /// Ok when ready, else the one-line reason.
    pub fn check(&self) -> Result<(), &'static str> {
        let state = *self.state.borrow();
        if state.draining {
            Err("draining: shutting down")
        } else if !state.probed {
            Err("starting: waiting for the first backend probe")
        } else if !state.accepting {
            Err("starting: waiting for the primary's version before accepting clients")
        } else {
            Ok(())
        }
    }

    /// The accept loop runs.
    pub fn accepting(&self) {
        self.state.send_modify(|s| s.accepting = true);
    }

    /// A stop signal arrived: not ready from now on.
    pub fn drain(&self) {
        self.state.send_modify(|s| s.draining = true);
        metrics::gauge!("sluice_ready").set(0.0);
    }

    pub fn draining(&self) -> bool {
        self.state.borrow().draining
    }

    /// READY=1 has been sent and no stop signal came since.
    pub fn serving(&self) -> bool {
        self.announced.load(Ordering::Acquire) && !self.draining()
    }
}

/// Follows the monitor until every backend has been probed once, and
/// announces readiness (gauge, log, READY=1) when it is first reached.
pub fn spawn(shared: Arc<Shared>) {
    metrics::gauge!("sluice_ready").set(0.0);
    tokio::spawn(async move {
        let readiness = &shared.readiness;
        let mut monitor = shared.monitor.subscribe();
        let mut state = readiness.state.subscribe();
        loop {
            if !state.borrow_and_update().probed && first_round_done(&shared) {
                tracing::info!("the monitor has probed every backend once");
                readiness.state.send_modify(|s| s.probed = true);
            }
            match readiness.check() {
                Ok(()) => break,
                Err(_) if readiness.draining() => return,
                Err(_) => {}
            }
            tokio::select! {
                changed = monitor.changed() => if changed.is_err() { return },
                changed = state.changed() => if changed.is_err() { return },
            }
        }
        tracing::info!("ready: GET /readyz answers 200");
        metrics::gauge!("sluice_ready").set(1.0);
        readiness.announced.store(true, Ordering::Release);
        if readiness.draining() {
            // A stop signal came in between: it set the gauge to 0 and
            // told systemd STOPPING=1 already.
            metrics::gauge!("sluice_ready").set(0.0);
            return;
        }
        systemd::ready("serving clients; every backend probed");
    });
}

/// Every backend of the live config has a probe result (up or down).
fn first_round_done(shared: &Shared) -> bool {
    let view = shared.monitor.view();
    shared
        .config
        .load()
        .backends
        .iter()
        .all(|b| view.health(&b.name).is_some_and(|h| h.up.is_some()))
}
