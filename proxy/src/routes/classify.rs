//! The route table's match of one request: the session pool, an `http` pool (with the
//! request's [`HttpState`]) or no route. Here, not in `pools::http`, so that `pools` does
//! not import `routes` (routes sit above pools: a table owns its pools). Its unit tests are
//! in `config::routes` (they build tables from config text; `routes` does not import `config`).

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
