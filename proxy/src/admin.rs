//! The admin listener (separate from the proxy listener; default 127.0.0.1:9900):
//! - `GET /metrics`: Prometheus text, `component="proxy"`;
//! - `GET /admin/workers`: JSON list of workers: `id`, `address`, `weight`, `healthy`,
//!   `ejected`, `ejected_until` (Unix ms, `null` when not ejected), `draining`, `full`,
//!   `sessions`, `capacity`, `available`, `placeable`, plus the active `config_hash`;
//!   `state` (`active`, `draining`, `removing`), `drain_requested`, `removing_until` (Unix ms),
//!   `probed` (a readiness probe has answered at least once: `sessions`/`capacity` are known);
//!   `identity` (`verified`, `impostor`, `unverified` or `unchecked`: see
//!   [`crate::upstream::identity`]);
//! - `GET /admin/config`: `hash`, `source`, `loaded_at` (Unix s) of the active config;
//! - `POST /admin/reload`: reload the config file (see [`crate::reload`]);
//! - `POST /admin/workers/{id}/drain`, `POST /admin/workers/{id}/resume`: operator drain;
//! - `GET /debug/pprof/heap`: a jemalloc heap profile (gzipped pprof), see
//!   `hotplex_common::profiling`; token-protected like `/admin/*`;
//! - `GET /admin/profiling`: `{"enabled","active","lg_sample"}` of heap profiling;
//!   `POST /admin/profiling {"active": true|false}` starts or stops sampling at runtime
//!   (jemalloc `prof.active`; off by default on the proxy, see `hotplex_common::profiling`);
//! - `GET /health/live`: 200 while the process runs.
//!
//! `/admin/*` needs `Authorization: Bearer <token>` (one of `admin.tokens`) when tokens are
//! configured, else `401 {"error":"unauthorized"}`; without tokens it is open (allowed on a
//! loopback `admin.listen` only). `/metrics` and `/health/live` are always open.
//!
//! An axum server run as a pingora background service on a listener bound before start
//! (so a busy port fails at startup, not later).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};

use crate::metrics::ProxyMetrics;
use crate::reload::Reloader;
use crate::upstream::{Registry, Worker};

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    reloader: Arc<Reloader>,
}

/// The router.
pub fn router(
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    reloader: Arc<Reloader>,
) -> Router {
    let state = AdminState {
        registry,
        metrics,
        reloader,
    };
    let protected = Router::new()
        .route("/admin/workers", get(workers_handler))
        .route("/admin/config", get(config_handler))
        .route("/admin/reload", post(reload_handler))
        .route("/admin/workers/{id}/drain", post(drain_handler))
        .route("/admin/workers/{id}/resume", post(resume_handler))
        .route("/debug/pprof/heap", get(pprof_heap))
        .route("/admin/profiling", get(profiling_get).post(profiling_set))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_browsers,
        ));
    Router::new()
        .route(hotplex_common::headers::METRICS_PATH, get(metrics_handler))
        .route(hotplex_common::headers::HEALTH_LIVE_PATH, get(live))
        .merge(protected)
        .with_state(state)
}

/// Whether `host` (a `Host` header value) names the admin listener: an IP literal,
/// `localhost`, or one of `admin.hosts` (any port).
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split_once(']').is_some_and(|(a, tail)| {
            a.parse::<std::net::Ipv6Addr>().is_ok()
                && (tail.is_empty()
                    || tail
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        });
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(n, _)| n)
    };
    let name = name.to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || names.contains(&name)
}

