//! The session pool's part of a request (choose and forward): the routing decision,
//! passive ejection, the settling of a worker's session count, and the re-placement of a
//! new session that failed or was refused.
//!
//! A create's slot and a DELETE in flight are guards
//! ([`crate::routing::reservation`]) held in [`SessionPick`]: settled with the worker's
//! final status in `response_filter`, otherwise given back when the pick is dropped
//! (re-placement, a proxy answer, a client gone: every path, exactly once).

use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::classify::{RequestKind, SessionOp};
use super::{Ctx, HotplexProxy, MAX_PLACEMENT_TRIES};
use hotplex_common::headers as h;

use crate::routing::key::KeyInput;
use crate::routing::reservation::PendingDelete;
use crate::routing::{self, Outcome, Route, RouteError};

/// The session pool's per-request state: the chosen worker and what it owes the worker's
/// accounting.
#[derive(Debug, Default)]
pub struct SessionPick {
    /// The chosen worker (with a create's slot reservation).
    pub route: Option<Route>,
    /// Why no worker was chosen on a re-placement (answered by `fail_to_proxy`).
    pub error: Option<RouteError>,
    /// Workers that failed or refused this new session (not placed on again).
    pub excluded: Vec<String>,
    /// A re-placement is due: `upstream_peer` chooses again.
    pub replace: Option<Replace>,
    /// A DELETE sent to the chosen worker, until its answer.
    pub delete: Option<PendingDelete>,
}

/// Why a new session is being placed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Its worker failed to connect.
    ConnectFailed,
    /// Its worker answered 503 (full or draining): not a failure of the worker.
    Refused,
}

impl Ctx {
    /// The session pool's state of a session request.
    pub(super) fn pick(&self) -> Option<&SessionPick> {
        match &self.kind {
            RequestKind::Session { pick, .. } => Some(pick),
            _ => None,
        }
    }

    pub(super) fn pick_mut(&mut self) -> Option<&mut SessionPick> {
        match &mut self.kind {
            RequestKind::Session { pick, .. } => Some(pick),
            _ => None,
        }
    }

    /// The chosen worker's route of a session request.
    pub(super) fn route(&self) -> Option<&Route> {
        self.kind.route()
    }
}

impl RequestKind {
    /// The chosen worker's route of a session request (borrows only the kind).
    pub fn route(&self) -> Option<&Route> {
        match self {
            RequestKind::Session { pick, .. } => pick.route.as_ref(),
            _ => None,
        }
    }
}

impl HotplexProxy {
    pub(super) fn eject(&self, ctx: &Ctx, why: &str) {
        let Some(route) = ctx.route() else {
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

    /// The routing decision (counted, traced) for a session request.
    pub(super) fn decide(&self, session: &Session, ctx: &Ctx) -> Result<Route, RouteError> {
        let select = ctx.trace.as_ref().map(|t| t.select());
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
                header: req
                    .headers
                    .get(&h::name::X_HOTPLEX_SESSION)
                    .map(|v| v.as_bytes()),
                cookies: &cookies,
            },
            create: ctx.kind.creates(),
            websocket: ctx.kind.op() == Some(SessionOp::WebSocket),
            tenant: ctx.security.tenant.as_deref().unwrap_or(""),
        };
        let excluded = ctx.pick().map_or(&[][..], |p| &p.excluded[..]);
        let decision = routing::route(&self.registry, &input, excluded);
        self.count_decision(&decision);
        if let (Some(t), Some(sel)) = (ctx.trace.as_ref(), select) {
            t.selected(sel, &decision);
        }
        decision
    }

    /// Choose for a session request: the worker, or the answer why none.
    pub(super) fn choose_worker(&self, session: &Session, ctx: &mut Ctx) -> Result<(), RouteError> {
        let route = self.decide(session, ctx)?;
        let op = ctx.kind.op();
        if let Some(pick) = ctx.pick_mut() {
            if op == Some(SessionOp::Delete) {
                pick.delete = Some(PendingDelete::begin(&route.worker));
            }
            pick.route = Some(route);
        }
        Ok(())
    }

    /// In `upstream_peer`: a new session whose worker failed or refused it is placed again
    /// (the failed placement's slot was given back when its route was dropped).
    pub(super) fn replace_if_due(&self, session: &Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.pick_mut().and_then(|p| p.replace.take()).is_none() {
            return Ok(());
        }
        let decision = self.decide(session, ctx);
        let Some(pick) = ctx.pick_mut() else {
            return Ok(());
        };
        match decision {
            Ok(r) => {
                pick.route = Some(r);
                Ok(())
            }
            Err(e) => {
                pick.error = Some(e);
                Error::e_explain(ErrorType::HTTPStatus(503), "re-placement failed")
            }
        }
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

    /// Settles the worker's session count for the request's final status: a create that
    /// succeeded keeps its slot (counted as placed), one that failed gives it back, a
    /// successful delete frees one. Settling takes the guards: a second call does nothing.
    pub(super) fn settle_session(&self, ctx: &mut Ctx, status: u16) {
        let ok = (200..300).contains(&status);
        let Some(pick) = ctx.pick_mut() else {
            return;
        };
        if let Some(d) = pick.delete.take() {
            d.settle(ok);
        }
        let Some(route) = pick.route.as_mut() else {
            return;
        };
        if let Some(slot) = route.reservation.take() {
            if ok {
                self.metrics
                    .sessions_placed
                    .with_label_values(&[&route.worker.spec.id])
                    .inc();
            }
            slot.settle(ok);
        }
    }

    /// A new session's worker failed (connect) or refused it (503) before the client saw
    /// anything: drops its route (the slot is given back) and has `upstream_peer` place it
    /// on another worker, up to [`MAX_PLACEMENT_TRIES`]. Returns the worker left behind;
    /// `None`: not a placed create, or out of tries (the route stays).
    pub(super) fn replace_elsewhere(
        &self,
        ctx: &mut Ctx,
        why: Replace,
    ) -> Option<Arc<crate::upstream::Worker>> {
        let pick = ctx.pick_mut()?;
        let placed = pick
            .route
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Placed);
        if !placed || pick.excluded.len() + 1 >= MAX_PLACEMENT_TRIES {
            return None;
        }
        let route = pick.route.take()?;
        pick.excluded.push(route.worker.spec.id.clone());
        pick.replace = Some(why);
        Some(route.worker.clone())
    }
}
