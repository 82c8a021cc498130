//! Session routing: which worker serves a request.
//!
//! 1. [`key`]: find the routing key (path, query, header, cookie: configurable order).
//! 2. A key of the signed-id shape ([`affinity`]) must verify *for the caller's tenant*:
//!    then it is *pinned* and goes to the worker it names, whatever the hash says, so
//!    adding workers moves no session. Another tenant's id, a forgery, an expired id or one
//!    signed by a rotated-out secret: 404 `session_not_found`, the same answer as an
//!    unknown session, and nothing is forwarded. A verified id whose worker is no longer
//!    configured: 410 `session_worker_gone`; configured but down, ejected or unreachable:
//!    503 `worker_unavailable` + `Retry-After`. A pinned session is never rerouted.
//!    An affinity *cookie* pins keyless requests to its worker; one naming a removed
//!    worker is only a hint: the request is placed as new and gets a fresh cookie.
//! 3. Any other valid key is a *client-chosen* id, named within the caller's tenant:
//!    weighted rendezvous hashing ([`hrw`]) over all configured workers on
//!    `tenant "\n" id`, so two tenants' `demo-1` are two sessions and one tenant finds its
//!    own from any proxy. Deterministic across proxies; ~1/N of such keys move on scale-out
//!    (the documented limit).
//! 4. No key: a new session, placed load-aware ([`placement`]); `POST /sessions` and a
//!    keyless WebSocket get a minted, tenant-bound id (sent to the worker in
//!    `X-Hotplex-Session`), and every keyless response sets the signed affinity cookie.
//!    No worker with room: 503 `no_capacity`.
//!
//! A create's slot on the chosen worker is held by a [`reservation::SlotReservation`] in
//! the [`Route`]: given back when the route is dropped, unless the create succeeded.

/// Re-exported: the signer lives in the leaf module [`crate::affinity`] (the registry holds it,
/// so `upstream` imports it without importing `routing`).
pub use crate::affinity;
pub mod hrw;
pub mod key;
pub mod placement;
pub mod reservation;

use std::sync::Arc;
use std::time::Instant;

use hotplex_common::{SessionId, SessionIdError};

use crate::config::KeySource;
use crate::errors::EdgeError;
use crate::upstream::{Registry, Worker};
use key::KeyInput;
use placement::Candidate;
use reservation::SlotReservation;

/// How the worker was chosen (metric label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pinned,
    Hashed,
    Placed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pinned => "pinned",
            Outcome::Hashed => "hashed",
            Outcome::Placed => "placed",
        }
    }
}

/// A routing decision.
#[derive(Debug)]
pub struct Route {
    pub worker: Arc<Worker>,
    pub outcome: Outcome,
    /// Where the key came from (`None`: keyless).
    pub source: Option<KeySource>,
    /// The key, if any.
    pub key: Option<SessionId>,
    /// Session id minted for a `POST /sessions` or a keyless WebSocket (sent as
    /// `X-Hotplex-Session`).
    pub minted: Option<SessionId>,
    /// Affinity cookie value to set on the response.
    pub cookie: Option<Arc<str>>,
    /// The slot a create counted on the worker: released when the route drops, unless
    /// settled with the worker's answer first.
    pub reservation: Option<SlotReservation>,
}

/// Why no worker was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    Invalid {
        source: KeySource,
        error: SessionIdError,
    },
    Gone {
        session: String,
        worker: String,
        source: KeySource,
    },
    Unavailable {
        session: Option<String>,
        worker: String,
        source: Option<KeySource>,
    },
    NoCapacity,
    /// A signed-shaped id that does not verify for the caller's tenant (answered exactly
    /// like an unknown session).
    NotFound {
        session: String,
        source: KeySource,
        why: affinity::Refused,
    },
}

