//! Graceful upgrade / stop support. pingora hands the listening sockets to the new process
//! on SIGQUIT (`--upgrade`, see the README) and keeps serving open connections for
//! `upgrade.grace_period`, then drops idle keep-alive connections. To move keep-alive
//! clients over before that, the proxy notices SIGQUIT/SIGTERM itself ([`LeavingService`])
//! and from then on answers with `Connection: close` ([`leaving`]): each client's next
//! request opens a new connection, which the new process accepts.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::signals::{next_stop, Early, Stop};

static LEAVING: AtomicBool = AtomicBool::new(false);

/// True once this process got SIGQUIT (upgrade) or SIGTERM (stop).
pub fn leaving() -> bool {
    LEAVING.load(Ordering::Relaxed)
}

/// Background service setting [`leaving`] on SIGQUIT / SIGTERM / SIGINT, also on one that
/// arrived before it started (pingora acts on the signals themselves; this only observes
/// them).
pub struct LeavingService(pub Early);

#[async_trait]
impl BackgroundService for LeavingService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            stop = next_stop(&self.0) => match stop {
                Some(Stop::Upgrade) => tracing::info!("SIGQUIT: handing over; answering with Connection: close"),
                Some(_) => tracing::info!("stopping; answering with Connection: close"),
                None => return,
            },
            _ = shutdown.changed() => {}
        }
        LEAVING.store(true, Ordering::Relaxed);
    }
}
