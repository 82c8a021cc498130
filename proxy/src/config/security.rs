//! `auth:` and `limits:` sections: file layer (serde, `deny_unknown_fields`) and their
//! validated runtime form. Read per request from the live config, so a hot reload changes
//! keys and limits at once (bucket state is kept; see [`crate::security`]).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ConfigError;

/// Auth off unless `auth.enabled: true`.
pub const DEFAULT_AUTH_ENABLED: bool = false;
/// Paths (prefixes) served without a key.
pub const DEFAULT_PUBLIC_PATHS: &[&str] = &["/health/"];
/// Entries kept per limiter shard before idle eviction (16 shards).
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 100_000;
/// Largest accepted request body, bytes: what the edge reads whole before routing
/// (pingora's replay buffer, [`super::BUFFERED_BODY_MAX`]). 0 = no limit.
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
    #[serde(default)]
    pub enabled: bool,
    /// Serve anonymous clients on a non-loopback public listener with auth off. Without
    /// it such a config is refused (`check` and start): anonymous public access must be
    /// chosen, never inherited from a default. Default `false`.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Path prefixes served without a key. Default [`DEFAULT_PUBLIC_PATHS`].
    #[serde(default = "default_public_paths")]
    pub public_paths: Vec<String>,
    /// The API keys.
    #[serde(default)]
    pub keys: Vec<ApiKeyFile>,
    /// JWT validation of `Authorization: Bearer` tokens that are not API keys
    /// (see [`super::jwt`]). Absent: no JWT accepted.
    #[serde(default)]
    pub jwt: Option<super::file::jwt::JwtFile>,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            enabled: DEFAULT_AUTH_ENABLED,
            allow_anonymous: false,
            public_paths: default_public_paths(),
            keys: Vec::new(),
            jwt: None,
        }
    }
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
    #[serde(default)]
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

pub use super::store::{StoreFile, StoreSettings, DEFAULT_STORE_PREFIX, DEFAULT_STORE_TIMEOUT};

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

/// Route labels (see `proxy::route_label`).
pub const ROUTE_LABELS: &[&str] = &[
    "create_session",
    "list_sessions",
    "session",
    "messages",
    "websocket",
    "health",
    "other",
];

/// A route label: the session API's, or the name of a route to an `http` pool.
fn known_route(name: &str, http_routes: &[&str]) -> bool {
    ROUTE_LABELS.contains(&name) || http_routes.contains(&name)
}

/// The valid route labels, for an error message.
fn expected_routes(http_routes: &[&str]) -> String {
    let mut s = format!("expected one of {}", ROUTE_LABELS.join(", "));
    if !http_routes.is_empty() {
        s.push_str(&format!(", or an http route: {}", http_routes.join(", ")));
    }
    s
}

/// A validated API key.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    pub routes: Option<Vec<String>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// Validated `auth:`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub enabled: bool,
    /// `auth.allow_anonymous`.
    pub allow_anonymous: bool,
    pub public_paths: Vec<String>,
    pub keys: Vec<ApiKey>,
    /// Validated `auth.jwt` (keys read at load).
    pub jwt: Option<std::sync::Arc<super::runtime::jwt::JwtSettings>>,
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (full length).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Validated `limits:`.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub trusted_proxies: Vec<Cidr>,
    pub per_ip: Option<RateFile>,
    pub per_key: Option<RateFile>,
    pub routes: std::collections::BTreeMap<String, RateFile>,
    pub new_sessions_per_minute: Option<u32>,
    pub max_websockets_per_key: Option<u32>,
    pub max_body_bytes: u64,
    /// `limits.allow_streamed_bodies`.
    pub allow_streamed_bodies: bool,
    pub max_tracked_keys: usize,
    pub store: Option<StoreSettings>,
    /// `limits.auth_failures`.
    pub auth_failures: RateFile,
    /// `limits.body_read_timeout`.
    pub body_read_timeout: std::time::Duration,
    /// `limits.h2_idle_timeout`.
    pub h2_idle_timeout: std::time::Duration,
    /// 0: no limit.
    pub max_connections: u32,
    pub max_connections_per_ip: Option<u32>,
    /// Zero: off.
    pub header_read_timeout: std::time::Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
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

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Parses `sha256:<64 hex>`.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hexpart = s.strip_prefix("sha256:")?;
    let v = hex::decode(hexpart.trim()).ok()?;
    v.try_into().ok()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Validates `auth:` (reads `env`/`file` keys now: a reload re-reads them).
