//! Per-tenant quotas: the one place every session creation and every turn is admitted,
//! whatever carries it (`POST /sessions`, an SSE turn, a WebSocket `execute`).
//!
//! - Sessions held at once per tenant: a count per tenant, reserved before the agent
//!   starts and released when the session's slot is ([`TenantSlot`]); with a
//!   [`QuotaStore`] the quota holds across the fleet (each worker publishes its counts).
//! - New sessions and turns per tenant: token buckets (`per_minute` sustained, `burst`);
//!   with a store, GCRA in the store (fleet-wide), the local buckets when it fails open.
//!
//! The anonymous tenant (no `X-Hotplex-Tenant`) is one tenant like any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::time::timeout;

use crate::config::{OnError, Rate, WorkerConfig};
use crate::metrics::WorkerMetrics;
use crate::quota_store::{QuotaStore, StoreKind};

/// Local buckets kept before idle (full) ones are pruned.
const MAX_BUCKETS: usize = 10_000;

/// Why a create or a turn was refused (the stable `error` code of the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCode {
    /// The tenant holds its quota of sessions.
    SessionQuota,
    /// The tenant creates sessions faster than its rate.
    SessionRate,
    /// The tenant runs turns faster than its rate.
    TurnRate,
    /// The shared store failed and `quota_store.on_error` is `closed`.
    StoreUnavailable,
}

impl QuotaCode {
    pub const ALL: [QuotaCode; 4] = [
        QuotaCode::SessionQuota,
        QuotaCode::SessionRate,
        QuotaCode::TurnRate,
        QuotaCode::StoreUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaCode::SessionQuota => "tenant_session_quota",
            QuotaCode::SessionRate => "tenant_session_rate",
            QuotaCode::TurnRate => "tenant_turn_rate",
            QuotaCode::StoreUnavailable => "quota_store_unavailable",
        }
    }
}

/// A refusal: the code, when to retry (whole seconds, at least 1) and the limit hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    pub code: QuotaCode,
    pub retry_after_secs: u64,
    pub limit: u64,
}

impl QuotaRefusal {
    fn new(code: QuotaCode, wait: Duration, limit: u64) -> Self {
        QuotaRefusal {
            code,
            retry_after_secs: secs_ceil(wait),
            limit,
        }
    }

    /// A human-readable message (the tenant is not named).
    pub fn message(&self) -> String {
        match self.code {
            QuotaCode::SessionQuota => format!(
                "the tenant holds its quota of {} sessions: close one first",
                self.limit
            ),
            QuotaCode::SessionRate => format!(
                "the tenant creates sessions faster than {} per minute",
                self.limit
            ),
            QuotaCode::TurnRate => {
                format!(
                    "the tenant runs turns faster than {} per minute",
                    self.limit
                )
            }
            QuotaCode::StoreUnavailable => "the quota store is unavailable".to_string(),
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn secs_ceil(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// Token buckets per tenant.
struct Buckets {
    rate: Rate,
    map: Mutex<HashMap<Option<String>, (f64, Instant)>>,
}

impl Buckets {
    fn new(rate: Rate) -> Self {
        Buckets {
            rate,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `tenant`'s bucket; `Err(wait)` until the next one.
    fn take(&self, tenant: Option<&str>, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst);
        let per_sec = self.rate.per_sec();
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * per_sec).min(burst)
        };
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_BUCKETS {
            m.retain(|_, b| refill(*b) < burst);
        }
        let b = m.entry(tenant.map(str::to_string)).or_insert((burst, now));
        let tokens = refill(*b);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            Ok(())
        } else {
            *b = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / per_sec))
        }
    }
}

/// The quotas of one worker.
pub struct Quotas {
    session_quota: usize,
    retry_after_secs: u64,
    counts: Mutex<HashMap<Option<String>, Count>>,
    new_sessions: Buckets,
    turns: Buckets,
    store: Option<QuotaStore>,
    /// Orders this worker's store checks and writes of session counts: a count is read
    /// and written under it, so an older count never overwrites a newer one.
    store_order: tokio::sync::Mutex<()>,
    metrics: Arc<WorkerMetrics>,
    me: Weak<Quotas>,
}

/// A tenant's sessions on this worker.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Admitted or being admitted (the local quota check).
    reserved: usize,
    /// Admitted (what this worker publishes to the store).
    held: usize,
}

/// One session's place in its tenant's quota: released on drop.
pub struct TenantSlot {
    quotas: Arc<Quotas>,
    tenant: Option<String>,
    /// Counted in `held` (admitted).
    held: bool,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.quotas.release(self.tenant.as_deref(), self.held);
    }
}

