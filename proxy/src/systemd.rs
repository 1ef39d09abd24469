//! systemd service notifications (`Type=notify`, `WatchdogSec=`) through
//! the sd-notify crate. Without NOTIFY_SOCKET (not run by systemd) every
//! call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;

/// READY=1: startup finished, or a reload did.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1: draining for shutdown started.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: shutting down"),
    ]);
}

/// RELOADING=1 with MONOTONIC_USEC (systemd's `Type=notify-reload`
/// protocol); [`ready`] follows when the reload is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::debug!("cannot read CLOCK_MONOTONIC for systemd: {e}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// When systemd's watchdog is on for this process (WATCHDOG_USEC, and
/// WATCHDOG_PID naming it if set), pings it every half period from a task
/// on this runtime: a wedged runtime stops pinging and systemd restarts it.
pub fn spawn_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(1));
    tracing::info!("systemd watchdog on: pinging every {} ms", every.as_millis());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
        metrics::counter!("sluice_systemd_notify_failures_total").increment(1);
    }
}
