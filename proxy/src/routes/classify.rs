//! The route table's match of one request: the session pool, an `http` pool (with the
//! request's [`HttpState`]) or no route. Here, not in `pools::http`, so that `pools` does
//! not import `routes` (routes sit above pools). The table itself is a config type
//! ([`crate::config::runtime::routes`]).

use std::sync::Arc;

use pingora::http::RequestHeader;

use super::{request_host, Matched, PoolRef, RouteTable};
use crate::pools::http::HttpState;

/// How the route table sends a request.
pub enum Routed {
    /// No `routes:` configured: the session pool, as always.
    Default,
    /// A route to the session pool.
    Sessions(Matched),
    /// A route to an `http` pool.
    Http(Matched, HttpState),
    /// No route matches: 404 `no_route`.
    NoMatch,
}

/// Matches the request against the table.
pub fn classify(table: &Arc<RouteTable>, req: &RequestHeader) -> Routed {
    if !table.configured {
        return Routed::Default;
    }
    // The Host header is looked up only when some route matches on hosts.
    let host = if table.host_routes {
        request_host(req)
    } else {
        None
    };
    let Some(index) = table.find(host, &req.method, req.uri.path()) else {
        return Routed::NoMatch;
    };
    let m = Matched {
        table: table.clone(),
        index,
    };
    match m.route().pool {
        PoolRef::Sessions => Routed::Sessions(m),
        PoolRef::Http(i) => match table.pools.get(i) {
            Some(p) => Routed::Http(m.clone(), HttpState::new(p.clone())),
            None => Routed::NoMatch,
        },
    }
}

/// [`classify`] on tables validated from config text.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pingora::http::RequestHeader;

    use super::{classify, RouteTable, Routed};
    use crate::config::parse;

    const BASE: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";

    fn table(extra: &str) -> Arc<RouteTable> {
        parse("t.yaml", &format!("{BASE}{extra}"))
            .expect("valid")
            .routes
            .clone()
    }

    fn req(host: &str, method: &str, path: &str) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).expect("req");
        r.insert_header("host", host).expect("host");
        r
    }

    fn name(r: &Routed) -> &str {
        match r {
            Routed::Default => "<default>",
            Routed::Sessions(m) | Routed::Http(m, _) => m.route().name.as_str(),
            Routed::NoMatch => "<none>",
        }
    }

    #[test]
    fn no_routes_is_the_session_pool() {
        let t = table("");
        assert!(matches!(
            classify(&t, &req("x", "GET", "/anything")),
            Routed::Default
        ));
    }

    #[test]
    fn first_match_wins_by_host_path_and_method() {
        let t = table(
            "pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9001\"]\n  - name: docs\n    upstreams: [\"127.0.0.1:9002\"]\n\
             routes:\n  - name: docs\n    hosts: [\"docs.example.com\"]\n    path: /\n    pool: docs\n    auth: off\n\
             \x20 - name: api\n    path: /sessions\n    pool: sessions\n\
             \x20 - name: ws\n    path: /ws/v1/agent\n    path_match: exact\n    methods: [GET]\n    pool: sessions\n\
             \x20 - name: ui\n    hosts: [\"*.example.com\", \"example.com\"]\n    path: /\n    pool: ui\n    auth: off\n",
        );
        let cases = [
            ("docs.example.com:8000", "GET", "/sessions", "docs"),
            ("example.com", "POST", "/sessions", "api"),
            ("EXAMPLE.com", "GET", "/sessions/abc/messages", "api"),
            ("example.com", "GET", "/sessionsx", "ui"),
            ("a.example.com", "GET", "/ws/v1/agent", "ws"),
            ("a.example.com", "POST", "/ws/v1/agent", "ui"),
            ("a.example.com", "GET", "/ws/v1/agent/x", "ui"),
            ("other.org", "GET", "/", "<none>"),
            ("other.org", "GET", "/sessions", "api"),
        ];
        for (host, m, p, want) in cases {
            assert_eq!(name(&classify(&t, &req(host, m, p))), want, "{m} {host}{p}");
        }
        match classify(&t, &req("ui.example.com", "GET", "/app.js")) {
            Routed::Http(m, h) => {
                assert_eq!(m.pool_name(), "ui");
                assert_eq!(h.pool.name, "ui");
            }
            _ => panic!("expected the ui pool"),
        }
    }
}