/// A browser cannot drive the admin API, with or without tokens: the `Host` must name the
/// admin listener (DNS rebinding), a state-changing request must carry no `Origin`
/// (cross-site requests) and no body other than JSON (`text/plain` and form posts are what
/// a page can send without a preflight).
async fn refuse_browsers(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let changes =
        req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let refusal = if !host_allowed(host, &s.registry.config().admin_hosts) {
        Some((
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "the Host header does not name this admin listener (add it to admin.hosts)",
        ))
    } else if changes && req.headers().contains_key(header::ORIGIN) {
        Some((
            StatusCode::FORBIDDEN,
            "cross_origin",
            "state-changing admin requests must not come from a browser page (Origin present)",
        ))
    } else if changes
        && content_type
            .as_deref()
            .is_some_and(|t| t != "application/json")
    {
        Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_only",
            "admin request bodies must be application/json",
        ))
    } else {
        None
    };
    let Some((status, code, message)) = refusal else {
        return next.run(req).await;
    };
    audit_denied(&req, code);
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// Audits a refused admin request, with the peer address.
fn audit_denied(req: &Request, why: &str) {
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    crate::audit::record(
        crate::audit::Actor { name: "admin", ip },
        &format!("admin {} {}", req.method(), req.uri().path()),
        "denied",
        why,
    );
}

async fn require_token(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let cfg = s.registry.config();
    if cfg.admin_tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if crate::config::tokens::token_ok(&cfg.admin_tokens, t.as_bytes()) => {
            next.run(req).await
        }
        _ => {
            let why = if presented.is_some() {
                "invalid token"
            } else {
                "missing token"
            };
            audit_denied(&req, why);
            (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "unauthorized", "message": "a valid Authorization: Bearer token is required"})),
        )
            .into_response()
        }
    }
}

fn config_json(s: &AdminState) -> Value {
    let cfg = s.registry.config();
    json!({
        "hash": cfg.hash,
        "source": cfg.source,
        "loaded_at": s.metrics.config_last_success.get(),
    })
}

async fn config_handler(State(s): State<AdminState>) -> Json<Value> {
    Json(config_json(&s))
}

/// The admin client's address, for audit lines.
type Peer = axum::extract::ConnectInfo<std::net::SocketAddr>;

fn set_drain(s: &AdminState, id: &str, on: bool, peer: Peer) -> (StatusCode, Json<Value>) {
    if !s.registry.set_drain(id, on) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown_worker", "worker": id})),
        );
    }
    tracing::info!(worker = id, drain = on, "operator drain changed");
    crate::audit::record(
        crate::audit::Actor {
            name: "admin",
            ip: Some(peer.0.ip()),
        },
        if on { "admin.drain" } else { "admin.resume" },
        "success",
        &format!("worker={id}"),
    );
    s.metrics.refresh_worker_gauges(&s.registry);
    let w = workers_json(&s.registry)["workers"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["id"] == id).cloned())
        .unwrap_or(Value::Null);
    (StatusCode::OK, Json(w))
}

async fn drain_handler(
    State(s): State<AdminState>,
    peer: Peer,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    set_drain(&s, &id, true, peer)
}

async fn resume_handler(
    State(s): State<AdminState>,
    peer: Peer,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    set_drain(&s, &id, false, peer)
}

async fn reload_handler(State(s): State<AdminState>, peer: Peer) -> impl IntoResponse {
    match s.reloader.reload_by("admin", Some(peer.0.ip())).await {
        Ok(hash) => (
            StatusCode::OK,
            Json(json!({"status": "reloaded", "config_hash": hash, "config": config_json(&s)})),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "invalid_config", "file": e.file, "key": e.key, "reason": e.reason, "message": e.to_string(), "config_hash": s.registry.config().hash}),
            ),
        ),
    }
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            hotplex_common::metrics::TEXT_CONTENT_TYPE,
        )],
        s.metrics.render(&s.registry),
    )
}

async fn pprof_heap() -> Response {
    use hotplex_common::profiling::{heap_profile, PROFILE_HEADERS};
    match heap_profile().await {
        Ok(bytes) => (PROFILE_HEADERS, bytes).into_response(),
        Err(e) => {
            let (code, error) = e.status_and_code();
            let body = json!({"error": error, "message": e.to_string()});
            (code, Json(body)).into_response()
        }
    }
}

async fn profiling_get() -> Json<Value> {
    Json(json!(hotplex_common::profiling::status().await))
}

