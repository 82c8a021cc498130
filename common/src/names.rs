//! Every Prometheus metric name of HotPlex, defined once.
//!
//! The shared family (`hotplex_*`, without a component prefix) is what the deployment
//! guide's dashboards and alerts use; both binaries register it, and the
//! [`COMPONENT_LABEL`] const label (`worker` or `proxy`) tells them apart. Proxy-only
//! metrics live in the `hotplex_proxy_*` family, config-reload metrics in `hotplex_config_*`.
//!
//! Grafana dashboards and alert rules in `conf/` may only name metrics listed here;
//! the end-to-end tests check that each one appears in a live `/metrics`.

/// Const label on every metric, naming the binary that exports it.
pub const COMPONENT_LABEL: &str = "component";
/// [`COMPONENT_LABEL`] value of the session worker.
pub const COMPONENT_WORKER: &str = "worker";
/// [`COMPONENT_LABEL`] value of the edge proxy.
pub const COMPONENT_PROXY: &str = "proxy";

/// Shared family: sessions and turns (worker side; the proxy exports the request histogram).
pub mod shared {
    /// Gauge: sessions currently alive (child process running) on a worker.
    pub const SESSIONS_ACTIVE: &str = "hotplex_sessions_active";
    /// Counter: sessions ever created.
    pub const SESSIONS_TOTAL: &str = "hotplex_sessions_total";
    /// Counter: session-level errors (child crash, garbage output, timeouts, failed start),
    /// label `reason`.
    pub const SESSIONS_ERRORS: &str = "hotplex_sessions_errors";
    /// Counter: tool invocations reported by agents (`tool_use` events), label `tool`.
    pub const TOOLS_INVOKED: &str = "hotplex_tools_invoked";
    /// Histogram, seconds: HTTP request duration (for streams: until the response head),
    /// labels `route`, `method`, `status`.
    pub const REQUEST_DURATION_SECONDS: &str = "hotplex_request_duration_seconds";
}

/// Worker-only metrics.
pub mod worker {
    /// Gauge: the configured `max_sessions` of the pool.
    pub const SESSIONS_MAX: &str = "hotplex_worker_sessions_max";
    /// Counter: turns (execute requests) run, label `outcome` (`completed`, `stopped`, `error`, `timeout`).
    pub const TURNS_TOTAL: &str = "hotplex_worker_turns_total";
    /// Histogram, seconds: duration of one turn, from prompt sent to completion.
    pub const TURN_DURATION_SECONDS: &str = "hotplex_worker_turn_duration_seconds";
    /// Counter: sessions closed, label `reason` (`deleted`, `idle`, `crashed`, `drain`, `shutdown`).
    pub const SESSIONS_CLOSED: &str = "hotplex_worker_sessions_closed_total";
    /// Counter: requests refused because the pool was full.
    pub const POOL_REJECTIONS: &str = "hotplex_worker_pool_rejections_total";
    /// Gauge: 1 while the worker drains (no new sessions), else 0.
    pub const DRAINING: &str = "hotplex_worker_draining";
    /// Gauge: open WebSocket connections.
    pub const WEBSOCKETS_ACTIVE: &str = "hotplex_worker_websockets_active";
    /// Counter: malformed client input (bad JSON frames, bad bodies), label `kind`.
    pub const BAD_REQUESTS: &str = "hotplex_worker_bad_requests_total";
    /// Counter: requests and WebSocket frames the worker refused for trust reasons, label
    /// `reason` (`untrusted_header`, `admin_denied`, `cross_tenant`, `session_elsewhere`,
    /// `session_not_routed`).
    pub const REFUSED_TOTAL: &str = "hotplex_worker_refused_total";
    /// Counter: tokens used by agent turns (from each completed turn's `usage`), labels
    /// `tenant` (bounded: the first 100 tenants, then `_other`; `_anonymous` without one)
    /// and `kind` (`input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    /// `cache_creation_input_tokens`).
    pub const AGENT_TOKENS: &str = "hotplex_worker_agent_tokens_total";
    /// Counter, US dollars: cost of agent turns as the agent reports it (Claude Code's
    /// `result`), label `tenant` (bounded as for [`AGENT_TOKENS`]).
    pub const AGENT_COST_USD: &str = "hotplex_worker_agent_cost_usd_total";
    /// Counter: session creations and turns refused by a tenant quota, label `code`
    /// (`tenant_session_quota`, `tenant_session_rate`, `tenant_turn_rate`,
    /// `quota_store_unavailable`); never the tenant.
    pub const QUOTA_REFUSALS: &str = "hotplex_worker_quota_refusals_total";
    /// Counter: failed or timed-out calls to the shared quota store (`quota_store`).
    pub const QUOTA_STORE_ERRORS: &str = "hotplex_worker_quota_store_errors_total";
}

