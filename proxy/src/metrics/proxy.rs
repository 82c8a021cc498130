//! `ProxyMetrics`: the request, routing, worker, rejection, auth, rate-limit and config
//! metrics, and the registry (`component="proxy"`) every other proxy metric struct
//! registers in.

use std::time::{SystemTime, UNIX_EPOCH};

use hotplex_common::names::{self, config as cfgn, proxy as n, shared};
use prometheus::{
    Gauge, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry as PromRegistry,
};

use super::{counter_vec, gauge, gauge_vec, histogram_vec, int_gauge, int_gauge_vec};

/// `kind` values of `hotplex_proxy_upstream_errors_total` (see `proxy::error_kind`).
pub const UPSTREAM_ERROR_KINDS: [&str; 4] = ["connect", "timeout", "io", "http"];

// Known label values, zero-initialised at start so every dashboard panel and alert has a
// series on a fresh process (a counter that appears only at its first event reads as
// "no data" and breaks `absent()`/`rate()`). A new label value at a call site belongs
// in the slice of its metric here.

/// `reason` values of `hotplex_proxy_rejections_total`: the `reason` of every
/// `EdgeError` (`errors/`, whose unit tests check this list).
pub const REJECTION_REASONS: &[&str] = &[
    "auth",
    "rate_limit",
    "rate_limit_store",
    "too_large",
    "bad_request",
    "malformed_head",
    "no_capacity",
    "worker_unavailable",
    "worker_gone",
    "bad_gateway",
    "upstream_timeout",
    "internal",
    "error",
    "undeclared_route",
    "no_route",
    "no_healthy_upstream",
    "session_not_found",
    "auth_rate_limit",
    "body_timeout",
    "payload_too_large",
    "ip_denied",
];

/// `kind` values of `hotplex_proxy_stream_errors_total`.
pub const STREAM_ERROR_KINDS: &[&str] = &["websocket", "stream"];

/// `reason` of `hotplex_proxy_auth_failures_total` for attempts refused by the
/// failed-authentication budget (`security.rs`).
pub const AUTH_RATE_LIMITED: &str = "rate_limited";

/// `reason` values of `hotplex_proxy_auth_failures_total` (`security.rs`, `jwt::JwtError`).
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    AUTH_RATE_LIMITED,
    "missing_key",
    "invalid_key",
    "forbidden_route",
    "jwt_malformed",
    "jwt_algorithm",
    "jwt_signature",
    "jwt_expired",
    "jwt_not_yet_valid",
    "jwt_issuer",
    "jwt_audience",
    "jwt_missing_claim",
    "jwt_tenant",
];

/// `route` labels of the proxy's request metrics (`RequestKind::label`), with the method
/// and status of the route's usual answer: the `(route, method, status)` series of
/// `hotplex_request_duration_seconds` and `(route, status)` of
/// `hotplex_proxy_requests_total` that exist at 0 from the start.
pub const ROUTE_ANSWERS: &[(&str, &str, &str)] = &[
    ("create_session", "POST", "201"),
    ("list_sessions", "GET", "200"),
    ("session", "GET", "200"),
    ("messages", "POST", "200"),
    ("websocket", "GET", "101"),
    ("health", "GET", "200"),
];

/// `key` values of `hotplex_proxy_rate_limited_total` known before any request: `-`
/// (no tenant: auth off or before auth). Tenants (API-key names) appear at their first
/// limited request.
pub const RATE_LIMITED_KEYS: &[&str] = &["-"];

/// `route` values of `hotplex_proxy_rate_limited_total` (`RequestKind::label`).
pub const RATE_LIMITED_ROUTES: &[&str] = crate::config::security::ROUTE_LABELS;

/// `source` values of `hotplex_proxy_routing_decisions_total`.
pub const ROUTING_SOURCES: &[&str] = &["path", "query", "header", "cookie", "none"];

