//! `limits.store:` in the file layer; validated by [`crate::config::store`].

use serde::Deserialize;

/// Longest wait for Redis per check (connecting included).
pub const DEFAULT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// Key prefix in Redis.
pub const DEFAULT_STORE_PREFIX: &str = "hotplex:rl:";
/// Redis port when the address names none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// What a check does when Redis does not answer in time.
pub const DEFAULT_STORE_FAIL: FailMode = FailMode::Open;

/// `limits.store.fail`: what a rate-limit check does when the store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Admit the request (limits then hold per process only).
    Open,
    /// Refuse it (503).
    Closed,
}

impl FailMode {
    /// The config value (`open`, `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// `limits.store:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `redis://host[:port][/db]`, `rediss://host[:port][/db]` (TLS) or `host:port`.
    pub redis: String,
    /// ACL user (`AUTH username password`). Absent: `AUTH password` (the default user).
    #[serde(default)]
    pub username: Option<String>,
    /// Password reference: `file:/path` or `env:NAME`. Absent: no AUTH.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the CA(s) that sign the Redis server certificate (`rediss://` only).
    /// Absent: the built-in web PKI roots.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// `open` (admit when Redis is down) or `closed` (503). Default [`DEFAULT_STORE_FAIL`].
    #[serde(default = "default_fail")]
    pub fail: FailMode,
    /// Longest wait for Redis per check. Default [`DEFAULT_STORE_TIMEOUT`].
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Key prefix. Default [`DEFAULT_STORE_PREFIX`].
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_fail() -> FailMode {
    DEFAULT_STORE_FAIL
}
fn default_store_timeout() -> std::time::Duration {
    DEFAULT_STORE_TIMEOUT
}
fn default_prefix() -> String {
    DEFAULT_STORE_PREFIX.into()
}