impl RouteError {
    /// Metric labels `(source, outcome)`.
    pub fn labels(&self) -> (&'static str, &'static str) {
        match self {
            RouteError::Invalid { source, .. } => (source.as_str(), "invalid"),
            RouteError::Gone { source, .. } => (source.as_str(), "gone"),
            RouteError::Unavailable { source, .. } => {
                (source.map_or("none", |s| s.as_str()), "unavailable")
            }
            RouteError::NoCapacity => ("none", "no_capacity"),
            RouteError::NotFound { source, .. } => (source.as_str(), "not_found"),
        }
    }
}

/// The edge's answer to a routing refusal (the catalogue: [`crate::errors`]).
impl From<&RouteError> for EdgeError {
    fn from(e: &RouteError) -> EdgeError {
        match e {
            RouteError::Invalid { source, error } => EdgeError::InvalidSessionId {
                source: source.as_str(),
                message: error.to_string(),
            },
            RouteError::Gone {
                session, worker, ..
            } => EdgeError::SessionWorkerGone {
                session: session.clone(),
                worker: worker.clone(),
            },
            RouteError::Unavailable {
                session, worker, ..
            } => EdgeError::WorkerUnavailable {
                session: session.clone(),
                worker: worker.clone(),
                retry_after: crate::errors::UNAVAILABLE_RETRY_AFTER_SECS,
            },
            RouteError::NotFound { session, .. } => EdgeError::SessionNotFound {
                session: session.clone(),
            },
            RouteError::NoCapacity => EdgeError::NoCapacity,
        }
    }
}

/// The request as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub keys: KeyInput<'a>,
    /// `POST /sessions`: a session is being created.
    pub create: bool,
    /// A WebSocket upgrade (a keyless one gets a minted id for its frames).
    pub websocket: bool,
    /// The caller's tenant (`""`: anonymous). Signed ids verify only for it; client-chosen
    /// ids are hashed within it.
    pub tenant: &'a str,
}

impl Request<'_> {
    /// Whether a route without a session key mints one.
    fn mints(&self) -> bool {
        self.create || self.websocket
    }
}

/// Decides the worker. `exclude`: worker ids that already failed to connect for this
/// request (placement retries only).
pub fn route(reg: &Registry, req: &Request<'_>, exclude: &[String]) -> Result<Route, RouteError> {
    let config = reg.config();
    let workers = reg.workers();
    let now = Instant::now();
    let found = key::extract(&config.key_sources, &req.keys).map_err(|e| RouteError::Invalid {
        source: e.source,
        error: e.error,
    })?;
    let Some(found) = found else {
        return place(reg, req, exclude, now);
    };
    let signer = reg.signer();
    if found.source == KeySource::Cookie {
        // A cookie is a placement hint: pins keyless requests to its worker.
        let Some(pinned) = signer.verify_cookie(found.key.as_str()) else {
            return place(reg, req, exclude, now);
        };
        let Some(worker) = workers.get(pinned.worker) else {
            return place(reg, req, exclude, now);
        };
        return keyed(
            worker,
            req,
            &signer,
            found.source,
            None,
            Outcome::Pinned,
            now,
        );
    }
    if let Some(verified) = signer.verify_session(found.key.as_str(), req.tenant) {
        let pinned = verified.map_err(|why| RouteError::NotFound {
            session: found.key.to_string(),
            source: found.source,
            why,
        })?;
        let Some(worker) = workers.get(pinned) else {
            return Err(RouteError::Gone {
                session: found.key.to_string(),
                worker: pinned.to_string(),
                source: found.source,
            });
        };
        let key = Some(found.key);
        return keyed(
            worker,
            req,
            &signer,
            found.source,
            key,
            Outcome::Pinned,
            now,
        );
    }
    // Client-chosen key: rendezvous over every configured worker, within the tenant.
    let configured: Vec<&Arc<Worker>> = workers.configured().collect();
    let i = hrw::pick(
        configured
            .iter()
            .map(|w| (w.spec.id.as_str(), w.spec.weight)),
        &tenant_key(req.tenant, found.key.as_str()),
    )
    .ok_or(RouteError::NoCapacity)?;
    let key = Some(found.key);
    keyed(
        configured[i],
        req,
        &signer,
        found.source,
        key,
        Outcome::Hashed,
        now,
    )
}

