//! The Pingora `ProxyHttp` implementation: the request path as a pipeline,
//! classify → admit → choose → forward.
//!
//! - **classify** ([`classify`]): the route table's match and the session pool's declared
//!   surface give one [`RequestKind`] (a session operation, an `http` pool's request, the
//!   proxy's own health, or a 404), decided once; later steps match on it.
//! - **admit** ([`admit`]): a head never forwarded (smuggling, size), the route's IP rules
//!   and redirect, the surface, auth and limits, the body read whole at the edge.
//! - **choose**: an `http` upstream, or a session worker (see [`crate::routing`]); a new
//!   session's slot is a guard that gives itself back unless the create succeeds.
//! - **forward**: the pingora hooks below.
//!
//! Each step of `request_filter` passes or stops the request with the answer the edge
//! writes itself (400 / 404 / 410 / 503 JSON...). `upstream_peer` builds the peer with
//! the configured timeouts (the long `stream_idle` read/write timeout for WebSocket
//! upgrades and SSE turns, so pingora's defaults never cut a quiet stream);
//! `upstream_request_filter` sets `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `Forwarded`, `X-Request-Id` and, for a new session, the minted
//! `X-Hotplex-Session`; `response_filter` adds `X-Hotplex-Worker`, `X-Request-Id` and the
//! affinity cookie. Hop-by-hop headers are stripped by pingora's standard upstream request
//! policy (WebSocket upgrades are forwarded normalized). Bodies are streamed chunk by chunk:
//! no caching module; compression only on routes that ask for it and never on SSE.
//!
//! Failures: a connect error or timeout ejects the worker (passive ejection,
//! `base * 2^n` capped). A *new* session whose worker fails to connect is re-placed on
//! another worker (up to [`MAX_PLACEMENT_TRIES`]); a pinned or hashed session is never
//! rerouted and gets 503 `worker_unavailable`. `fail_to_proxy` writes JSON errors.
//!
//! Child modules: `classify` (the [`RequestKind`]), `admit` (the steps up to choose),
//! `head` (checks of a request head before routing), `sessions` (the session pool's
//! routing decisions, ejection, re-placement and session-count settling), `routes` (the
//! route table and `http` pools, per-route policies).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hotplex_common::headers as h;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, OrErr, Result};

use crate::errors::{self, EdgeError};
use crate::metrics::ProxyMetrics;
use crate::routing::affinity;
use crate::upstream::Registry;

mod admit;
mod classify;
mod head;
mod routes;
mod sessions;

pub use classify::{RequestKind, SessionOp};
use sessions::Replace;

/// Workers tried for one new session before giving up.
pub const MAX_PLACEMENT_TRIES: usize = 3;
/// Headers the edge adds to a forwarded request (room reserved once, `crate::head_map`):
/// `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`, `X-Request-Id`, the tenant, worker,
/// session and `traceparent`.
const FORWARD_HEADERS: usize = 8;
/// Headers the edge adds to a proxied answer: `X-Hotplex-Worker`, `X-Request-Id` and the
/// three `RateLimit-*`.
const ANSWER_HEADERS: usize = 5;

/// The proxy.
pub struct HotplexProxy {
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    security: crate::security::Security,
    pool_metrics: Arc<crate::metrics::PoolMetrics>,
}

impl HotplexProxy {
    pub fn new(registry: Arc<Registry>, metrics: Arc<ProxyMetrics>) -> HotplexProxy {
        let security = crate::security::Security::new();
        let pool_metrics = Arc::new(crate::metrics::PoolMetrics::new(&metrics.registry));
        HotplexProxy {
            registry,
            metrics,
            security,
            pool_metrics,
        }
    }
}

