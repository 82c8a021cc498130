//! The `tenant_quotas:` and `quota_store:` sections of the worker config: the file types
//! (strict) and the validated runtime types. Re-exported by [`crate::config`].
//!
//! A tenant is the proxy's `X-Hotplex-Tenant`; requests without one (dev mode, direct
//! callers) are one tenant, the anonymous one, under the same quotas.

use std::time::Duration;

use serde::Deserialize;

/// Default share of `max_sessions` one tenant may hold at once, percent: a tenant never
/// takes the whole pool unless the operator says so (`tenant_quotas.max_sessions`).
pub const DEFAULT_TENANT_SESSION_SHARE_PERCENT: usize = 50;
/// Default sustained rate of new sessions per tenant, sessions per minute.
pub const DEFAULT_NEW_SESSIONS_PER_MINUTE: u32 = 120;
/// Default burst of new sessions per tenant (token bucket size).
pub const DEFAULT_NEW_SESSIONS_BURST: u32 = 60;
/// Default sustained rate of turns per tenant, turns per minute.
pub const DEFAULT_TURNS_PER_MINUTE: u32 = 600;
/// Default burst of turns per tenant (token bucket size).
pub const DEFAULT_TURNS_BURST: u32 = 120;
/// Default timeout of one quota-store command (connect included).
pub const DEFAULT_QUOTA_STORE_TIMEOUT: Duration = Duration::from_millis(200);
/// Default interval at which a worker republishes its per-tenant session counts.
pub const DEFAULT_QUOTA_STORE_REFRESH: Duration = Duration::from_secs(2);
/// Default age after which a worker's published count is ignored (a dead worker's).
pub const DEFAULT_QUOTA_STORE_STALE_AFTER: Duration = Duration::from_secs(10);
/// Default behaviour when the store fails: open (the per-worker quotas decide alone).
pub const DEFAULT_QUOTA_STORE_ON_ERROR: OnError = OnError::Open;
/// Default prefix of every quota-store key.
pub const DEFAULT_QUOTA_STORE_KEY_PREFIX: &str = "hotplex:";

/// `tenant_quotas:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotasFile {
    /// Sessions one tenant may hold at once (count; across the fleet with `quota_store`,
    /// on this worker otherwise). Default: [`DEFAULT_TENANT_SESSION_SHARE_PERCENT`] % of
    /// `max_sessions`.
    pub max_sessions: Option<usize>,
    /// New sessions per tenant, sessions per minute (sustained). Default 120.
    pub new_sessions_per_minute: Option<u32>,
    /// New sessions per tenant, burst (count). Default 60.
    pub new_sessions_burst: Option<u32>,
    /// Turns per tenant, turns per minute (sustained). Default 600.
    pub turns_per_minute: Option<u32>,
    /// Turns per tenant, burst (count). Default 120.
    pub turns_burst: Option<u32>,
}

/// What a worker does when the quota store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Decide with the per-worker quotas alone (they always apply).
    Open,
    /// Refuse the create or turn: 503 `quota_store_unavailable`.
    Closed,
}

/// `quota_store:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaStoreFile {
    /// `redis://[user:pass@]host:port[/db]` or `rediss://` (TLS). Required.
    pub url: String,
    /// Timeout of one command (humantime). Default 200ms.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// `open` or `closed`. Default `open`.
    pub on_error: Option<OnError>,
    /// Republish interval of this worker's counts (humantime). Default 2s.
    #[serde(default, with = "humantime_serde")]
    pub refresh_interval: Option<Duration>,
    /// Counts older than this are ignored (humantime). Default 10s.
    #[serde(default, with = "humantime_serde")]
    pub stale_after: Option<Duration>,
    /// Key prefix. Default `hotplex:`.
    pub key_prefix: Option<String>,
}

