//! The shared quota store (Redis): makes the tenant quotas of [`crate::quota`] hold across
//! every worker of the fleet.
//!
//! - Sessions per tenant: hash `<prefix>tq:{<tenant>}` (anonymous: `<prefix>tq:-`), one
//!   field per worker (its node id) = `"<count>:<redis unix ms>"`. A create runs
//!   [`RESERVE`]: it sums the fresh fields of the other workers (stale ones, of dead
//!   workers, are dropped), refuses when they plus this worker's count exceed the quota,
//!   else records this worker's count, all in one atomic script. Each worker republishes
//!   its counts every `refresh_interval` and at once when a session closes.
//! - New sessions and turns per tenant: GCRA keys `<prefix>tn:{<tenant>}` and
//!   `<prefix>tr:{<tenant>}` (the token bucket's exact equivalent, as in the proxy's limit
//!   store).
//!
//! The client is the `redis` crate's `ConnectionManager` (multiplexed: each reply belongs
//! to its command; reconnects by itself); every call is bounded by `timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::config::{OnError, QuotaStoreConfig, Rate};

/// Sessions: KEYS[1] hash; ARGV node, this worker's count (the new session included),
/// quota, stale ms, key ttl ms. Returns {allowed, others}.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
local mine = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local stale = tonumber(ARGV[4])
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= node then
    local c, ts = string.match(all[i + 1], '^(%d+):(%d+)$')
    if c and now - tonumber(ts) <= stale then
      others = others + tonumber(c)
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
if others + mine > quota then
  return {0, others}
end
redis.call('HSET', KEYS[1], node, mine .. ':' .. now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, others}
"#;

/// Publishes this worker's count: KEYS[1] hash; ARGV node, count, key ttl ms.
const PUBLISH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. now)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"#;

/// After a failed call the store is not asked for this long: decisions are taken at once
/// as `on_error` says, instead of each waiting for another failing connection attempt.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Which rate a GCRA key limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    NewSessions,
    Turns,
}

struct Inner {
    conn: ConnectionManager,
    node: String,
    cfg: QuotaStoreConfig,
    reserve: Script,
    publish: Script,
    gcra: Script,
    /// The last call failed (logs once per outage).
    down: AtomicBool,
    /// No call before this instant (see [`SKIP_AFTER_FAILURE`]).
    skip_until: Mutex<Option<Instant>>,
    errors: prometheus::IntCounter,
}

/// A handle on the store (cheap to clone).
#[derive(Clone)]
pub struct QuotaStore(Arc<Inner>);

