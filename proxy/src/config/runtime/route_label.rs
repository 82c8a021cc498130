//! Route labels: the names `auth.keys[].routes`, `limits.routes` and a JWT's routes claim
//! use, and the `route` label of the proxy's metrics.
//!
//! A label is one of the session API's ([`RouteLabel`], a closed set) or the name of a route
//! to an `http` pool ([`HttpRouteName`], validated by `config::routes`). Config validation
//! turns the file's strings into [`RouteName`]s once; nothing parses them per request.

use std::borrow::Borrow;
use std::sync::Arc;

/// A route label of the session API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteLabel {
    /// `POST /sessions`.
    CreateSession,
    /// `GET /sessions` (never forwarded: the worker's admin list).
    ListSessions,
    /// `GET|DELETE /sessions/{id}`.
    Session,
    /// `POST /sessions/{id}/messages`.
    Messages,
    /// `GET /ws/v1/agent` with an upgrade.
    WebSocket,
    /// `GET /health/live`, answered by the proxy.
    Health,
    /// Anything else (outside the declared surface).
    Other,
}

impl RouteLabel {
    /// Every label, in documentation order.
    pub const ALL: [RouteLabel; 7] = [
        RouteLabel::CreateSession,
        RouteLabel::ListSessions,
        RouteLabel::Session,
        RouteLabel::Messages,
        RouteLabel::WebSocket,
        RouteLabel::Health,
        RouteLabel::Other,
    ];

    /// The label as written in the config and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteLabel::CreateSession => "create_session",
            RouteLabel::ListSessions => "list_sessions",
            RouteLabel::Session => "session",
            RouteLabel::Messages => "messages",
            RouteLabel::WebSocket => "websocket",
            RouteLabel::Health => "health",
            RouteLabel::Other => "other",
        }
    }

    /// The label named `s`, if any.
    pub fn parse(s: &str) -> Option<RouteLabel> {
        RouteLabel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// The session API's labels as strings, derived from [`RouteLabel::ALL`] (metrics that
/// pre-create one series per label).
pub const ROUTE_LABELS: &[&str] = &{
    let mut out = [""; RouteLabel::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = RouteLabel::ALL[i].as_str();
        i += 1;
    }
    out
};

/// The name of a route to an `http` pool (`routes[].name`), validated by `config::routes`
/// (`[a-z0-9_-]`, 1-63 characters, not a [`RouteLabel`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpRouteName(Arc<str>);

impl HttpRouteName {
    /// Only the config's validation makes one (from a validated route name).
    pub(crate) fn new(name: &str) -> HttpRouteName {
        HttpRouteName(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `auth.keys[].routes`, `limits.routes` and a JWT's routes claim name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteName {
    /// A label of the session API.
    Api(RouteLabel),
    /// A route to an `http` pool.
    Http(HttpRouteName),
}

impl RouteName {
    /// `s` as a session-API label or one of `http_routes`; `None`: unknown.
    pub fn resolve(s: &str, http_routes: &[HttpRouteName]) -> Option<RouteName> {
        if let Some(l) = RouteLabel::parse(s) {
            return Some(RouteName::Api(l));
        }
        http_routes
            .iter()
            .find(|r| r.as_str() == s)
            .map(|r| RouteName::Http(r.clone()))
    }

    /// The label as written in the config and in metrics.
    pub fn as_str(&self) -> &str {
        match self {
            RouteName::Api(l) => l.as_str(),
            RouteName::Http(n) => n.as_str(),
        }
    }
}

// The request path still names its route by its label text (`&str`, see `crate::proxy`):
// these let a `RouteName` be compared with and looked up by it. Labels and http route
// names never collide (validated), so ordering by the text is a total order.
impl PartialEq<str> for RouteName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for RouteName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RouteName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Borrow<str> for RouteName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RouteName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_list() {
        for l in RouteLabel::ALL {
            assert_eq!(RouteLabel::parse(l.as_str()), Some(l));
        }
        assert_eq!(
            ROUTE_LABELS,
            [
                "create_session",
                "list_sessions",
                "session",
                "messages",
                "websocket",
                "health",
                "other"
            ]
        );
        assert_eq!(RouteLabel::parse("Session"), None);
    }

    #[test]
    fn names_resolve_to_labels_or_http_routes() {
        let http = [HttpRouteName::new("ui"), HttpRouteName::new("docs")];
        assert_eq!(
            RouteName::resolve("messages", &http),
            Some(RouteName::Api(RouteLabel::Messages))
        );
        let ui = RouteName::resolve("ui", &http).expect("http route");
        assert_eq!(ui, RouteName::Http(http[0].clone()));
        assert!(ui == *"ui");
        assert_eq!(RouteName::resolve("admin", &http), None);
        let mut m = std::collections::BTreeMap::new();
        m.insert(ui, 1);
        m.insert(RouteName::Api(RouteLabel::WebSocket), 2);
        assert_eq!(m.get("ui"), Some(&1));
        assert_eq!(m.get("websocket"), Some(&2));
        assert_eq!(m.get("docs"), None);
    }
}