/// `http_routes`: the names of the config's routes to `http` pools, route labels besides
/// [`ROUTE_LABELS`].
pub fn auth(file: &str, a: &AuthFile, http_routes: &[&str]) -> Result<AuthSettings, ConfigError> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for (i, k) in a.keys.iter().enumerate() {
        let at = |f: &str| format!("auth.keys[{i}].{f}");
        if !valid_name(&k.name) {
            return Err(ConfigError::new(
                file,
                at("name"),
                format!("{:?} must be 1-64 characters of [A-Za-z0-9._-]", k.name),
            ));
        }
        if keys.iter().any(|o| o.name == k.name) {
            return Err(ConfigError::new(
                file,
                at("name"),
                format!("duplicate key name {:?}", k.name),
            ));
        }
        let sources = usize::from(k.hash.is_some())
            + usize::from(k.env.is_some())
            + usize::from(k.file.is_some());
        if sources != 1 {
            return Err(ConfigError::new(
                file,
                format!("auth.keys[{i}]"),
                "set exactly one of hash, env, file",
            ));
        }
        let hash = if let Some(h) = &k.hash {
            parse_hash(h).ok_or_else(|| {
                ConfigError::new(file, at("hash"), "must be sha256:<64 hex digits>")
            })?
        } else if let Some(var) = &k.env {
            let v = std::env::var(var).map_err(|_| {
                ConfigError::new(
                    file,
                    at("env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            if v.trim().is_empty() {
                return Err(ConfigError::new(file, at("env"), format!("{var} is empty")));
            }
            hash_key(v.trim())
        } else if let Some(p) = &k.file {
            let v = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new(
                    file,
                    at("file"),
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            if v.trim().is_empty() {
                return Err(ConfigError::new(file, at("file"), "key file is empty"));
            }
            hash_key(v.trim())
        } else {
            unreachable!("checked: exactly one source")
        };
        if let Some(j) = keys.iter().position(|o| o.hash == hash) {
            return Err(ConfigError::new(
                file,
                format!("auth.keys[{i}]"),
                format!("same key as auth.keys[{j}]"),
            ));
        }
        if let Some(routes) = &k.routes {
            for (j, r) in routes.iter().enumerate() {
                if !known_route(r, http_routes) {
                    return Err(ConfigError::new(
                        file,
                        format!("auth.keys[{i}].routes[{j}]"),
                        format!("unknown route {r:?} ({})", expected_routes(http_routes)),
                    ));
                }
            }
        }
        keys.push(ApiKey {
            name: k.name.clone(),
            hash,
            routes: k.routes.clone(),
        });
    }
    let jwt = match &a.jwt {
        Some(j) => Some(std::sync::Arc::new(super::jwt::settings(
            file,
            j,
            http_routes,
        )?)),
        None => None,
    };
    if a.enabled && keys.is_empty() && jwt.is_none() {
        return Err(ConfigError::new(
            file,
            "auth.keys",
            "auth.enabled is true but no key (nor auth.jwt) is configured",
        ));
    }
    for (i, p) in a.public_paths.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(ConfigError::new(
                file,
                format!("auth.public_paths[{i}]"),
                "must start with /",
            ));
        }
    }
    Ok(AuthSettings {
        enabled: a.enabled,
        allow_anonymous: a.allow_anonymous,
        public_paths: a.public_paths.clone(),
        keys,
        jwt,
    })
}

fn rate(file: &str, key: &str, r: &RateFile) -> Result<RateFile, ConfigError> {
    if !(r.rate.is_finite() && r.rate > 0.0) {
        return Err(ConfigError::new(
            file,
            format!("{key}.rate"),
            "must be a number > 0 (requests per second)",
        ));
    }
    if r.burst == 0 {
        return Err(ConfigError::new(
            file,
            format!("{key}.burst"),
            "must be at least 1",
        ));
    }
    Ok(*r)
}

/// Validates `limits:`.
/// `http_routes`: as for [`auth`].
pub fn limits(
    file: &str,
    l: &LimitsFile,
    http_routes: &[&str],
) -> Result<LimitSettings, ConfigError> {
    let mut trusted = Vec::new();
    for (i, c) in l.trusted_proxies.iter().enumerate() {
        trusted.push(Cidr::parse(c).ok_or_else(|| {
            ConfigError::new(
                file,
                format!("limits.trusted_proxies[{i}]"),
                format!("{c:?} is not an address or CIDR (10.0.0.0/8, fd00::/8)"),
            )
        })?);
    }
    let per_ip = l
        .per_ip
        .as_ref()
        .map(|r| rate(file, "limits.per_ip", r))
        .transpose()?;
    let per_key = l
        .per_key
        .as_ref()
        .map(|r| rate(file, "limits.per_key", r))
        .transpose()?;
    let mut routes = std::collections::BTreeMap::new();
    for (name, r) in &l.routes {
        if !known_route(name, http_routes) {
            return Err(ConfigError::new(
                file,
                format!("limits.routes.{name}"),
                format!("unknown route ({})", expected_routes(http_routes)),
            ));
        }
        routes.insert(
            name.clone(),
            rate(file, &format!("limits.routes.{name}"), r)?,
        );
    }
    if l.new_sessions_per_minute == Some(0) {
        return Err(ConfigError::new(
            file,
            "limits.new_sessions_per_minute",
            "must be at least 1 (omit for no limit)",
        ));
    }
    if l.max_websockets_per_key == Some(0) {
        return Err(ConfigError::new(
            file,
            "limits.max_websockets_per_key",
            "must be at least 1 (omit for no limit)",
        ));
    }
    if l.max_connections_per_ip == Some(0) {
        return Err(ConfigError::new(
            file,
            "limits.max_connections_per_ip",
            "must be at least 1 (omit for no limit)",
        ));
    }
    if l.header_read_timeout > MAX_HEADER_READ_TIMEOUT {
        return Err(ConfigError::new(
            file,
            "limits.header_read_timeout",
            format!(
                "must be at most {}s (0s: off)",
                MAX_HEADER_READ_TIMEOUT.as_secs()
            ),
        ));
    }
    if l.max_tracked_keys < 16 {
        return Err(ConfigError::new(
            file,
            "limits.max_tracked_keys",
            "must be at least 16",
        ));
    }
    let store = match &l.store {
        None => None,
        Some(s) => Some(super::store::store(file, s)?),
    };
    Ok(LimitSettings {
        store,
        trusted_proxies: trusted,
        per_ip,
        per_key,
        routes,
        new_sessions_per_minute: l.new_sessions_per_minute,
        max_websockets_per_key: l.max_websockets_per_key,
        max_body_bytes: if !l.allow_streamed_bodies
            && (l.max_body_bytes == 0 || l.max_body_bytes > super::BUFFERED_BODY_MAX)
        {
            return Err(ConfigError::new(
                file,
                "limits.max_body_bytes",
                format!(
                    "{} is over the {} bytes the edge reads whole before routing (0: unlimited); larger bodies would reach a worker as they arrive: set limits.allow_streamed_bodies: true to accept that",
                    l.max_body_bytes,
                    super::BUFFERED_BODY_MAX
                ),
            ));
        } else {
            l.max_body_bytes
        },
        allow_streamed_bodies: l.allow_streamed_bodies,
        max_tracked_keys: l.max_tracked_keys,
        auth_failures: rate(file, "limits.auth_failures", &l.auth_failures)?,
        h2_idle_timeout: if l.h2_idle_timeout.is_zero() {
            return Err(ConfigError::new(
                file,
                "limits.h2_idle_timeout",
                "must be greater than 0",
            ));
        } else {
            l.h2_idle_timeout
        },
        body_read_timeout: if l.body_read_timeout.is_zero() {
            return Err(ConfigError::new(
                file,
                "limits.body_read_timeout",
                "must be greater than 0",
            ));
        } else {
            l.body_read_timeout
        },
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        header_read_timeout: l.header_read_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("10.1.0.0/16").expect("v4");
        assert!(c.contains("10.1.200.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("mapped")));
        let one = Cidr::parse("127.0.0.1").expect("bare");
        assert_eq!(one.prefix, 32);
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("all");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6 = Cidr::parse("fd00::/8").expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("fe80::1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope/8").is_none());
    }

    #[test]
    fn key_hashes() {
        let h = hash_key("s3cr3t");
        let s = format!("sha256:{}", hex::encode(h));
        assert_eq!(parse_hash(&s), Some(h));
        assert_eq!(
            hex::encode(hash_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(parse_hash("md5:00").is_none());
        assert!(parse_hash("sha256:abcd").is_none());
    }

    #[test]
    fn bodies_over_the_edge_buffer_need_the_opt_in() {
        let mut l = LimitsFile::default();
        assert_eq!(
            limits("f", &l, &[]).expect("default").max_body_bytes,
            crate::config::BUFFERED_BODY_MAX
        );
        for n in [crate::config::BUFFERED_BODY_MAX + 1, 0] {
            l.max_body_bytes = n;
            let e = limits("f", &l, &[]).expect_err("over the buffer");
            assert_eq!(e.key, "limits.max_body_bytes");
            assert!(e.to_string().contains("allow_streamed_bodies"), "{e}");
        }
        l.allow_streamed_bodies = true;
        let s = limits("f", &l, &[]).expect("opted in");
        assert!(s.allow_streamed_bodies);
        assert_eq!(s.max_body_bytes, 0);
    }

    #[test]
    fn validation_names_key_paths() {
        let a = AuthFile {
            enabled: true,
            allow_anonymous: false,
            public_paths: vec![],
            keys: vec![],
            jwt: None,
        };
        assert_eq!(auth("f", &a, &[]).expect_err("no keys").key, "auth.keys");
        let a = AuthFile {
            enabled: true,
            allow_anonymous: false,
            public_paths: vec![],
            keys: vec![ApiKeyFile {
                name: "t1".into(),
                hash: Some("sha256:zz".into()),
                env: None,
                file: None,
                routes: None,
            }],
            jwt: None,
        };
        assert_eq!(
            auth("f", &a, &[]).expect_err("bad hash").key,
            "auth.keys[0].hash"
        );
        let l = LimitsFile {
            per_ip: Some(RateFile {
                rate: 0.0,
                burst: 1,
            }),
            ..Default::default()
        };
        assert_eq!(
            limits("f", &l, &[]).expect_err("rate").key,
            "limits.per_ip.rate"
        );
        let l = LimitsFile {
            trusted_proxies: vec!["10.0.0.0/99".into()],
            ..Default::default()
        };
        assert_eq!(
            limits("f", &l, &[]).expect_err("cidr").key,
            "limits.trusted_proxies[0]"
        );
    }

    #[test]
    fn connection_limits_validation_and_defaults() {
        let d = limits("f", &LimitsFile::default(), &[]).expect("defaults");
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(d.max_connections_per_ip, None);
        assert_eq!(d.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        let l = LimitsFile {
            max_connections_per_ip: Some(0),
            ..Default::default()
        };
        assert_eq!(
            limits("f", &l, &[]).expect_err("per ip 0").key,
            "limits.max_connections_per_ip"
        );
        let l = LimitsFile {
            header_read_timeout: std::time::Duration::from_secs(7200),
            ..Default::default()
        };
        assert_eq!(
            limits("f", &l, &[]).expect_err("too long").key,
            "limits.header_read_timeout"
        );
        let y = "max_connections: 0\nmax_connections_per_ip: 20\nheader_read_timeout: 0s\n";
        let f: LimitsFile = serde_yaml::from_str(y).expect("yaml");
        let l = limits("f", &f, &[]).expect("valid");
        assert_eq!((l.max_connections, l.max_connections_per_ip), (0, Some(20)));
        assert!(l.header_read_timeout.is_zero());
    }
}
