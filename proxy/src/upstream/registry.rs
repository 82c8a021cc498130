//! The live state of the proxy: the arc-swapped config, the signer, and per-worker state
//! (health, fill, draining, passive ejection).
//!
//! Worker state is keyed by the stable worker id. [`Registry::set_config`] rebuilds the
//! worker set and carries the state of ids that remain over. A worker removed from the
//! config stays in the set as `removing` (draining: pinned sessions still reach it, nothing
//! new) until `workers_removal_grace` ends; then it is gone (410). Operator drains
//! (`POST /admin/workers/{id}/drain`) are kept by id across reloads.
//!
//! The worker set is the static `workers:` of the config plus the workers found by DNS
//! discovery ([`Registry::set_discovered`], see [`super::dns`]); both go through the same
//! rebuild, so a worker that leaves DNS is removed exactly like one deleted from the config.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::affinity::Signer;
use crate::config::runtime::EjectionSettings;
use crate::config::{RuntimeConfig, WorkerSpec};

/// What the last readiness probe reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyReport {
    /// `sessions_active` of the body.
    pub sessions_active: u64,
    /// `max_sessions` of the body, when present.
    pub max_sessions: Option<u64>,
    /// Status 503 `draining`.
    pub draining: bool,
    /// Status 503 `full`.
    pub full: bool,
}

/// Mutable per-worker state.
#[derive(Debug, Clone, Default)]
pub struct WorkerState {
    /// Active health (pingora's thresholds applied). Starts `true`, like pingora.
    pub healthy: bool,
    pub draining: bool,
    pub full: bool,
    /// Sessions at the last probe.
    pub reported_sessions: u64,
    /// `max_sessions` at the last probe.
    pub worker_max: Option<u64>,
    /// Placements minus deletions since the last probe.
    pub pending: i64,
    /// Creates and deletes sent to the worker and not yet answered.
    pub in_flight: u32,
    /// Bumped by every create or delete that starts or ends: a probe that saw it change
    /// cannot tell which of them its count includes.
    pub changes: u64,
    /// Probes in a row whose count was ambiguous (see [`Worker::observe_ready_since`]).
    pub ambiguous_probes: u32,
    /// Successful deletes, ever (a probe mark keeps the value it saw).
    pub deleted: u64,
    /// Passively ejected until then.
    pub ejected_until: Option<Instant>,
    /// Ejections since the last good probe (the backoff exponent).
    pub ejections_in_row: u32,
    /// A probe has answered at least once.
    pub probed: bool,
    /// Drained by the operator (admin API).
    pub drain_requested: bool,
    /// Its identity was proven by the last authenticated probe (see [`super::identity`]).
    pub verified: bool,
    /// Its last identity check failed: held out of all traffic until a probe proves it.
    pub impostor: bool,
}

/// One configured worker and its state.
#[derive(Debug)]
pub struct Worker {
    pub spec: WorkerSpec,
    state: Mutex<WorkerState>,
    /// Removed from the config: serves its sessions until then.
    pub removing_until: Option<Instant>,
    /// Found by DNS discovery (not in `workers:`).
    pub discovered: bool,
    /// `worker_auth.key` is set: no traffic before an authenticated probe proved it.
    pub identity_required: bool,
}

/// Lifecycle state shown by `/admin/workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    /// Config `drain`, admin drain or the worker's own `503 draining`.
    Draining,
    /// Removed from the config, within its grace.
    Removing,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Draining => "draining",
            Lifecycle::Removing => "removing",
        }
    }
}

impl Worker {
    fn new(spec: WorkerSpec, state: WorkerState) -> Worker {
        Worker {
            spec,
            state: Mutex::new(state),
            removing_until: None,
            discovered: false,
            identity_required: false,
        }
    }

    /// Removed and its grace is over.
    pub fn expired(&self, now: Instant) -> bool {
        self.removing_until.is_some_and(|t| t <= now)
    }

    /// Draining for any reason (probe, config, operator, removal).
    pub fn draining_of(&self, s: &WorkerState) -> bool {
        s.draining || s.drain_requested || self.spec.drain || self.removing_until.is_some()
    }

    /// The lifecycle state.
    pub fn lifecycle_of(&self, s: &WorkerState) -> Lifecycle {
        if self.removing_until.is_some() {
            Lifecycle::Removing
        } else if self.draining_of(s) {
            Lifecycle::Draining
        } else {
            Lifecycle::Active
        }
    }

