//! The worker's Prometheus metrics, with handles resolved once at startup.
//!
//! Names come from [`hotplex_common::names`]; every metric carries `component="worker"`.

use hotplex_common::metrics::{component_registry, render};
use hotplex_common::names::{shared, worker, COMPONENT_WORKER, LATENCY_BUCKETS};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Why a session-level error happened (`reason` label of `hotplex_sessions_errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    /// The agent process exited during a turn.
    Crashed,
    /// The agent wrote a line that is not a JSON object.
    Garbage,
    /// A turn ran past the execution timeout.
    Timeout,
    /// The agent could not be started or did not become ready in time.
    StartFailed,
    /// The agent reported an error for the turn.
    Agent,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 5] = [
        ErrorReason::Crashed,
        ErrorReason::Garbage,
        ErrorReason::Timeout,
        ErrorReason::StartFailed,
        ErrorReason::Agent,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Crashed => "crashed",
            ErrorReason::Garbage => "garbage",
            ErrorReason::Timeout => "timeout",
            ErrorReason::StartFailed => "start_failed",
            ErrorReason::Agent => "agent_error",
        }
    }
}

/// Why a session was closed (`reason` label of the sessions-closed counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Deleted,
    Idle,
    Crashed,
    Drain,
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 5] = [
        CloseReason::Deleted,
        CloseReason::Idle,
        CloseReason::Crashed,
        CloseReason::Drain,
        CloseReason::Shutdown,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Deleted => "deleted",
            CloseReason::Idle => "idle",
            CloseReason::Crashed => "crashed",
            CloseReason::Drain => "drain",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// How a turn ended (`outcome` label of the turns counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    Completed,
    Stopped,
    Error,
    Timeout,
}

impl TurnOutcome {
    pub const ALL: [TurnOutcome; 4] = [
        TurnOutcome::Completed,
        TurnOutcome::Stopped,
        TurnOutcome::Error,
        TurnOutcome::Timeout,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TurnOutcome::Completed => "completed",
            TurnOutcome::Stopped => "stopped",
            TurnOutcome::Error => "error",
            TurnOutcome::Timeout => "timeout",
        }
    }
}

/// `kind` labels of the bad-requests counter: malformed JSON body, body over the limit,
/// malformed WebSocket frame, malformed session id.
pub const BAD_REQUEST_KINDS: [&str; 4] = ["json", "too_large", "ws_frame", "session_id"];

/// Why the worker refused a request or frame (`reason` label of the refused counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A direct (not trusted-proxy) request carried a proxy-only header.
    UntrustedHeader,
    /// An admin endpoint was asked for without the right to it.
    AdminDenied,
    /// Another tenant's session was named (answered like an unknown id).
    CrossTenant,
    /// A WebSocket frame named a signed id of another worker.
    SessionElsewhere,
    /// A WebSocket frame named a client-chosen id the connection was not routed by.
    SessionNotRouted,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::UntrustedHeader,
        Refusal::AdminDenied,
        Refusal::CrossTenant,
        Refusal::SessionElsewhere,
        Refusal::SessionNotRouted,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UntrustedHeader => "untrusted_header",
            Refusal::AdminDenied => "admin_denied",
            Refusal::CrossTenant => "cross_tenant",
            Refusal::SessionElsewhere => "session_elsewhere",
            Refusal::SessionNotRouted => "session_not_routed",
        }
    }
}

/// `(route, method, status)` of the worker's request histogram that exist at 0 from the
/// start (the usual answer of each API route; `route` is the axum route template), so the
/// dashboard's latency panels have a worker series on a fresh process. Other statuses
/// appear at their first request.
pub const ROUTE_ANSWERS: &[(&str, &str, &str)] = &[
    ("/sessions", "POST", "201"),
    ("/sessions", "GET", "200"),
    ("/sessions/{id}", "GET", "200"),
    ("/sessions/{id}", "DELETE", "204"),
    ("/sessions/{id}/messages", "POST", "200"),
    ("/ws/v1/agent", "GET", "101"),
];

/// `tool` label for tool names that are not a plain identifier (bounds cardinality).
pub const OTHER_TOOL: &str = "other";

/// Every metric of the worker.
pub struct WorkerMetrics {
    registry: Registry,
    pub sessions_active: IntGauge,
    pub sessions_total: IntCounter,
    sessions_errors: IntCounterVec,
    tools_invoked: IntCounterVec,
    request_duration: HistogramVec,
    pub sessions_max: IntGauge,
    turns: IntCounterVec,
    pub turn_duration: Histogram,
    sessions_closed: IntCounterVec,
    pub pool_rejections: IntCounter,
    pub draining: IntGauge,
    pub websockets_active: IntGauge,
    bad_requests: IntCounterVec,
    refused: IntCounterVec,
    quota_refusals: IntCounterVec,
    /// Failed calls to the shared quota store.
    pub quota_store_errors: IntCounter,
    /// Tokens and cost per tenant.
    pub usage: crate::usage::UsageMetrics,
}

/// Registers `m` in `r`: the worker's one registration helper (`usage` uses it too).
pub(crate) fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    // Registration only fails on a duplicate name; every name here is distinct.
    if let Err(e) = r.register(Box::new(m.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| {
        tracing::error!(error = %e, name, "bad metric definition");
        IntCounterVec::new(Opts::new("hotplex_invalid", "invalid"), labels)
            .expect("fallback metric is valid")
    });
    reg(r, m)
}

impl WorkerMetrics {
    /// Creates and registers all metrics in a fresh `component="worker"` registry.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let r = component_registry(COMPONENT_WORKER);
        let gauge =
            |name: &str, help: &str| reg(&r, IntGauge::new(name, help).expect("valid gauge name"));
        let counter = |name: &str, help: &str| {
            reg(&r, IntCounter::new(name, help).expect("valid counter name"))
        };
        let m = WorkerMetrics {
            sessions_active: gauge(shared::SESSIONS_ACTIVE, "Sessions currently alive."),
            sessions_total: counter(shared::SESSIONS_TOTAL, "Sessions ever created."),
            sessions_errors: counter_vec(
                &r,
                shared::SESSIONS_ERRORS,
                "Session-level errors by reason.",
                &["reason"],
            ),
            tools_invoked: counter_vec(
                &r,
                shared::TOOLS_INVOKED,
                "Tool invocations reported by agents.",
                &["tool"],
            ),
            request_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        shared::REQUEST_DURATION_SECONDS,
                        "HTTP request duration until the response head, seconds.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route", "method", "status"],
                )
                .expect("valid histogram"),
            ),
            sessions_max: gauge(worker::SESSIONS_MAX, "Configured max_sessions."),
            turns: counter_vec(
                &r,
                worker::TURNS_TOTAL,
                "Turns run by outcome.",
                &["outcome"],
            ),
            turn_duration: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(worker::TURN_DURATION_SECONDS, "Turn duration, seconds.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid histogram"),
            ),
            sessions_closed: counter_vec(
                &r,
                worker::SESSIONS_CLOSED,
                "Sessions closed by reason.",
                &["reason"],
            ),
            pool_rejections: counter(
                worker::POOL_REJECTIONS,
                "Requests refused because the pool was full.",
            ),
            draining: gauge(worker::DRAINING, "1 while draining."),
            websockets_active: gauge(worker::WEBSOCKETS_ACTIVE, "Open WebSocket connections."),
            bad_requests: counter_vec(
                &r,
                worker::BAD_REQUESTS,
                "Malformed client input by kind.",
                &["kind"],
            ),
            refused: counter_vec(
                &r,
                worker::REFUSED_TOTAL,
                "Requests and frames refused for trust reasons, by reason.",
                &["reason"],
            ),
            quota_refusals: counter_vec(
                &r,
                worker::QUOTA_REFUSALS,
                "Session creations and turns refused by a tenant quota, by code.",
                &["code"],
            ),
            quota_store_errors: counter(
                worker::QUOTA_STORE_ERRORS,
                "Failed or timed-out calls to the shared quota store.",
            ),
            usage: crate::usage::UsageMetrics::new(&r),
            registry: r,
        };
        // Pre-create the known label sets so they render (at 0) from the start.
        for r in ErrorReason::ALL {
            m.sessions_errors.with_label_values(&[r.as_str()]);
        }
        for r in CloseReason::ALL {
            m.sessions_closed.with_label_values(&[r.as_str()]);
        }
        for o in TurnOutcome::ALL {
            m.turns.with_label_values(&[o.as_str()]);
        }
        for k in BAD_REQUEST_KINDS {
            m.bad_requests.with_label_values(&[k]);
        }
        for r in Refusal::ALL {
            m.refused.with_label_values(&[r.as_str()]);
        }
        for c in crate::quota::QuotaCode::ALL {
            m.quota_refusals.with_label_values(&[c.as_str()]);
        }
        m.tools_invoked.with_label_values(&[OTHER_TOOL]);
        for (route, method, status) in ROUTE_ANSWERS {
            m.request_duration
                .with_label_values(&[route, method, status]);
        }
        m
    }

    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn session_error(&self, reason: ErrorReason) {
        self.sessions_errors
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn session_closed(&self, reason: CloseReason) {
        self.sessions_closed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts what a completed turn cost (`usage`, `cost_usd` of its result).
    pub fn turn_usage(
        &self,
        tenant: Option<&str>,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) {
        self.usage.record(tenant, fields);
    }

    pub fn turn_finished(&self, outcome: TurnOutcome, secs: f64) {
        self.turns.with_label_values(&[outcome.as_str()]).inc();
        self.turn_duration.observe(secs);
    }

    /// Counts a tool use; the label is clamped to a sane tool name to bound cardinality.
    pub fn tool_invoked(&self, tool: &str) {
        let ok = !tool.is_empty()
            && tool.len() <= 64
            && tool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        let label = if ok { tool } else { OTHER_TOOL };
        self.tools_invoked.with_label_values(&[label]).inc();
    }

    /// Counts a create or turn refused by a tenant quota.
    pub fn quota_refused(&self, code: crate::quota::QuotaCode) {
        self.quota_refusals
            .with_label_values(&[code.as_str()])
            .inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn bad_request(&self, kind: &str) {
        self.bad_requests.with_label_values(&[kind]).inc();
    }

    /// One request. `method` is folded to the bounded label set (a raw method is client
    /// input), `route` must be a matched route pattern (bounded by the router).
    pub fn observe_request(&self, route: &str, method: &str, status: u16, secs: f64) {
        let mut buf = [0u8; 3];
        let status = hotplex_common::metrics::status_label(status, &mut buf);
        self.request_duration
            .with_label_values(&[route, hotplex_common::metrics::method_label(method), status])
            .observe(secs);
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_registry_has_every_labelled_series() {
        let t = WorkerMetrics::new().render();
        for name in hotplex_common::names::WORKER_EXPORTED {
            assert!(t.contains(name), "{name} missing in\n{t}");
        }
        for r in ErrorReason::ALL {
            let s = format!("reason=\"{}\"", r.as_str());
            let found = t
                .lines()
                .any(|l| l.starts_with("hotplex_sessions_errors{") && l.contains(&s));
            assert!(found, "{s} missing in\n{t}");
        }
        for (route, method, status) in ROUTE_ANSWERS {
            let found = t.lines().any(|l| {
                l.starts_with("hotplex_request_duration_seconds_count{")
                    && [("route", route), ("method", method), ("status", status)]
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            });
            assert!(found, "{route} {method} {status} missing in\n{t}");
        }
    }

    #[test]
    fn all_names_render() {
        let m = WorkerMetrics::new();
        m.sessions_total.inc();
        m.tool_invoked("echo");
        m.tool_invoked("bad label\n");
        m.observe_request("/sessions", "POST", 201, 0.01);
        m.bad_request("json");
        let t = m.render();
        for name in hotplex_common::names::WORKER_EXPORTED {
            assert!(t.contains(name), "{name} missing in\n{t}");
        }
        assert!(t.contains("tool=\"other\",component=\"worker\"} 1"), "{t}");
        assert!(t.contains("status=\"201\""), "{t}");
    }

    /// Every family the worker renders is a name of `hotplex_common::names::WORKER_EXPORTED`,
    /// and each of those is rendered exactly once (one `# TYPE`, one `# HELP`).
    #[test]
    fn every_family_is_a_worker_name_exactly_once() {
        let m = WorkerMetrics::new();
        m.turn_finished(TurnOutcome::ALL[0], 0.5);
        let t = m.render();
        for kind in ["# TYPE ", "# HELP "] {
            let mut found: Vec<&str> = t
                .lines()
                .filter_map(|l| l.strip_prefix(kind))
                .filter_map(|l| l.split(' ').next())
                .collect();
            for f in &found {
                assert!(
                    hotplex_common::names::WORKER_EXPORTED.contains(f),
                    "{f} is not a name of WORKER_EXPORTED"
                );
            }
            found.sort_unstable();
            let mut want = hotplex_common::names::WORKER_EXPORTED.to_vec();
            want.sort_unstable();
            assert_eq!(found, want, "{kind}lines");
        }
        for line in t.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(line.contains("component=\"worker\""), "{line}");
        }
    }
}
