//! TLS termination and HTTP/2 at the edge, wiring `hotplex-tls` into the proxy.
//!
//! - [`crate::config::tls::validate`]: the `tls:` config section (key paths `tls.*`), in config;
//! - [`setup`]: at startup, the TLS listener on the proxy service (SNI certificate store,
//!   hardened OpenSSL settings, ALPN `h2`/`http/1.1`, h2 limits), the certificate file
//!   watcher and the optional plain-HTTP → HTTPS redirect service;
//! - [`on_config_reload`]: called by [`crate::reload`] before a new config is swapped in:
//!   refuses changes pingora cannot apply live (listeners, issue 690; acceptor settings)
//!   and reloads the certificates, rejecting the whole reload if they are bad;
//! - [`on_response`] / [`scheme`]: HSTS on TLS responses, `X-Forwarded-Proto`.
//!
//! The certificate store lives in a process-wide [`OnceLock`] (one pingora server per
//! process), so the reload path needs no extra plumbing.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hotplex_tls::{CertStore, CertWatcher, ReloadReport, SniResolver, StoreError, TlsConfig};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::ALPN;
use pingora::proxy::Session;
use pingora::OrErr;

pub use crate::config::runtime::tls::WorkerTls;
use crate::config::{ConfigError, RuntimeConfig};
use crate::metrics::{ProxyMetrics, TlsMetrics};

/// Updates of the TLS metrics (the struct: [`crate::metrics::TlsMetrics`]).
impl TlsMetrics {
    fn set_expiry(&self, store: &CertStore) {
        self.expiry.reset();
        for c in store.current().summary().certs {
            self.expiry
                .with_label_values(&[&c.label])
                .set(c.not_after_unix as f64);
        }
    }

    fn reloaded(&self, store: &CertStore, r: &Result<ReloadReport, StoreError>) {
        let result = if r.is_ok() { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        if r.is_ok() {
            self.set_expiry(store);
        }
    }
}

/// The running TLS state.
pub struct TlsState {
    pub store: Arc<CertStore>,
    pub metrics: TlsMetrics,
    watcher: Mutex<Option<CertWatcher>>,
}

static STATE: OnceLock<Arc<TlsState>> = OnceLock::new();

/// The TLS state, when a TLS listener runs in this process.
pub fn state() -> Option<&'static Arc<TlsState>> {
    STATE.get()
}

impl TlsState {
    /// (Re)creates the file watcher for the store's current files (none for the dev cert).
    fn rewatch(self: &Arc<Self>, cfg: &TlsConfig) {
        let mut w = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        *w = None; // stop the old watcher first
        if !cfg.watch || self.store.watched_files().is_empty() {
            return;
        }
        let me = Arc::downgrade(self);
        match hotplex_tls::watch_store(self.store.clone(), cfg.watch_debounce, move |r| {
            if let Some(s) = me.upgrade() {
                s.metrics.reloaded(&s.store, r);
            }
        }) {
            Ok(watcher) => *w = Some(watcher),
            Err(e) => tracing::error!(
                "cannot watch TLS certificate files ({e}); reload with SIGHUP or POST /admin/reload"
            ),
        }
    }
}

/// Counts handshakes around the SNI resolver.
struct CountingAccept {
    inner: SniResolver,
    handshakes: prometheus::IntCounterVec,
}

#[async_trait]
impl TlsAccept for CountingAccept {
    async fn certificate_callback(&self, ssl: &mut TlsRef) -> () {
        self.inner.certificate_callback(ssl).await
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        self.handshakes
            .with_label_values(&[ssl.version_str()])
            .inc();
        None
    }
}

