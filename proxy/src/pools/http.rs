//! The per-request part of an `http` pool (the route table's match is
//! `crate::routes::classify`): pick an upstream, build its peer, record failures (passive ejection) and successes.
//!
//! Failures: a failed connect (or a connect timeout) counts against the upstream and the
//! request is retried on another upstream of the pool (nothing was sent yet), up to
//! [`MAX_TRIES`] upstreams. A failure after the request was sent (reset or timeout
//! before the response head) counts against the upstream but is not retried (the
//! request may not be idempotent): the client gets 502/504. `ejection.failures` such
//! failures in a row eject the upstream for `ejection.cooldown`.

use std::sync::Arc;
use std::time::Instant;

use pingora::prelude::HttpPeer;

use super::{balance, HttpPool, InFlight, Members};
use crate::errors::EdgeError;

/// Upstreams tried for one request (connect failures) before giving up.
pub const MAX_TRIES: usize = 3;
/// `route` label of the request metrics (`hotplex_proxy_requests_total`,
/// `hotplex_request_duration_seconds`) for requests of `http` pool routes (the route's
/// own name is the label of `hotplex_proxy_route_requests_total`).
pub const HTTP_ROUTE_LABEL: &str = "http";

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

    /// The first `http` pool of the config.
    fn first_pool(extra: &str) -> Arc<HttpPool> {
        let c = parse("t.yaml", &format!("{BASE}{extra}")).expect("valid");
        c.routes.pools.first().expect("an http pool").clone()
    }

    #[test]
    fn connect_failures_move_to_another_upstream_then_give_up() {
        let pool = first_pool(
            "pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n    ejection:\n      failures: 1\n      cooldown: 1m\n\
             routes:\n  - name: ui\n    path: /\n    pool: ui\n",
        );
        let mut h = HttpState::new(pool.clone());
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
        let mut h2 = HttpState::new(pool);
        assert!(!h2.choose(&hm));
    }
}
