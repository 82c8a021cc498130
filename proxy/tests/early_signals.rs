//! A stop or reload signal that arrives after the proxy installed its handlers but before a
//! watcher made its tokio signal stream still reaches the watcher (`hotplex_proxy::signals`).
//! Before, a SIGTERM in that window reached only the `Connection: close` watcher and the
//! proxy never stopped.
//!
//! Its own test binary with one test: signals are process-wide, and the steps must run in
//! order. Each `Early::install` starts with clear flags.

use std::time::Duration;

use hotplex_proxy::handover::{handover_failed, table, HandoverSignals};
use hotplex_proxy::signals::Early;
use hotplex_proxy::upgrade::{leaving, LeavingService};
use nix::sys::signal::{raise, Signal};
use pingora::server::{Fds, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::BackgroundService;

const WAIT: Duration = Duration::from_secs(10);

fn watch(early: &Early) -> HandoverSignals {
    HandoverSignals {
        sock: None,
        fds: table(Fds::new()),
        early: early.clone(),
    }
}

#[test]
fn signals_before_the_watchers_made_their_streams_are_not_lost() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // First (tokio may still broadcast a signal raised earlier in this process to a stream
        // made later): a watcher with nothing received waits; a signal after its streams
        // exist reaches it.
        let early = Early::install().expect("install");
        let pending = watch(&early);
        let waiting = tokio::spawn(async move { pending.recv().await });
        // allow-sleep: a window in which the watcher, with nothing received, must keep waiting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "no signal yet");
        raise(Signal::SIGTERM).expect("raise");
        let got = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("the later SIGTERM is seen")
            .expect("task");
        assert!(matches!(got, ShutdownSignal::GracefulTerminate));

        // SIGTERM and SIGQUIT, both before any watcher: the graceful stop wins.
        let early = Early::install().expect("install");
        raise(Signal::SIGQUIT).expect("raise");
        raise(Signal::SIGTERM).expect("raise");
        raise(Signal::SIGHUP).expect("raise");
        let got = tokio::time::timeout(WAIT, watch(&early).recv())
            .await
            .expect("pingora's shutdown watch saw the early SIGTERM");
        assert!(
            matches!(got, ShutdownSignal::GracefulTerminate),
            "SIGTERM stops gracefully"
        );
        assert!(!leaving());
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::time::timeout(WAIT, LeavingService(early.clone()).start(rx))
            .await
            .expect("the Connection: close watcher saw the early signal");
        assert!(leaving());
        assert!(early.take_hup(), "the early SIGHUP is kept for the reload");
        assert!(!early.take_hup());

        // SIGINT alone: stop at once.
        let early = Early::install().expect("install");
        raise(Signal::SIGINT).expect("raise");
        let got = tokio::time::timeout(WAIT, watch(&early).recv())
            .await
            .expect("the early SIGINT is seen");
        assert!(matches!(got, ShutdownSignal::FastShutdown));

        // SIGQUIT alone, upgrades disabled (no socket): a graceful stop, marked failed.
        let early = Early::install().expect("install");
        assert!(!handover_failed());
        raise(Signal::SIGQUIT).expect("raise");
        let got = tokio::time::timeout(WAIT, watch(&early).recv())
            .await
            .expect("the early SIGQUIT is seen");
        assert!(matches!(got, ShutdownSignal::GracefulTerminate));
        assert!(handover_failed(), "a SIGQUIT that handed nothing over");
    });
}
