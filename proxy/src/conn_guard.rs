//! Connection limits and the request-head deadline (slowloris protection), as a pingora
//! [`ServerApp`] wrapped around the HTTP proxy app.
//!
//! pingora 0.9 offers neither: its `connection_filter` feature only sees the address (no
//! close notification, so nothing to count with), and its downstream read timeout is per
//! read, so a client sending one header byte every few seconds holds a connection forever.
//! [`GuardedApp`] sits where pingora hands a new connection (after the TLS handshake, which
//! pingora bounds to 60 s) to the app:
//!
//! - **Counting**: every connection takes a [`ConnGuard`] (total and per client IP, exact,
//!   released on drop whichever way the connection ends) and the gauge
//!   `hotplex_proxy_connections_active` follows it. Over `limits.max_connections` or
//!   `limits.max_connections_per_ip` the connection is refused on arrival: HTTP/1 gets a
//!   `503 {"error":"too_many_connections"}` with `Connection: close` and `Retry-After`,
//!   HTTP/2 is closed; `hotplex_proxy_connections_refused_total{reason}` counts both. Peers
//!   in `limits.trusted_proxies` (load balancers) are exempt from the per-IP limit.
//! - **Head deadline**: the stream is wrapped in [`HeadDeadline`], which fails the read
//!   (so pingora closes the connection) when a request head is not complete within
//!   `limits.header_read_timeout`: counted from the connection's start for its first
//!   request, from the first byte of each later keep-alive request (the idle wait between
//!   requests stays pingora's keep-alive timeout). The end of the head is the first empty
//!   line (`CRLF CRLF`, or bare `LF LF` as the parser accepts); after it the deadline is
//!   off, so request bodies, WebSocket tunnels and SSE responses are never cut by it.
//!   HTTP/2 (ALPN `h2`) connections get the same deadline for their preface (which holds
//!   an empty line); after it, pingora's h2 idle timeout (`limits.h2_idle_timeout`) closes
//!   a connection whenever no stream has been open for that long.
//!
//! For HTTP/1 the keep-alive loop of pingora's `ServerApp` impl for HTTP apps is run here
//! (same steps: keep-alive default, request limit, persistent settings), so the deadline
//! can be re-armed before each request; HTTP/2, h2c and custom protocols go to pingora's
//! own `process_new`. All limits are read from the live config: a reload applies to new
//! connections (and to the next request head of open ones).

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hotplex_common::names::proxy as n;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::metrics::{ConnMetrics, ProxyMetrics, CONN_REFUSAL_REASONS};
use crate::upstream::Registry;

const SHARDS: usize = 16;
/// Longest wait to write the 503 of a refused connection.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After the 503, how long (and how many bytes) the request is drained before closing, so
/// the client reads the answer instead of a reset.
const REFUSE_LINGER: Duration = Duration::from_millis(500);
const REFUSE_LINGER_BYTES: usize = 64 * 1024;
/// At most one warning per this many seconds about refused connections.
const WARN_EVERY_SECS: u64 = 10;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
}

impl Refusal {
    /// `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Total => CONN_REFUSAL_REASONS[0],
            Refusal::PerIp => CONN_REFUSAL_REASONS[1],
        }
    }
}