    /// Sets the operator drain flag.
    pub fn set_drain_requested(&self, on: bool) {
        self.lock().drain_requested = on;
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> WorkerState {
        self.lock().clone()
    }

    /// `min(config capacity, worker max_sessions)`.
    pub fn capacity_of(&self, s: &WorkerState) -> u64 {
        s.worker_max
            .map_or(self.spec.capacity, |m| m.min(self.spec.capacity))
    }

    /// Estimated sessions (last probe + own placements − deletions).
    pub fn sessions_of(s: &WorkerState) -> u64 {
        (s.reported_sessions as i64 + s.pending).max(0) as u64
    }

    /// Healthy and not ejected: may receive requests.
    pub fn available(&self, now: Instant) -> bool {
        let s = self.lock();
        s.healthy && !ejected(&s, now) && self.identity_ok_of(&s)
    }

    /// Available, not draining, not full, below capacity: may receive new sessions.
    pub fn placeable_of(&self, s: &WorkerState, now: Instant) -> bool {
        s.healthy
            && !ejected(s, now)
            && self.identity_ok_of(s)
            && !self.draining_of(s)
            && !s.full
            && Self::sessions_of(s) < self.capacity_of(s)
    }

    /// `(sessions, capacity)` when placeable (one lock, nothing cloned).
    pub fn placement_load(&self, now: Instant) -> Option<(u64, u64)> {
        let s = self.lock();
        self.placeable_of(&s, now)
            .then(|| (Self::sessions_of(&s), self.capacity_of(&s)))
    }

    /// Reserves room for a new session if placeable (settled by [`Worker::settle_create`]).
    pub(crate) fn try_reserve(&self, now: Instant) -> bool {
        let mut s = self.lock();
        if self.placeable_of(&s, now) {
            s.pending += 1;
            start_op(&mut s);
            true
        } else {
            false
        }
    }

    /// Counts a session created without a capacity check (cookie / foreign key creates;
    /// settled by [`Worker::settle_create`]).
    pub(crate) fn add_session(&self) {
        let mut s = self.lock();
        s.pending += 1;
        start_op(&mut s);
    }

    /// A counted create was answered: a failed one gives its slot back.
    pub(crate) fn settle_create(&self, ok: bool) {
        let mut s = self.lock();
        end_op(&mut s);
        if !ok && Self::sessions_of(&s) > 0 {
            s.pending -= 1;
        }
    }

    /// The worker refused a new session (503 `full` or `draining`): no more placements on
    /// it until a probe or a freed slot says otherwise.
    pub fn mark_refusing(&self) {
        self.lock().full = true;
    }

    /// A DELETE is sent to the worker (settled by [`Worker::settle_delete`]).
    pub(crate) fn begin_delete(&self) {
        start_op(&mut self.lock());
    }

    /// A DELETE was answered: a successful one frees its slot.
    pub(crate) fn settle_delete(&self, ok: bool) {
        let mut s = self.lock();
        end_op(&mut s);
        if ok {
            s.deleted = s.deleted.wrapping_add(1);
            if Self::sessions_of(&s) > 0 {
                s.pending -= 1;
            }
            // A freed slot: the last probe's "full" is stale (capacity still bounds placement).
            s.full = false;
        }
    }

    /// A probe answered: take its numbers, clear any passive ejection.
    pub fn observe_ready(&self, r: ReadyReport) {
        let mark = self.probe_mark();
        self.observe_ready_since(r, mark);
    }

    /// The accounting when a probe is sent, handed back to
    /// [`Worker::observe_ready_since`] with its answer.
    pub fn probe_mark(&self) -> ProbeMark {
        let s = self.lock();
        ProbeMark {
            pending: s.pending,
            changes: s.changes,
            in_flight: s.in_flight,
            deleted: s.deleted,
        }
    }

    /// A probe sent at `mark` answered. When no create or delete was in flight at any
    /// time between the mark and now, its count is exact and replaces the estimate.
    /// Otherwise the worker may or may not have counted those (a create it already
    /// inserted, a delete it already finished): the local estimate, exact for this
    /// proxy's own placements, is kept, and only after [`MAX_AMBIGUOUS_PROBES`] such
    /// probes in a row (steady churn) is the count taken anyway, so that sessions other
    /// proxies placed or that ended on their own are still learnt. Then it is read the
    /// optimistic way: every create as counted by the worker, every delete answered since
    /// the mark as not. An estimate too low costs nothing (a worker's 503 to a new session
    /// is re-placed); one too high refuses sessions while a worker has room.
    pub fn observe_ready_since(&self, r: ReadyReport, mark: ProbeMark) {
        let mut s = self.lock();
        s.worker_max = r.max_sessions;
        s.draining = r.draining;
        s.ejected_until = None;
        s.ejections_in_row = 0;
        s.probed = true;
        let exact = mark.in_flight == 0 && s.changes == mark.changes;
        if !exact && s.ambiguous_probes < MAX_AMBIGUOUS_PROBES {
            s.ambiguous_probes += 1;
            return;
        }
        s.ambiguous_probes = 0;
        s.reported_sessions = r.sessions_active;
        if exact {
            s.pending -= mark.pending;
            s.full = r.full;
        } else {
            let deleted_since = s.deleted.wrapping_sub(mark.deleted);
            s.pending = -i64::try_from(deleted_since).unwrap_or(i64::MAX);
            // A slot freed since the mark makes the worker's "full" stale.
            s.full = r.full && deleted_since == 0;
        }
    }

    /// Health flipped (after pingora's thresholds).
    pub fn set_healthy(&self, healthy: bool) {
        self.lock().healthy = healthy;
    }

    /// Passive ejection for `base * 2^n` (capped). Returns the period, or `None` when the
    /// worker is already ejected (one outage counts once).
    pub fn eject(&self, e: &EjectionSettings, now: Instant) -> Option<Duration> {
        let mut s = self.lock();
        if ejected(&s, now) {
            return None;
        }
        let factor = 1u32
            .checked_shl(s.ejections_in_row.min(20))
            .unwrap_or(u32::MAX);
        let period = e.base.saturating_mul(factor).min(e.max);
        s.ejections_in_row = s.ejections_in_row.saturating_add(1);
        s.ejected_until = Some(now + period);
        Some(period)
    }
}

/// Probes in a row whose count is ambiguous before one is taken anyway.
pub const MAX_AMBIGUOUS_PROBES: u32 = 3;

/// The accounting of a worker when a probe was sent ([`Worker::probe_mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeMark {
    pending: i64,
    changes: u64,
    in_flight: u32,
    deleted: u64,
}