/// Every metric family the worker exports (the shared family plus [`worker`]): what a
/// worker's `/metrics` must show, checked by its unit and end-to-end tests.
pub const WORKER_EXPORTED: &[&str] = &[
    shared::SESSIONS_ACTIVE,
    shared::SESSIONS_TOTAL,
    shared::SESSIONS_ERRORS,
    shared::TOOLS_INVOKED,
    shared::REQUEST_DURATION_SECONDS,
    worker::SESSIONS_MAX,
    worker::TURNS_TOTAL,
    worker::TURN_DURATION_SECONDS,
    worker::SESSIONS_CLOSED,
    worker::POOL_REJECTIONS,
    worker::DRAINING,
    worker::WEBSOCKETS_ACTIVE,
    worker::BAD_REQUESTS,
    worker::REFUSED_TOTAL,
    worker::AGENT_TOKENS,
    worker::AGENT_COST_USD,
    worker::QUOTA_REFUSALS,
    worker::QUOTA_STORE_ERRORS,
];

/// Proxy-only metrics (`hotplex_proxy_*`).
pub mod proxy {
    /// Counter: downstream requests answered, labels `route`, `status`.
    pub const REQUESTS_TOTAL: &str = "hotplex_proxy_requests_total";
    /// Histogram, seconds: time to connect to and get the response head from a worker, label `worker`.
    pub const UPSTREAM_DURATION_SECONDS: &str = "hotplex_proxy_upstream_duration_seconds";
    /// Counter: upstream failures, labels `worker`, `kind` (`connect`, `timeout`, `io`, `http`).
    pub const UPSTREAM_ERRORS: &str = "hotplex_proxy_upstream_errors_total";
    /// Gauge: sessions per worker as the proxy knows them (last health poll + own placements),
    /// label `worker`.
    pub const WORKER_SESSIONS: &str = "hotplex_proxy_worker_sessions";
    /// Gauge: per-worker capacity (`max_sessions`), label `worker`.
    pub const WORKER_CAPACITY: &str = "hotplex_proxy_worker_capacity";
    /// Gauge: 1 if the worker is healthy (active checks pass and not ejected), label `worker`.
    pub const WORKER_HEALTHY: &str = "hotplex_proxy_worker_healthy";
    /// Gauge: 1 if the worker is draining (no new sessions), label `worker`.
    pub const WORKER_DRAINING: &str = "hotplex_proxy_worker_draining";
    /// Counter: passive ejections after connect errors or timeouts, label `worker`.
    pub const WORKER_EJECTIONS: &str = "hotplex_proxy_worker_ejections_total";
    /// Counter: new sessions placed, label `worker`.
    pub const SESSIONS_PLACED: &str = "hotplex_proxy_sessions_placed_total";
    /// Counter: new sessions a worker refused with 503 (full or draining; this proxy's
    /// estimate was stale) and that were placed on another worker, label `worker` (the one
    /// that refused).
    pub const SESSIONS_REPLACED: &str = "hotplex_proxy_sessions_replaced_total";
    /// Counter: routing decisions, labels `source` (`path`, `query`, `header`, `cookie`, `none`)
    /// and `outcome` (`pinned`, `hashed`, `placed`, `gone`, `unavailable`, `no_capacity`, `invalid`).
    pub const ROUTING_DECISIONS: &str = "hotplex_proxy_routing_decisions_total";
    /// Gauge: WebSocket connections currently proxied.
    pub const WEBSOCKETS_ACTIVE: &str = "hotplex_proxy_websockets_active";
    /// Gauge: downstream connections/requests in flight.
    pub const REQUESTS_IN_FLIGHT: &str = "hotplex_proxy_requests_in_flight";
    /// Counter: requests rejected by the proxy itself, label `reason`
    /// (`auth`, `rate_limit`, `bad_request`, `too_large`, `no_capacity`, ...).
    pub const REJECTIONS: &str = "hotplex_proxy_rejections_total";
    /// Counter: streams broken after their response head was sent (a WebSocket tunnel or an
    /// SSE/streamed response the worker or the client reset), label `kind`
    /// (`websocket`, `stream`): not a rejection, the client already had its 101 or 200.
    pub const STREAM_ERRORS: &str = "hotplex_proxy_stream_errors_total";
    /// Counter: requests limited by a rate limit, labels `key`, `route`.
    pub const RATE_LIMITED: &str = "hotplex_proxy_rate_limited_total";
    /// Counter: authentication failures at the proxy, label `reason`
    /// (`missing_key`, `invalid_key`, `forbidden_route`).
    pub const AUTH_FAILURES: &str = "hotplex_proxy_auth_failures_total";
    /// Gauge: 1 while the shared rate-limit store (Redis) answers, 0 when it does not
    /// (also 1 when no store is configured).
    pub const RATELIMIT_STORE_UP: &str = "hotplex_proxy_ratelimit_store_up";
    /// Counter: rate-limit checks the store could not answer, label `outcome`
    /// (`fail_open`: admitted, `fail_closed`: refused with 503).
    pub const RATELIMIT_STORE_FAILURES: &str = "hotplex_proxy_ratelimit_store_failures_total";
    /// Counter: completed TLS handshakes, label `version`.
    pub const TLS_HANDSHAKES: &str = "hotplex_proxy_tls_handshakes_total";
    /// Counter: TLS certificate reloads (config reload or file change), label `result`
    /// (`success`, `failure`).
    pub const TLS_CERT_RELOADS: &str = "hotplex_proxy_tls_cert_reloads_total";
    /// Gauge: `notAfter` of each served certificate as a Unix time, label `name` (the
    /// config label, e.g. `tls.certificates[0]`, or `dev`).
    pub const TLS_CERT_EXPIRY: &str = "hotplex_proxy_tls_cert_expiry_timestamp_seconds";
    // -- Connection limits and slowloris protection (issue #5; proxy::conn_guard) --
    /// Gauge: open downstream connections, all listeners (counted once the TLS handshake,
    /// if any, is done).
    pub const CONNECTIONS_ACTIVE: &str = "hotplex_proxy_connections_active";
    /// Counter: connections refused on arrival, label `reason` (`max_connections`,
    /// `max_connections_per_ip`).
    pub const CONNECTIONS_REFUSED: &str = "hotplex_proxy_connections_refused_total";
    /// Counter: connections closed because a request head was not complete within
    /// `limits.header_read_timeout` (slowloris).
    pub const HEADER_READ_TIMEOUTS: &str = "hotplex_proxy_header_read_timeouts_total";
}

