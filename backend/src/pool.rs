//! The session pool: a bounded map of sessions, each with one hot agent process.
//!
//! Capacity is a semaphore of `max_sessions` permits: a slot is reserved atomically
//! *before* an agent is spawned and released only after that agent is killed and
//! reaped, so the pool never runs more than `max_sessions` agents.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotplex_common::SessionId;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

use crate::agent::AgentProcess;
use crate::config::WorkerConfig;
use crate::metrics::{CloseReason, ErrorReason, WorkerMetrics};
use crate::quota::{QuotaRefusal, Quotas};
use crate::sandbox::Sandbox;
use crate::session::{Session, SessionKey, Turn, TurnRefused};

/// Why a session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the session pool is full ({0} sessions)")]
    Full(usize),
    #[error("the worker is draining and accepts no new sessions")]
    Draining,
    #[error("session {0} already exists")]
    Exists(String),
    #[error("the agent could not be started: {0}")]
    StartFailed(String),
    #[error("{}", .0.message())]
    Quota(QuotaRefusal),
}

/// The session pool.
pub struct Pool {
    cfg: Arc<WorkerConfig>,
    metrics: Arc<WorkerMetrics>,
    quotas: Arc<Quotas>,
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    slots: Arc<Semaphore>,
    draining: AtomicBool,
    turns_running: AtomicUsize,
    turns_idle: Notify,
    request_ids: AtomicU64,
    started: Instant,
    sandbox: Arc<Sandbox>,
}

