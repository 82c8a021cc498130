//! `PoolMetrics`: routes and `http` pools (`crate::pools`, `crate::proxy::routes`).

use hotplex_common::names::routes as n;
use prometheus::{IntCounterVec, IntGaugeVec, Registry as PromRegistry};

use super::{counter_vec, int_gauge_vec};

/// The route and pool metrics (label values come from the config only).
pub struct PoolMetrics {
    /// `hotplex_proxy_route_requests_total{route,pool,status}`.
    pub route_requests: IntCounterVec,
    /// `hotplex_proxy_pool_upstream_healthy{pool,upstream}`.
    pub upstream_healthy: IntGaugeVec,
    /// `hotplex_proxy_pool_upstream_ejections_total{pool,upstream}`.
    pub ejections: IntCounterVec,
}

impl PoolMetrics {
    /// Builds and registers the metrics in `r`. Panics only on a bad constant name.
    pub fn new(r: &PromRegistry) -> PoolMetrics {
        PoolMetrics {
            route_requests: counter_vec(
                r,
                n::ROUTE_REQUESTS,
                "Requests matched by a configured route",
                &["route", "pool", "status"],
            ),
            upstream_healthy: int_gauge_vec(
                r,
                n::POOL_UPSTREAM_HEALTHY,
                "1 when an http pool upstream may receive requests (health up, not ejected)",
                &["pool", "upstream"],
            ),
            ejections: counter_vec(
                r,
                n::POOL_UPSTREAM_EJECTIONS,
                "Passive ejections of http pool upstreams",
                &["pool", "upstream"],
            ),
        }
    }
}