/// A rate: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Tokens per second.
    pub fn per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// Validated `tenant_quotas:`.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantQuotas {
    /// Sessions per tenant; `None`: [`default_tenant_sessions`] of the pool size (see
    /// [`TenantQuotas::session_quota`]).
    pub max_sessions: Option<usize>,
    pub new_sessions: Rate,
    pub turns: Rate,
}

impl TenantQuotas {
    /// Sessions one tenant may hold in a pool of `pool_max`.
    pub fn session_quota(&self, pool_max: usize) -> usize {
        self.max_sessions
            .unwrap_or_else(|| default_tenant_sessions(pool_max))
    }
}

impl Default for TenantQuotas {
    fn default() -> Self {
        TenantQuotas {
            max_sessions: None,
            new_sessions: Rate {
                per_minute: DEFAULT_NEW_SESSIONS_PER_MINUTE,
                burst: DEFAULT_NEW_SESSIONS_BURST,
            },
            turns: Rate {
                per_minute: DEFAULT_TURNS_PER_MINUTE,
                burst: DEFAULT_TURNS_BURST,
            },
        }
    }
}

impl TenantQuotas {
    /// Validates the file section; errors are `(key, reason)`.
    pub fn from_file(f: TenantQuotasFile) -> Result<Self, (&'static str, String)> {
        let d = TenantQuotas::default();
        if f.max_sessions == Some(0) {
            return Err(("tenant_quotas.max_sessions", "must be at least 1".into()));
        }
        let max_sessions = f.max_sessions;
        let rate = |pm_key: &'static str,
                    b_key: &'static str,
                    pm: Option<u32>,
                    b: Option<u32>,
                    def: Rate| {
            let r = Rate {
                per_minute: pm.unwrap_or(def.per_minute),
                burst: b.unwrap_or(def.burst),
            };
            if r.per_minute == 0 {
                return Err((pm_key, "must be at least 1".to_string()));
            }
            if r.burst == 0 {
                return Err((b_key, "must be at least 1".to_string()));
            }
            Ok(r)
        };
        Ok(TenantQuotas {
            max_sessions,
            new_sessions: rate(
                "tenant_quotas.new_sessions_per_minute",
                "tenant_quotas.new_sessions_burst",
                f.new_sessions_per_minute,
                f.new_sessions_burst,
                d.new_sessions,
            )?,
            turns: rate(
                "tenant_quotas.turns_per_minute",
                "tenant_quotas.turns_burst",
                f.turns_per_minute,
                f.turns_burst,
                d.turns,
            )?,
        })
    }
}

/// [`DEFAULT_TENANT_SESSION_SHARE_PERCENT`] % of the pool, rounded up, at least 1.
pub fn default_tenant_sessions(pool_max: usize) -> usize {
    (pool_max * DEFAULT_TENANT_SESSION_SHARE_PERCENT)
        .div_ceil(100)
        .max(1)
}

/// Validated `quota_store:`.
#[derive(Clone, PartialEq)]
pub struct QuotaStoreConfig {
    /// The URL (may hold a password: never printed).
    pub url: String,
    pub timeout: Duration,
    pub on_error: OnError,
    pub refresh_interval: Duration,
    pub stale_after: Duration,
    pub key_prefix: String,
}

