//! The proxy's OpenTelemetry spans (see `hotplex_common::telemetry` for the exporter).
//!
//! Per request, only when tracing is on ([`telemetry::enabled`]; otherwise no span is
//! created and the hooks do nothing):
//! - `proxy.request` (SERVER): from `request_filter` to `logging`; parent: the client's
//!   `traceparent`. Attributes `http.request.method`, `http.route` (the route label),
//!   `url.path`, `http.response.status_code`, `session.id`, `node.id` (the worker),
//!   `hotplex.key_source`, `hotplex.route_outcome`, `hotplex.request_id`, `http.response.body.size`;
//! - `proxy.select_upstream`: the routing decision (key, pinned/hashed/placed, worker);
//! - `proxy.upstream` (CLIENT): one per attempt, from `upstream_peer` until the response
//!   ends; `server.address`, `node.id`, `hotplex.connection_reused`, `error.type`. Its
//!   context is sent to the worker as `traceparent`, so the worker's spans are its children.
//!
//! The `telemetry:` section is not reloadable ([`TelemetryReloadHook`] rejects a change).

use hotplex_common::telemetry::{self, SPAN_TARGET};
use pingora::http::RequestHeader;
use tracing::field::Empty;
use tracing::Span;

/// W3C trace context header names (parsed once: `inject` runs on every forwarded request).
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

use crate::config::{ConfigError, RuntimeConfig};
use crate::routing::{Route, RouteError};

/// The spans of one request.
pub struct ReqTrace {
    request: Span,
    upstream: Option<Span>,
    /// Sampled out before any span was created ([`telemetry::sampled_out`]): `request` is
    /// then [`Span::none`], the access line carries the ids itself ([`Self::log_ids`]),
    /// and only `traceparent` travels on.
    out: Option<telemetry::SampledOut>,
}

/// Starts the request span; `None` when tracing is off.
pub fn start(req: &RequestHeader, route: &'static str, request_id: &str) -> Option<ReqTrace> {
    if !telemetry::enabled() {
        return None;
    }
    let parent = telemetry::extract(&req.headers);
    if let Some(out) = telemetry::sampled_out(&parent) {
        // No span at all (a plain span through the registry cost ~8k instructions per
        // request, benches/RESULTS.md): the access line names the ids itself.
        return Some(ReqTrace {
            request: Span::none(),
            upstream: None,
            out: Some(out),
        });
    }
    let method = req.method.as_str();
    let request = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "proxy.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route,
        url.path = %req.uri.path(),
        http.response.status_code = Empty,
        http.response.body.size = Empty,
        session.id = Empty,
        node.id = Empty,
        hotplex.key_source = Empty,
        hotplex.route_outcome = Empty,
        hotplex.request_id = %request_id,
    );
    telemetry::set_parent(&request, parent);
    Some(ReqTrace {
        request,
        upstream: None,
        out: None,
    })
}

impl ReqTrace {
    /// The span of the routing decision (ended by [`Self::selected`]).
    pub fn select(&self) -> Span {
        if self.out.is_some() {
            return Span::none();
        }
        tracing::info_span!(
            target: SPAN_TARGET,
            parent: &self.request,
            "proxy.select_upstream",
            hotplex.key_source = Empty,
            hotplex.route_outcome = Empty,
            node.id = Empty,
            session.id = Empty,
        )
    }

    /// Records the decision on the select span and the request span, ending the former.
    pub fn selected(&self, select: Span, decision: &Result<Route, RouteError>) {
        if self.out.is_some() {
            return;
        }
        let (source, outcome) = match decision {
            Ok(r) => (r.source.map_or("none", |s| s.as_str()), r.outcome.as_str()),
            Err(e) => e.labels(),
        };
        for s in [&select, &self.request] {
            s.record("hotplex.key_source", source);
            s.record("hotplex.route_outcome", outcome);
        }
        match decision {
            Ok(r) => {
                let session = r.minted.as_ref().or(r.key.as_ref()).map(|k| k.as_str());
                for s in [&select, &self.request] {
                    s.record("node.id", r.worker.spec.id.as_str());
                    if let Some(id) = session {
                        s.record("session.id", id);
                    }
                }
            }
            Err(e) => telemetry::set_error(&select, outcome_message(e)),
        }
    }

