//! Routes: the ordered `routes:` list of the config, matched per request (first match
//! wins) to pick the pool a request goes to.
//!
//! - A config without `routes:` has one implicit route, every host and path to the
//!   session pool: exactly the behaviour before routes existed.
//! - With `routes:`, a request no route matches is answered by the edge with a JSON
//!   404 `{"error":"no_route"}` and nothing is forwarded.
//! - `pool: sessions` is the HotPlex session pool (`workers:`/`discovery:`): the declared
//!   public surface ([`crate::surface`]), signed ids, tenants, placement, limits, all as
//!   before. Any other name is an `http` pool of `pools:` ([`crate::pools`]).
//! - `auth: required` (default) applies the edge's `auth:` section as for the session
//!   API; `auth: optional` checks credentials when the client presents any (a bad one is
//!   refused as with `required`) and serves a client without any anonymously (no tenant;
//!   limits keyed by its IP); `auth: off` serves the route without authentication (a
//!   public UI), the rate limits still apply. The session pool's routes always use the
//!   edge's auth.
//!
//! The table is part of the config snapshot: it swaps atomically with the rest on reload,
//! and a request holds the table it matched (`Arc`) until it ends. Its types ([`RouteTable`],
//! [`Route`], [`AuthMode`], [`PoolRef`], [`matcher`]) are config types
//! ([`crate::config::runtime::routes`]), re-exported here; this module matches requests.

pub mod classify;

use std::sync::Arc;

pub use crate::config::runtime::matcher;
pub use crate::config::runtime::routes::{AuthMode, PoolRef, Route, RouteTable, SESSIONS_POOL};
use crate::pools::HttpPool;
pub use classify::{classify, Routed};
use matcher::strip_port;

/// A request's match: the table it was matched in (kept alive by the request) and the
/// route's index.
#[derive(Debug, Clone)]
pub struct Matched {
    pub table: Arc<RouteTable>,
    pub index: usize,
}

impl Matched {
    pub fn route(&self) -> &Route {
        &self.table.routes[self.index]
    }

    /// The `http` pool, if the route names one.
    pub fn http_pool(&self) -> Option<&Arc<HttpPool>> {
        match self.route().pool {
            PoolRef::Http(i) => self.table.pools.get(i),
            PoolRef::Sessions => None,
        }
    }

    /// The pool name (metric label).
    pub fn pool_name(&self) -> &str {
        self.http_pool().map_or(SESSIONS_POOL, |p| p.name.as_str())
    }
}

/// The request's host without its port: the URI authority (HTTP/2 `:authority`, absolute
/// form) or the `Host` header.
pub fn request_host(req: &pingora::http::RequestHeader) -> Option<&str> {
    req.uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(strip_port)
        })
        .filter(|h| !h.is_empty())
}
