//! The per-request part of an `http` pool: classify a request against the route table,
//! pick an upstream, build its peer, record failures (passive ejection) and successes.
//!
//! Failures: a failed connect (or a connect timeout) counts against the upstream and the
//! request is retried on another upstream of the pool (nothing was sent yet), up to
//! [`MAX_TRIES`] upstreams. A failure after the request was sent (reset or timeout
//! before the response head) counts against the upstream but is not retried (the
//! request may not be idempotent): the client gets 502/504. `ejection.failures` such
//! failures in a row eject the upstream for `ejection.cooldown`.

use std::sync::Arc;
use std::time::Instant;

use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;

use super::{balance, HttpPool, InFlight, Members};
use crate::errors::EdgeError;
use crate::routes::{request_host, Matched, PoolRef, RouteTable};

/// Upstreams tried for one request (connect failures) before giving up.
pub const MAX_TRIES: usize = 3;
/// `route` label of the request metrics (`hotplex_proxy_requests_total`,
/// `hotplex_request_duration_seconds`) for requests of `http` pool routes (the route's
/// own name is the label of `hotplex_proxy_route_requests_total`).
pub const HTTP_ROUTE_LABEL: &str = "http";

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

/// The `http` pool state of one request.
#[derive(Debug)]
pub struct HttpState {
    pub pool: Arc<HttpPool>,
    /// The pool's members when the request started (DNS may change the pool meanwhile).
    members: Members,
    /// Upstreams that failed to connect for this request.
    excluded: Vec<usize>,
    /// The upstream in use and its in-flight count.
    pick: Option<(usize, InFlight)>,
    /// The answer to write when the pool ran out of upstreams mid-request.
    pub answer: Option<EdgeError>,
}

impl HttpState {
    pub fn new(pool: Arc<HttpPool>) -> HttpState {
        HttpState {
            members: pool.members(),
            pool,
            excluded: Vec::new(),
            pick: None,
            answer: None,
        }
    }

    /// Picks an upstream (see [`balance`]); `false` when none is available.
    pub fn choose(&mut self, headers: &http::HeaderMap) -> bool {
        let key = match &self.pool.balance {
            balance::Balance::Hash(on) => balance::hash_key(on, headers),
            _ => None,
        };
        match balance::pick(
            &self.pool,
            &self.members,
            key,
            Instant::now(),
            &self.excluded,
        ) {
            Some(i) => {
                let guard = self.members[i].begin();
                self.pick = Some((i, guard));
                true
            }
            None => {
                self.pick = None;
                false
            }
        }
    }

    /// The picked upstream's address text (logs, traces).
    pub fn upstream_id(&self) -> &str {
        self.pick
            .as_ref()
            .map_or("", |(_, g)| g.upstream().id.as_str())
    }

    /// The peer of the picked upstream (HTTP/1.1, plain or TLS per `pools[].tls`;
    /// pooled keep-alive connections).
    pub fn peer(&self) -> Option<HttpPeer> {
        let (_, g) = self.pick.as_ref()?;
        let addr = g.upstream().addr;
        Some(match &self.pool.tls {
            Some(t) => t.peer(addr),
            None => HttpPeer::new(addr, false, String::new()),
        })
    }

    /// A response head arrived: the upstream's failure streak ends.
    pub fn on_response(&self) {
        if let Some((_, g)) = &self.pick {
            g.upstream().record_success();
        }
    }

    /// Counts a failure against the picked upstream; returns its id when it was ejected.
    pub fn on_failure(&self) -> Option<&str> {
        let (_, g) = self.pick.as_ref()?;
        let u = g.upstream();
        u.record_failure(&self.pool.eject, Instant::now())
            .then_some(u.id.as_str())
    }

    /// After a connect failure: excludes the upstream and picks another; `false` when
    /// out of tries or upstreams (then [`Self::answer`] is set).
    pub fn retry_elsewhere(&mut self, headers: &http::HeaderMap) -> bool {
        if let Some((i, _)) = self.pick.take() {
            self.excluded.push(i);
        }
        let limit = MAX_TRIES.min(self.members.len());
        if self.excluded.len() < limit && self.choose(headers) {
            return true;
        }
        self.answer = Some(EdgeError::NoHealthyUpstream {
            pool: self.pool.name.clone(),
        });
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn connect_failures_move_to_another_upstream_then_give_up() {
        let t = table(
            "pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n    ejection:\n      failures: 1\n      cooldown: 1m\n\
             routes:\n  - name: ui\n    path: /\n    pool: ui\n",
        );
        let Routed::Http(_, mut h) = classify(&t, &req("x", "GET", "/")) else {
            panic!("http route");
        };
        let hm = http::HeaderMap::new();
        assert!(h.choose(&hm));
        let first = h.upstream_id().to_string();
        assert_eq!(h.on_failure(), Some(first.as_str()), "1 failure ejects");
        assert!(h.retry_elsewhere(&hm));
        assert_ne!(h.upstream_id(), first);
        assert!(h.on_failure().is_some());
        assert!(!h.retry_elsewhere(&hm));
        let a = h.answer.as_ref().expect("answer");
        assert_eq!(
            (a.status(), a.body()["error"].as_str()),
            (503, Some("no_healthy_upstream"))
        );
        // Both ejected: a new request finds nothing either.
        let Routed::Http(_, mut h2) = classify(&t, &req("x", "GET", "/")) else {
            panic!("http route");
        };
        assert!(!h2.choose(&hm));
    }
}