/// `POST /admin/profiling {"active": bool}`.
async fn profiling_set(peer: Peer, body: axum::body::Bytes) -> Response {
    let active = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("active").and_then(Value::as_bool));
    let Some(active) = active else {
        let body = json!({"error": "bad_request", "message": "expected {\"active\": true|false}"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let r = hotplex_common::profiling::set_active(active).await;
    crate::audit::record(
        crate::audit::Actor {
            name: "admin",
            ip: Some(peer.0.ip()),
        },
        "admin.profiling",
        if r.is_ok() { "success" } else { "failure" },
        &format!("active={active}"),
    );
    match r {
        Ok(st) => Json(json!(st)).into_response(),
        Err(e) => {
            let (code, error) = e.status_and_code();
            (
                code,
                Json(json!({"error": error, "message": e.to_string()})),
            )
                .into_response()
        }
    }
}

async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// The `/admin/workers` document.
pub fn workers_json(registry: &Registry) -> Value {
    let now = Instant::now();
    let wall = SystemTime::now();
    let workers = registry.workers();
    let list: Vec<Value> = workers
        .live()
        .map(|w| {
            let s = w.snapshot();
            let ejected_until = s.ejected_until.filter(|t| *t > now).map(|t| {
                (wall + (t - now))
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            });
            json!({
                "id": w.spec.id,
                "address": w.spec.address.to_string(),
                "source": if w.discovered { "dns" } else { "config" },
                "weight": w.spec.weight,
                "healthy": s.healthy,
                "probed": s.probed,
                "identity": w.identity_of(&s),
                "ejected": ejected_until.is_some(),
                "ejected_until": ejected_until,
                "draining": w.draining_of(&s),
                "state": w.lifecycle_of(&s).as_str(),
                "drain_requested": s.drain_requested || w.spec.drain,
                "removing_until": w.removing_until.map(|t| {
                    (wall + t.saturating_duration_since(now))
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0)
                }),
                "full": s.full,
                "sessions": Worker::sessions_of(&s),
                // Creates (slot reservations) and deletes sent and not answered yet.
                "in_flight": s.in_flight,
                "capacity": w.capacity_of(&s),
                "available": w.available(now),
                "placeable": w.placeable_of(&s, now),
            })
        })
        .collect();
    json!({ "workers": list, "config_hash": registry.config().hash })
}

async fn workers_handler(State(s): State<AdminState>) -> Json<Value> {
    Json(workers_json(&s.registry))
}

/// How long an upgrading process waits for the old one to release the admin port.
pub const ADMIN_REBIND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Background service serving the admin router.
pub struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    addr: std::net::SocketAddr,
    router: Router,
}

impl AdminService {
    /// `listener` must be bound already.
    pub fn new(listener: std::net::TcpListener, router: Router) -> AdminService {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        AdminService {
            listener: Mutex::new(Some(listener)),
            addr,
            router,
        }
    }

    /// `listener`: bound already, or `None` (graceful upgrade) to bind `addr` once the old
    /// process has released it.
    pub fn new_or_deferred(
        listener: Option<std::net::TcpListener>,
        addr: std::net::SocketAddr,
        router: Router,
    ) -> AdminService {
        AdminService {
            listener: Mutex::new(listener),
            addr,
            router,
        }
    }
}

async fn bind_when_free(addr: std::net::SocketAddr) -> Option<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + ADMIN_REBIND_TIMEOUT;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(error = %e, %addr, "admin listener never became free");
                return None;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let std_listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let listener = match std_listener {
            Some(l) => match l
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(l))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "admin listener unusable");
                    return;
                }
            },
            None => {
                let mut sd = shutdown.clone();
                tokio::select! {
                    l = bind_when_free(self.addr) => match l {
                        Some(l) => l,
                        None => return,
                    },
                    _ = sd.changed() => return,
                }
            }
        };
        let app = self
            .router
            .clone()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin server failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_hosts() {
        let names = vec!["hotplex-admin.internal".to_string()];
        for ok in [
            "127.0.0.1:9900",
            "127.0.0.1",
            "10.1.2.3:9900",
            "[::1]:9900",
            "localhost:9900",
            "LOCALHOST",
            "hotplex-admin.internal:9900",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for bad in [
            "rebind.evil.example",
            "rebind.evil.example:9900",
            "",
            "[::1",
            "localhost.evil:1",
        ] {
            assert!(!host_allowed(bad, &names), "{bad}");
        }
    }
}
