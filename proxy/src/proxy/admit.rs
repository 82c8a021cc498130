//! The pipeline's steps between classify and forward, as `request_filter` runs them (in
//! this order):
//! [`screen`] (a head that must never be forwarded), the route's own policies (IP rules,
//! redirect), [`surface`] (what the edge answers itself), [`HotplexProxy::admit`] (auth,
//! limits), [`HotplexProxy::read_body`], [`HotplexProxy::stream_timeouts`], then
//! [`HotplexProxy::choose`] (an `http` upstream or a session worker). Each step passes or
//! stops the request with the answer to write ([`Stop`]); [`HotplexProxy::stop`] writes it.

use pingora::proxy::Session;

use super::classify::RequestKind;
use super::{head, routes, Ctx, HotplexProxy};
use crate::errors::EdgeError;

/// Why the pipeline stopped a request: the answer the edge writes instead of forwarding.
pub(super) enum Stop {
    /// An answer of the edge's own (refusals of auth and limits too, with their
    /// headers); `close`: the connection is not reused.
    Answer { answer: EdgeError, close: bool },
    /// The matched route's redirect.
    Redirect(crate::routes::Matched),
}

impl Stop {
    pub(super) fn answer(answer: EdgeError) -> Stop {
        Stop::Answer {
            answer,
            close: false,
        }
    }

    /// An answer after which the connection is closed (the request's framing or body
    /// cannot be trusted or was not read).
    pub(super) fn closing(answer: EdgeError) -> Stop {
        Stop::Answer {
            answer,
            close: true,
        }
    }
}

/// A head other parsers would frame differently (request smuggling, see
/// [`crate::hostile`]) or too large to forward: refused before anything else.
pub(super) fn screen(session: &Session) -> Result<(), Stop> {
    if let Some(anomaly) = crate::hostile::check_session(session) {
        tracing::debug!(%anomaly, "malformed HTTP/1 request head");
        return Err(Stop::closing(EdgeError::MalformedHead));
    }
    // Answered here: forwarded, a worker rejecting a huge head would look like a failing
    // worker (reset -> 503 + ejection) to the proxy.
    match head::oversized_head(session.req_header()) {
        Some(answer) => Err(Stop::closing(answer)),
        None => Ok(()),
    }
}

/// The declared surface: nothing outside it reaches a pool (see [`crate::surface`]).
pub(super) fn surface(ctx: &Ctx) -> Result<(), Stop> {
    match &ctx.kind {
        RequestKind::Session { .. } | RequestKind::Http { .. } => Ok(()),
        RequestKind::ProxyHealth => Err(Stop::answer(EdgeError::Live)),
        RequestKind::NoRoute => Err(Stop::answer(EdgeError::NoRoute)),
        RequestKind::Undeclared => Err(Stop::answer(EdgeError::Undeclared)),
    }
}

impl HotplexProxy {
    /// Auth and limits ([`crate::security`]) under the request's route label (an http
    /// route's name) and the route's auth mode.
    pub(super) async fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Stop> {
        let cfg = self.registry.config();
        let (http_route, auth) = routes::admit_route(&ctx.kind, &ctx.matched);
        let route = http_route.unwrap_or(ctx.kind.label());
        let (create, tunnel) = (ctx.kind.creates(), ctx.kind.tunnel());
        let st = &mut ctx.security;
        st.auth = auth;
        let admitted =
            (self.security).admit(session, &cfg, &self.metrics, route, create, tunnel, st);
        admitted.await.map_err(Stop::answer)
    }

    /// The body, whole, before choosing: a slow body never reaches a worker (see
    /// [`crate::body`]). A tunnel has none.
    pub(super) async fn read_body(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Stop> {
        if ctx.kind.tunnel() {
            return Ok(());
        }
        let cfg = self.registry.config();
        let (max, timeout) = (routes::max_body(ctx, &cfg), cfg.limits.body_read_timeout);
        match crate::body::buffer(session, ctx.kind.creates(), max, timeout).await {
            Ok(true) => Ok(()),
            // Announced over the edge buffer (`limits.allow_streamed_bodies`): it must
            // arrive whole within the body timeout, each read and in total.
            Ok(false) => {
                ctx.body.start_streaming(timeout);
                Ok(())
            }
            Err(a) => Err(Stop::closing(a)),
        }
    }

    /// A streaming request's downstream timeouts: pingora's HTTP/1 read timeout (60 s)
    /// would otherwise end a quiet WebSocket (client silent) or a long request (pingora
    /// issue 255).
    pub(super) fn stream_timeouts(&self, session: &mut Session, ctx: &Ctx) {
        if !ctx.streams() {
            return;
        }
        let cfg = self.registry.config();
        let idle = routes::timeouts(ctx, &cfg).idle;
        let read = if ctx.body.streaming() {
            cfg.limits.body_read_timeout
        } else {
            idle
        };
        session.set_read_timeout(Some(read));
        session.set_write_timeout(Some(idle));
    }

    /// Choose: the `http` pool's upstream, or the session pool's worker.
    pub(super) fn choose(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Stop> {
        if let RequestKind::Http { pool, .. } = &mut ctx.kind {
            return match pool.choose(&session.req_header().headers) {
                true => Ok(()),
                false => Err(Stop::answer(EdgeError::NoHealthyUpstream {
                    pool: pool.pool.name.clone(),
                })),
            };
        }
        self.choose_worker(session, ctx)
            .map_err(|e| Stop::answer(EdgeError::from(&e)))
    }

    /// Writes the answer of a stopped request.
    pub(super) async fn stop(&self, session: &mut Session, ctx: &mut Ctx, stop: Stop) {
        match stop {
            Stop::Answer { answer, close } => self.answer(session, ctx, &answer, close).await,
            Stop::Redirect(m) => {
                if let Some(r) = &m.route().policy.redirect {
                    let req = session.req_header();
                    let location = r.location(req.uri.path(), req.uri.query());
                    let answer = EdgeError::redirect(r.status, location);
                    self.answer(session, ctx, &answer, false).await;
                }
            }
        }
    }
}
