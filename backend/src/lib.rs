//! HotPlex session worker: one long-lived agent process per session, kept hot between
//! turns, behind a HotPlex v0 WebSocket API and an HTTP + SSE API.
//!
//! Modules: [`cli`] (flags, `main`), [`config`] (YAML file + validated runtime config),
//! [`pool`] (bounded session pool, reaper, drain), [`session`] (a session and its turns),
//! [`agent`] (the child process and its JSON-lines protocol), [`demo_agent`] (the built-in
//! agent), [`api`] (HTTP routes and middleware), [`trust`] (the trusted proxy, tenants),
//! [`admin`] (the admin surface and its gate), [`ws`], [`sse`], [`auth`], [`error`],
//! [`metrics`] (heap profiles: `hotplex_common::profiling`), [`listen`] (what a handler
//! knows of its connection; the TLS listener), [`tls`] (the optional `tls:` section).

pub mod admin;
pub mod agent;
pub mod agent_config;
pub mod agent_exec;
pub mod agent_stderr;
pub mod api;
pub mod auth;
pub mod bwrap;
pub mod cli;
pub mod config;
pub mod demo_agent;
pub mod drain_client;
pub mod error;
pub mod listen;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod quota;
pub mod quota_config;
pub mod quota_store;
pub mod sandbox;
pub mod session;
pub mod session_dirs;
pub mod sse;
pub mod tls;
pub mod trust;
pub mod uid_sweep;
pub mod usage;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AgentConfig, WorkerConfig};
pub use metrics::WorkerMetrics;
pub use pool::Pool;

/// How long [`Server::shutdown`] waits for open HTTP connections after the pool closed.
const HTTP_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running worker (see [`serve`]).
pub struct Server {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    pool: Arc<Pool>,
    metrics: Arc<WorkerMetrics>,
    shutdown_tx: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    admin_http: Option<JoinHandle<std::io::Result<()>>>,
    reaper: JoinHandle<()>,
    quota_refresher: Option<JoinHandle<()>>,
}

/// Serves an application on `listener` until `stop` turns true; handlers see the peer and
/// local addresses (`ConnectInfo<listen::Conn>`).
fn spawn_http<L>(
    listener: L,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    for<'a> listen::Conn:
        axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<listen::Conn>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    })
}

/// Serves the worker on `listener` (bind `127.0.0.1:0` in tests) until
/// [`Server::shutdown`]; binds `admin.listen` too when it is set.
pub async fn serve(cfg: WorkerConfig, listener: TcpListener) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let admin_listener = match cfg.admin.listen {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot bind admin.listen {a}: {e}"))
        })?),
        None => None,
    };
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let node_header = HeaderValue::from_str(&cfg.node_id).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("node id: {e}"))
    })?;
    if let Some(store) = &cfg.quota_store {
        // Fleet-wide quotas were asked for: never fall back to per-worker ones silently.
        quota_store::QuotaStore::client(store)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    let tls_on = cfg.tls.is_some();
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(WorkerMetrics::new());
    let sandbox = sandbox::Sandbox::resolve(&cfg.agent)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    match sandbox.mode() {
        sandbox::IsolationMode::PerSessionUid(r) => tracing::info!(
            uid_start = r.start,
            uid_count = r.count,
            session_dirs = %sandbox.root().map(|p| p.display().to_string()).unwrap_or_default(),
            "agents run as per-session users"
        ),
        sandbox::IsolationMode::WorkerUser { euid } => tracing::warn!(
            euid,
            "agents run as the worker's user: they can signal and read each other and the worker (see docs/reliability.md, Agent isolation)"
        ),
    }
    let pool = Pool::new(cfg.clone(), metrics.clone(), Arc::new(sandbox));
    let reaper = pool.spawn_reaper();
    let quota_refresher = pool.quotas().spawn_refresher();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = api::AppState {
        pool: pool.clone(),
        metrics: metrics.clone(),
        cfg,
        node_header,
        shutdown: shutdown_rx.clone(),
    };
    let admin_http =
        admin_listener.map(|l| spawn_http(l, admin::router(state.clone()), shutdown_rx.clone()));
    let tls = state.cfg.tls.as_ref().map(|t| t.server.clone());
    let app = api::router(state);
    let http = match tls {
        Some(t) => spawn_http(
            listen::TlsListener::new(listener, t, shutdown_rx.clone())?,
            app,
            shutdown_rx,
        ),
        None => spawn_http(listener, app, shutdown_rx),
    };
    tracing::info!(%addr, admin = ?admin_addr, tls = tls_on, "worker listening");
    Ok(Server {
        addr,
        admin_addr,
        pool,
        metrics,
        shutdown_tx,
        http,
        admin_http,
        reaper,
        quota_refresher,
    })
}

impl Server {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of the admin listener (`admin.listen`), if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    /// Graceful stop: drain, let running turns finish (up to the configured grace
    /// period), kill every agent, close the listener and open connections.
    pub async fn shutdown(self) {
        let grace = self.pool.config().shutdown_grace;
        self.pool.shutdown(grace).await;
        let _ = self.shutdown_tx.send(true);
        let mut http = self.http;
        match tokio::time::timeout(HTTP_CLOSE_TIMEOUT, &mut http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "http server task failed"),
            Err(_) => {
                tracing::warn!("open connections did not close in time");
                http.abort();
            }
        }
        if let Some(mut admin) = self.admin_http {
            if tokio::time::timeout(HTTP_CLOSE_TIMEOUT, &mut admin)
                .await
                .is_err()
            {
                tracing::warn!("admin connections did not close in time");
                admin.abort();
            }
        }
        self.reaper.abort();
        if let Some(r) = self.quota_refresher {
            r.abort();
        }
        // The process may exit with the pool still referenced: remove the private
        // session-directory root now (every session is closed).
        self.pool.sandbox().remove_own_root();
        tracing::info!("worker stopped");
    }
}