// --- DNS worker discovery (issue #8) -------------------------------------------------
/// DNS worker discovery metrics (proxy; `discovery.dns` in the config).
pub mod discovery {
    /// Counter: DNS resolution rounds, label `result` (`success`; `failure`: the name server
    /// did not answer or answered an error; `empty`: no record / NXDOMAIN). On `failure` and
    /// `empty` the last good worker set is kept.
    pub const RESOLUTIONS: &str = "hotplex_proxy_discovery_resolutions_total";
    /// Gauge: workers currently known from DNS (identified by their `node_id`).
    pub const WORKERS: &str = "hotplex_proxy_discovery_workers";
    /// Gauge: 1 while the last resolution failed and the last good set is kept, else 0.
    pub const STALE: &str = "hotplex_proxy_discovery_stale";
    /// Gauge: Unix time of the last successful resolution, seconds.
    pub const LAST_SUCCESS_TIMESTAMP: &str =
        "hotplex_proxy_discovery_last_success_timestamp_seconds";
    /// Counter: discovered addresses whose worker id could not be established, label
    /// `reason` (`unreachable`, `invalid_id`, `duplicate_id`, `unauthenticated`: no valid
    /// identity proof or certificate, `identity_conflict`: the id of a worker still reachable
    /// at its known address).
    pub const IDENTIFY_FAILURES: &str = "hotplex_proxy_discovery_identify_failures_total";
    /// Counter: discovered records dropped by `discovery.dns.max_records` (rounds whose
    /// answer had more records than the cap add the excess).
    pub const RECORDS_CAPPED: &str = "hotplex_proxy_discovery_records_capped_total";
}
// --- end DNS worker discovery ----------------------------------------------------------

