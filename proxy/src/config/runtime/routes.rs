//! The validated route table of a config: `routes:` (matchers, pools, auth, the route
//! policies of [`crate::policy`]) and the `http` pools of `pools:` with their live state
//! ([`super::pools`]). The per-request side (matching, the pools' picks) is in
//! [`crate::routes`] and [`crate::pools`].

use std::sync::Arc;

use super::matcher::{self, Matcher};
use super::pools::HttpPool;

/// The name of the session pool in `routes[].pool`.
pub const SESSIONS_POOL: &str = "sessions";

/// Authentication of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// The edge's `auth:` applies (default).
    #[default]
    Required,
    /// Presented credentials are checked as with `Required`; a request without any is
    /// anonymous (`http` pools only).
    Optional,
    /// No authentication on this route (`http` pools only).
    Off,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
            AuthMode::Off => "off",
        }
    }

    /// Whether a request must authenticate, given whether it presented credentials.
    pub fn must_authenticate(self, presented: bool) -> bool {
        match self {
            AuthMode::Required => true,
            AuthMode::Optional => presented,
            AuthMode::Off => false,
        }
    }
}

/// Where a route sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRef {
    /// The HotPlex session pool.
    Sessions,
    /// `pools[i]` of the table.
    Http(usize),
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Matcher,
    pub pool: PoolRef,
    pub auth: AuthMode,
    /// `routes[].forward_credentials` (only with [`AuthMode::Off`]).
    pub forward_credentials: bool,
    /// IP rules and redirect (see [`crate::policy`]); all `None` by default.
    pub policy: crate::policy::RoutePolicy,
    // --- per-route policies: response compression (issue #19, pol-comp) ---
    /// `routes[].compression`; `None`: responses pass as sent.
    pub compression: Option<crate::policy::compression::Compression>,
    /// `routes[].timeouts` (each `None`: the global one).
    pub timeouts: crate::policy::route_limits::RouteTimeouts,
    /// `routes[].max_body_bytes` (`None`: `limits.max_body_bytes`).
    pub max_body_bytes: Option<u64>,
    /// `routes[].error_pages` (empty: JSON answers).
    pub error_pages: crate::policy::error_pages::ErrorPages,
    // --- end pol-comp ---
}

/// The routes and `http` pools of one config.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// `false`: no `routes:` in the config (everything to the session pool).
    pub configured: bool,
    /// Some route has `hosts` (see [`RouteTable::uses_hosts`]), set at validation.
    pub host_routes: bool,
    pub routes: Vec<Route>,
    pub pools: Vec<Arc<HttpPool>>,
}

impl RouteTable {
    /// The names of the routes to `http` pools: their route labels (`auth.keys[].routes`,
    /// `limits.routes`, metrics), besides the session API's.
    pub fn http_route_names(&self) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|r| matches!(r.pool, PoolRef::Http(_)))
            .map(|r| r.name.as_str())
            .collect()
    }
}

impl RouteTable {
    /// Index of the first route matching the request.
    pub fn find(&self, host: Option<&str>, method: &http::Method, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.matcher.matches(host, method, path))
    }

    /// The routes that serve anonymous clients (`auth: off` or `optional`), each as its
    /// index, a description of what it matches and its mode (the reload downgrade check
    /// compares them).
    pub fn public_routes(&self) -> Vec<(usize, String, AuthMode)> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.auth != AuthMode::Required)
            .map(|(i, r)| {
                let m = &r.matcher;
                let methods: Vec<&str> = m.methods.iter().map(|x| x.as_str()).collect();
                let pool = match r.pool {
                    PoolRef::Sessions => SESSIONS_POOL,
                    PoolRef::Http(p) => self.pools.get(p).map_or("?", |p| p.name.as_str()),
                };
                (
                    i,
                    format!(
                        "{} {:?} {:?} {methods:?} -> {pool}",
                        r.name, m.hosts, m.path
                    ),
                    r.auth,
                )
            })
            .collect()
    }

    /// Whether any route matches on hosts (otherwise the host is never looked up).
    pub fn uses_hosts(&self) -> bool {
        self.routes.iter().any(|r| !r.matcher.hosts.is_empty())
    }

    /// Takes over the live state of `old`'s pools of the same name (same addresses).
    /// Called on a freshly built table, before it is shared.
    pub fn adopt(&mut self, old: &RouteTable) {
        for p in &mut self.pools {
            let Some(o) = old.pools.iter().find(|o| o.name == p.name) else {
                continue;
            };
            if let Some(p) = Arc::get_mut(p) {
                p.adopt(o);
            }
        }
    }

    /// Lines for `hotplex-proxy check`.
    pub fn summary(&self) -> String {
        if !self.configured {
            return "routes: none (every request to the session pool)".into();
        }
        let mut s = String::from("routes (first match wins):");
        for r in &self.routes {
            let pool = match r.pool {
                PoolRef::Sessions => SESSIONS_POOL,
                PoolRef::Http(i) => self.pools.get(i).map_or("?", |p| p.name.as_str()),
            };
            let hosts: Vec<String> = r
                .matcher
                .hosts
                .iter()
                .map(|h| match h {
                    matcher::HostPattern::Exact(n) => n.clone(),
                    matcher::HostPattern::Suffix(s) => format!("*{s}"),
                })
                .collect();
            let kind = match r.matcher.path {
                matcher::PathPattern::Prefix(_) => "prefix",
                matcher::PathPattern::Exact(_) => "exact",
            };
            s.push_str(&format!(
                "\n    {}: host {} path {} ({kind}){} -> {pool} (auth {})",
                r.name,
                if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join("|")
                },
                r.matcher.path.as_str(),
                if r.matcher.methods.is_empty() {
                    String::new()
                } else {
                    let m: Vec<&str> = r.matcher.methods.iter().map(|m| m.as_str()).collect();
                    format!(" methods {}", m.join("|"))
                },
                r.auth.as_str()
            ));
            s.push_str(&r.policy.summary());
        }
        for p in &self.pools {
            let members = p.members();
            let mut ups: Vec<&str> = members.iter().map(|u| u.id.as_str()).collect();
            let dns = p
                .dns
                .as_ref()
                .map(|d| format!("dns {} {}", d.record.as_str(), d.name));
            ups.extend(dns.as_deref());
            s.push_str(&format!(
                "\n  pool {}: {} [{}]{}",
                p.name,
                p.balance.as_str(),
                ups.join(", "),
                p.health
                    .as_ref()
                    .map(|h| format!(", health GET {} every {:?}", h.path, h.interval))
                    .unwrap_or_else(|| ", no health check".into())
            ));
        }
        s
    }
}