    /// Starts the span of one upstream attempt (a previous one ends as failed).
    pub fn upstream_start(&mut self, route: &Route, addr: &std::net::SocketAddr) {
        if self.out.is_some() {
            return;
        }
        if let Some(old) = self.upstream.take() {
            telemetry::set_error(&old, "retried");
        }
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: &self.request,
            "proxy.upstream",
            otel.kind = "client",
            otel.status_code = Empty,
            node.id = %route.worker.spec.id,
            server.address = %addr,
            http.response.status_code = Empty,
            hotplex.connection_reused = Empty,
            error.type = Empty,
        );
        self.upstream = Some(span);
    }

    /// Writes `traceparent` for the current upstream attempt into the upstream request's
    /// headers.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        if let Some(out) = &self.out {
            if let Ok(v) = http::HeaderValue::from_str(out.traceparent()) {
                headers.insert(&TRACEPARENT, v);
            }
            if let Some(Ok(v)) = out.trace_state.as_deref().map(http::HeaderValue::from_str) {
                headers.insert(&TRACESTATE, v);
            }
            return;
        }
        let Some(up) = self.upstream.as_ref() else {
            return;
        };
        telemetry::inject(&telemetry::context_of(up), |k, v| {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::try_from(v),
            ) {
                headers.insert(k, v);
            }
        });
    }

    /// The connection to the worker is up.
    pub fn connected(&self, reused: bool) {
        if let Some(up) = self.upstream.as_ref() {
            up.record("hotplex.connection_reused", reused);
        }
    }

    /// The worker's response head.
    pub fn upstream_response(&self, status: u16) {
        if let Some(up) = self.upstream.as_ref() {
            up.record("http.response.status_code", status);
            if status >= 500 {
                telemetry::set_error(up, format!("HTTP {status}"));
            }
        }
    }

    /// The current attempt failed (`kind`: `connect`, `timeout`, `io`, `http`).
    pub fn upstream_failed(&mut self, kind: &str, error: &dyn std::fmt::Display) {
        if let Some(up) = self.upstream.take() {
            up.record("error.type", kind);
            telemetry::set_error(&up, error.to_string());
        }
    }

    /// Ends every span (from the `logging` hook).
    pub fn finish(mut self, status: u16, bytes: usize, error: Option<&pingora::Error>) {
        if self.out.is_some() {
            return;
        }
        let r = &self.request;
        r.record("http.response.status_code", status);
        r.record("http.response.body.size", bytes as u64);
        if let Some(e) = error {
            if let Some(up) = self.upstream.take() {
                telemetry::set_error(&up, e.to_string());
            }
        }
        if status >= 500 || (status == 0 && error.is_some()) {
            let msg = error.map_or_else(|| format!("HTTP {status}"), |e| e.to_string());
            telemetry::set_error(r, msg);
        }
        // Children end before their parent.
        drop(self.upstream.take());
    }

    /// The request span (e.g. as the explicit parent of the access log line); a
    /// sampled-out request has none ([`Span::none`]).
    pub fn span(&self) -> &Span {
        &self.request
    }

    /// `(trace_id, span_id)` in hex of a sampled-out request, for its access line (a
    /// recorded request's line takes them from its span).
    pub fn log_ids(&self) -> Option<(&str, &str)> {
        self.out
            .as_ref()
            .map(|o| (o.trace_id_hex(), o.span_id_hex()))
    }
}

fn outcome_message(e: &RouteError) -> String {
    let (_, outcome) = e.labels();
    format!("routing: {outcome}")
}

/// Rejects a reload that changes `telemetry:` (the exporter starts once).
pub struct TelemetryReloadHook;

impl crate::reload::ReloadHook for TelemetryReloadHook {
    fn check(&self, old: &RuntimeConfig, new: &RuntimeConfig) -> Result<(), ConfigError> {
        if old.telemetry == new.telemetry {
            Ok(())
        } else {
            Err(ConfigError::new(
                &new.source,
                "telemetry",
                "cannot change without a restart",
            ))
        }
    }

    fn apply(&self, _new: &RuntimeConfig) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::ReloadHook;

    const MIN: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";

    #[test]
    fn telemetry_section_parses_and_is_not_reloadable() {
        let on = format!(
            "{MIN}telemetry:\n  endpoint: http://127.0.0.1:4318\n  service_name: edge-1\n  sampling_ratio: 0.2\n"
        );
        let a = crate::config::parse("a.yaml", &on).expect("valid");
        assert_eq!(
            a.telemetry.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(a.telemetry.service_name, "edge-1");
        let b = crate::config::parse("b.yaml", MIN).expect("valid");
        assert_eq!(b.telemetry.traces_endpoint, None);
        assert_eq!(
            b.telemetry.service_name,
            crate::config::DEFAULT_SERVICE_NAME
        );
        let e = TelemetryReloadHook.check(&a, &b).expect_err("changed");
        assert_eq!(e.key, "telemetry");
        assert!(TelemetryReloadHook.check(&a, &a.clone()).is_ok());

        let bad = format!("{MIN}telemetry:\n  sampling_ratio: -1\n");
        let e = crate::config::parse("c.yaml", &bad).expect_err("ratio");
        assert_eq!(
            (e.file.as_str(), e.key.as_str()),
            ("c.yaml", "telemetry.sampling_ratio")
        );
        let bad = format!("{MIN}telemetry:\n  endpoint: 127.0.0.1:4318\n");
        let e = crate::config::parse("c.yaml", &bad).expect_err("url");
        assert_eq!(e.key, "telemetry.endpoint");
    }

    #[test]
    fn no_spans_when_tracing_is_off() {
        let req = RequestHeader::build("GET", b"/sessions", None).expect("request");
        assert!(start(&req, "list_sessions", "r1").is_none());
    }

    #[test]
    fn a_sampled_out_request_sends_an_unsampled_traceparent_on() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        );
        h.insert("tracestate", http::HeaderValue::from_static("k=v"));
        let out = telemetry::sampled_out(&telemetry::extract(&h)).expect("parent not sampled");
        let trace = ReqTrace {
            request: Span::none(),
            upstream: None,
            out: Some(out.clone()),
        };
        // The client's own header is replaced, as on the recording path.
        let mut req = http::HeaderMap::new();
        req.insert(
            &TRACEPARENT,
            http::HeaderValue::from_static(
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
        );
        assert!(trace.select().is_none());
        trace.inject(&mut req);
        let tp = req.get("traceparent").expect("traceparent");
        assert_eq!(tp.to_str().expect("ascii"), out.traceparent());
        assert!(out
            .traceparent()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.traceparent().ends_with("-00"));
        assert_eq!(req.get_all("traceparent").iter().count(), 1);
        assert_eq!(req.get("tracestate").expect("tracestate"), "k=v");
        trace.finish(200, 0, None);
    }
}