/// Per-request state.
pub struct Ctx {
    /// When the request arrived (request duration, access log).
    start: Instant,
    /// `X-Request-Id`: the client's when valid, else a fresh v4 UUID.
    request_id: String,
    /// What the request is (classify), with its pool's per-request state: the chosen
    /// worker and its slot guards, or the chosen `http` upstream.
    kind: RequestKind,
    /// The route of `routes:` that matched (its policies), `None` without `routes:` or
    /// when none matched.
    matched: Option<crate::routes::Matched>,
    /// The client accepts `text/event-stream` (the answer may stream).
    accepts_sse: bool,
    /// When the upstream attempt started (upstream duration).
    upstream_start: Option<Instant>,
    /// Time to the response head (request duration; `Some`: a head arrived).
    head_elapsed: Option<Duration>,
    /// Time from the upstream attempt's start to the response head.
    upstream_elapsed: Option<Duration>,
    /// This tunnel is counted in `websockets_active` (decremented in `logging`).
    ws_counted: bool,
    /// Status of an answer written by the proxy itself.
    own_status: u16,
    /// Counted in `requests_in_flight` (decremented in `logging`).
    in_flight: bool,
    /// Auth/limit state (tenant, client IP, RateLimit headers, WebSocket slot).
    security: crate::security::ReqState,
    /// Bytes of a streamed request body (see [`crate::body`]).
    body: crate::body::Counted,
    /// Trace spans (`None` when tracing is off), see [`crate::telemetry`].
    trace: Option<crate::telemetry::ReqTrace>,
    /// The response encoder of a route with `compression:` (see [`crate::policy`]).
    compress: Option<Box<crate::policy::compression::Encoder>>,
}

impl Ctx {
    /// Whether the answer may stream for long (see [`RequestKind::streams`]).
    fn streams(&self) -> bool {
        self.kind.streams(self.accepts_sse)
    }
}

use head::{error_kind, request_id};
pub use head::{MAX_HEADER_BYTES, MAX_URI_BYTES};

impl HotplexProxy {
    /// Writes an answer of the edge (see [`crate::errors`]) with the route's error page
    /// for its status, counts a rejection. `close`: the connection will not be reused
    /// (answers from `fail_to_proxy`), so say `Connection: close` rather than let a client
    /// reuse it.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, e: &EdgeError, close: bool) {
        ctx.own_status = e.status();
        if let Some(reason) = e.reason() {
            self.metrics.rejections.with_label_values(&[reason]).inc();
        }
        let pages = routes::error_pages(ctx);
        errors::write(session, e, &ctx.request_id, pages, close).await;
    }
}

#[async_trait]
impl ProxyHttp for HotplexProxy {
    type CTX = Ctx;