/// The route of a request with a key (`key`: a session id; `None`: an affinity cookie, which
/// mints an id for a create or a WebSocket): refused while the worker is down or ejected,
/// never rerouted; a create counts a session on the worker.
fn keyed(
    worker: &Arc<Worker>,
    req: &Request<'_>,
    signer: &affinity::Signer,
    source: KeySource,
    key: Option<SessionId>,
    outcome: Outcome,
    now: Instant,
) -> Result<Route, RouteError> {
    if !worker.available(now) {
        return Err(RouteError::Unavailable {
            session: key.map(SessionId::into_string),
            worker: worker.spec.id.clone(),
            source: Some(source),
        });
    }
    let minted =
        (key.is_none() && req.mints()).then(|| signer.mint_session(&worker.spec.id, req.tenant));
    let reservation = req.create.then(|| SlotReservation::count(worker));
    Ok(Route {
        worker: worker.clone(),
        outcome,
        source: Some(source),
        key,
        minted,
        cookie: None,
        reservation,
    })
}

/// The hash input of a client-chosen id: `tenant "\n" id` (ids and tenants have no `\n`).
pub fn tenant_key(tenant: &str, id: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\n", id.as_bytes()].concat()
}

fn place(
    reg: &Registry,
    req: &Request<'_>,
    exclude: &[String],
    now: Instant,
) -> Result<Route, RouteError> {
    let workers = reg.workers();
    let signer = reg.signer();
    // One lock per worker; no state is cloned beyond what placement reads.
    let mut placeable: Vec<&Arc<Worker>> = Vec::with_capacity(workers.list.len());
    let mut cands: Vec<Candidate<'_>> = Vec::with_capacity(workers.list.len());
    for w in workers.live().filter(|w| !exclude.contains(&w.spec.id)) {
        if let Some((sessions, capacity)) = w.placement_load(now) {
            placeable.push(w);
            cands.push(Candidate {
                id: &w.spec.id,
                sessions,
                capacity,
            });
        }
    }
    let r: u64 = rand::random();
    // Only creates reserve; other keyless requests (WebSocket, lists) just go there.
    let first = placement::first(&cands, r).map(|i| placeable[i]);
    let (worker, reservation) = if !req.create {
        (first.ok_or(RouteError::NoCapacity)?.clone(), None)
    } else {
        let mut chosen = first.and_then(|w| SlotReservation::try_reserve(w, now).map(|s| (w, s)));
        if chosen.is_none() && cands.len() > 1 {
            // The best candidate filled up between the snapshot and the reservation.
            chosen = placement::rank(&cands, r)
                .into_iter()
                .skip(1)
                .map(|i| placeable[i])
                .find_map(|w| SlotReservation::try_reserve(w, now).map(|s| (w, s)));
        }
        let (w, s) = chosen.ok_or(RouteError::NoCapacity)?;
        (w.clone(), Some(s))
    };
    Ok(Route {
        minted: req
            .mints()
            .then(|| signer.mint_session(&worker.spec.id, req.tenant)),
        cookie: Some(signer.cookie_value(&worker.spec.id)),
        worker,
        outcome: Outcome::Placed,
        source: None,
        key: None,
        reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::upstream::ReadyReport;

    fn registry(workers: &[&str]) -> Registry {
        let mut y = String::from("workers:\n");
        for (i, w) in workers.iter().enumerate() {
            y.push_str(&format!(
                "  - id: {w}\n    address: 127.0.0.1:{}\n    capacity: 100\n",
                9000 + i
            ));
        }
        Registry::new(parse("t", &y).expect("valid"))
    }

    fn req<'a>(path: &'a [u8], header: Option<&'a [u8]>, create: bool) -> Request<'a> {
        Request {
            keys: KeyInput {
                path,
                header,
                ..Default::default()
            },
            create,
            websocket: false,
            tenant: "t1",
        }
    }

    #[test]
    fn create_mints_a_pinned_id_that_routes_back() {
        let reg = registry(&["w1", "w2", "w3"]);
        let r = route(&reg, &req(b"/sessions", None, true), &[]).expect("placed");
        assert_eq!(r.outcome, Outcome::Placed);
        let id = r.minted.expect("minted");
        assert!(id.as_str().starts_with(&format!("{}.", r.worker.spec.id)));
        assert!(r.cookie.is_some());
        let path = format!("/sessions/{id}/messages");
        for _ in 0..20 {
            let again = route(&reg, &req(path.as_bytes(), None, false), &[]).expect("pinned");
            assert_eq!(again.outcome, Outcome::Pinned);
            assert_eq!(again.worker.spec.id, r.worker.spec.id);
        }
    }

    #[test]
    fn pinned_ids_survive_adding_workers_and_fail_cleanly() {
        let reg = registry(&["w1", "w2"]);
        let ids: Vec<(String, String)> = (0..50)
            .map(|_| {
                let r = route(&reg, &req(b"/sessions", None, true), &[]).expect("placed");
                (r.minted.expect("id").to_string(), r.worker.spec.id.clone())
            })
            .collect();
        let bigger = registry(&["w1", "w2", "w3", "w4"]);
        for (id, w) in &ids {
            let p = format!("/sessions/{id}");
            let r = route(&bigger, &req(p.as_bytes(), None, false), &[]).expect("routes");
            assert_eq!(&r.worker.spec.id, w);
        }
        let smaller = registry(&["w2"]);
        let (id, _) = ids.iter().find(|(_, w)| w == "w1").expect("some on w1");
        let p = format!("/sessions/{id}");
        assert!(matches!(
            route(&smaller, &req(p.as_bytes(), None, false), &[]),
            Err(RouteError::Gone { .. })
        ));
        let now = Instant::now();
        reg.workers()
            .get("w1")
            .expect("w1")
            .eject(&reg.config().ejection, now);
        assert!(matches!(
            route(&reg, &req(p.as_bytes(), None, false), &[]),
            Err(RouteError::Unavailable { .. })
        ));
    }

    #[test]
    fn cookie_pins_and_mints_for_its_worker() {
        let reg = registry(&["w1", "w2", "w3"]);
        let cookie = reg.signer().cookie_value("w2");
        let header = format!("hotplex_affinity={cookie}");
        let cookies: [&[u8]; 1] = [header.as_bytes()];
        let r = Request {
            keys: KeyInput {
                path: b"/sessions",
                cookies: &cookies,
                ..Default::default()
            },
            create: true,
            websocket: false,
            tenant: "t1",
        };
        for _ in 0..10 {
            let got = route(&reg, &r, &[]).expect("pinned");
            assert_eq!(got.outcome, Outcome::Pinned);
            assert_eq!(got.worker.spec.id, "w2");
            let minted = got.minted.expect("create mints");
            assert_eq!(
                reg.signer().verify_session(minted.as_str(), "t1"),
                Some(Ok("w2"))
            );
        }
        // A cookie naming a removed worker is only a hint: placed anew.
        let smaller = registry(&["w1", "w3"]);
        let got = route(&smaller, &r, &[]);
        // (same default secret: the cookie verifies, its worker is just not configured)
        assert_eq!(got.expect("placed").outcome, Outcome::Placed);
    }

    #[test]
    fn other_tenants_ids_are_not_found_and_client_ids_are_per_tenant() {
        let reg = registry(&["w1", "w2", "w3"]);
        let r = route(&reg, &req(b"/sessions", None, true), &[]).expect("placed");
        let id = r.minted.expect("minted");
        let path = format!("/sessions/{id}/messages");
        let mut other = req(path.as_bytes(), None, false);
        other.tenant = "t2";
        match route(&reg, &other, &[]) {
            Err(RouteError::NotFound { why, .. }) => assert_eq!(why, affinity::Refused::BadMac),
            x => panic!("expected not found, got {x:?}"),
        }
        other.tenant = "";
        assert!(matches!(
            route(&reg, &other, &[]),
            Err(RouteError::NotFound { .. })
        ));
        // A keyless WebSocket gets an id minted for its tenant.
        let mut ws = req(b"/ws/v1/agent", None, false);
        ws.websocket = true;
        let got = route(&reg, &ws, &[]).expect("placed");
        let minted = got.minted.expect("a keyless websocket mints");
        assert_eq!(
            reg.signer().verify_session(minted.as_str(), "t1"),
            Some(Ok(got.worker.spec.id.as_str()))
        );
        // Client-chosen ids hash on (tenant, id): over many ids, two tenants' workers
        // differ for some, and each tenant's choice is stable.
        let mut differ = 0;
        for i in 0..200 {
            let k = format!("demo-{i}");
            let mut a = req(b"/x", Some(k.as_bytes()), false);
            let first = route(&reg, &a, &[]).expect("hashed").worker.spec.id.clone();
            assert_eq!(route(&reg, &a, &[]).expect("again").worker.spec.id, first);
            a.tenant = "t2";
            if route(&reg, &a, &[]).expect("hashed").worker.spec.id != first {
                differ += 1;
            }
        }
        assert!(
            differ > 50,
            "tenants share the hash input ({differ} of 200 differ)"
        );
    }

    #[test]
    fn foreign_keys_hash_and_invalid_keys_fail() {
        let reg = registry(&["w1", "w2", "w3"]);
        let a = route(&reg, &req(b"/x", Some(b"client-chosen-1"), false), &[]).expect("hashed");
        assert_eq!(a.outcome, Outcome::Hashed);
        let b = route(&reg, &req(b"/x", Some(b"client-chosen-1"), false), &[]).expect("hashed");
        assert_eq!(a.worker.spec.id, b.worker.spec.id);
        assert!(matches!(
            route(&reg, &req(b"/x", Some(b"bad id"), false), &[]),
            Err(RouteError::Invalid { .. })
        ));
    }

    #[test]
    fn placement_skips_draining_and_full_and_reports_no_capacity() {
        let reg = registry(&["w1", "w2"]);
        let ws = reg.workers();
        let report = |n, draining| ReadyReport {
            sessions_active: n,
            max_sessions: Some(100),
            draining,
            full: false,
        };
        ws.get("w1").expect("w1").observe_ready(report(0, true));
        for _ in 0..10 {
            let r = route(&reg, &req(b"/sessions", None, true), &[]).expect("placed");
            assert_eq!(r.worker.spec.id, "w2");
            r.reservation.expect("a create reserves").commit();
        }
        ws.get("w2").expect("w2").observe_ready(report(100, false));
        assert_eq!(
            route(&reg, &req(b"/sessions", None, true), &[]).err(),
            Some(RouteError::NoCapacity)
        );
        ws.get("w1").expect("w1").observe_ready(report(0, false));
        let r = route(&reg, &req(b"/sessions", None, true), &["w1".to_string()]);
        assert_eq!(r.err(), Some(RouteError::NoCapacity), "w1 excluded");
    }

    #[test]
    fn route_errors_map_to_the_catalogue() {
        let e = EdgeError::from(&RouteError::NotFound {
            session: "w1.r.v2-k.mac".into(),
            source: KeySource::Path,
            why: affinity::Refused::BadMac,
        });
        assert_eq!(
            e,
            EdgeError::SessionNotFound {
                session: "w1.r.v2-k.mac".into()
            }
        );
        let e = EdgeError::from(&RouteError::Unavailable {
            session: Some("s".into()),
            worker: "w2".into(),
            source: None,
        });
        assert_eq!(
            e.headers(),
            vec![(hotplex_common::headers::RETRY_AFTER, "1".to_string())]
        );
        assert_eq!(e.body()["worker"], "w2");
        let e = EdgeError::from(&RouteError::Invalid {
            source: KeySource::Header,
            error: SessionIdError::TooLong,
        });
        assert_eq!(e.status(), 400);
        assert_eq!(e.body()["source"], "header");
        assert_eq!(
            EdgeError::from(&RouteError::NoCapacity),
            EdgeError::NoCapacity
        );
    }
}
