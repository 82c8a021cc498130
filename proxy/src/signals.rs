//! The process signals the proxy acts on (SIGHUP reload, SIGQUIT upgrade, SIGTERM graceful
//! stop, SIGINT fast stop), recorded from before the services start.
//!
//! tokio's signal streams only see signals delivered after the stream was made, and each
//! watcher makes its streams when its task first runs: pingora's shutdown watch
//! ([`crate::handover::HandoverSignals`]) only once every service has started. A signal in
//! between was seen by no watcher, or only by some: a SIGTERM seen only by
//! [`crate::upgrade::LeavingService`] left the proxy answering `Connection: close` and never
//! stopping. [`Early::install`] sets a flag per signal from a handler installed before
//! `Server::run`; a watcher makes its streams first and then reads the flags
//! ([`next_stop`], [`Early::take_hup`]), so a signal is seen whenever it arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

/// A stop signal, in the order [`Early::stop`] prefers them when several arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: stop at once.
    Fast,
    /// SIGTERM: stop gracefully.
    Graceful,
    /// SIGQUIT: hand the listeners over to a new process, then stop gracefully.
    Upgrade,
}

/// Flags set by a signal handler from [`Early::install`] on.
#[derive(Clone, Debug, Default)]
pub struct Early {
    hup: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
}

impl Early {
    /// Installs the handlers (they replace the default dispositions for the rest of the
    /// process: from here on these signals no longer end the process by themselves, the
    /// watchers act on them).
    pub fn install() -> std::io::Result<Self> {
        let early = Self::default();
        for (sig, flag) in [
            (SIGHUP, &early.hup),
            (SIGQUIT, &early.quit),
            (SIGTERM, &early.term),
            (SIGINT, &early.int),
        ] {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
        }
        Ok(early)
    }

    /// The stop signal received since [`Early::install`], if any: SIGINT before SIGTERM
    /// before SIGQUIT (a stop beats an upgrade) when more than one arrived.
    pub fn stop(&self) -> Option<Stop> {
        if self.int.load(Ordering::SeqCst) {
            Some(Stop::Fast)
        } else if self.term.load(Ordering::SeqCst) {
            Some(Stop::Graceful)
        } else if self.quit.load(Ordering::SeqCst) {
            Some(Stop::Upgrade)
        } else {
            None
        }
    }

    /// True once if a SIGHUP arrived since the last call (or since [`Early::install`]).
    pub fn take_hup(&self) -> bool {
        self.hup.swap(false, Ordering::SeqCst)
    }
}

/// Waits for the first stop signal, including one that arrived before this call (since
/// [`Early::install`]). `None`: the signal streams could not be made (logged).
pub async fn next_stop(early: &Early) -> Option<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    // Streams first, flags second: a signal before the streams exist is in a flag, one
    // after is in a stream.
    let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::quit()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot observe SIGQUIT/SIGTERM/SIGINT: stop the proxy with SIGKILL");
        return None;
    };
    if let Some(stop) = early.stop() {
        return Some(stop);
    }
    Some(tokio::select! {
        _ = int.recv() => Stop::Fast,
        _ = term.recv() => Stop::Graceful,
        _ = quit.recv() => Stop::Upgrade,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_beats_an_upgrade_and_hup_is_taken_once() {
        let early = Early::default();
        assert_eq!(early.stop(), None);
        early.quit.store(true, Ordering::SeqCst);
        assert_eq!(early.stop(), Some(Stop::Upgrade));
        early.term.store(true, Ordering::SeqCst);
        assert_eq!(early.stop(), Some(Stop::Graceful));
        early.int.store(true, Ordering::SeqCst);
        assert_eq!(early.stop(), Some(Stop::Fast));
        assert!(!early.take_hup());
        early.hup.store(true, Ordering::SeqCst);
        assert!(early.take_hup());
        assert!(!early.take_hup(), "taken once");
    }
}