impl std::fmt::Debug for QuotaStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaStoreConfig")
            .field("url", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("refresh_interval", &self.refresh_interval)
            .field("stale_after", &self.stale_after)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl QuotaStoreConfig {
    /// Validates the file section; errors are `(key, reason)`.
    pub fn from_file(f: QuotaStoreFile) -> Result<Self, (&'static str, String)> {
        if !(f.url.starts_with("redis://") || f.url.starts_with("rediss://")) {
            return Err((
                "quota_store.url",
                "must be a redis:// or rediss:// URL".into(),
            ));
        }
        if let Err(e) = redis::Client::open(f.url.as_str()) {
            return Err(("quota_store.url", format!("invalid: {:?}", e.kind())));
        }
        let nonzero = |key: &'static str, v: Option<Duration>, d: Duration| match v {
            Some(x) if x.is_zero() => Err((key, "must be greater than 0".to_string())),
            Some(x) => Ok(x),
            None => Ok(d),
        };
        let timeout = nonzero(
            "quota_store.timeout",
            f.timeout,
            DEFAULT_QUOTA_STORE_TIMEOUT,
        )?;
        let refresh_interval = nonzero(
            "quota_store.refresh_interval",
            f.refresh_interval,
            DEFAULT_QUOTA_STORE_REFRESH,
        )?;
        let stale_after = nonzero(
            "quota_store.stale_after",
            f.stale_after,
            DEFAULT_QUOTA_STORE_STALE_AFTER,
        )?;
        if stale_after <= refresh_interval * 2 {
            return Err((
                "quota_store.stale_after",
                "must be more than twice refresh_interval (a live worker's count would \
                 otherwise look stale between two refreshes)"
                    .into(),
            ));
        }
        let key_prefix = f
            .key_prefix
            .unwrap_or_else(|| DEFAULT_QUOTA_STORE_KEY_PREFIX.to_string());
        if key_prefix.len() > 64 || key_prefix.chars().any(|c| !c.is_ascii_graphic()) {
            return Err((
                "quota_store.key_prefix",
                "must be at most 64 visible ASCII characters".into(),
            ));
        }
        Ok(QuotaStoreConfig {
            url: f.url,
            timeout,
            on_error: f.on_error.unwrap_or(DEFAULT_QUOTA_STORE_ON_ERROR),
            refresh_interval,
            stale_after,
            key_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_room_for_other_tenants() {
        assert_eq!(default_tenant_sessions(1000), 500);
        assert_eq!(default_tenant_sessions(3), 2);
        assert_eq!(default_tenant_sessions(1), 1);
        let d = TenantQuotas::default();
        assert_eq!(d.session_quota(10), 5);
        let explicit = TenantQuotas {
            max_sessions: Some(10),
            ..TenantQuotas::default()
        };
        assert_eq!(
            explicit.session_quota(10),
            10,
            "the whole pool: an explicit choice"
        );
        assert_eq!(d.turns.per_minute, DEFAULT_TURNS_PER_MINUTE);
        assert_eq!(d.new_sessions.burst, DEFAULT_NEW_SESSIONS_BURST);
    }

    #[test]
    fn zero_values_are_rejected_with_their_key() {
        let f = TenantQuotasFile {
            turns_burst: Some(0),
            ..Default::default()
        };
        let (k, _) = TenantQuotas::from_file(f).expect_err("zero burst");
        assert_eq!(k, "tenant_quotas.turns_burst");
        let f = TenantQuotasFile {
            max_sessions: Some(0),
            ..Default::default()
        };
        assert_eq!(
            TenantQuotas::from_file(f).expect_err("zero").0,
            "tenant_quotas.max_sessions"
        );
    }

    #[test]
    fn store_is_validated() {
        let f = |url: &str| QuotaStoreFile {
            url: url.into(),
            timeout: None,
            on_error: None,
            refresh_interval: None,
            stale_after: None,
            key_prefix: None,
        };
        let c = QuotaStoreConfig::from_file(f("redis://:pw@127.0.0.1:6379/0")).expect("valid");
        assert_eq!(c.on_error, OnError::Open);
        assert_eq!(c.timeout, DEFAULT_QUOTA_STORE_TIMEOUT);
        assert!(!format!("{c:?}").contains("pw"), "the url is redacted");
        assert_eq!(
            QuotaStoreConfig::from_file(f("http://x"))
                .expect_err("scheme")
                .0,
            "quota_store.url"
        );
        let mut bad = f("redis://127.0.0.1");
        bad.stale_after = Some(Duration::from_secs(1));
        assert_eq!(
            QuotaStoreConfig::from_file(bad).expect_err("stale").0,
            "quota_store.stale_after"
        );
    }
}
