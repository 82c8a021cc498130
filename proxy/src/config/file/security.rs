//! `auth:` and `limits:` in the file layer (serde, `deny_unknown_fields`); validated by
//! [`crate::config::security`] into [`crate::config::runtime::security`].

use std::path::PathBuf;

use serde::Deserialize;

pub use crate::config::store::{StoreFile, DEFAULT_STORE_PREFIX, DEFAULT_STORE_TIMEOUT};

/// Auth off unless `auth.enabled: true`.
pub const DEFAULT_AUTH_ENABLED: bool = false;
/// Anonymous clients on a non-loopback public listener with auth off: refused unless
/// `auth.allow_anonymous: true`.
pub const DEFAULT_ALLOW_ANONYMOUS: bool = false;
/// Paths (prefixes) served without a key.
pub const DEFAULT_PUBLIC_PATHS: &[&str] = &["/health/"];
/// Entries kept per limiter shard before idle eviction (16 shards).
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 100_000;
/// Largest accepted request body, bytes: what the edge reads whole before routing
/// (pingora's replay buffer, [`crate::config::BUFFERED_BODY_MAX`]). 0 = no limit.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
/// Bodies over the edge buffer are refused unless `limits.allow_streamed_bodies: true`.
pub const DEFAULT_ALLOW_STREAMED_BODIES: bool = false;
/// Idle time after which an HTTP/2 connection without open streams is closed.
pub const DEFAULT_H2_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Time to receive a whole request body at the edge.
pub const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Failed authentications allowed per client IP: a bucket of 20, refilled at 20 a minute.
/// Past it: 429 before any key or signature work.
pub const DEFAULT_AUTH_FAILURES: RateFile = RateFile {
    rate: 20.0 / 60.0,
    burst: 20,
};

/// `auth:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Require an API key on every non-public path. Default [`DEFAULT_AUTH_ENABLED`].
    #[serde(default = "default_auth_enabled")]
    pub enabled: bool,
    /// Serve anonymous clients on a non-loopback public listener with auth off. Without
    /// it such a config is refused (`check` and start): anonymous public access must be
    /// chosen, never inherited from a default. Default [`DEFAULT_ALLOW_ANONYMOUS`].
    #[serde(default = "default_allow_anonymous")]
    pub allow_anonymous: bool,
    /// Path prefixes served without a key. Default [`DEFAULT_PUBLIC_PATHS`].
    #[serde(default = "default_public_paths")]
    pub public_paths: Vec<String>,
    /// The API keys.
    #[serde(default)]
    pub keys: Vec<ApiKeyFile>,
    /// JWT validation of `Authorization: Bearer` tokens that are not API keys
    /// (see [`crate::jwt`]). Absent: no JWT accepted.
    #[serde(default)]
    pub jwt: Option<super::jwt::JwtFile>,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            enabled: DEFAULT_AUTH_ENABLED,
            allow_anonymous: DEFAULT_ALLOW_ANONYMOUS,
            public_paths: default_public_paths(),
            keys: Vec::new(),
            jwt: None,
        }
    }
}

fn default_auth_enabled() -> bool {
    DEFAULT_AUTH_ENABLED
}
fn default_allow_anonymous() -> bool {
    DEFAULT_ALLOW_ANONYMOUS
}
fn default_allow_streamed_bodies() -> bool {
    DEFAULT_ALLOW_STREAMED_BODIES
}
fn default_public_paths() -> Vec<String> {
    DEFAULT_PUBLIC_PATHS.iter().map(|s| s.to_string()).collect()
}

/// One entry of `auth.keys`: exactly one of `hash`, `env`, `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFile {
    /// Tenant name (limits, logs, metrics), `[A-Za-z0-9._-]`, 1-64 bytes, unique.
    pub name: String,
    /// `sha256:<64 hex>` of the key.
    #[serde(default)]
    pub hash: Option<String>,
    /// Environment variable holding the key in clear (hashed at load).
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the key in clear (trimmed; hashed at load).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Route labels this key may use (`create_session`, `list_sessions`, `session`,
    /// `messages`, `websocket`, `health`, `other`). Absent: all. Others get 403.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
}

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateFile {
    /// Requests per second (sustained), > 0.
    pub rate: f64,
    /// Bucket size (requests allowed at once), >= 1.
    pub burst: u32,
}