/// Open connections, in total and per client IP.
pub struct Tracker {
    total: AtomicU32,
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            total: AtomicU32::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

/// One open connection; released on drop.
pub struct ConnGuard {
    tracker: Arc<Tracker>,
    ip: Option<IpAddr>,
    gauge: Option<IntGauge>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Tracker {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    /// Takes a slot: `max_total` 0 means no total limit; `max_per_ip` applies unless
    /// `exempt` (a trusted proxy).
    pub fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        max_total: u32,
        max_per_ip: Option<u32>,
        exempt: bool,
        gauge: Option<IntGauge>,
    ) -> Result<ConnGuard, Refusal> {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if max_total > 0 && before >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let ip = ip.map(canonical);
        if let Some(ip) = ip {
            let mut m = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(ip).or_insert(0);
            if !exempt && max_per_ip.is_some_and(|max| *n >= max) {
                if *n == 0 {
                    m.remove(&ip);
                }
                drop(m);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        if let Some(g) = &gauge {
            g.inc();
        }
        Ok(ConnGuard {
            tracker: self.clone(),
            ip,
            gauge,
        })
    }

    /// Open connections in total.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }

    /// Open connections of `ip`.
    pub fn of(&self, ip: IpAddr) -> u32 {
        let ip = canonical(ip);
        let m = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = self
                .tracker
                .shard(&ip)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.tracker.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Between keep-alive requests: armed by the first byte.
    Waiting,
    /// Reading a head; the deadline runs.
    Armed,
    /// Head complete (or no deadline): reads pass through.
    Done,
}

/// Finds the end of a request head: the first empty line after a non-empty one (`LF LF`
/// or `LF CR LF`; leading empty lines are skipped, as the parser does).
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    started: bool,
    /// 0: none; 1: after LF; 2: after LF CR.
    nl: u8,
}

impl HeadScan {
    /// Feeds bytes; true once the head is complete. Between line ends it jumps to the next
    /// LF (`memchr`): only the bytes right after an LF are looked at one by one.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut i = 0;
        if !self.started {
            let Some(first) = bytes.iter().position(|&b| b != b'\r' && b != b'\n') else {
                return false;
            };
            self.started = true;
            i = first;
        }
        loop {
            if self.nl == 0 {
                // Any byte but LF keeps the state at 0: skip to the next LF.
                let Some(off) = bytes.get(i..).and_then(|rest| memchr::memchr(b'\n', rest)) else {
                    return false;
                };
                i += off + 1;
                self.nl = 1;
            }
            let Some(&b) = bytes.get(i) else {
                return false;
            };
            i += 1;
            self.nl = match (self.nl, b) {
                (1 | 2, b'\n') => return true,
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
    }
}

/// A downstream stream whose reads fail once a request head takes longer than the timeout.
pub struct HeadDeadline {
    inner: Stream,
    timeout: Duration,
    state: Head,
    scan: HeadScan,
    deadline: Option<tokio::time::Instant>,
    /// The timer of `deadline`, made only when a read waits while a head is incomplete
    /// (most heads arrive whole in the read that starts them: no timer, no allocation),
    /// then reset for later heads of the connection.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: IntCounter,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HeadDeadline {
    /// Wraps `inner` with the deadline running from now (a new connection's first request).
    /// A zero `timeout` disables it.
    pub fn new(inner: Stream, timeout: Duration, expired: IntCounter) -> HeadDeadline {
        let mut d = HeadDeadline {
            inner,
            timeout,
            state: Head::Done,
            scan: HeadScan::default(),
            deadline: None,
            sleep: None,
            expired,
        };
        if !timeout.is_zero() {
            d.arm();
        }
        d
    }

    fn arm(&mut self) {
        self.state = Head::Armed;
        self.deadline = Some(tokio::time::Instant::now() + self.timeout);
    }

    /// Polls the timer of the running deadline (made or reset to it here).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.deadline else {
            return Poll::Pending;
        };
        let sleep = match &mut self.sleep {
            Some(s) => {
                if s.deadline() != at {
                    s.as_mut().reset(at);
                }
                s
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        sleep.as_mut().poll(cx)
    }

    /// Before the next keep-alive request: the deadline starts at its first byte.
    pub fn rearm(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.scan = HeadScan::default();
        self.deadline = None;
        self.state = if timeout.is_zero() {
            Head::Done
        } else {
            Head::Waiting
        };
    }

    fn expire(&mut self) -> Poll<std::io::Result<()>> {
        self.state = Head::Done;
        self.deadline = None;
        self.expired.inc();
        tracing::debug!(
            timeout_ms = self.timeout.as_millis() as u64,
            "request head read timeout: closing the connection"
        );
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request head not complete within limits.header_read_timeout",
        )))
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() || this.state == Head::Done {
                    return Poll::Ready(Ok(()));
                }
                if this.state == Head::Waiting {
                    this.arm();
                }
                if this.scan.feed(new) {
                    this.state = Head::Done;
                    this.deadline = None;
                    return Poll::Ready(Ok(()));
                }
                if this
                    .deadline
                    .is_some_and(|d| tokio::time::Instant::now() >= d)
                {
                    return this.expire();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.state == Head::Armed && this.poll_deadline(cx).is_ready() {
                    return this.expire();
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The proxy's HTTP app with connection limits and the head deadline in front.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    registry: Arc<Registry>,
    tracker: Arc<Tracker>,
    metrics: ConnMetrics,
    last_warn: AtomicU64,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, registry: Arc<Registry>, metrics: &ProxyMetrics) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(inner),
            registry,
            tracker: Arc::new(Tracker::default()),
            metrics: ConnMetrics::new(&metrics.registry),
            last_warn: AtomicU64::new(0),
        }
    }