// --- Worker identity (issue #24) --------------------------------------------------------
/// Worker identity metrics (proxy).
pub mod identity {
    /// Counter: worker identity checks that failed, label `reason`: `missing_proof` (no
    /// `X-Hotplex-Identity` on an answer while `worker_auth.key` is set), `bad_proof` (a
    /// proof not made with the key), `wrong_node` (the answer names another node id than
    /// the one expected at that address), `conflict` (a discovered address claims the id
    /// of a worker still reachable at its known address), `certificate` (the worker's TLS
    /// certificate does not name its node id), `address_mismatch` (a valid proof made for
    /// another address than the one the proxy dialled: a relayed answer), `old_proof` (a
    /// proof of the v1 format, which binds no address: a worker older than the proxy).
    pub const FAILURES: &str = "hotplex_proxy_worker_identity_failures_total";
}
// --- end worker identity ----------------------------------------------------------------

// --- routes and http pools ----------------------------------------------------------------
/// Routes and `http` pools of the proxy (`routes:`, `pools:`). Label values come from the
/// config only (route names, pool names, upstream addresses): bounded by the config.
pub mod routes {
    /// Counter: requests matched by a configured route, labels `route`, `pool`, `status`
    /// (only with a `routes:` list; the session API's own metrics are unchanged).
    pub const ROUTE_REQUESTS: &str = "hotplex_proxy_route_requests_total";
    /// Gauge: 1 when an `http` pool upstream may receive requests (active health check up
    /// and not passively ejected), else 0, labels `pool`, `upstream`.
    pub const POOL_UPSTREAM_HEALTHY: &str = "hotplex_proxy_pool_upstream_healthy";
    /// Counter: passive ejections of an `http` pool upstream, labels `pool`, `upstream`.
    pub const POOL_UPSTREAM_EJECTIONS: &str = "hotplex_proxy_pool_upstream_ejections_total";
}
// --- end routes and http pools ------------------------------------------------------------

/// Config reload metrics (proxy).
pub mod config {
    /// Counter: reload attempts, label `result` (`success`, `failure`).
    pub const RELOADS_TOTAL: &str = "hotplex_config_reloads_total";
    /// Gauge: Unix time of the last successful (re)load, seconds.
    pub const LAST_RELOAD_SUCCESS_TIMESTAMP: &str =
        "hotplex_config_last_reload_success_timestamp_seconds";
    /// Gauge set to 1, label `hash`: the SHA-256 (first 16 hex chars) of the active config.
    pub const ACTIVE_HASH_INFO: &str = "hotplex_config_active_info";
}