/// Startup error of the TLS pieces.
#[derive(Debug, thiserror::Error)]
pub enum TlsStartError {
    #[error("tls: certificates: {0}")]
    Store(#[from] StoreError),
    #[error("tls: {0}")]
    Settings(#[from] hotplex_tls::SettingsError),
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The TLS listener of the proxy service, ready to add (see [`crate::server`]).
pub struct TlsListener {
    /// `tls.listen`.
    pub listen: SocketAddr,
    /// The acceptor settings (SNI certificate store, hardened, ALPN).
    pub settings: TlsSettings,
    /// The HTTP/2 limits of `tls:`, for the proxy app.
    pub h2_options: pingora::protocols::http::v2::server::H2Options,
    /// `tls.redirect_http`: the plain-HTTP redirect listener (`None` inside when the old
    /// process still holds it) and its address.
    pub redirect: Option<(Option<std::net::TcpListener>, SocketAddr)>,
}

/// Builds the TLS listener's settings (when `cfg.tls` is set), the certificate state and
/// its file watcher; the caller adds the listener to the proxy service and runs the
/// redirect service ([`redirect_router`]), if `tls.redirect_http` is set. `upgrade`: the
/// old process still holds the ports (the TLS listener comes with the handover; the
/// redirect listener is bound once the old process lets it go), so nothing is test-bound.
pub fn setup(
    cfg: &RuntimeConfig,
    metrics: &ProxyMetrics,
    upgrade: bool,
) -> Result<Option<TlsListener>, TlsStartError> {
    let Some(tls) = cfg.tls.as_ref() else {
        return Ok(None);
    };
    let bind = |what, addr| {
        std::net::TcpListener::bind(addr).map_err(|source| TlsStartError::Bind {
            what,
            addr,
            source,
        })
    };
    if !upgrade {
        drop(bind("tls.listen", tls.listen)?);
    }
    let redirect = match tls.redirect_http {
        Some(addr) if upgrade => Some((None, addr)),
        Some(addr) => Some((Some(bind("tls.redirect_http", addr)?), addr)),
        None => None,
    };
    // No certificates: CertStore generates the dev certificate and logs a loud WARN.
    let store = CertStore::from_config(tls)?;
    let tm = TlsMetrics::new(&metrics.registry);
    tm.set_expiry(&store);
    let mut settings = TlsSettings::with_callbacks(Box::new(CountingAccept {
        inner: SniResolver::new(store.clone()),
        handshakes: tm.handshakes.clone(),
    }))
    .map_err(|e| hotplex_tls::SettingsError {
        what: "acceptor",
        reason: e.to_string(),
    })?;
    hotplex_tls::harden(&mut settings, tls)?;
    if tls.h2 {
        settings.enable_h2();
    } else {
        settings.set_alpn(ALPN::H1);
    }
    let state = Arc::new(TlsState {
        store,
        metrics: tm,
        watcher: Mutex::new(None),
    });
    state.rewatch(tls);
    if STATE.set(state).is_err() {
        tracing::warn!("TLS state already initialised in this process");
    }
    tracing::info!(listen = %tls.listen, h2 = tls.h2, redirect_http = ?tls.redirect_http, "TLS listener configured");
    Ok(Some(TlsListener {
        listen: tls.listen,
        settings,
        h2_options: tls.h2_options(),
        redirect,
    }))
}

/// Router answering every request with a 301 to `https://host[:port]/path`.
pub fn redirect_router(tls_port: u16) -> axum::Router {
    axum::Router::new()
        .fallback(redirect_handler)
        .with_state(tls_port)
}

async fn redirect_handler(
    State(port): State<u16>,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Response {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(uri.host())
        .unwrap_or("");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match hotplex_tls::https_redirect_location(host, path, port) {
        Some(loc) => (
            http::StatusCode::MOVED_PERMANENTLY,
            [
                (http::header::LOCATION, loc),
                (http::header::CONNECTION, "close".to_string()),
            ],
        )
            .into_response(),
        None => (http::StatusCode::BAD_REQUEST, "missing or invalid Host\n").into_response(),
    }
}

fn tls_immutable(t: &TlsConfig) -> TlsConfig {
    let mut t = t.clone();
    t.certificates.clear();
    t.default_certificate = 0;
    t.hsts = None;
    t.watch = false;
    t.watch_debounce = std::time::Duration::ZERO;
    t
}

/// Checks the TLS part of a reload and reloads the certificates (before the new config is
/// swapped in). On error nothing changed: the old certificates keep serving.
pub fn on_config_reload(old: &RuntimeConfig, new: &RuntimeConfig) -> Result<(), ConfigError> {
    let f = new.source.as_str();
    let restart = |key: &str, why: String| {
        Err(ConfigError::new(
            f,
            key,
            format!("{why}: cannot change without a restart (pingora issue 690)"),
        ))
    };
    let (o, n) = match (old.tls.as_ref(), new.tls.as_ref()) {
        (None, None) => return Ok(()),
        (None, Some(_)) => return restart("tls", "adding the TLS listener".into()),
        (Some(_), None) => return restart("tls", "removing the TLS listener".into()),
        (Some(o), Some(n)) => (o, n),
    };
    if o.listen != n.listen {
        return restart("tls.listen", format!("from {} to {}", o.listen, n.listen));
    }
    if o.redirect_http != n.redirect_http {
        return restart(
            "tls.redirect_http",
            format!("from {:?} to {:?}", o.redirect_http, n.redirect_http),
        );
    }
    if tls_immutable(o) != tls_immutable(n) {
        return restart(
            "tls",
            "min_version, ciphers, ciphersuites, h2, h2 limits and session settings".into(),
        );
    }
    let Some(state) = state() else {
        return Ok(());
    };
    let r = state.store.reload_with(n);
    state.metrics.reloaded(&state.store, &r);
    if let Err(e) = r {
        return Err(ConfigError::new(
            f,
            "tls.certificates",
            format!("{e}; keeping the running certificates"),
        ));
    }
    if o.certificates != n.certificates
        || o.watch != n.watch
        || o.watch_debounce != n.watch_debounce
    {
        state.rewatch(n);
    }
    Ok(())
}

/// True when the downstream connection of `session` is TLS.
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// `https` or `http`, for `X-Forwarded-Proto` / `Forwarded: proto=`.
pub fn scheme(session: &Session) -> &'static str {
    if is_tls(session) {
        "https"
    } else {
        "http"
    }
}

/// Response hook: `Strict-Transport-Security` on responses served over TLS.
pub fn on_response(
    session: &Session,
    headers: &mut http::HeaderMap,
    cfg: &RuntimeConfig,
) -> pingora::Result<()> {
    if let Some(h) = cfg.tls.as_ref().and_then(|t| t.hsts.as_ref()) {
        if is_tls(session) {
            let v = http::HeaderValue::try_from(h.header_value()).or_err(
                pingora::ErrorType::InvalidHTTPHeader,
                "Strict-Transport-Security",
            )?;
            headers.insert(http::header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tls: &str) -> Result<RuntimeConfig, ConfigError> {
        crate::config::parse(
            "t.yaml",
            &format!("workers:\n  - id: w1\n    address: 127.0.0.1:1\n{tls}"),
        )
    }

    #[test]
    fn tls_section_is_validated_with_key_paths() {
        let c = cfg("tls:\n  listen: 127.0.0.1:8443\n").expect("valid");
        assert_eq!(
            c.tls.as_ref().map(|t| t.listen.to_string()).as_deref(),
            Some("127.0.0.1:8443")
        );
        let e = cfg("tls:\n  min_version: \"1.1\"\n").expect_err("tls 1.1");
        assert_eq!(e.key, "tls.min_version");
        let e = cfg("tls:\n  listen: 127.0.0.1:8000\n").expect_err("same as listen");
        assert_eq!(e.key, "tls.listen");
        let e = cfg("tls:\n  bogus: 1\n").expect_err("unknown key");
        assert!(e.key.starts_with("tls"), "{e}");
        assert!(cfg("").expect("no tls").tls.is_none());
    }

    #[test]
    fn reload_refuses_listener_and_acceptor_changes() {
        let a = cfg("tls:\n  listen: 127.0.0.1:8443\n").expect("a");
        let b = cfg("tls:\n  listen: 127.0.0.1:8444\n").expect("b");
        let c = cfg("tls:\n  listen: 127.0.0.1:8443\n  min_version: \"1.3\"\n").expect("c");
        let d = cfg("tls:\n  listen: 127.0.0.1:8443\n  hsts: {}\n").expect("d");
        let none = cfg("").expect("none");
        let e = on_config_reload(&a, &b).expect_err("listen");
        assert_eq!(e.key, "tls.listen");
        assert!(e.reason.contains("restart"), "{e}");
        assert_eq!(on_config_reload(&a, &c).expect_err("acceptor").key, "tls");
        assert_eq!(on_config_reload(&a, &none).expect_err("removed").key, "tls");
        // HSTS is live (no TLS state in unit tests: certificates untouched).
        on_config_reload(&a, &d).expect("hsts change is reloadable");
    }

    #[test]
    fn upstream_tls_peer() {
        let plain = cfg("upstream_tls:\n  enabled: false\n").expect("valid");
        assert!(plain.upstream_tls.is_none());
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert!(worker_peer(None, addr, "w1")
            .scheme
            .to_string()
            .contains("HTTP"));
        let t = cfg(
            "upstream_tls:\n  enabled: true\n  sni: Workers.Internal\n  trust_system_roots: true\n",
        )
        .expect("valid");
        let p = worker_peer(t.upstream_tls.as_ref(), addr, "w1");
        assert!(p.is_tls());
        assert_eq!(p.sni, "workers.internal");
        assert!(p.options.verify_cert && p.options.verify_hostname);
        // Default: each worker's certificate names its id; hostname checks stay on.
        let t = cfg("upstream_tls:\n  enabled: true\n  trust_system_roots: true\n").expect("valid");
        let p = worker_peer(t.upstream_tls.as_ref(), addr, "w1");
        assert_eq!(p.sni, "w1");
        assert!(p.options.verify_cert && p.options.verify_hostname);
        let t = cfg("upstream_tls:\n  enabled: true\n  server_name: \"{id}.workers.internal\"\n  trust_system_roots: true\n")
            .expect("valid");
        let p = worker_peer(t.upstream_tls.as_ref(), addr, "w2");
        assert_eq!(p.sni, "w2.workers.internal");
        // The discovery identity probe checks the chain only, never with an empty SNI
        // (pingora would skip verification entirely).
        let u = t.upstream_tls.as_ref().expect("tls");
        let p = tls_peer(u, addr, TlsName::ChainOnly(""));
        assert!(!p.sni.is_empty() && p.options.verify_cert && !p.options.verify_hostname);
        let e = cfg("upstream_tls:\n  enabled: true\n").expect_err("no CA, no opt-in");
        assert_eq!(e.key, "upstream_tls.ca_file");
        let e = cfg("upstream_tls:\n  enabled: true\n  ca_file: /nonexistent/ca.pem\n")
            .expect_err("missing CA");
        assert_eq!(e.key, "upstream_tls.ca_file");
    }

    #[tokio::test]
    async fn redirect_answers_301_to_https() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::HOST,
            http::HeaderValue::from_static("example.com:8080"),
        );
        let uri: http::Uri = "/a/b?x=1".parse().expect("uri");
        let r = redirect_handler(State(8443), h, uri).await;
        assert_eq!(r.status(), 301);
        assert_eq!(
            r.headers()[http::header::LOCATION],
            "https://example.com:8443/a/b?x=1"
        );
        let r = redirect_handler(
            State(8443),
            http::HeaderMap::new(),
            "/".parse().expect("uri"),
        )
        .await;
        assert_eq!(r.status(), 400);
    }
}

/// The name a TLS connection to a worker checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsName<'a> {
    /// Worker `id`: its certificate must carry `upstream_tls.server_name` for that id (or
    /// the shared `sni`). Every request and health probe.
    Worker(&'a str),
    /// Chain only, sending this SNI: the discovery identity probe of an address whose
    /// worker id is not known yet (the id it reports is then checked with
    /// [`TlsName::Worker`] before the address is used).
    ChainOnly(&'a str),
}

/// The peer for worker `id` at `addr`: plain HTTP, or TLS per `upstream_tls` (chain
/// against `ca_file`, the worker's name checked).
pub fn worker_peer(
    tls: Option<&WorkerTls>,
    addr: SocketAddr,
    id: &str,
) -> pingora::upstreams::peer::HttpPeer {
    match tls {
        None => pingora::upstreams::peer::HttpPeer::new(addr, false, String::new()),
        Some(t) => tls_peer(t, addr, TlsName::Worker(id)),
    }
}

fn tls_peer(
    t: &WorkerTls,
    addr: SocketAddr,
    name: TlsName<'_>,
) -> pingora::upstreams::peer::HttpPeer {
    let (sni, check_name) = match name {
        TlsName::Worker(id) => (t.cfg.name_for(id), true),
        TlsName::ChainOnly(sni) => (sni.trim_end_matches('.').to_ascii_lowercase(), false),
    };
    // pingora skips ALL verification for an empty SNI: never send one.
    let sni = if sni.is_empty() {
        "worker.invalid".to_string()
    } else {
        sni
    };
    let mut peer = pingora::upstreams::peer::HttpPeer::new(addr, true, sni);
    peer.options.verify_cert = t.cfg.verify;
    peer.options.verify_hostname = t.cfg.verify && check_name;
    peer.options.ca = t.ca.clone();
    peer
}

/// Why a probe got no answer (from [`connect_worker`] or the probe reading the answer;
/// defined here so that `tls` does not import `upstream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The worker's TLS certificate was refused (chain or name).
    Certificate(String),
    /// Connect, I/O, timeout, unparsable or oversized answer.
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Certificate(e) | FetchError::Other(e) => f.write_str(e),
        }
    }
}

impl From<String> for FetchError {
    fn from(e: String) -> FetchError {
        FetchError::Other(e)
    }
}

/// A byte stream to a worker (plain TCP or TLS).
pub trait WorkerIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> WorkerIo for T {}

/// Connects to a worker for a probe: plain TCP, or TLS (`upstream_tls`) checking `name`.
/// A refused certificate is [`FetchError::Certificate`].
pub async fn connect_worker(
    addr: SocketAddr,
    tls: Option<(&WorkerTls, TlsName<'_>)>,
) -> Result<Box<dyn WorkerIo>, FetchError> {
    let Some((t, name)) = tls else {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| FetchError::Other(format!("connect: {e}")))?;
        return Ok(Box::new(s));
    };
    static CONNECTOR: OnceLock<pingora::connectors::TransportConnector> = OnceLock::new();
    let c = CONNECTOR.get_or_init(|| pingora::connectors::TransportConnector::new(None));
    let peer = tls_peer(t, addr, name);
    match c.new_stream(&peer).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) if matches!(e.etype(), pingora::ErrorType::InvalidCert) => {
            Err(FetchError::Certificate(format!(
                "certificate refused (expected name {:?}): {e}",
                peer.sni
            )))
        }
        Err(e) => Err(FetchError::Other(format!("TLS connect: {e}"))),
    }
}