    /// The wrapped app, to configure it before the service starts (None once started).
    pub fn inner_mut(&mut self) -> Option<&mut A> {
        Arc::get_mut(&mut self.inner)
    }

    fn warn_refused(&self, r: Refusal, ip: Option<IpAddr>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_warn.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY_SECS
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let ip = ip.map(|i| i.to_string()).unwrap_or_default();
            tracing::warn!(reason = r.reason(), client_ip = %ip, open = self.tracker.total(), "refusing connections over the limit (logged at most every {WARN_EVERY_SECS}s; see {})", n::CONNECTIONS_REFUSED);
        }
    }
}

/// Answers a refused connection: a 503 for HTTP/1 (then a short drain so the client reads
/// it rather than a reset), nothing for HTTP/2.
async fn refuse(mut stream: Stream, r: Refusal, max: u32) {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return;
    }
    let limit = r.reason();
    let answer =
        crate::errors::raw_http1(&crate::errors::EdgeError::TooManyConnections { limit, max });
    let wrote = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(&mut stream).await
    })
    .await;
    if !matches!(wrote, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < REFUSE_LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[async_trait]
impl<A> ServerApp for GuardedApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let (max_total, max_ip, exempt, timeout) = {
            let cfg = self.registry.config();
            let l = &cfg.limits;
            let exempt = peer.is_some_and(|ip| l.trusted_proxies.iter().any(|c| c.contains(ip)));
            (
                l.max_connections,
                l.max_connections_per_ip,
                exempt,
                l.header_read_timeout,
            )
        };
        let gauge = Some(self.metrics.active.clone());
        let _guard = match self.tracker.admit(peer, max_total, max_ip, exempt, gauge) {
            Ok(g) => g,
            Err(r) => {
                self.metrics.refused.with_label_values(&[r.reason()]).inc();
                self.warn_refused(r, peer);
                let max = match r {
                    Refusal::Total => max_total,
                    Refusal::PerIp => max_ip.unwrap_or(0),
                };
                refuse(stream, r, max).await;
                return None;
            }
        };
        let opts = self.inner.server_options();
        let alpn = stream.selected_alpn_proto();
        let delegate = matches!(alpn, Some(ALPN::H2) | Some(ALPN::Custom(_)))
            || opts.is_some_and(|o| o.force_custom)
            || (opts.is_some_and(|o| o.h2c) && stream.get_ssl_digest().is_none())
            || timeout.is_zero();
        if delegate {
            // HTTP/2, h2c, custom protocols, or no deadline: pingora's own handling. An h2
            // connection must still send its preface within the head deadline (it holds an
            // empty line, so the deadline ends with it); then pingora's h2 idle timeout
            // (limits.h2_idle_timeout) closes it whenever no stream is open.
            let stream: Stream = if alpn == Some(ALPN::H2) && !timeout.is_zero() {
                Box::new(HeadDeadline::new(
                    stream,
                    timeout,
                    self.metrics.header_timeouts.clone(),
                ))
            } else {
                stream
            };
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        // HTTP/1.x: pingora's keep-alive loop (apps/mod.rs), re-arming the deadline.
        let io: Stream = Box::new(HeadDeadline::new(
            stream,
            timeout,
            self.metrics.header_timeouts.clone(),
        ));
        let mut session = ServerSession::new_http1(io);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(60));
        }
        session.set_keepalive_reuses_remaining(opts.and_then(|o| o.keepalive_request_limit));
        let mut result = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, persistent)) = result.map(|r| r.consume()) {
            let stream: Stream = match stream.into_any().downcast::<HeadDeadline>() {
                Ok(mut d) => {
                    d.rearm(self.registry.config().limits.header_read_timeout);
                    d
                }
                Err(_) => {
                    tracing::error!("reused downstream stream is not a HeadDeadline");
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(p) = persistent {
                p.apply_to_session(&mut session);
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await
    }
}

#[cfg(test)]
mod tests;
