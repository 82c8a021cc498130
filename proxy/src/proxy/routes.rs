//! The route table in the proxy hooks: [`crate::routes`] decides the pool, and requests of
//! `http` pool routes take the [`crate::pools::http`] path here (pick, peer, failures);
//! requests of the session pool go on exactly as without routes.

use std::time::Instant;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::admit::Stop;
use super::classify::RequestKind;
use super::{Ctx, HotplexProxy};
use crate::errors::EdgeError;
use crate::pools::http::HttpState;
use crate::routes::AuthMode;

impl Ctx {
    /// The `http` pool state of an `http` route's request.
    pub(super) fn http(&self) -> Option<&HttpState> {
        match &self.kind {
            RequestKind::Http { pool, .. } => Some(pool),
            _ => None,
        }
    }

    fn http_mut(&mut self) -> Option<&mut HttpState> {
        match &mut self.kind {
            RequestKind::Http { pool, .. } => Some(pool),
            _ => None,
        }
    }

    /// The answer to write instead of pingora's for an `http` route that ran out of
    /// upstreams.
    pub(super) fn take_http_answer(&mut self) -> Option<EdgeError> {
        self.http_mut().and_then(|h| h.answer.take())
    }
}

/// The matched route of an `http` pool's request.
fn http_route<'a>(
    kind: &RequestKind,
    matched: &'a Option<crate::routes::Matched>,
) -> Option<&'a crate::routes::Route> {
    match (kind, matched) {
        (RequestKind::Http { .. }, Some(m)) => Some(m.route()),
        _ => None,
    }
}

/// The label `admit` uses for limits, key route restrictions and metrics (an http
/// route's name), and the route's authentication (the session pool's: required).
pub(super) fn admit_route<'a>(
    kind: &RequestKind,
    matched: &'a Option<crate::routes::Matched>,
) -> (Option<&'a str>, AuthMode) {
    match http_route(kind, matched) {
        Some(r) => (Some(r.name.as_str()), r.auth),
        None => (None, AuthMode::Required),
    }
}

/// Whether the matched `http` route passes the client's credentials on
/// (`forward_credentials`, only with `auth: off`).
fn forwards_credentials(ctx: &Ctx) -> bool {
    http_route(&ctx.kind, &ctx.matched).is_some_and(|r| r.forward_credentials)
}

/// The picked `http` upstream (access log), or "".
pub(super) fn upstream_of(kind: &RequestKind) -> &str {
    match kind {
        RequestKind::Http { pool, .. } => pool.upstream_id(),
        _ => "",
    }
}

impl HotplexProxy {
    /// The route and `http` pool metrics (for the pools' health-check service).
    pub fn pool_metrics(&self) -> std::sync::Arc<crate::metrics::PoolMetrics> {
        self.pool_metrics.clone()
    }

    /// The trust headers of a forwarded request: a worker's (see [`crate::trust`]), or an
    /// `http` service's.
    pub(super) fn trust_headers(&self, headers: &mut http::HeaderMap, ctx: &Ctx) -> Result<()> {
        match admit_route(&ctx.kind, &ctx.matched) {
            (Some(_), _) => crate::trust::to_service(headers, !forwards_credentials(ctx)),
            (None, _) => crate::trust::to_worker(
                headers,
                ctx.route(),
                ctx.security.tenant.as_deref(),
                &self.registry.config(),
            ),
        }
    }

