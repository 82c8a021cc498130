//! The admin surface: `POST /admin/drain`, `POST /admin/resume`, `GET /sessions` (the
//! session list), `GET /metrics`, `GET /debug/pprof/heap`; and who may use it.
//!
//! Rules (config `admin:`):
//! - `admin.listen` set: the admin endpoints live on that listener only (with
//!   `/health/*`); the main listener answers them 404 `not_found`. On the admin listener
//!   they need a bearer token when `admin.tokens` is set.
//! - `admin.listen` not set: on the main listener they need a bearer token when
//!   `admin.tokens` is set (401 without); without tokens they are served only to a
//!   loopback peer whose request was not proxied (no `X-Hotplex-Proxy-Auth`,
//!   `X-Hotplex-Tenant`, `X-Forwarded-For` or `Forwarded`), otherwise 404 `not_found`,
//!   the answer of an unknown route.

use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hotplex_common::headers::{
    FORWARDED, HEALTH_LIVE_PATH, HEALTH_READY_PATH, METRICS_PATH, X_FORWARDED_FOR, X_HOTPLEX_NODE,
    X_HOTPLEX_PROXY_AUTH, X_HOTPLEX_TENANT,
};
use hotplex_common::metrics::TEXT_CONTENT_TYPE;
use hotplex_common::profiling;
use serde_json::json;

use crate::api::{self, AppState};
use crate::config::AdminConfig;
use crate::error::ApiError;
use crate::metrics::Refusal;
use crate::trust::matches_any;

/// Path of the drain endpoint.
pub const DRAIN_PATH: &str = "/admin/drain";
/// Path of the resume endpoint.
pub const RESUME_PATH: &str = "/admin/resume";
/// Path of the heap profile.
pub const HEAP_PATH: &str = "/debug/pprof/heap";
/// Path of the session list (`GET`; `POST` on it is the public create).
pub const SESSIONS_PATH: &str = "/sessions";

/// Whether a request targets the admin surface.
pub fn is_admin(method: &Method, path: &str) -> bool {
    path.starts_with("/admin/")
        || path.starts_with("/debug/")
        || path == METRICS_PATH
        || (path == SESSIONS_PATH && method == Method::GET)
}

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Served; `token` says whether a bearer token authorised it (else loopback or the
    /// open admin listener).
    Allow { token: bool },
    /// 401 `unauthorized`: a token is configured and was not presented.
    Unauthorized,
    /// 404 `not_found`, as for an unknown route.
    Hidden,
}

/// What the gate looks at in a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asker<'a> {
    /// The request arrived on the admin listener.
    pub on_admin_listener: bool,
    /// The peer is a loopback address.
    pub loopback: bool,
    /// The request carries a proxy or forwarding header.
    pub proxied: bool,
    /// The bearer token presented, if any.
    pub token: Option<&'a str>,
}

/// The admin gate (see the module docs).
pub fn decide(admin: &AdminConfig, a: Asker<'_>) -> Decision {
    if !a.on_admin_listener && admin.listen.is_some() {
        return Decision::Hidden;
    }
    if !admin.tokens.is_empty() {
        return match a.token {
            Some(t) if matches_any(&admin.tokens, t.as_bytes()) => Decision::Allow { token: true },
            _ => Decision::Unauthorized,
        };
    }
    if a.on_admin_listener || (a.loopback && !a.proxied) {
        Decision::Allow { token: false }
    } else {
        Decision::Hidden
    }
}

/// Whether a request shows signs of having been forwarded by a proxy.
pub fn was_proxied(h: &HeaderMap) -> bool {
    [
        X_HOTPLEX_PROXY_AUTH,
        X_HOTPLEX_TENANT,
        X_FORWARDED_FOR,
        FORWARDED,
    ]
    .iter()
    .any(|n| h.contains_key(*n))
}

/// The `Authorization: Bearer <t>` token.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The gate for one request; `on_admin_listener` says which listener it came in on.
pub fn check(st: &AppState, req: &Request, on_admin_listener: bool) -> Result<Decision, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<crate::listen::Conn>>()
        .map(|c| c.0.peer);
    let d = decide(
        &st.cfg.admin,
        Asker {
            on_admin_listener,
            loopback: peer.is_some_and(|p| p.ip().is_loopback()),
            proxied: was_proxied(req.headers()),
            token: bearer(req.headers()),
        },
    );
    match d {
        Decision::Allow { .. } => Ok(d),
        Decision::Unauthorized => {
            st.metrics.refused(Refusal::AdminDenied);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin endpoints need a bearer token (Authorization: Bearer <token>)",
            ))
        }
        Decision::Hidden => {
            st.metrics.refused(Refusal::AdminDenied);
            Err(api::route_not_found())
        }
    }
}

/// Adds the admin routes to a router.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(METRICS_PATH, get(metrics))
        .route(HEAP_PATH, get(pprof_heap))
        .route(DRAIN_PATH, post(drain))
        .route(RESUME_PATH, post(resume))
}