impl std::fmt::Debug for TenantSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSlot")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl Quotas {
    /// The quotas of `cfg` (the store, when configured, connects lazily).
    pub fn new(cfg: &WorkerConfig, metrics: Arc<WorkerMetrics>) -> Arc<Self> {
        let q = &cfg.tenant_quotas;
        let store = cfg.quota_store.as_ref().and_then(|s| {
            match QuotaStore::new(s, &cfg.node_id, metrics.quota_store_errors.clone()) {
                Ok(store) => Some(store),
                Err(e) => {
                    // Validated at load; a client that still cannot be built is a store
                    // that fails every call (on_error decides).
                    tracing::error!(error = %e, "quota store client");
                    None
                }
            }
        });
        Arc::new_cyclic(|me| Quotas {
            session_quota: q.session_quota(cfg.max_sessions),
            retry_after_secs: cfg.retry_after_secs.max(1),
            counts: Mutex::new(HashMap::new()),
            new_sessions: Buckets::new(q.new_sessions),
            turns: Buckets::new(q.turns),
            store,
            store_order: tokio::sync::Mutex::new(()),
            metrics,
            me: me.clone(),
        })
    }

    /// Sessions one tenant may hold.
    pub fn session_quota(&self) -> usize {
        self.session_quota
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, Count>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions `tenant` holds on this worker (reservations in flight included).
    pub fn tenant_count(&self, tenant: Option<&str>) -> usize {
        self.counts()
            .get(&tenant.map(str::to_string))
            .map_or(0, |c| c.reserved)
    }

    fn refuse(&self, r: QuotaRefusal) -> QuotaRefusal {
        self.metrics.quota_refused(r.code);
        r
    }

    /// A store failure: `Ok` to go on with the local decision (open), else the refusal.
    fn on_store_error(&self) -> Result<(), QuotaRefusal> {
        match self.store.as_ref().map(QuotaStore::on_error) {
            Some(OnError::Closed) => Err(self.refuse(QuotaRefusal::new(
                QuotaCode::StoreUnavailable,
                Duration::from_secs(self.retry_after_secs),
                0,
            ))),
            _ => Ok(()),
        }
    }

    /// Admits a new session of `tenant`: its place in the quota (this worker, then the
    /// fleet) and a token of its creation rate.
    pub async fn admit_create(&self, tenant: Option<&str>) -> Result<TenantSlot, QuotaRefusal> {
        let quota = self.session_quota;
        let Some(me) = self.me.upgrade() else {
            return Err(QuotaRefusal::new(
                QuotaCode::StoreUnavailable,
                Duration::ZERO,
                0,
            ));
        };
        {
            let mut counts = self.counts();
            let c = counts.entry(tenant.map(str::to_string)).or_default();
            if c.reserved >= quota {
                drop(counts);
                let wait = Duration::from_secs(self.retry_after_secs);
                return Err(self.refuse(QuotaRefusal::new(
                    QuotaCode::SessionQuota,
                    wait,
                    quota as u64,
                )));
            }
            c.reserved += 1;
        }
        let mut slot = TenantSlot {
            quotas: me,
            tenant: tenant.map(str::to_string),
            held: false,
        };
        let limit = u64::from(self.new_sessions.rate.per_minute);
        let Some(store) = &self.store else {
            self.hold(&mut slot);
            return match self.new_sessions.take(tenant, Instant::now()) {
                Ok(()) => Ok(slot),
                Err(wait) => {
                    Err(self.refuse(QuotaRefusal::new(QuotaCode::SessionRate, wait, limit)))
                }
            };
        };
        // One check at a time per worker: the count sent is the admitted sessions plus
        // this one, exact (a reservation in flight is neither counted twice nor missed).
        let reserved = match timeout(store.timeout(), self.store_order.lock()).await {
            Ok(order) => {
                let mine = self.held(tenant) + 1;
                let r = store.reserve_session(tenant, mine, quota).await;
                if r == Ok(true) {
                    self.hold(&mut slot);
                }
                drop(order);
                r
            }
            Err(_) => Err(()),
        };
        match reserved {
            Ok(true) => {}
            Ok(false) => {
                let wait = Duration::from_secs(self.retry_after_secs);
                let r = QuotaRefusal::new(QuotaCode::SessionQuota, wait, quota as u64);
                return Err(self.refuse(r));
            }
            Err(()) => {
                self.on_store_error()?;
                // Open: admitted by the local quota; published once the store is back.
                self.hold(&mut slot);
            }
        }
        let local = match store
            .gcra(StoreKind::NewSessions, tenant, self.new_sessions.rate)
            .await
        {
            Ok(Ok(())) => return Ok(slot),
            Ok(Err(wait)) => Err(wait),
            Err(()) => {
                self.on_store_error()?;
                self.new_sessions.take(tenant, Instant::now())
            }
        };
        local
            .map(|()| slot)
            .map_err(|wait| self.refuse(QuotaRefusal::new(QuotaCode::SessionRate, wait, limit)))
    }

    /// Admitted sessions of `tenant` on this worker.
    fn held(&self, tenant: Option<&str>) -> usize {
        self.counts()
            .get(&tenant.map(str::to_string))
            .map_or(0, |c| c.held)
    }

    /// Counts `slot` as admitted.
    fn hold(&self, slot: &mut TenantSlot) {
        if let Some(c) = self.counts().get_mut(&slot.tenant) {
            c.held += 1;
            slot.held = true;
        }
    }

    /// Admits one turn of `tenant` (a token of its turn rate).
    pub async fn admit_turn(&self, tenant: Option<&str>) -> Result<(), QuotaRefusal> {
        let limit = u64::from(self.turns.rate.per_minute);
        if let Some(store) = &self.store {
            match store.gcra(StoreKind::Turns, tenant, self.turns.rate).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(wait)) => {
                    return Err(self.refuse(QuotaRefusal::new(QuotaCode::TurnRate, wait, limit)))
                }
                Err(()) => self.on_store_error()?,
            }
        }
        self.turns
            .take(tenant, Instant::now())
            .map_err(|wait| self.refuse(QuotaRefusal::new(QuotaCode::TurnRate, wait, limit)))
    }

    fn release(&self, tenant: Option<&str>, held: bool) {
        let key = tenant.map(str::to_string);
        {
            let mut counts = self.counts();
            if let Some(c) = counts.get_mut(&key) {
                c.reserved = c.reserved.saturating_sub(1);
                if held {
                    c.held = c.held.saturating_sub(1);
                }
                if c.reserved == 0 {
                    counts.remove(&key);
                }
            }
        }
        if let (Some(_), Some(me), Ok(rt)) = (
            &self.store,
            self.me.upgrade(),
            tokio::runtime::Handle::try_current(),
        ) {
            rt.spawn(async move {
                let _ = me.publish(key.as_deref()).await;
            });
        }
    }

    /// Writes this worker's current count of `tenant` to the store (in order).
    async fn publish(&self, tenant: Option<&str>) -> Result<(), ()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _order = timeout(store.timeout(), self.store_order.lock())
            .await
            .map_err(|_| ())?;
        store.publish(tenant, self.held(tenant)).await
    }

    /// Republishes this worker's counts every `refresh_interval` (store only) so that
    /// other workers keep counting them; ends when the quotas are dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.store.as_ref()?.refresh_interval();
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(q) = weak.upgrade() else { return };
                let tenants: Vec<Option<String>> = q.counts().keys().cloned().collect();
                for tenant in tenants {
                    if q.publish(tenant.as_deref()).await.is_err() {
                        break;
                    }
                }
                drop(q);
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantQuotas;

    fn quotas(max: usize, turns: Rate) -> Arc<Quotas> {
        let cfg = WorkerConfig {
            max_sessions: 100,
            retry_after_secs: 4,
            tenant_quotas: TenantQuotas {
                max_sessions: Some(max),
                turns,
                ..TenantQuotas::default()
            },
            ..WorkerConfig::default()
        };
        Quotas::new(&cfg, Arc::new(WorkerMetrics::new()))
    }

    #[tokio::test]
    async fn session_quota_is_per_tenant_and_released_on_drop() {
        let rate = Rate {
            per_minute: 60,
            burst: 10,
        };
        let q = quotas(2, rate);
        let a1 = q.admit_create(Some("a")).await.expect("a1");
        let _a2 = q.admit_create(Some("a")).await.expect("a2");
        let r = q.admit_create(Some("a")).await.expect_err("a3 over quota");
        assert_eq!(r.code, QuotaCode::SessionQuota);
        assert_eq!((r.retry_after_secs, r.limit), (4, 2));
        assert_eq!(r.code.as_str(), "tenant_session_quota");
        let _b = q.admit_create(Some("b")).await.expect("b unaffected");
        let _anon = q.admit_create(None).await.expect("anonymous is a tenant");
        assert_eq!(q.tenant_count(Some("a")), 2);
        drop(a1);
        assert_eq!(q.tenant_count(Some("a")), 1);
        q.admit_create(Some("a")).await.expect("room again");
        let text = q.metrics.render();
        assert!(
            text.contains(
                r#"hotplex_worker_quota_refusals_total{code="tenant_session_quota",component="worker"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn turn_rate_refills() {
        let rate = Rate {
            per_minute: 60,
            burst: 2,
        };
        let q = quotas(5, rate);
        q.admit_turn(Some("a")).await.expect("1");
        q.admit_turn(Some("a")).await.expect("2");
        let r = q.admit_turn(Some("a")).await.expect_err("burst spent");
        assert_eq!(r.code, QuotaCode::TurnRate);
        assert_eq!(r.retry_after_secs, 1, "one token a second");
        q.admit_turn(Some("b")).await.expect("b has its own bucket");
    }

    #[test]
    fn buckets_refill_at_the_rate_and_cap_at_burst() {
        let b = Buckets::new(Rate {
            per_minute: 120,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            b.take(None, t0).expect("burst");
        }
        let wait = b.take(None, t0).expect_err("empty");
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        b.take(None, t0 + Duration::from_millis(500))
            .expect("one token after 0.5s");
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            b.take(None, later).expect("refilled to burst");
        }
        assert!(b.take(None, later).is_err(), "never more than burst");
        assert_eq!(secs_ceil(Duration::from_millis(1)), 1);
        assert_eq!(secs_ceil(Duration::from_millis(2001)), 3);
    }
}