    /// The peer of an http route's request, with the configured upstream timeouts.
    pub(super) fn http_peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(mut peer) = ctx.http().and_then(HttpState::peer) else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no upstream left in the pool");
        };
        let cfg = self.registry.config();
        let t = &timeouts(ctx, &cfg);
        peer.options.connection_timeout = Some(t.connect);
        let (read, write) = if ctx.streams() {
            (t.idle, t.idle)
        } else {
            (t.read, t.write)
        };
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = Some(write);
        peer.options.idle_timeout = Some(cfg.keepalive_idle);
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Counts a failure against the picked upstream (passive ejection).
    fn http_failure(&self, ctx: &Ctx) {
        let Some(h) = ctx.http() else {
            return;
        };
        if let Some(id) = h.on_failure() {
            self.pool_metrics
                .ejections
                .with_label_values(&[&h.pool.name, id])
                .inc();
            tracing::warn!(pool = %h.pool.name, upstream = %id, "http pool upstream ejected");
        }
    }

    /// `fail_to_connect` of an http route: counts the failure and retries on another
    /// upstream of the pool (nothing was sent).
    pub(super) fn http_connect_failed(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.http_failure(ctx);
        let retry = match ctx.http_mut() {
            Some(h) => h.retry_elsewhere(&session.req_header().headers),
            None => false,
        };
        e.set_retry(retry);
        e
    }

    /// `error_while_proxy` of an http route: an upstream failure before the response head
    /// counts against the upstream (not retried: the request was sent).
    pub(super) fn http_proxy_failed(&self, ctx: &Ctx, e: &Error) {
        if ctx.http().is_some()
            && *e.esource() == ErrorSource::Upstream
            && ctx.head_elapsed.is_none()
        {
            self.http_failure(ctx);
        }
    }

    /// Admit: the matched route's IP rules, then its redirect (see [`crate::policy`]).
    /// A route without them costs one test, no clone.
    pub(super) fn route_policies(&self, session: &Session, ctx: &Ctx) -> Result<(), Stop> {
        let m = match &ctx.matched {
            Some(m) if m.route().policy.admits() => m,
            _ => return Ok(()),
        };
        let p = &m.route().policy;
        if let Some(rules) = &p.ip {
            let cfg = self.registry.config();
            let req = session.req_header();
            let xff = req
                .headers
                .get(&hotplex_common::headers::name::X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok());
            let ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| crate::security::client_ip(a.ip(), xff, &cfg.limits.trusted_proxies));
            if !rules.permits(ip) {
                tracing::debug!(route = %m.route().name, client_ip = ?ip, "client IP refused by the route's rules");
                return Err(Stop::answer(EdgeError::IpDenied));
            }
        }
        if p.redirect.is_some() {
            return Err(Stop::Redirect(m.clone()));
        }
        Ok(())
    }

    /// The matched route's header rules on one direction (see
    /// [`crate::policy::headers`]); a route without them costs one test.
    pub(super) fn header_rules(
        &self,
        session: &Session,
        ctx: &Ctx,
        request: bool,
        target: &mut http::HeaderMap,
    ) {
        let rules = ctx.matched.as_ref().and_then(|m| {
            let p = &m.route().policy;
            if request {
                p.request_headers.as_ref()
            } else {
                p.response_headers.as_ref()
            }
        });
        let Some(rules) = rules else {
            return;
        };
        let vars = crate::policy::headers::Vars {
            client_ip: ctx.security.client_ip,
            request_id: &ctx.request_id,
            host: crate::routes::request_host(session.req_header()),
            scheme: crate::tls::scheme(session),
        };
        crate::policy::headers::apply(rules, &vars, target);
    }

    /// `hotplex_proxy_route_requests_total` (only with `routes:`).
    pub(super) fn count_route(&self, ctx: &Ctx, status: &str) {
        let Some(m) = ctx.matched.as_ref() else {
            return;
        };
        self.pool_metrics
            .route_requests
            .with_label_values(&[m.route().name.as_str(), m.pool_name(), status])
            .inc();
    }
}

// --- per-route policies: response compression (issue #19, pol-comp) ---

/// At the response head: starts the route's compression, if it has one (never for an
/// upgrade, see [`crate::policy::compression`]). No route policy: one match, nothing else.
pub(super) fn compress_start(session: &Session, resp: &mut ResponseHeader, ctx: &mut Ctx) {
    let Some(m) = ctx.matched.as_ref() else {
        return;
    };
    let Some(policy) = m.route().compression.as_ref() else {
        return;
    };
    if ctx.kind.tunnel() || ctx.compress.is_some() {
        return;
    }
    ctx.compress = policy.start(session.req_header(), resp);
}

/// Each response body chunk through the encoder started by [`compress_start`].
pub(super) fn compress_body(ctx: &mut Ctx, body: &mut Option<Bytes>, end: bool) {
    if let Some(c) = ctx.compress.as_mut() {
        if let Some(out) = c.encode(body.as_ref(), end) {
            *body = Some(out);
        }
    }
}

// --- per-route policies: timeouts and body limit (issue #19, pol-comp) ---

/// The request's upstream timeouts: the matched route's, else the global ones.
pub(super) struct Timeouts {
    pub connect: std::time::Duration,
    pub read: std::time::Duration,
    pub write: std::time::Duration,
    pub idle: std::time::Duration,
}

fn matched_route(ctx: &Ctx) -> Option<&crate::routes::Route> {
    ctx.matched.as_ref().map(|m| m.route())
}

/// `routes[].timeouts` over `timeouts.*` (a copy of four durations, no allocation).
pub(super) fn timeouts(ctx: &Ctx, cfg: &crate::config::RuntimeConfig) -> Timeouts {
    let g = &cfg.timeouts;
    let r = matched_route(ctx).map(|r| r.timeouts).unwrap_or_default();
    Timeouts {
        connect: r.connect.unwrap_or(g.connect),
        read: r.read.unwrap_or(g.read),
        write: g.write,
        idle: r.idle.unwrap_or(g.stream_idle),
    }
}

/// `routes[].max_body_bytes` over `limits.max_body_bytes`.
pub(super) fn max_body(ctx: &Ctx, cfg: &crate::config::RuntimeConfig) -> u64 {
    matched_route(ctx)
        .and_then(|r| r.max_body_bytes)
        .unwrap_or(cfg.limits.max_body_bytes)
}

// --- per-route policies: error pages (issue #19, pol-comp) ---

/// The matched route's error pages, for the writer ([`crate::errors::write`]).
pub(super) fn error_pages(ctx: &Ctx) -> Option<&crate::policy::error_pages::ErrorPages> {
    matched_route(ctx).map(|r| &r.error_pages)
}
