//! The session pool's part of a request: routing decisions, passive ejection, the
//! settling of a worker's session count, and the re-placement of a refused new session.

use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;
use pingora::Result;

use super::{Ctx, HotplexProxy, MAX_PLACEMENT_TRIES};
use hotplex_common::headers as h;

use crate::routing::key::KeyInput;
use crate::routing::{self, Outcome, Route, RouteError};

impl HotplexProxy {
    pub(super) fn eject(&self, ctx: &Ctx, why: &str) {
        let Some(route) = ctx.route.as_ref() else {
            return;
        };
        let cfg = self.registry.config();
        if let Some(period) = route.worker.eject(&cfg.ejection, Instant::now()) {
            self.metrics
                .worker_ejections
                .with_label_values(&[&route.worker.spec.id])
                .inc();
            tracing::warn!(worker = %route.worker.spec.id, period_ms = period.as_millis() as u64, reason = why, "worker ejected");
        }
    }

    pub(super) fn decide(&self, session: &Session, ctx: &Ctx) -> Result<Route, RouteError> {
        let req = session.req_header();
        let cookies: Vec<&[u8]> = req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let input = routing::Request {
            keys: KeyInput {
                path: req.uri.path().as_bytes(),
                query: req.uri.query().map(str::as_bytes),
                header: req.headers.get(h::X_HOTPLEX_SESSION).map(|v| v.as_bytes()),
                cookies: &cookies,
            },
            create: ctx.create,
            websocket: ctx.websocket,
            tenant: ctx.security.tenant.as_deref().unwrap_or(""),
        };
        routing::route(&self.registry, &input, &ctx.excluded)
    }

    pub(super) fn count_decision(&self, r: &std::result::Result<Route, RouteError>) {
        let (source, outcome) = match r {
            Ok(route) => (
                route.source.map_or("none", |s| s.as_str()),
                route.outcome.as_str(),
            ),
            Err(e) => e.labels(),
        };
        self.metrics
            .routing_decisions
            .with_label_values(&[source, outcome])
            .inc();
    }

    /// Settles the worker's session count once per request, for its final status: a
    /// create that succeeded is counted as placed, one that failed gives its reserved
    /// slot back, a successful delete frees one.
    pub(super) fn settle_session(&self, ctx: &mut Ctx, status: u16) {
        if std::mem::replace(&mut ctx.settled, true) {
            return;
        }
        let Some(route) = ctx.route.as_ref() else {
            return;
        };
        let ok = (200..300).contains(&status);
        if route.counted {
            if ok {
                self.metrics
                    .sessions_placed
                    .with_label_values(&[&route.worker.spec.id])
                    .inc();
            }
            route.worker.settle_create(ok);
        }
        if ctx.delete {
            route.worker.settle_delete(ok);
        }
    }

    /// A new session's worker failed (connect) or refused it (503) before the client saw
    /// anything: gives its slot back and has `upstream_peer` place it on another worker,
    /// up to [`MAX_PLACEMENT_TRIES`]. Returns the worker left behind; `None`: not a placed
    /// create, or out of tries (the route stays).
    pub(super) fn replace_elsewhere(&self, ctx: &mut Ctx) -> Option<Arc<crate::upstream::Worker>> {
        let placed = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Placed);
        if !placed || ctx.excluded.len() + 1 >= MAX_PLACEMENT_TRIES {
            return None;
        }
        let route = ctx.route.take()?;
        if route.counted {
            route.worker.settle_create(false);
        }
        ctx.excluded.push(route.worker.spec.id.clone());
        ctx.reroute = true;
        Some(route.worker)
    }
}
