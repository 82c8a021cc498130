//! Classify, the pipeline's first step: the route table's match ([`crate::routes`]) and
//! the session pool's declared surface ([`crate::surface`]) folded into one
//! [`RequestKind`], decided once per request and matched on by every later step.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::sessions::SessionPick;
use super::{Ctx, HotplexProxy};
use crate::pools::http::{self, HttpState};
use crate::routes::{self, Matched, RouteTable, Routed};
use crate::surface::{self, RouteKind};

/// What a request of the session pool's public API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOp {
    /// `POST /sessions`: reserves a slot on the worker it is placed on.
    Create,
    /// `GET /sessions/{id}`.
    Read,
    /// `DELETE /sessions/{id}`: frees a slot when it succeeds.
    Delete,
    /// `POST /sessions/{id}/messages`: one turn, streamed (SSE).
    Turn,
    /// `GET /ws/v1/agent` with an upgrade: a tunnel.
    WebSocket,
}

impl SessionOp {
    /// The route label (metrics, `limits.routes`, `auth.keys[].routes`).
    pub fn label(self) -> &'static str {
        match self {
            SessionOp::Create => RouteKind::CreateSession,
            SessionOp::Read | SessionOp::Delete => RouteKind::Session,
            SessionOp::Turn => RouteKind::Messages,
            SessionOp::WebSocket => RouteKind::WebSocket,
        }
        .label()
    }
}

/// What the edge does with a request. The pool variants carry the pool's per-request
/// state (the choice of a worker or an upstream, filled by the choose step).
pub enum RequestKind {
    /// The session pool's public API (no `routes:`, or a route to the session pool).
    Session { op: SessionOp, pick: SessionPick },
    /// A route to an `http` pool; `upgrade`: a WebSocket (or other) upgrade, a tunnel.
    Http { pool: HttpState, upgrade: bool },
    /// `GET /health/live`: answered by the proxy.
    ProxyHealth,
    /// Outside the session pool's declared surface: 404 `not_found`, never forwarded.
    Undeclared,
    /// `routes:` configured and none matches: 404 `no_route`, never forwarded.
    NoRoute,
}

impl RequestKind {
    /// The route label of the request metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RequestKind::Session { op, .. } => op.label(),
            RequestKind::Http { .. } => http::HTTP_ROUTE_LABEL,
            RequestKind::ProxyHealth => RouteKind::ProxyHealth.label(),
            RequestKind::Undeclared | RequestKind::NoRoute => surface::UNDECLARED_LABEL,
        }
    }

    /// The session operation, for a request of the session pool.
    pub fn op(&self) -> Option<SessionOp> {
        match self {
            RequestKind::Session { op, .. } => Some(*op),
            _ => None,
        }
    }

    /// A `POST /sessions`.
    pub fn creates(&self) -> bool {
        self.op() == Some(SessionOp::Create)
    }

    /// An upgrade (a WebSocket): no request body, frames both ways, long idle.
    pub fn tunnel(&self) -> bool {
        matches!(
            self,
            RequestKind::Session {
                op: SessionOp::WebSocket,
                ..
            } | RequestKind::Http { upgrade: true, .. }
        )
    }

    /// Whether the answer may stream for long (long idle timeouts, no compression):
    /// a tunnel, a turn, or an answer the client asked as `text/event-stream`.
    pub fn streams(&self, accepts_sse: bool) -> bool {
        accepts_sse || self.tunnel() || self.op() == Some(SessionOp::Turn)
    }

    /// Forwarded to a pool (the others are answered by the edge).
    pub fn forwarded(&self) -> bool {
        matches!(self, RequestKind::Session { .. } | RequestKind::Http { .. })
    }
}

/// The request's kind and the route of `routes:` that matched (its policies apply even to
/// a request the edge answers itself: IP rules, redirects, error pages).
pub fn classify(
    table: &Arc<RouteTable>,
    req: &RequestHeader,
    upgrade: bool,
) -> (Option<Matched>, RequestKind) {
    let matched = match routes::classify(table, req) {
        Routed::Default => None,
        Routed::Sessions(m) => Some(m),
        Routed::Http(m, pool) => return (Some(m), RequestKind::Http { pool, upgrade }),
        Routed::NoMatch => return (None, RequestKind::NoRoute),
    };
    let op = match surface::classify(&req.method, req.uri.path(), upgrade) {
        Some(RouteKind::CreateSession) => SessionOp::Create,
        Some(RouteKind::Session) if req.method == ::http::Method::DELETE => SessionOp::Delete,
        Some(RouteKind::Session) => SessionOp::Read,
        Some(RouteKind::Messages) => SessionOp::Turn,
        Some(RouteKind::WebSocket) => SessionOp::WebSocket,
        Some(RouteKind::ProxyHealth) => return (matched, RequestKind::ProxyHealth),
        None => return (matched, RequestKind::Undeclared),
    };
    let pick = SessionPick::default();
    (matched, RequestKind::Session { op, pick })
}