/// `outcome` values of `hotplex_proxy_routing_decisions_total`.
pub const ROUTING_OUTCOMES: &[&str] = &[
    "pinned",
    "hashed",
    "placed",
    "gone",
    "unavailable",
    "no_capacity",
    "invalid",
];

/// `outcome` values of `hotplex_proxy_ratelimit_store_failures_total`.
pub const RATELIMIT_STORE_OUTCOMES: &[&str] = &["fail_open", "fail_closed"];

/// `version` values of `hotplex_proxy_tls_handshakes_total` (OpenSSL's version strings;
/// the proxy accepts TLS 1.2 and 1.3).
pub const TLS_VERSIONS: &[&str] = &["TLSv1.2", "TLSv1.3"];

/// The proxy's metrics.
pub struct ProxyMetrics {
    pub registry: PromRegistry,
    pub request_duration: HistogramVec,
    pub requests_total: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub worker_sessions: IntGaugeVec,
    pub worker_capacity: IntGaugeVec,
    pub worker_healthy: IntGaugeVec,
    pub worker_draining: IntGaugeVec,
    pub worker_ejections: IntCounterVec,
    pub sessions_placed: IntCounterVec,
    pub sessions_replaced: IntCounterVec,
    pub routing_decisions: IntCounterVec,
    pub websockets_active: IntGauge,
    pub requests_in_flight: IntGauge,
    pub rejections: IntCounterVec,
    /// `hotplex_proxy_stream_errors_total{kind}`: a tunnel or stream broken after its head.
    pub stream_errors: IntCounterVec,
    /// `hotplex_proxy_auth_failures_total{reason}` (see [`crate::security`]).
    pub auth_failures: IntCounterVec,
    /// `hotplex_proxy_rate_limited_total{key,route}`.
    pub rate_limited: IntCounterVec,
    /// `hotplex_proxy_ratelimit_store_up` (see [`crate::limit_store`]).
    pub ratelimit_store_up: IntGauge,
    /// `hotplex_proxy_ratelimit_store_failures_total{outcome}`.
    pub ratelimit_store_failures: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_last_success: Gauge,
    pub config_active: GaugeVec,
}