fn start_op(s: &mut WorkerState) {
    s.in_flight = s.in_flight.saturating_add(1);
    s.changes = s.changes.wrapping_add(1);
}

fn end_op(s: &mut WorkerState) {
    s.in_flight = s.in_flight.saturating_sub(1);
    s.changes = s.changes.wrapping_add(1);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ejected(s: &WorkerState, now: Instant) -> bool {
    s.ejected_until.is_some_and(|t| t > now)
}

/// The configured workers, in config order.
#[derive(Debug, Default)]
pub struct WorkerSet {
    pub list: Vec<Arc<Worker>>,
}

impl WorkerSet {
    /// Worker by id (configured, or removing within its grace).
    pub fn get(&self, id: &str) -> Option<&Arc<Worker>> {
        let now = Instant::now();
        self.list
            .iter()
            .find(|w| w.spec.id == id && !w.expired(now))
    }

    /// The configured workers (not removing): the hashing set.
    pub fn configured(&self) -> impl Iterator<Item = &Arc<Worker>> {
        self.list.iter().filter(|w| w.removing_until.is_none())
    }

    /// Configured workers and removing ones within their grace.
    pub fn live(&self) -> impl Iterator<Item = &Arc<Worker>> {
        let now = Instant::now();
        self.list.iter().filter(move |w| !w.expired(now))
    }
}

/// Config + signer + workers, each behind an `ArcSwap`.
pub struct Registry {
    config: ArcSwap<RuntimeConfig>,
    signer: ArcSwap<Signer>,
    workers: ArcSwap<WorkerSet>,
    /// Ids drained by the operator (kept across reloads).
    drained: Mutex<BTreeSet<String>>,
    /// The last worker set found by DNS discovery.
    discovered: Mutex<Vec<WorkerSpec>>,
    /// Serialises worker-set rebuilds (config reloads and discovery rounds).
    rebuild: Mutex<()>,
}

impl Registry {
    pub fn new(config: RuntimeConfig) -> Registry {
        let reg = Registry {
            signer: ArcSwap::from_pointee(Signer::with_lifetime(
                config.affinity_secrets.clone(),
                config.session_lifetime,
            )),
            workers: ArcSwap::from_pointee(WorkerSet::default()),
            config: ArcSwap::from_pointee(config.clone()),
            drained: Mutex::new(BTreeSet::new()),
            discovered: Mutex::new(Vec::new()),
            rebuild: Mutex::new(()),
        };
        reg.set_config(config);
        reg
    }

    fn drained(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.drained.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs a config; state of workers whose id remains is kept; removed workers enter
    /// `removing` for `workers_removal_grace` (zero: gone at once).
    pub fn set_config(&self, config: RuntimeConfig) {
        let _one = lock(&self.rebuild);
        let discovered = lock(&self.discovered).clone();
        self.install_workers(&config, &discovered);
        self.signer.store(Arc::new(Signer::with_lifetime(
            config.affinity_secrets.clone(),
            config.session_lifetime,
        )));
        self.config.store(Arc::new(config));
    }

    /// Installs the worker set found by DNS discovery (ignored while the config has no
    /// `discovery:`). Workers that left it are removed like workers deleted from the
    /// config (`removing` for `workers_removal_grace`). Returns `false` when nothing changed.
    pub fn set_discovered(&self, specs: Vec<WorkerSpec>) -> bool {
        let _one = lock(&self.rebuild);
        {
            let mut d = lock(&self.discovered);
            if *d == specs {
                return false;
            }
            *d = specs.clone();
        }
        self.install_workers(&self.config(), &specs);
        true
    }

    /// The last worker set found by DNS discovery.
    pub fn discovered(&self) -> Vec<WorkerSpec> {
        lock(&self.discovered).clone()
    }

    /// Static workers, then discovered ones (when discovery is configured) whose id and
    /// address are not taken by a static worker. `bool`: discovered.
    fn effective(config: &RuntimeConfig, discovered: &[WorkerSpec]) -> Vec<(WorkerSpec, bool)> {
        let mut out: Vec<(WorkerSpec, bool)> =
            config.workers.iter().map(|s| (s.clone(), false)).collect();
        if config.discovery.is_none() {
            return out;
        }
        for d in discovered {
            if let Some(s) = config
                .workers
                .iter()
                .find(|s| s.id == d.id || s.address == d.address)
            {
                tracing::warn!(worker = %d.id, address = %d.address, conflicts_with = %s.id, "discovered worker ignored: its id or address is a static worker's");
                continue;
            }
            out.push((d.clone(), true));
        }
        out
    }

    fn install_workers(&self, config: &RuntimeConfig, discovered: &[WorkerSpec]) {
        let specs = Self::effective(config, discovered);
        let old = self.workers.load();
        let drained = self.drained().clone();
        let now = Instant::now();
        let mut list: Vec<Arc<Worker>> = specs
            .iter()
            .map(|(spec, found)| {
                let mut state = old
                    .get(&spec.id)
                    .filter(|w| w.spec.address == spec.address)
                    .map_or(
                        WorkerState {
                            healthy: true,
                            ..Default::default()
                        },
                        |w| w.snapshot(),
                    );
                state.drain_requested = drained.contains(&spec.id);
                let mut w = Worker::new(spec.clone(), state);
                w.discovered = *found;
                w.identity_required = config.worker_key.is_some();
                Arc::new(w)
            })
            .collect();
        for w in old.live() {
            if specs.iter().any(|(s, _)| s.id == w.spec.id) {
                continue;
            }
            // A later reload can shorten the grace (0s: gone now), never extend it.
            let fresh = now + config.workers_removal_grace;
            let until = w.removing_until.map_or(fresh, |t| t.min(fresh));
            if until > now {
                let mut gone = Worker::new(w.spec.clone(), w.snapshot());
                gone.removing_until = Some(until);
                gone.discovered = w.discovered;
                gone.identity_required = config.worker_key.is_some();
                list.push(Arc::new(gone));
            }
        }
        self.workers.store(Arc::new(WorkerSet { list }));
    }

    pub fn config(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }

    pub fn signer(&self) -> Arc<Signer> {
        self.signer.load_full()
    }

    pub fn workers(&self) -> Arc<WorkerSet> {
        self.workers.load_full()
    }

    /// Operator drain (`on`) or resume of a live worker; `false` if there is no such worker.
    /// Kept by id across reloads.
    pub fn set_drain(&self, id: &str, on: bool) -> bool {
        let workers = self.workers();
        let Some(w) = workers.get(id) else {
            return false;
        };
        {
            let mut d = self.drained();
            if on {
                d.insert(id.to_string());
            } else {
                d.remove(id);
            }
        }
        w.set_drain_requested(on);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests;