impl HotplexProxy {
    /// Classify: the request's kind and matched route, stored once in `ctx` (one `ArcSwap`
    /// load of the route table; without `routes:`, the surface table only).
    pub(super) fn classify(&self, session: &Session, ctx: &mut Ctx) {
        let table = &self.registry.config().routes;
        let req = session.req_header();
        let (matched, kind) = classify(table, req, session.is_upgrade_req());
        ctx.matched = matched;
        ctx.kind = kind;
        ctx.accepts_sse = accepts_sse(req);
    }
}

/// Whether the client accepts `text/event-stream`.
pub fn accepts_sse(req: &RequestHeader) -> bool {
    req.headers
        .get(::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn kind(table: &Arc<RouteTable>, method: &str, path: &str, upgrade: bool) -> RequestKind {
        let mut req = RequestHeader::build(method, path.as_bytes(), None).expect("head");
        req.insert_header("host", "edge.test").expect("host");
        classify(table, &req, upgrade).1
    }

    fn no_routes() -> Arc<RouteTable> {
        let cfg = parse("t", "workers:\n  - id: w1\n    address: 127.0.0.1:9000\n").expect("valid");
        cfg.routes.clone()
    }

    #[test]
    fn the_session_surface_without_routes() {
        let t = no_routes();
        let ops = [
            (
                "POST",
                "/sessions",
                false,
                Some(SessionOp::Create),
                "create_session",
            ),
            (
                "GET",
                "/sessions/a",
                false,
                Some(SessionOp::Read),
                "session",
            ),
            (
                "DELETE",
                "/sessions/a",
                false,
                Some(SessionOp::Delete),
                "session",
            ),
            (
                "POST",
                "/sessions/a/messages",
                false,
                Some(SessionOp::Turn),
                "messages",
            ),
            (
                "GET",
                "/ws/v1/agent",
                true,
                Some(SessionOp::WebSocket),
                "websocket",
            ),
        ];
        for (m, p, up, op, label) in ops {
            let k = kind(&t, m, p, up);
            assert_eq!((k.op(), k.label()), (op, label), "{m} {p}");
            assert!(k.forwarded());
        }
        let ws = kind(&t, "GET", "/ws/v1/agent", true);
        assert!(ws.tunnel() && ws.streams(false));
        let turn = kind(&t, "POST", "/sessions/a/messages", false);
        assert!(!turn.tunnel() && turn.streams(false));
        let read = kind(&t, "GET", "/sessions/a", false);
        assert!(!read.streams(false) && read.streams(true));
        assert!(kind(&t, "POST", "/sessions", false).creates());
        assert!(matches!(
            kind(&t, "GET", "/health/live", false),
            RequestKind::ProxyHealth
        ));
        for (m, p) in [
            ("GET", "/sessions"),
            ("GET", "/metrics"),
            ("GET", "/ws/v1/agent"),
        ] {
            let k = kind(&t, m, p, false);
            assert!(matches!(k, RequestKind::Undeclared), "{m} {p}");
            assert_eq!(k.label(), "other");
            assert!(!k.forwarded());
        }
    }

    #[test]
    fn routes_split_http_sessions_and_no_route() {
        let y = "workers:\n  - id: w1\n    address: 127.0.0.1:9000\n\
                 pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9100\"]\n\
                 routes:\n  - name: api\n    path: /sessions\n    pool: sessions\n\
                 \x20 - name: ws\n    path: /ws/v1/agent\n    path_match: exact\n    pool: sessions\n\
                 \x20 - name: web\n    path: /ui\n    pool: ui\n    auth: off\n";
        let cfg = parse("t", y).expect("valid");
        let t = cfg.routes.clone();
        let k = kind(&t, "POST", "/sessions", false);
        assert_eq!(k.op(), Some(SessionOp::Create));
        let (m, k) = {
            let req = RequestHeader::build("GET", b"/ui/app.js", None).expect("head");
            classify(&t, &req, false)
        };
        assert_eq!(m.map(|m| m.route().name.clone()).as_deref(), Some("web"));
        assert!(matches!(k, RequestKind::Http { upgrade: false, .. }));
        assert_eq!(k.label(), "http");
        let up = kind(&t, "GET", "/ui/socket", true);
        assert!(up.tunnel() && up.streams(false));
        assert!(matches!(
            kind(&t, "GET", "/elsewhere", false),
            RequestKind::NoRoute
        ));
        // A route to the session pool still applies the declared surface.
        assert!(matches!(
            kind(&t, "GET", "/sessions", false),
            RequestKind::Undeclared
        ));
    }
}