impl ProxyMetrics {
    /// Builds and registers everything. Panics only on a programming error (bad constant name).
    #[allow(clippy::new_without_default)]
    pub fn new() -> ProxyMetrics {
        let r = hotplex_common::metrics::component_registry(names::COMPONENT_PROXY);
        let m = ProxyMetrics {
            request_duration: histogram_vec(
                &r,
                shared::REQUEST_DURATION_SECONDS,
                "HTTP request duration (streams: until the response head)",
                &["route", "method", "status"],
            ),
            requests_total: counter_vec(
                &r,
                n::REQUESTS_TOTAL,
                "Downstream requests answered",
                &["route", "status"],
            ),
            upstream_duration: histogram_vec(
                &r,
                n::UPSTREAM_DURATION_SECONDS,
                "Time to connect to a worker and get the response head",
                &["worker"],
            ),
            upstream_errors: counter_vec(
                &r,
                n::UPSTREAM_ERRORS,
                "Upstream failures",
                &["worker", "kind"],
            ),
            worker_sessions: int_gauge_vec(
                &r,
                n::WORKER_SESSIONS,
                "Sessions per worker as the proxy knows them",
                &["worker"],
            ),
            worker_capacity: int_gauge_vec(
                &r,
                n::WORKER_CAPACITY,
                "Per-worker capacity",
                &["worker"],
            ),
            worker_healthy: int_gauge_vec(
                &r,
                n::WORKER_HEALTHY,
                "1 if the worker is healthy and not ejected",
                &["worker"],
            ),
            worker_draining: int_gauge_vec(
                &r,
                n::WORKER_DRAINING,
                "1 if the worker is draining",
                &["worker"],
            ),
            worker_ejections: counter_vec(
                &r,
                n::WORKER_EJECTIONS,
                "Passive ejections",
                &["worker"],
            ),
            sessions_placed: counter_vec(
                &r,
                n::SESSIONS_PLACED,
                "New sessions placed",
                &["worker"],
            ),
            sessions_replaced: counter_vec(
                &r,
                n::SESSIONS_REPLACED,
                "New sessions a worker refused with 503, placed on another",
                &["worker"],
            ),
            routing_decisions: counter_vec(
                &r,
                n::ROUTING_DECISIONS,
                "Routing decisions",
                &["source", "outcome"],
            ),
            rejections: counter_vec(
                &r,
                n::REJECTIONS,
                "Requests rejected by the proxy itself",
                &["reason"],
            ),
            auth_failures: counter_vec(
                &r,
                n::AUTH_FAILURES,
                "Authentication failures",
                &["reason"],
            ),
            stream_errors: counter_vec(
                &r,
                n::STREAM_ERRORS,
                "Streams broken after the response head (WebSocket tunnels, SSE)",
                &["kind"],
            ),
            rate_limited: counter_vec(
                &r,
                n::RATE_LIMITED,
                "Requests refused by a rate limit",
                &["key", "route"],
            ),
            ratelimit_store_failures: counter_vec(
                &r,
                n::RATELIMIT_STORE_FAILURES,
                "Rate-limit store failures",
                &["outcome"],
            ),
            ratelimit_store_up: int_gauge(
                &r,
                n::RATELIMIT_STORE_UP,
                "1 while the rate-limit store answers (or none is configured)",
            ),
            config_reloads: counter_vec(
                &r,
                cfgn::RELOADS_TOTAL,
                "Config reload attempts",
                &["result"],
            ),
            websockets_active: int_gauge(
                &r,
                n::WEBSOCKETS_ACTIVE,
                "WebSocket connections currently proxied",
            ),
            requests_in_flight: int_gauge(
                &r,
                n::REQUESTS_IN_FLIGHT,
                "Downstream requests in flight",
            ),
            config_last_success: gauge(
                &r,
                cfgn::LAST_RELOAD_SUCCESS_TIMESTAMP,
                "Unix time of the last successful config (re)load",
            ),
            config_active: gauge_vec(
                &r,
                cfgn::ACTIVE_HASH_INFO,
                "Active config, label hash",
                &["hash"],
            ),
            registry: r,
        };
        m.ratelimit_store_up.set(1);
        for result in ["success", "failure"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m.zero_init();
        m
    }

    /// Creates the series of every known label value (at 0), see the slices above.
    fn zero_init(&self) {
        for k in STREAM_ERROR_KINDS {
            self.stream_errors.with_label_values(&[k]);
        }
        for r in REJECTION_REASONS {
            self.rejections.with_label_values(&[r]);
        }
        for r in AUTH_FAILURE_REASONS {
            self.auth_failures.with_label_values(&[r]);
        }
        for (route, method, status) in ROUTE_ANSWERS {
            self.request_duration
                .with_label_values(&[route, method, status]);
            self.requests_total.with_label_values(&[route, status]);
        }
        for key in RATE_LIMITED_KEYS {
            for route in RATE_LIMITED_ROUTES {
                self.rate_limited.with_label_values(&[key, route]);
            }
        }
        for source in ROUTING_SOURCES {
            for outcome in ROUTING_OUTCOMES {
                self.routing_decisions.with_label_values(&[source, outcome]);
            }
        }
        for o in RATELIMIT_STORE_OUTCOMES {
            self.ratelimit_store_failures.with_label_values(&[o]);
        }
    }

    /// Records a successful (initial) config load.
    pub fn config_loaded(&self, hash: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.config_last_success.set(now);
        self.config_active.reset();
        self.config_active.with_label_values(&[hash]).set(1.0);
    }

    /// Drops every per-worker series (after a reload removed workers); the next refresh
    /// re-creates those of the configured workers.
    pub fn forget_workers(&self) {
        self.worker_sessions.reset();
        self.worker_capacity.reset();
        self.worker_healthy.reset();
        self.worker_draining.reset();
    }
}
