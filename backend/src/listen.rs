//! The worker's listeners and what a handler learns about its connection ([`Conn`]):
//! plain TCP, or TLS ([`TlsListener`], rustls, when `tls:` is configured).
//!
//! Handlers see [`Conn`] as `ConnectInfo<Conn>`: the peer (the admin gate's loopback check)
//! and the local address of the connection, i.e. the address the client dialled as this
//! worker sees it (bound into the identity proof, see `hotplex_common::identity`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use hotplex_common::identity::canonical;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest TLS handshake; a client that takes longer is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once (accepting waits for a free slot).
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// One connection as a handler sees it (`ConnectInfo<Conn>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address of the connection (canonical: IPv4-mapped IPv6 as IPv4); `None`
    /// when the socket could not tell.
    pub local: Option<SocketAddr>,
}

impl Conn {
    fn of(tcp: &TcpStream, peer: SocketAddr) -> Conn {
        Conn {
            peer,
            local: tcp.local_addr().ok().map(canonical),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Conn {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Conn {
        Conn::of(s.io(), *s.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Conn {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Conn {
        Conn::of(s.io().get_ref().0, *s.remote_addr())
    }
}

/// A TLS listener: accepts TCP connections and completes their handshakes concurrently
/// (bounded by [`MAX_PENDING_HANDSHAKES`], each by [`TLS_HANDSHAKE_TIMEOUT`]), so a slow or
/// silent client never holds up the others. Stops accepting when `stop` turns true.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp_stream, peer) = tokio::select! {
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                    r = tcp.accept() => match r {
                        Ok(a) => a,
                        Err(e) => {
                            accept_error(e).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp_stream));
                    match hs.await {
                        Ok(Ok(tls)) => {
                            drop(slot);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, task })
    }
}

/// As axum's TCP listener: a per-connection error is skipped; anything else (out of file
/// descriptors) is logged and accepting pauses a second.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    // allow-sleep: back off on EMFILE and the like, as hyper and axum do
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (stopping): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
