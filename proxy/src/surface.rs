//! The declared public surface: the only requests the public listeners forward.
//!
//! One table, [`PUBLIC_API`], data rather than scattered `if`s: the HotPlex worker's public
//! API. Everything else (the workers' `/admin/*`, `/metrics`, `/debug/*`, `/health/*`, the
//! session list `GET /sessions`, any unknown path or method) is answered by the edge with
//! a JSON 404 `not_found`, counted as `hotplex_proxy_rejections_total{reason="undeclared_route"}`,
//! and never reaches a worker. `GET /health/live` is answered by the proxy itself (for load
//! balancers), without forwarding.
//!
//! | method | path | kind |
//! |---|---|---|
//! | `POST` | `/sessions` | create a session |
//! | `GET`, `DELETE` | `/sessions/{id}` | read / delete a session |
//! | `POST` | `/sessions/{id}/messages` | one turn (SSE) |
//! | `GET` + `Upgrade: websocket` | `/ws/v1/agent` | the HotPlex v0 WebSocket |
//! | `GET` | `/health/live` | the proxy's own liveness (not forwarded) |
//!
//! Paths are matched exactly on their raw bytes (no decoding, no dot-segment removal): an
//! id is one non-empty segment that is neither `.` nor `..`, so no path that a worker or
//! another hop could normalise differently matches.

use http::Method;

use hotplex_common::headers::{HEALTH_LIVE_PATH, WS_AGENT_PATH};

/// What a declared route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `POST /sessions`.
    CreateSession,
    /// `GET|DELETE /sessions/{id}`.
    Session,
    /// `POST /sessions/{id}/messages`.
    Messages,
    /// `GET /ws/v1/agent` with an upgrade.
    WebSocket,
    /// `GET /health/live`, answered by the proxy.
    ProxyHealth,
}

impl RouteKind {
    /// The route label (metrics, rate-limit `limits.routes`, `auth.keys[].routes`).
    pub fn label(self) -> &'static str {
        match self {
            RouteKind::CreateSession => "create_session",
            RouteKind::Session => "session",
            RouteKind::Messages => "messages",
            RouteKind::WebSocket => "websocket",
            RouteKind::ProxyHealth => "health",
        }
    }

    /// Whether requests of this kind are forwarded to a worker.
    pub fn forwarded(self) -> bool {
        self != RouteKind::ProxyHealth
    }
}

/// Route label of a request outside the declared surface.
pub const UNDECLARED_LABEL: &str = "other";

/// How a declared route's path matches.
#[derive(Debug, Clone, Copy)]
pub enum PathPattern {
    /// Exactly this path.
    Exact(&'static str),
    /// `/sessions/{id}`.
    Session,
    /// `/sessions/{id}/<suffix>`.
    SessionSub(&'static str),
}

/// One declared route.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredRoute {
    pub methods: &'static [Method],
    pub path: PathPattern,
    /// Only with `Upgrade` (a WebSocket handshake).
    pub upgrade: bool,
    pub kind: RouteKind,
}

/// The public API of a HotPlex worker, plus the proxy's own liveness.
pub const PUBLIC_API: &[DeclaredRoute] = &[
    DeclaredRoute {
        methods: &[Method::POST],
        path: PathPattern::Exact("/sessions"),
        upgrade: false,
        kind: RouteKind::CreateSession,
    },
    DeclaredRoute {
        methods: &[Method::GET, Method::DELETE],
        path: PathPattern::Session,
        upgrade: false,
        kind: RouteKind::Session,
    },
    DeclaredRoute {
        methods: &[Method::POST],
        path: PathPattern::SessionSub("messages"),
        upgrade: false,
        kind: RouteKind::Messages,
    },
    DeclaredRoute {
        methods: &[Method::GET],
        path: PathPattern::Exact(WS_AGENT_PATH),
        upgrade: true,
        kind: RouteKind::WebSocket,
    },
    DeclaredRoute {
        methods: &[Method::GET],
        path: PathPattern::Exact(HEALTH_LIVE_PATH),
        upgrade: false,
        kind: RouteKind::ProxyHealth,
    },
];

/// One id segment: non-empty, no `/`, not a dot segment.
fn id_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

impl PathPattern {
    fn matches(self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Session => path.strip_prefix("/sessions/").is_some_and(id_segment),
            PathPattern::SessionSub(suffix) => path
                .strip_prefix("/sessions/")
                .and_then(|rest| rest.rsplit_once('/'))
                .is_some_and(|(id, last)| last == suffix && id_segment(id)),
        }
    }
}

/// The declared route of a request, if any (first match of [`PUBLIC_API`]).
pub fn classify(method: &Method, path: &str, upgrade: bool) -> Option<RouteKind> {
    PUBLIC_API
        .iter()
        .find(|r| r.upgrade == upgrade && r.methods.contains(method) && r.path.matches(path))
        .map(|r| r.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: Method, p: &str) -> Option<RouteKind> {
        classify(&m, p, false)
    }

    #[test]
    fn the_public_api_is_declared() {
        use RouteKind::*;
        assert_eq!(c(Method::POST, "/sessions"), Some(CreateSession));
        assert_eq!(c(Method::GET, "/sessions/w1.abc"), Some(Session));
        assert_eq!(c(Method::DELETE, "/sessions/demo-1"), Some(Session));
        assert_eq!(c(Method::POST, "/sessions/demo-1/messages"), Some(Messages));
        assert_eq!(
            classify(&Method::GET, "/ws/v1/agent", true),
            Some(WebSocket)
        );
        assert_eq!(c(Method::GET, "/health/live"), Some(ProxyHealth));
        assert!(!ProxyHealth.forwarded());
        assert!(Session.forwarded());
    }

    #[test]
    fn worker_internals_and_everything_else_are_not() {
        for (m, p) in [
            (Method::POST, "/admin/drain"),
            (Method::POST, "/admin/resume"),
            (Method::GET, "/sessions"),
            (Method::GET, "/sessions/"),
            (Method::POST, "/sessions/"),
            (Method::GET, "/metrics"),
            (Method::GET, "/debug/pprof/heap"),
            (Method::GET, "/health/ready"),
            (Method::POST, "/health/live"),
            (Method::GET, "/sessions/x/messages"),
            (Method::PUT, "/sessions/x"),
            (Method::POST, "/sessions/x"),
            (Method::POST, "/sessions/x/y/messages"),
            (Method::POST, "/sessions//messages"),
            (Method::GET, "/sessions/.."),
            (Method::GET, "/sessions/."),
            (Method::POST, "/sessions/../messages"),
            (Method::GET, "/sessions/../admin/drain"),
            (Method::GET, "//sessions/x"),
            (Method::GET, "/ws/v1/agent"),
            (Method::GET, "/ws/v1/agent/"),
            (Method::GET, "/"),
            (Method::GET, ""),
            (Method::from_bytes(b"BREW").expect("method"), "/sessions/x"),
        ] {
            assert_eq!(c(m.clone(), p), None, "{m} {p}");
        }
        // An upgrade on a non-WebSocket route is not declared either.
        assert_eq!(classify(&Method::GET, "/sessions/x", true), None);
        assert_eq!(classify(&Method::GET, "/admin/drain", true), None);
    }
}