    /// No downstream modules. pingora's default adds its response-compression module,
    /// switched off (level 0), which still costs an allocation and a filter call on every
    /// response head and body chunk. Routes with `compression:` run pingora's compression
    /// context from `response_filter` instead, only for their own responses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            kind: RequestKind::Undeclared,
            matched: None,
            accepts_sse: false,
            upstream_start: None,
            head_elapsed: None,
            upstream_elapsed: None,
            ws_counted: false,
            own_status: 0,
            in_flight: false,
            security: Default::default(),
            body: Default::default(),
            trace: None,
            compress: None,
        }
    }

    /// classify → admit → choose; forwarded when every step passes, else the step's
    /// answer is written (`Ok(true)`).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.metrics.requests_in_flight.inc();
        ctx.in_flight = true;
        ctx.request_id = request_id(session.req_header());
        self.classify(session, ctx);
        let label = ctx.kind.label();
        ctx.trace = crate::telemetry::start(session.req_header(), label, &ctx.request_id);
        // One step: its value, or its answer written and the request done. (A macro, not
        // a nested `async fn`: no extra future to move per request.)
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(stop) => {
                        self.stop(session, ctx, stop).await;
                        return Ok(true);
                    }
                }
            };
        }
        step!(admit::screen(session));
        step!(self.route_policies(session, ctx));
        step!(admit::surface(ctx));
        step!(self.admit(session, ctx).await);
        step!(self.read_body(session, ctx).await);
        self.stream_timeouts(session, ctx);
        step!(self.choose(session, ctx));
        Ok(false)
    }

    /// Forward: the chosen upstream's peer (a new session is first placed again when its
    /// worker failed or refused it).
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.http().is_some() {
            return self.http_peer(ctx);
        }
        self.replace_if_due(session, ctx)?;
        let stream = ctx.streams();
        let Some(route) = ctx.kind.route() else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        let cfg = self.registry.config();
        let t = &routes::timeouts(ctx, &cfg);
        let mut peer = crate::tls::worker_peer(
            cfg.upstream_tls.as_ref(),
            route.worker.spec.address,
            &route.worker.spec.id,
        );
        peer.options.connection_timeout = Some(t.connect);
        if stream {
            peer.options.read_timeout = Some(t.idle);
            peer.options.write_timeout = Some(t.idle);
        } else {
            peer.options.read_timeout = Some(t.read);
            peer.options.write_timeout = Some(t.write);
        }
        peer.options.idle_timeout = Some(cfg.keepalive_idle);
        ctx.upstream_start = Some(Instant::now());
        if let Some(t) = ctx.trace.as_mut() {
            t.upstream_start(route, &route.worker.spec.address);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Eight headers are added below: one pass over pingora's head, not eight
        // `insert_header`s (crate::head_map).
        crate::head_map::edit_request(req, FORWARD_HEADERS, |headers| {
            let scheme = crate::tls::scheme(session);
            if let Some(ip) = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
            {
                crate::trust::forwarded(headers, ip, scheme)?;
            }
            // Always ours, never the client's.
            headers.insert(
                &h::name::X_FORWARDED_PROTO,
                http::HeaderValue::from_static(scheme),
            );
            headers.insert(
                &h::name::X_REQUEST_ID,
                crate::trust::value(&ctx.request_id)?,
            );
            self.trust_headers(headers, ctx)?;
            self.header_rules(session, ctx, true, headers);
            if let Some(t) = ctx.trace.as_ref() {
                t.inject(headers);
            }
            Ok(())
        })
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // A WebSocket tunnel's frames are not a request body (the worker limits frames).
        if let (Some(b), false) = (body.as_ref(), ctx.kind.tunnel()) {
            let max = routes::max_body(ctx, &self.registry.config());
            ctx.body.add(b.len(), max)?;
        }
        if end_of_stream && ctx.body.streaming() && ctx.streams() {
            // The streamed body is complete: the answer may stream for as long as streams do.
            session.set_read_timeout(Some(routes::timeouts(ctx, &self.registry.config()).idle));
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = ctx.trace.as_ref() {
            t.connected(reused);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.head_elapsed = Some(ctx.start.elapsed());
        if let Some(h) = ctx.http() {
            h.on_response();
        }
        if !resp.status.is_informational() || resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // Before the client sees the answer: a client that deleted a session can
            // create the next one at once.
            self.settle_session(ctx, resp.status.as_u16());
        }
        if crate::upgrade::leaving() {
            // Upgrade/stop in progress: move keep-alive clients to the new process.
            _session.set_keepalive(None);
        }
        if let Some(route) = ctx.kind.route() {
            if let Some(t) = ctx.upstream_start {
                let up = t.elapsed();
                ctx.upstream_elapsed = Some(up);
                self.metrics
                    .upstream_duration
                    .with_label_values(&[&route.worker.spec.id])
                    .observe(up.as_secs_f64());
            }
            if let Some(t) = ctx.trace.as_ref() {
                t.upstream_response(resp.status.as_u16());
            }
        }
        // Five or more headers are added: one pass over pingora's head (crate::head_map).
        crate::head_map::edit_response(resp, ANSWER_HEADERS, |headers| {
            if let Some(route) = ctx.kind.route() {
                let worker = crate::trust::value(route.worker.spec.id.as_str())?;
                headers.insert(&h::name::X_HOTPLEX_WORKER, worker);
                if let Some(c) = route.cookie.as_ref() {
                    let secure = crate::tls::scheme(_session) == "https";
                    let cookie = affinity::set_cookie_header(c, secure);
                    let cookie = http::HeaderValue::try_from(cookie)
                        .or_err(ErrorType::InvalidHTTPHeader, "affinity cookie")?;
                    headers.append(http::header::SET_COOKIE, cookie);
                }
            }
            let request_id = crate::trust::value(&ctx.request_id)?;
            headers.insert(
                &h::name::X_REQUEST_ID,
                crate::security::unindexed(request_id),
            );
            crate::tls::on_response(_session, headers, &self.registry.config())?;
            crate::security::on_response(headers, &ctx.security);
            self.header_rules(_session, ctx, false, headers);
            Ok(())
        })?;
        routes::compress_start(_session, resp, ctx);
        if ctx.kind.tunnel()
            && resp.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !ctx.ws_counted
        {
            ctx.ws_counted = true;
            self.metrics.websockets_active.inc();
        }
        Ok(())
    }

    /// A worker answering 503 to a new session placed on it (full or draining: its fill
    /// was estimated by this proxy alone, other proxies place too) is not the client's
    /// answer: the session is placed on the next worker (the body is replayed from the
    /// edge's buffer) and the worker counts as full until a probe says otherwise.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.kind.creates()
            || resp.status != http::StatusCode::SERVICE_UNAVAILABLE
            || session.as_ref().retry_buffer_truncated()
        {
            return Ok(());
        }
        let Some(worker) = self.replace_elsewhere(ctx, Replace::Refused) else {
            return Ok(());
        };
        worker.mark_refusing();
        self.metrics
            .sessions_replaced
            .with_label_values(&[&worker.spec.id])
            .inc();
        tracing::debug!(worker = %worker.spec.id, "worker refused a new session (503): placing it on another");
        Error::e_explain(
            ErrorType::Custom("worker_refused_session"),
            "worker answered 503 to a new session",
        )
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        routes::compress_body(ctx, body, end_of_stream);
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(t) = ctx.trace.as_mut() {
            t.upstream_failed(error_kind(&e), &e);
        }
        if ctx.http().is_some() {
            return self.http_connect_failed(_session, ctx, e);
        }
        let Some(route) = ctx.route() else {
            return e;
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[&route.worker.spec.id, error_kind(&e)])
            .inc();
        self.eject(ctx, "connect failure");
        let retry = self
            .replace_elsewhere(ctx, Replace::ConnectFailed)
            .is_some();
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx
            .pick()
            .is_some_and(|p| p.replace == Some(Replace::Refused))
        {
            // Not a failure of the worker: re-placed (see `upstream_response_filter`).
            e.set_retry(true);
            return e;
        }
        if let (Some(t), ErrorSource::Upstream) = (ctx.trace.as_mut(), e.esource()) {
            t.upstream_failed(error_kind(&e), &e);
        }
        if *e.esource() == ErrorSource::Upstream {
            if let Some(route) = ctx.route() {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&route.worker.spec.id, error_kind(&e)])
                    .inc();
            }
        }
        if client_reused && !session.as_ref().retry_buffer_truncated() {
            // A pooled connection the worker had already closed: retry on a fresh one
            // (same worker: upstream_peer routes the same way).
            e.retry.decide_reuse(true);
        } else {
            e.set_retry(false);
            self.http_proxy_failed(ctx, &e);
            if *e.esource() == ErrorSource::Upstream
                && !ctx.streams()
                && matches!(
                    e.etype(),
                    ErrorType::ReadTimedout
                        | ErrorType::WriteTimedout
                        | ErrorType::ConnectionClosed
                )
                && ctx.head_elapsed.is_none()
            {
                self.eject(ctx, "timeout or reset before the response head");
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if session.response_written().is_some() {
            // The client already has its head (a 101 tunnel, an SSE 200): nothing can be
            // answered any more, and this is a broken stream, not a rejection.
            let kind = if ctx.kind.tunnel() {
                "websocket"
            } else {
                "stream"
            };
            self.metrics.stream_errors.with_label_values(&[kind]).inc();
            tracing::debug!(error = %e, kind, "stream broken after its response head");
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let answer = if let Some(a) = ctx.take_http_answer() {
            Some(a)
        } else if let Some(re) = ctx.pick_mut().and_then(|p| p.error.take()) {
            Some(EdgeError::from(&re))
        } else {
            match (e.esource(), e.etype()) {
                (_, ErrorType::HTTPStatus(408)) if ctx.body.late_answer().is_some() => {
                    ctx.body.late_answer()
                }
                (_, ErrorType::HTTPStatus(code)) => Some(EdgeError::from_status(*code)),
                (ErrorSource::Upstream, etype) => match (ctx.route(), error_kind(e)) {
                    (Some(r), "connect") | (Some(r), "io") | (Some(r), "timeout")
                        if ctx.head_elapsed.is_none()
                            && !matches!(etype, ErrorType::ReadTimedout) =>
                    {
                        let key = r.key.as_ref().map(|k| k.as_str());
                        let retry_after = match r.worker.snapshot().ejected_until {
                            Some(until) => {
                                let secs = until
                                    .saturating_duration_since(Instant::now())
                                    .as_secs_f64();
                                secs.ceil().max(1.0) as u64
                            }
                            None => errors::UNAVAILABLE_RETRY_AFTER_SECS,
                        };
                        Some(EdgeError::WorkerUnavailable {
                            session: key.map(str::to_string),
                            worker: r.worker.spec.id.clone(),
                            retry_after,
                        })
                    }
                    (_, _) if matches!(etype, ErrorType::ReadTimedout) => {
                        Some(EdgeError::UpstreamTimeout)
                    }
                    _ => Some(EdgeError::BadGateway),
                },
                (ErrorSource::Downstream, ErrorType::ReadError)
                | (ErrorSource::Downstream, ErrorType::WriteError)
                | (ErrorSource::Downstream, ErrorType::ConnectionClosed) => None,
                (ErrorSource::Downstream, _) => Some(EdgeError::BadRequest),
                _ => Some(EdgeError::Internal),
            }
        };
        let code = match answer {
            Some(a) => {
                self.answer(session, ctx, &a, true).await;
                a.status()
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.in_flight {
            self.metrics.requests_in_flight.dec();
        }
        if ctx.ws_counted {
            self.metrics.websockets_active.dec();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.own_status);
        // Label values borrowed, not formatted (no allocation per request), and bounded:
        // the method folded to the standard set, the status a real code or `other`.
        let mut status_buf = [0u8; 3];
        let status_s = hotplex_common::metrics::status_label(status, &mut status_buf);
        let method = session.req_header().method.as_str();
        let method_l = hotplex_common::metrics::method_label(method);
        let label = ctx.kind.label();
        self.metrics
            .requests_total
            .with_label_values(&[label, status_s])
            .inc();
        self.count_route(ctx, status_s);
        let elapsed = ctx.head_elapsed.unwrap_or_else(|| ctx.start.elapsed());
        self.metrics
            .request_duration
            .with_label_values(&[label, method_l, status_s])
            .observe(elapsed.as_secs_f64());
        // No worker answer (proxy error, failed connect, client gone): settled here (the
        // guards would give the slot back when `ctx` drops anyway).
        self.settle_session(ctx, status);
        let route = ctx.kind.route();
        let worker = route.map_or(routes::upstream_of(&ctx.kind), |r| {
            r.worker.spec.id.as_str()
        });
        let session_id = route
            .and_then(|r| r.minted.as_ref().or(r.key.as_ref()))
            .map_or("", |k| k.as_str());
        // The access line is a child of the request span (trace_id/span_id in the log).
        let trace = ctx.trace.take();
        let parent = trace.as_ref().and_then(|t| t.span().id());
        let ids = trace.as_ref().and_then(|t| t.log_ids());
        tracing::info!(
            target: "access",
            parent: parent,
            method,
            path = session.req_header().uri.path(),
            status,
            latency_ms = ctx.start.elapsed().as_secs_f64() * 1000.0,
            upstream_latency_ms = ctx.upstream_elapsed.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
            bytes = session.body_bytes_sent(),
            bytes_received = session.body_bytes_read(),
            worker,
            node_id = worker,
            session_id,
            key_source = route.and_then(|r| r.source).map_or("none", |s| s.as_str()),
            outcome = route.map_or("", |r| r.outcome.as_str()),
            request_id = ctx.request_id.as_str(),
            tenant = ctx.security.tenant_label(),
            error = e.map(|e| e.to_string()).unwrap_or_default(),
            trace_id = ids.map(|i| i.0),
            span_id = ids.map(|i| i.1),
        );
        if let Some(t) = trace {
            t.finish(status, session.body_bytes_sent(), e);
        }
    }
}
