//! HTTP routes of the main listener: sessions, health (and the gated admin surface of
//! [`crate::admin`]); and the middleware that admits requests ([`crate::trust`]), stamps
//! `X-Hotplex-Node` and records request durations.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hotplex_common::headers::{
    HEALTH_LIVE_PATH, HEALTH_READY_PATH, METRICS_PATH, WS_AGENT_PATH, X_HOTPLEX_NODE,
};
use hotplex_common::session_id::signed_shape;
use hotplex_common::telemetry::{self, SPAN_TARGET};
use hotplex_common::SessionId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::error::ApiError;
use crate::listen::Conn;
use crate::metrics::{CloseReason, Refusal, WorkerMetrics};
use crate::pool::Pool;
use crate::session::Session;
use crate::trust::{self, Caller, Refused};
use crate::{admin, auth, sse, ws};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: Arc<Pool>,
    pub metrics: Arc<WorkerMetrics>,
    pub cfg: Arc<WorkerConfig>,
    pub node_header: HeaderValue,
    /// Flips to true when the server shuts down (WebSocket connections close).
    pub shutdown: watch::Receiver<bool>,
}

/// The main listener's application (the admin routes are gated, see [`crate::admin`]).
pub fn router(state: AppState) -> Router {
    admin::routes(Router::new())
        .route(HEALTH_LIVE_PATH, get(live))
        .route(HEALTH_READY_PATH, get(ready))
        .route(
            admin::SESSIONS_PATH,
            get(admin::list_sessions).post(create_session),
        )
        .route("/sessions/{id}", get(get_session).delete(delete_session))
        .route("/sessions/{id}/messages", post(sse::post_message))
        .route(WS_AGENT_PATH, get(ws::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

/// The session id in a `/sessions/{id}[/...]` path.
fn path_session(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/sessions/")?;
    let id = rest.split('/').next().unwrap_or_default();
    (!id.is_empty()).then_some(id)
}

/// The server span of one request: its parent is the caller's `traceparent` (the proxy's
/// upstream span), if any. Probes, metrics scrapes and profiles are not traced.
fn request_span(st: &AppState, req: &Request, method: &str, route: &str) -> tracing::Span {
    let path = req.uri().path();
    if auth::is_public_path(path) || path == METRICS_PATH || path.starts_with("/debug/") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "worker.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        session.id = tracing::field::Empty,
        node.id = %st.cfg.node_id,
    );
    if let Some(id) = path_session(req.uri().path()) {
        span.record("session.id", id);
    }
    telemetry::set_parent(&span, telemetry::extract(req.headers()));
    span
}

/// Who may make this request: probes are open; the admin surface goes through its gate
/// (then, without a bearer token, the API keys as before, except for `/metrics`); every
/// other request is classified by [`trust::classify`], which attaches the [`Caller`].
fn admit(st: &AppState, req: &mut Request) -> Result<(), ApiError> {
    let path = req.uri().path();
    if auth::is_public_path(path) {
        return Ok(());
    }
    if admin::is_admin(req.method(), path) {
        let metrics_path = path == METRICS_PATH;
        return match admin::check(st, req, false)? {
            admin::Decision::Allow { token: false } if !metrics_path => {
                auth::check(&st.cfg.api_keys, req.headers())
            }
            _ => Ok(()),
        };
    }
    match trust::classify(&st.cfg, req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(())
        }
        Err(Refused::UntrustedHeader(e)) => {
            st.metrics.refused(Refusal::UntrustedHeader);
            Err(e)
        }
        Err(Refused::Other(e)) => Err(e),
    }
}

/// Admission, `X-Hotplex-Node`, request-duration histogram, the request's trace span.
async fn around(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = request_span(&st, &req, &method, &route);
    let mut resp = match admit(&st, &mut req) {
        Ok(()) => next.run(req).instrument(span.clone()).await,
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        telemetry::set_error(&span, status.to_string());
    }
    resp.headers_mut()
        .insert(X_HOTPLEX_NODE, st.node_header.clone());
    st.metrics.observe_request(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The answer to an unknown route (also to a hidden admin endpoint).
pub fn route_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub async fn not_found() -> ApiError {
    route_not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The connection a request came in on, when the listener reported it.
type ConnOf = Option<Extension<ConnectInfo<Conn>>>;

pub async fn live(
    State(st): State<AppState>,
    conn: ConnOf,
    headers: axum::http::HeaderMap,
) -> Response {
    let body = json!({"status":"live","node_id":st.cfg.node_id});
    identified(&st.cfg, conn, &headers, StatusCode::OK, &body)
}

/// A JSON health answer, with the identity proof ([`hotplex_common::identity`]) when the
/// request carries a challenge and the worker has `proxy_keys`: the local address of the
/// connection (the address the prober dialled, as seen here) and one HMAC per key over the
/// challenge, the node id, that address and these exact body bytes.
fn identified(
    cfg: &WorkerConfig,
    conn: ConnOf,
    headers: &axum::http::HeaderMap,
    code: StatusCode,
    body: &serde_json::Value,
) -> Response {
    use hotplex_common::identity as idp;
    let bytes = body.to_string().into_bytes();
    let challenge = headers
        .get(idp::X_HOTPLEX_CHALLENGE)
        .and_then(|v| v.to_str().ok())
        .filter(|c| idp::valid_challenge(c));
    let local = conn.and_then(|Extension(ConnectInfo(c))| c.local);
    let proof = match (challenge, local) {
        (Some(c), Some(local)) if !cfg.proxy_keys.is_empty() => {
            let keys = cfg.proxy_keys.iter().map(|k| k.expose().as_bytes());
            let address = local.to_string();
            let proofs = idp::proofs(keys, c, &cfg.node_id, &address, &bytes);
            HeaderValue::from_str(&proofs)
                .ok()
                .zip(HeaderValue::from_str(&address).ok())
        }
        _ => None,
    };
    let mut resp = (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    if let Some((p, address)) = proof {
        resp.headers_mut().insert(idp::X_HOTPLEX_IDENTITY, p);
        resp.headers_mut()
            .insert(idp::X_HOTPLEX_IDENTITY_ADDRESS, address);
    }
    resp
}

/// `{"status":"ready"|"draining"|"full","node_id","sessions_active","max_sessions"}`;
/// the proxy parses this for load-aware placement.
pub async fn ready(
    State(st): State<AppState>,
    conn: ConnOf,
    headers: axum::http::HeaderMap,
) -> Response {
    let status = st.pool.readiness();
    let body = json!({
        "status": status,
        "node_id": st.cfg.node_id,
        "sessions_active": st.pool.len(),
        "max_sessions": st.cfg.max_sessions,
    });
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    identified(&st.cfg, conn, &headers, code, &body)
}

/// `POST /sessions`: creates a session in the caller's tenant, under the id the proxy
/// routed the request for (`X-Hotplex-Session`), else a minted one. A signed id naming
/// another worker than `X-Hotplex-Worker` is refused (421 `session_elsewhere`).
async fn create_session(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let id = match caller.routed_session_id() {
        Ok(id) => id,
        Err(e) => {
            st.metrics.bad_request("session_id");
            return e.into_response();
        }
    };
    // A proxy-signed id names its worker: never create another worker's session here.
    let shape = id.as_ref().and_then(|i| signed_shape(i.as_str()));
    if let (Some(shape), Some(here)) = (shape, caller.routed_worker.as_deref()) {
        if shape.worker != here {
            st.metrics.refused(Refusal::SessionElsewhere);
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "session_elsewhere",
                format!(
                    "session ids of worker {} are not created on worker {here}",
                    shape.worker
                ),
            )
            .with("session_id", id.as_ref().map(SessionId::as_str))
            .with("worker", shape.worker)
            .into_response();
        }
    }
    match st.pool.create(caller.tenant(), id).await {
        Ok(s) => {
            tracing::Span::current().record("session.id", s.id.as_str());
            (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/sessions/{}", s.id))],
                Json(json!({"session_id": s.id, "node_id": st.cfg.node_id})),
            )
                .into_response()
        }
        Err(e) => ApiError::from_pool(e, st.cfg.retry_after_secs).into_response(),
    }
}

/// Resolves a path id to a live session of the caller's tenant (400 for a malformed id,
/// 404 for an unknown one or another tenant's: the same answer).
pub fn lookup(st: &AppState, caller: &Caller, raw: &str) -> Result<Arc<Session>, ApiError> {
    let id = SessionId::parse(raw).map_err(|e| {
        st.metrics.bad_request("session_id");
        ApiError::bad_request("invalid_session_id", e.to_string()).with("session_id", raw)
    })?;
    find(st, caller.tenant(), &id).ok_or_else(|| ApiError::session_not_found(raw))
}

/// The session `id` of `tenant`; counts a miss that names another tenant's session.
pub fn find(st: &AppState, tenant: Option<&str>, id: &SessionId) -> Option<Arc<Session>> {
    let found = st.pool.get(tenant, id);
    if found.is_none() && st.pool.owned_by_other(tenant, id) {
        st.metrics.refused(Refusal::CrossTenant);
    }
    found
}

async fn get_session(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match lookup(&st, &caller, &id) {
        Ok(s) => Json(s.snapshot(&st.cfg.node_id)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_session(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let s = match lookup(&st, &caller, &id) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if st.pool.close(&s.key(), CloseReason::Deleted).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::session_not_found(&id).into_response()
    }
}

/// Reads a JSON body of at most `limit` bytes: 413 when larger, 400 when malformed.
pub async fn read_json<T: DeserializeOwned>(st: &AppState, body: Body) -> Result<T, ApiError> {
    let limit = st.cfg.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        st.metrics.bad_request("too_large");
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {limit} bytes"),
        )
        .with("limit_bytes", limit)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        st.metrics.bad_request("json");
        ApiError::bad_request("invalid_json", e.to_string())
    })
}

/// Body of `POST /sessions/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    pub prompt: String,
    #[serde(default)]
    pub request_id: Option<u64>,
}