impl QuotaStore {
    /// The client of `cfg` (no connection yet): what [`QuotaStore::new`] builds on; a
    /// worker refuses to start when this fails.
    pub fn client(cfg: &QuotaStoreConfig) -> Result<redis::Client, String> {
        use redis::IntoConnectionInfo;
        // TCP_NODELAY: one small command per decision, never held back by Nagle.
        let info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("quota_store.url: {:?}", e.kind()))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        redis::Client::open(info).map_err(|e| format!("quota_store.url: {:?}", e.kind()))
    }

    /// A lazily connecting client (must run inside a Tokio runtime).
    pub fn new(
        cfg: &QuotaStoreConfig,
        node: &str,
        errors: prometheus::IntCounter,
    ) -> Result<Self, String> {
        let client = Self::client(cfg)?;
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, mcfg)
            .map_err(|e| format!("quota store: {:?}", e.kind()))?;
        Ok(QuotaStore(Arc::new(Inner {
            conn,
            node: node.to_string(),
            cfg: cfg.clone(),
            reserve: Script::new(RESERVE),
            publish: Script::new(PUBLISH),
            gcra: Script::new(hotplex_common::gcra::SCRIPT),
            down: AtomicBool::new(false),
            skip_until: Mutex::new(None),
            errors,
        })))
    }

    pub fn on_error(&self) -> OnError {
        self.0.cfg.on_error
    }

    /// The longest wait for one call.
    pub fn timeout(&self) -> Duration {
        self.0.cfg.timeout
    }

    pub fn refresh_interval(&self) -> Duration {
        self.0.cfg.refresh_interval
    }

    /// The key of `kind` (`tq`, `tn`, `tr`) for `tenant`.
    fn key(&self, kind: &str, tenant: Option<&str>) -> String {
        let p = &self.0.cfg.key_prefix;
        match tenant {
            Some(t) => format!("{p}{kind}:{{{t}}}"),
            None => format!("{p}{kind}:-"),
        }
    }

    fn ttl_ms(&self) -> u64 {
        (self.0.cfg.stale_after * 3).as_millis() as u64
    }

    /// Runs one script invocation under the timeout; `Err(())` on any failure (logged
    /// once per outage, counted always).
    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, ()> {
        if self.skipping() {
            return Err(());
        }
        let mut conn = self.0.conn.clone();
        let res = tokio::time::timeout(self.0.cfg.timeout, inv.invoke_async::<T>(&mut conn)).await;
        match res {
            Ok(Ok(v)) => {
                if self.0.down.swap(false, Ordering::AcqRel) {
                    tracing::info!("quota store reachable again");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(&format!("{:?}", e.kind()));
                Err(())
            }
            Err(_) => {
                self.failed("timeout");
                Err(())
            }
        }
    }

    fn skip_until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0.skip_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Within [`SKIP_AFTER_FAILURE`] of the last failure.
    fn skipping(&self) -> bool {
        self.skip_until().is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self, why: &str) {
        self.0.errors.inc();
        *self.skip_until() = Some(Instant::now() + SKIP_AFTER_FAILURE);
        if !self.0.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                on_error = ?self.0.cfg.on_error,
                "quota store unavailable"
            );
        }
    }

    /// Whether `tenant` may hold `mine` sessions on this worker (the new one included)
    /// given the other workers' fresh counts; records `mine` when it may.
    pub async fn reserve_session(
        &self,
        tenant: Option<&str>,
        mine: usize,
        quota: usize,
    ) -> Result<bool, ()> {
        let key = self.key("tq", tenant);
        let stale = self.0.cfg.stale_after.as_millis() as u64;
        let mut inv = self.0.reserve.prepare_invoke();
        inv.key(key)
            .arg(&self.0.node)
            .arg(mine)
            .arg(quota)
            .arg(stale)
            .arg(self.ttl_ms());
        let (allowed, _others): (i64, i64) = self.run(inv).await?;
        Ok(allowed == 1)
    }

    /// Records this worker's count of `tenant`'s sessions (0 removes it).
    pub async fn publish(&self, tenant: Option<&str>, count: usize) -> Result<(), ()> {
        let mut inv = self.0.publish.prepare_invoke();
        inv.key(self.key("tq", tenant))
            .arg(&self.0.node)
            .arg(count)
            .arg(self.ttl_ms());
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    /// Takes one token of `tenant`'s fleet-wide `kind` rate: `Ok(Err(wait))` when empty.
    pub async fn gcra(
        &self,
        kind: StoreKind,
        tenant: Option<&str>,
        rate: Rate,
    ) -> Result<Result<(), Duration>, ()> {
        let k = match kind {
            StoreKind::NewSessions => "tn",
            StoreKind::Turns => "tr",
        };
        let mut inv = self.0.gcra.prepare_invoke();
        inv.key(self.key(k, tenant))
            .arg(rate.per_sec())
            .arg(rate.burst);
        let (allowed, _remaining, retry_ms, _reset_ms): (i64, i64, i64, i64) =
            self.run(inv).await?;
        if allowed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(Duration::from_millis(retry_ms.max(1) as u64)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaStoreFile;

    #[tokio::test]
    async fn keys_keep_tenants_apart() {
        let cfg = QuotaStoreConfig::from_file(QuotaStoreFile {
            url: "redis://127.0.0.1:1".into(),
            timeout: Some(Duration::from_millis(50)),
            on_error: None,
            refresh_interval: None,
            stale_after: None,
            key_prefix: None,
        })
        .expect("valid");
        let errors = prometheus::IntCounter::new("e", "e").expect("counter");
        let s = QuotaStore::new(&cfg, "w1", errors.clone()).expect("client");
        assert_eq!(s.key("tq", Some("acme")), "hotplex:tq:{acme}");
        assert_eq!(s.key("tq", None), "hotplex:tq:-");
        assert_eq!(s.key("tr", Some("-")), "hotplex:tr:{-}");
        // Nothing listens on port 1: a failure, counted, never a decision.
        assert!(s.reserve_session(Some("a"), 1, 5).await.is_err());
        assert_eq!(errors.get(), 1);
        // Then skipped for a while: an immediate failure, not another attempt.
        let t = Instant::now();
        assert!(s
            .gcra(
                StoreKind::Turns,
                None,
                Rate {
                    per_minute: 1,
                    burst: 1
                }
            )
            .await
            .is_err());
        assert!(t.elapsed() < Duration::from_millis(20));
        assert_eq!(errors.get(), 1, "a skipped call is not a store error");
    }
}