/// Every metric family the proxy exports: the shared request histogram plus [`proxy`],
/// [`discovery`], [`identity`], [`routes`] and [`config`]. The proxy's registration helper
/// (`hotplex_proxy::metrics`) refuses any other name, and its unit test checks that each
/// one is registered exactly once.
pub const PROXY_EXPORTED: &[&str] = &[
    shared::REQUEST_DURATION_SECONDS,
    proxy::REQUESTS_TOTAL,
    proxy::UPSTREAM_DURATION_SECONDS,
    proxy::UPSTREAM_ERRORS,
    proxy::WORKER_SESSIONS,
    proxy::WORKER_CAPACITY,
    proxy::WORKER_HEALTHY,
    proxy::WORKER_DRAINING,
    proxy::WORKER_EJECTIONS,
    proxy::SESSIONS_PLACED,
    proxy::SESSIONS_REPLACED,
    proxy::ROUTING_DECISIONS,
    proxy::WEBSOCKETS_ACTIVE,
    proxy::REQUESTS_IN_FLIGHT,
    proxy::REJECTIONS,
    proxy::STREAM_ERRORS,
    proxy::RATE_LIMITED,
    proxy::AUTH_FAILURES,
    proxy::RATELIMIT_STORE_UP,
    proxy::RATELIMIT_STORE_FAILURES,
    proxy::TLS_HANDSHAKES,
    proxy::TLS_CERT_RELOADS,
    proxy::TLS_CERT_EXPIRY,
    proxy::CONNECTIONS_ACTIVE,
    proxy::CONNECTIONS_REFUSED,
    proxy::HEADER_READ_TIMEOUTS,
    discovery::RESOLUTIONS,
    discovery::WORKERS,
    discovery::STALE,
    discovery::LAST_SUCCESS_TIMESTAMP,
    discovery::IDENTIFY_FAILURES,
    discovery::RECORDS_CAPPED,
    identity::FAILURES,
    routes::ROUTE_REQUESTS,
    routes::POOL_UPSTREAM_HEALTHY,
    routes::POOL_UPSTREAM_EJECTIONS,
    config::RELOADS_TOTAL,
    config::LAST_RELOAD_SUCCESS_TIMESTAMP,
    config::ACTIVE_HASH_INFO,
];

/// Histogram buckets (seconds) for request and upstream latencies: 0.5 ms to 60 s, so both
/// fast API calls and long agent turns land in a meaningful bucket.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every metric name defined in this file (the string of each `pub const X: &str`
    /// whose value starts with `hotplex_`), read from the source itself so a new
    /// constant cannot be forgotten by the lists below.
    fn defined() -> Vec<String> {
        let src = include_str!("names.rs");
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find(": &str =") {
            rest = &rest[i + ": &str =".len()..];
            let Some(open) = rest.find('"') else { break };
            let after = &rest[open + 1..];
            let Some(close) = after.find('"') else { break };
            let value = &after[..close];
            if value.starts_with("hotplex_") {
                out.push(value.to_string());
            }
            rest = &after[close + 1..];
        }
        out
    }

    #[test]
    fn every_name_is_exported_by_a_component() {
        let names = defined();
        assert!(names.len() > 40, "parsed too few names: {names:?}");
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(
            distinct.len(),
            names.len(),
            "a metric name is defined twice"
        );
        for n in &names {
            let proxy = PROXY_EXPORTED.contains(&n.as_str());
            let worker = WORKER_EXPORTED.contains(&n.as_str());
            assert!(proxy || worker, "{n}: in no *_EXPORTED list");
            if n.starts_with("hotplex_proxy_") || n.starts_with("hotplex_config_") {
                assert!(proxy && !worker, "{n}: a proxy name");
            }
            if n.starts_with("hotplex_worker_") {
                assert!(worker && !proxy, "{n}: a worker name");
            }
        }
        for list in [PROXY_EXPORTED, WORKER_EXPORTED] {
            let set: HashSet<&&str> = list.iter().collect();
            assert_eq!(set.len(), list.len(), "a name is listed twice");
            for n in list {
                assert!(
                    names.iter().any(|d| d == n),
                    "{n}: listed, not defined here"
                );
            }
        }
    }
}