/// The admin listener's application: admin endpoints and `/health/*`.
pub fn router(state: AppState) -> Router {
    routes(Router::new())
        .route(HEALTH_LIVE_PATH, get(api::live))
        .route(HEALTH_READY_PATH, get(api::ready))
        .route(SESSIONS_PATH, get(list_sessions))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

/// Middleware of the admin listener: the gate (health paths open), `X-Hotplex-Node`,
/// request durations.
async fn around(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let open = crate::auth::is_public_path(req.uri().path());
    let gate = if open {
        Ok(())
    } else {
        check(&st, &req, true).map(|_| ())
    };
    let mut resp = match gate {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
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

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)],
        st.metrics.render(),
    )
        .into_response()
}

async fn pprof_heap() -> Response {
    match profiling::heap_profile().await {
        Ok(bytes) => (profiling::PROFILE_HEADERS, bytes).into_response(),
        Err(e) => {
            let (code, error) = e.status_and_code();
            ApiError::new(code, error, e.to_string()).into_response()
        }
    }
}

async fn drain(State(st): State<AppState>) -> Response {
    let started = st.pool.start_drain();
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "draining",
            "already_draining": !started,
            "sessions_active": st.pool.len(),
            "turns_running": st.pool.turns_running(),
        })),
    )
        .into_response()
}

/// `POST /admin/resume`: takes new sessions again (readiness back to `ready`, or `full`).
async fn resume(State(st): State<AppState>) -> Response {
    let was = st.pool.resume();
    Json(json!({
        "status": st.pool.readiness(),
        "was_draining": was,
        "sessions_active": st.pool.len(),
    }))
    .into_response()
}

/// `GET /sessions`: every session with its owner.
pub async fn list_sessions(State(st): State<AppState>) -> Json<serde_json::Value> {
    let sessions: Vec<_> = st
        .pool
        .list()
        .iter()
        .map(|s| s.admin_snapshot(&st.cfg.node_id))
        .collect();
    Json(json!({"node_id": st.cfg.node_id, "stats": st.pool.stats(), "sessions": sessions}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn admin(listen: bool, tokens: &[&str]) -> AdminConfig {
        AdminConfig {
            listen: listen.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9091))),
            tokens: tokens.iter().map(|t| Secret::new(*t)).collect(),
        }
    }

    #[test]
    fn admin_paths() {
        assert!(is_admin(&Method::GET, "/sessions"));
        assert!(!is_admin(&Method::POST, "/sessions"));
        assert!(!is_admin(&Method::GET, "/sessions/x"));
        for p in [
            "/metrics",
            "/debug/pprof/heap",
            "/admin/drain",
            "/admin/resume",
        ] {
            assert!(
                is_admin(&Method::POST, p) && is_admin(&Method::GET, p),
                "{p}"
            );
        }
        assert!(!is_admin(&Method::GET, "/health/ready"));
    }

    #[test]
    fn gate_decisions() {
        let local = Asker {
            loopback: true,
            ..Asker::default()
        };
        let allow = Decision::Allow { token: false };
        // No tokens, no admin listener: loopback and not proxied only.
        assert_eq!(decide(&admin(false, &[]), local), allow);
        let proxied = Asker {
            proxied: true,
            ..local
        };
        assert_eq!(decide(&admin(false, &[]), proxied), Decision::Hidden);
        assert_eq!(
            decide(&admin(false, &[]), Asker::default()),
            Decision::Hidden
        );
        // Tokens: needed everywhere, even from loopback.
        let t = admin(false, &["tok"]);
        assert_eq!(decide(&t, local), Decision::Unauthorized);
        let with = |token| Asker {
            token: Some(token),
            ..proxied
        };
        assert_eq!(decide(&t, with("tok")), Decision::Allow { token: true });
        assert_eq!(decide(&t, with("tok2")), Decision::Unauthorized);
        // Admin listener set: the main listener hides the surface, even with a token.
        let l = admin(true, &["tok"]);
        assert_eq!(decide(&l, with("tok")), Decision::Hidden);
        let on = |token| Asker {
            on_admin_listener: true,
            token,
            ..Asker::default()
        };
        assert_eq!(decide(&l, on(Some("tok"))), Decision::Allow { token: true });
        assert_eq!(decide(&l, on(None)), Decision::Unauthorized);
        assert_eq!(decide(&admin(true, &[]), on(None)), allow);
    }

    #[test]
    fn headers_read() {
        let mut h = HeaderMap::new();
        assert!(!was_proxied(&h) && bearer(&h).is_none());
        h.insert("x-forwarded-for", "10.0.0.1".parse().expect("v"));
        h.insert("authorization", "Bearer  abc ".parse().expect("v"));
        assert!(was_proxied(&h));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic abc".parse().expect("v"));
        assert_eq!(bearer(&h), None);
    }
}