impl Pool {
    pub fn new(
        cfg: Arc<WorkerConfig>,
        metrics: Arc<WorkerMetrics>,
        sandbox: Arc<Sandbox>,
    ) -> Arc<Self> {
        metrics.sessions_max.set(cfg.max_sessions as i64);
        let quotas = Quotas::new(&cfg, metrics.clone());
        Arc::new(Pool {
            slots: Arc::new(Semaphore::new(cfg.max_sessions)),
            quotas,
            cfg,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            turns_running: AtomicUsize::new(0),
            turns_idle: Notify::new(),
            request_ids: AtomicU64::new(1),
            started: Instant::now(),
            sandbox,
        })
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// How agents are isolated.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// The tenant quotas every create and turn goes through.
    pub fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Arc<Session>>> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_active(&self, n: usize) {
        self.metrics.sessions_active.set(n as i64);
    }

    /// Number of sessions (starting, idle or running).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_full(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// A fresh request id for callers that did not supply one (SSE turns).
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The session `id` of `tenant` (another tenant's session of that id is not found).
    pub fn get(&self, tenant: Option<&str>, id: &SessionId) -> Option<Arc<Session>> {
        self.map()
            .get(&SessionKey::new(tenant, id.clone()))
            .cloned()
    }

    /// Whether a tenant other than `tenant` owns a session `id` (for the refused-requests
    /// metric only: callers never learn it).
    pub fn owned_by_other(&self, tenant: Option<&str>, id: &SessionId) -> bool {
        self.map()
            .keys()
            .any(|k| k.id == *id && k.tenant.as_deref() != tenant)
    }

    /// Sessions owned by `tenant`.
    pub fn tenant_len(&self, tenant: Option<&str>) -> usize {
        self.map()
            .keys()
            .filter(|k| k.tenant.as_deref() == tenant)
            .count()
    }

    /// All sessions, sorted by (tenant, id).
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by_key(|s| s.key());
        v
    }

    /// Creates a session of `tenant` (minting an id when `id` is `None`) and starts its
    /// agent.
    pub async fn create(
        self: &Arc<Self>,
        tenant: Option<&str>,
        id: Option<SessionId>,
    ) -> Result<Arc<Session>, PoolError> {
        if self.is_draining() {
            self.metrics.pool_rejections.inc();
            return Err(PoolError::Draining);
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.metrics.pool_rejections.inc();
            return Err(PoolError::Full(self.cfg.max_sessions));
        };
        // Every creation (HTTP, WebSocket) passes the tenant's quotas here.
        let slot = self
            .quotas
            .admit_create(tenant)
            .await
            .map_err(PoolError::Quota)?;
        let id = id.unwrap_or_else(|| SessionId::generate(&self.cfg.node_id));
        let key = SessionKey::new(tenant, id.clone());
        let session = Arc::new(Session::new(key.clone(), permit, slot));
        // Hold the agent lock while starting so a concurrent turn waits for the start.
        let mut guard = session.agent.clone().lock_owned().await;
        {
            let mut map = self.map();
            if map.contains_key(&key) {
                return Err(PoolError::Exists(id.into_string()));
            }
            map.insert(key.clone(), session.clone());
            self.update_active(map.len());
        }
        let cfg = &self.cfg;
        match AgentProcess::spawn(&cfg.agent, &self.sandbox, id.as_str(), cfg.startup_timeout).await
        {
            Ok(agent) => {
                session.mark_started(agent.pid());
                *guard = Some(agent);
                drop(guard);
                self.metrics.sessions_total.inc();
                tracing::debug!(session = %id, "session created");
                Ok(session)
            }
            Err(e) => {
                drop(guard);
                tracing::warn!(session = %id, error = %e, "agent start failed");
                self.metrics.session_error(ErrorReason::StartFailed);
                {
                    let mut map = self.map();
                    map.remove(&key);
                    self.update_active(map.len());
                }
                session.release_slot();
                Err(PoolError::StartFailed(e.to_string()))
            }
        }
    }

    /// Begins a turn of `session` (SSE message, WebSocket `execute`): the session must be
    /// idle and open, then the tenant's turn rate must admit it. The one entry point of
    /// every turn.
    pub async fn begin_turn(self: &Arc<Self>, session: &Arc<Session>) -> Result<Turn, TurnRefused> {
        let turn = Turn::begin(self, session)?;
        self.quotas
            .admit_turn(session.tenant.as_deref())
            .await
            .map_err(TurnRefused::Quota)?;
        Ok(turn)
    }

    /// The session `id` of `tenant`, created if it does not exist (WebSocket `execute`).
    pub async fn get_or_create(
        self: &Arc<Self>,
        tenant: Option<&str>,
        id: SessionId,
    ) -> Result<Arc<Session>, PoolError> {
        if let Some(s) = self.get(tenant, &id) {
            return Ok(s);
        }
        match self.create(tenant, Some(id.clone())).await {
            Err(PoolError::Exists(_)) => self
                .get(tenant, &id)
                .ok_or_else(|| PoolError::StartFailed("session vanished".into())),
            other => other,
        }
    }

    /// Closes a session: interrupts its turn, kills its process group, reaps the agent,
    /// frees its slot. Returns false if it did not exist.
    pub async fn close(&self, key: &SessionKey, reason: CloseReason) -> bool {
        let id = &key.id;
        let session = {
            let mut map = self.map();
            let s = map.remove(key);
            self.update_active(map.len());
            s
        };
        let Some(session) = session else { return false };
        session.begin_close();
        let mut guard = session.agent.clone().lock_owned().await;
        if let Some(mut agent) = guard.take() {
            agent.close().await;
        }
        drop(guard);
        session.release_slot();
        self.metrics.session_closed(reason);
        tracing::debug!(session = %id, reason = reason.as_str(), "session closed");
        true
    }

    /// Closes every session in parallel.
    pub async fn close_all(&self, reason: CloseReason) {
        let ids: Vec<SessionKey> = self.map().keys().cloned().collect();
        let closes = ids.iter().map(|id| self.close(id, reason));
        futures_util::future::join_all(closes).await;
    }

    /// One reaper pass: closes sessions idle longer than the idle timeout.
    pub async fn reap_idle(&self) -> usize {
        let idle = self.cfg.idle_timeout;
        let victims: Vec<SessionKey> = self
            .map()
            .values()
            .filter(|s| !s.is_running() && s.status() == "idle" && s.idle_for() >= idle)
            .map(|s| s.key())
            .collect();
        let reason = if self.is_draining() {
            CloseReason::Drain
        } else {
            CloseReason::Idle
        };
        let mut n = 0;
        for id in victims {
            if self.close(&id, reason).await {
                n += 1;
            }
        }
        n
    }

    /// Runs the reaper until the pool is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = self.cfg.reap_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                let n = pool.reap_idle().await;
                if n > 0 {
                    tracing::info!(closed = n, "reaped idle sessions");
                }
            }
        })
    }

    /// Stops accepting new sessions (existing ones keep serving turns).
    pub fn start_drain(&self) -> bool {
        let was = self.draining.swap(true, Ordering::AcqRel);
        self.metrics.draining.set(1);
        if !was {
            tracing::info!(sessions = self.len(), "draining: no new sessions");
        }
        !was
    }

    /// Takes new sessions again after [`Pool::start_drain`]. Returns whether it was
    /// draining.
    pub fn resume(&self) -> bool {
        let was = self.draining.swap(false, Ordering::AcqRel);
        self.metrics.draining.set(0);
        if was {
            tracing::info!(sessions = self.len(), "resumed: taking new sessions");
        }
        was
    }

    pub(crate) fn turn_started(&self) {
        self.turns_running.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn turn_finished(&self) {
        if self.turns_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.turns_idle.notify_waiters();
        }
    }

    pub fn turns_running(&self) -> usize {
        self.turns_running.load(Ordering::Acquire)
    }

    /// Waits until no turn runs, at most `grace`. Returns whether all turns finished.
    pub async fn wait_turns(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.turns_idle.notified();
                if self.turns_running() == 0 {
                    return;
                }
                // Re-check periodically as well, in case a notification raced.
                let _ = tokio::time::timeout(Duration::from_millis(100), idle).await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }

    /// Drain, let running turns finish (up to `grace`), then close every session.
    pub async fn shutdown(&self, grace: Duration) {
        self.start_drain();
        if !self.wait_turns(grace).await {
            tracing::warn!(
                running = self.turns_running(),
                "grace period over, killing running turns"
            );
        }
        self.close_all(CloseReason::Shutdown).await;
    }

    /// Readiness: `ready`, `draining` or `full`.
    pub fn readiness(&self) -> &'static str {
        if self.is_draining() {
            "draining"
        } else if self.is_full() {
            "full"
        } else {
            "ready"
        }
    }

    /// Pool statistics (WebSocket `stats`, `GET /sessions`).
    pub fn stats(&self) -> Value {
        json!({
            "node_id": self.cfg.node_id,
            "sessions_active": self.len(),
            "max_sessions": self.cfg.max_sessions,
            "turns_running": self.turns_running(),
            "sessions_total": self.metrics.sessions_total.get(),
            "tenant_session_quota": self.quotas.session_quota(),
            "draining": self.is_draining(),
            "status": self.readiness(),
            "uptime_secs": self.started.elapsed().as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    #[tokio::test]
    async fn sessions_are_keyed_by_tenant() {
        let p = pool(5);
        let id = SessionId::parse("demo-1").expect("id");
        let a = p.create(Some("a"), Some(id.clone())).await.expect("a");
        let b = p.create(Some("b"), Some(id.clone())).await.expect("b");
        assert!(!Arc::ptr_eq(&a, &b), "two tenants, two sessions");
        assert_ne!(a.pid(), b.pid());
        assert!(matches!(
            p.create(Some("a"), Some(id.clone())).await,
            Err(PoolError::Exists(_))
        ));
        assert!(p.get(Some("a"), &id).is_some_and(|s| Arc::ptr_eq(&s, &a)));
        assert!(p.get(None, &id).is_none(), "anonymous sees neither");
        assert!(p.get(Some("c"), &id).is_none());
        assert!(p.owned_by_other(Some("c"), &id));
        assert!(p.owned_by_other(Some("a"), &id), "b owns one too");
        assert_eq!((p.tenant_len(Some("a")), p.tenant_len(None)), (1, 0));
        let got = p.get_or_create(Some("a"), id.clone()).await.expect("get");
        assert!(Arc::ptr_eq(&got, &a));
        assert!(p.close(&a.key(), CloseReason::Deleted).await);
        assert!(p.get(Some("b"), &id).is_some(), "b's session untouched");
        assert!(!p.owned_by_other(Some("b"), &id));
        p.close_all(CloseReason::Shutdown).await;
    }
    use crate::config::TenantQuotas;
    use crate::session::TurnEvent;

    fn shell_agent() -> AgentConfig {
        let script = r#"echo '{"type":"ready"}'; while read -r l; do echo '{"type":"tool_use","tool":"sh"}'; echo '{"type":"result"}'; done"#;
        AgentConfig::command(vec!["sh".into(), "-c".into(), script.into()])
    }

    fn pool(max: usize) -> Arc<Pool> {
        let cfg = WorkerConfig {
            max_sessions: max,
            node_id: "t".into(),
            idle_timeout: Duration::from_millis(50),
            agent: shell_agent(),
            // The pool's own cap is under test: one tenant may fill it.
            tenant_quotas: TenantQuotas {
                max_sessions: Some(max),
                ..TenantQuotas::default()
            },
            ..WorkerConfig::default()
        };
        let sb = Arc::new(Sandbox::worker_user(&cfg.agent));
        Pool::new(Arc::new(cfg), Arc::new(WorkerMetrics::new()), sb)
    }

    #[tokio::test]
    async fn cap_is_enforced_and_slots_are_freed() {
        let p = pool(2);
        let a = p.create(None, None).await.expect("a");
        let _b = p.create(None, None).await.expect("b");
        assert!(matches!(
            p.create(None, None).await,
            Err(PoolError::Full(2))
        ));
        assert_eq!(p.readiness(), "full");
        assert!(p.close(&a.key(), CloseReason::Deleted).await);
        assert!(!p.close(&a.key(), CloseReason::Deleted).await);
        p.create(None, None).await.expect("slot freed");
        assert_eq!(p.metrics().sessions_active.get(), 2);
        p.close_all(CloseReason::Shutdown).await;
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn creates_pass_the_tenant_quota_and_closes_free_it() {
        let cfg = WorkerConfig {
            max_sessions: 4,
            node_id: "t".into(),
            agent: shell_agent(),
            ..WorkerConfig::default()
        };
        let sb = Arc::new(Sandbox::worker_user(&cfg.agent));
        let p = Pool::new(Arc::new(cfg), Arc::new(WorkerMetrics::new()), sb);
        assert_eq!(p.quotas().session_quota(), 2, "default: half the pool");
        let a = p.create(Some("a"), None).await.expect("a1");
        let a2 = SessionId::parse("a-2").expect("id");
        p.get_or_create(Some("a"), a2.clone()).await.expect("a2");
        let Err(e) = p.create(Some("a"), None).await else {
            panic!("a3 over the quota");
        };
        assert!(
            matches!(&e, PoolError::Quota(r) if r.code.as_str() == "tenant_session_quota"),
            "{e:?}"
        );
        let Err(e) = p
            .get_or_create(Some("a"), SessionId::parse("a-3").expect("id"))
            .await
        else {
            panic!("a3 by id over the quota");
        };
        assert!(matches!(e, PoolError::Quota(_)), "{e:?}");
        p.get_or_create(Some("a"), a2)
            .await
            .expect("an existing session is not a new one");
        p.create(Some("b"), None).await.expect("b unaffected");
        assert_eq!(p.len(), 3, "refused creates started no agent");
        assert!(p.close(&a.key(), CloseReason::Deleted).await);
        p.create(Some("a"), None)
            .await
            .expect("room again after a close");
        p.close_all(CloseReason::Shutdown).await;
        assert_eq!(p.quotas().tenant_count(Some("a")), 0);
    }

    #[tokio::test]
    async fn duplicate_ids_and_drain() {
        let p = pool(5);
        let id = SessionId::parse("dup-1").expect("id");
        p.create(None, Some(id.clone())).await.expect("first");
        assert!(matches!(
            p.create(None, Some(id.clone())).await,
            Err(PoolError::Exists(_))
        ));
        assert_eq!(p.len(), 1);
        assert!(p.start_drain());
        assert!(matches!(
            p.create(None, None).await,
            Err(PoolError::Draining)
        ));
        assert_eq!(p.readiness(), "draining");
        assert!(p.resume());
        assert!(!p.resume());
        assert_eq!(p.readiness(), "ready");
        assert_eq!(p.metrics().draining.get(), 0);
        p.create(None, None).await.expect("resumed");
        assert!(p.start_drain());
        p.shutdown(Duration::from_millis(100)).await;
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn turn_runs_and_idle_sessions_are_reaped() {
        let p = pool(5);
        let s = p.create(None, None).await.expect("create");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TurnEvent>(16);
        let turn = p.begin_turn(&s).await.expect("begin");
        assert!(p.begin_turn(&s).await.is_err(), "one turn at a time");
        turn.run("hi".into(), tx).await;
        let mut events = vec![];
        while let Some(e) = rx.recv().await {
            events.push(e.event);
        }
        assert_eq!(events, ["tool_use", "completed"]);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(p.reap_idle().await, 1);
        assert!(p.is_empty());
    }
}