/// `limits:` section. Every limit is off when absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// CIDRs of proxies whose `X-Forwarded-For` is believed. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Per client IP.
    #[serde(default)]
    pub per_ip: Option<RateFile>,
    /// Per API key (tenant); keyless requests: per client IP.
    #[serde(default)]
    pub per_key: Option<RateFile>,
    /// Per route label and tenant (or IP), e.g. `messages: {rate: 2, burst: 4}`.
    #[serde(default)]
    pub routes: std::collections::BTreeMap<String, RateFile>,
    /// New sessions (`POST /sessions`) per minute per tenant (or IP); burst = the same number.
    #[serde(default)]
    pub new_sessions_per_minute: Option<u32>,
    /// Concurrent WebSockets per tenant (or IP).
    #[serde(default)]
    pub max_websockets_per_key: Option<u32>,
    /// Largest request body by `Content-Length`, bytes (413 above). 0: no limit.
    /// Default [`DEFAULT_MAX_BODY_BYTES`].
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Accept `max_body_bytes` over the 64 KiB the edge reads whole (or 0): such bodies
    /// are streamed to the worker as they arrive, within `body_read_timeout` in total.
    /// Default [`DEFAULT_ALLOW_STREAMED_BODIES`] (off).
    #[serde(default = "default_allow_streamed_bodies")]
    pub allow_streamed_bodies: bool,
    /// Limiter entries kept per shard (16 shards) before idle eviction.
    /// Default [`DEFAULT_MAX_TRACKED_KEYS`].
    #[serde(default = "default_max_tracked")]
    pub max_tracked_keys: usize,
    /// Shared store (Redis) for the token buckets, so limits hold across proxy nodes.
    /// Absent: per-process buckets.
    #[serde(default)]
    pub store: Option<StoreFile>,
    /// Longest time to receive a request body whole (bodies are read at the edge before
    /// routing, see `crate::body`); over it: 408 `body_timeout`. Default
    /// [`DEFAULT_BODY_READ_TIMEOUT`].
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: std::time::Duration,
    /// An HTTP/2 connection with no stream open for this long is closed (its
    /// `max_connections` slot freed). Applies from the end of the preface (a connection that
    /// never opens a stream is closed after it too); the preface itself must arrive within
    /// `header_read_timeout`. Not reloadable. Default [`DEFAULT_H2_IDLE_TIMEOUT`].
    #[serde(default = "default_h2_idle_timeout", with = "humantime_serde")]
    pub h2_idle_timeout: std::time::Duration,
    /// Failed authentications (401) per client IP, a token bucket (`rate` per second,
    /// `burst`). An IP whose bucket is empty gets 429 `too_many_auth_failures` +
    /// `Retry-After` before any key hashing or JWT signature check, and its audit lines are
    /// folded (one per IP a minute). Always on (per process). Default
    /// [`DEFAULT_AUTH_FAILURES`] (20 a minute, burst 20).
    #[serde(default = "default_auth_failures")]
    pub auth_failures: RateFile,
    /// Open downstream connections (HTTP/1, HTTP/2, TLS; all listeners) at once; more are
    /// refused. 0: no limit. Default [`DEFAULT_MAX_CONNECTIONS`].
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Open connections per client IP (the TCP peer; peers in `trusted_proxies` are
    /// exempt). Absent: no limit (the default).
    #[serde(default)]
    pub max_connections_per_ip: Option<u32>,
    /// Time allowed to receive a complete HTTP/1 request head: from the connection's start
    /// for its first request, from the first byte for later keep-alive requests. Not applied
    /// to bodies, WebSocket tunnels, SSE responses or HTTP/2. 0s: off.
    /// Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: std::time::Duration,
}

/// Open downstream connections allowed at once (0: no limit).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Time allowed for a complete HTTP/1 request head (slowloris protection).
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest accepted `limits.header_read_timeout`.
pub const MAX_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_header_read_timeout() -> std::time::Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            trusted_proxies: Vec::new(),
            per_ip: None,
            per_key: None,
            routes: Default::default(),
            new_sessions_per_minute: None,
            max_websockets_per_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allow_streamed_bodies: DEFAULT_ALLOW_STREAMED_BODIES,
            max_tracked_keys: DEFAULT_MAX_TRACKED_KEYS,
            store: None,
            auth_failures: DEFAULT_AUTH_FAILURES,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            h2_idle_timeout: DEFAULT_H2_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

fn default_h2_idle_timeout() -> std::time::Duration {
    DEFAULT_H2_IDLE_TIMEOUT
}
fn default_body_read_timeout() -> std::time::Duration {
    DEFAULT_BODY_READ_TIMEOUT
}
fn default_auth_failures() -> RateFile {
    DEFAULT_AUTH_FAILURES
}
fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_tracked() -> usize {
    DEFAULT_MAX_TRACKED_KEYS
}
