//! `routes:` and `pools:` in the file layer (serde, `deny_unknown_fields`); validated by
//! [`crate::config::routes`] (routes and pools) and [`crate::config::route_policy`] (their
//! policies) into the live [`crate::routes::RouteTable`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Default `routes[].redirect.status`.
pub const DEFAULT_REDIRECT_STATUS: u16 = 301;
/// Default `routes[].redirect.keep_path`.
pub const DEFAULT_REDIRECT_KEEP_PATH: bool = true;
/// Default `routes[].redirect.keep_query`.
pub const DEFAULT_REDIRECT_KEEP_QUERY: bool = true;
/// Path probed by an `http` pool's health check.
pub const DEFAULT_POOL_HEALTH_PATH: &str = "/";
/// `Host` header of an `http` pool's health probe.
pub const DEFAULT_POOL_HEALTH_HOST: &str = "localhost";
/// Time between two probes of one upstream.
pub const DEFAULT_POOL_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Connect and read timeout of one probe.
pub const DEFAULT_POOL_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The status of a healthy upstream.
pub const DEFAULT_POOL_HEALTH_EXPECT_STATUS: u16 = 200;
/// Failed probes in a row that mark an upstream down.
pub const DEFAULT_POOL_HEALTH_FAILURES: usize = 2;
/// Good probes in a row that mark it up again.
pub const DEFAULT_POOL_HEALTH_SUCCESSES: usize = 1;
/// Connect/proxy failures in a row that eject an upstream.
pub const DEFAULT_POOL_EJECT_FAILURES: u32 = 3;
/// How long an ejected upstream gets no requests.
pub const DEFAULT_POOL_EJECT_COOLDOWN: Duration = Duration::from_secs(10);
/// Longest route or pool name.
pub const MAX_NAME_LEN: usize = 63;

/// One entry of `routes:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Unique name, `[a-z0-9_-]`, 1-63 characters (metric label). Required.
    pub name: String,
    /// Host names (`api.example.com`, `*.example.com`). Default: any host.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// The path (see `path_match`). Required.
    pub path: String,
    /// `prefix` (on segment boundaries) or `exact`. Default `prefix`.
    #[serde(default)]
    pub path_match: PathMatch,
    /// Methods (`GET`, `POST`...). Default: any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// `sessions` or the name of an `http` pool of `pools:`. Required, except on a
    /// `redirect` route (which has none).
    #[serde(default)]
    pub pool: String,
    /// `required` (the edge's `auth:` applies) or `off`. Default `required`.
    #[serde(default)]
    pub auth: AuthFile,
    /// Pass the client's `Authorization` and `X-API-Key` on to the upstream (a service
    /// with its own authentication). Only with `auth: off`. Default `false`: stripped.
    #[serde(default)]
    pub forward_credentials: bool,
    // -- Per-route policies, part "IP rules, header rules, redirect" (issue #19):
    // validated in `crate::config::route_policy`, enforced by `crate::policy`.
    /// CIDRs (v4/v6) that may use the route; absent: every address not denied.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// CIDRs refused (checked before `allow`). Default: none.
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    /// Answer every request with a redirect (no pool then). Default: none.
    #[serde(default)]
    pub redirect: Option<crate::config::route_policy::RedirectFile>,
    /// Header rules on the request to the upstream (`http` routes). Default: none.
    #[serde(default)]
    pub request_headers: Option<crate::config::route_policy::HeaderRulesFile>,
    /// Header rules on the upstream's response. Default: none.
    #[serde(default)]
    pub response_headers: Option<crate::config::route_policy::HeaderRulesFile>,
    // --- per-route policies: response compression (issue #19, pol-comp) ---
    /// gzip/brotli of compressible responses (see [`crate::policy::compression`]).
    /// Default: none (responses as the upstream sent them).
    #[serde(default)]
    pub compression: Option<CompressionFile>,
    /// Upstream timeouts of this route (see [`crate::policy::route_limits`]). Default:
    /// `timeouts.*`.
    #[serde(default)]
    pub timeouts: Option<RouteTimeoutsFile>,
    /// Largest request body of this route, bytes. Default: `limits.max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Bodies of the edge's own error answers on this route, by status (see
    /// [`crate::policy::error_pages`]). Default: none (JSON).
    #[serde(default)]
    pub error_pages: Option<std::collections::BTreeMap<u16, ErrorPageFile>>,
    // --- end pol-comp ---
}

/// `routes[].path_match`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    #[default]
    Prefix,
    Exact,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthFile {
    #[default]
    Required,
    /// Credentials, when presented, are checked as with `required`; none: anonymous.
    Optional,
    Off,
}

/// `pools[].balance`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    #[default]
    RoundRobin,
    LeastConn,
    Hash,
}

/// One entry of `pools:` (an `http` pool).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// Unique name, `[a-z0-9_-]`, 1-63 characters, not `sessions`. Required.
    pub name: String,
    /// `ip:port` of each upstream; at least one unless `discovery` finds them.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Upstreams found by DNS (see [`crate::config::discovery::PoolDiscoveryFile`]).
    #[serde(default)]
    pub discovery: Option<crate::config::discovery::PoolDiscoveryFile>,
    /// Default `round_robin`.
    #[serde(default)]
    pub balance: BalanceFile,
    /// With `balance: hash`: `header:<name>` or `cookie:<name>`. Required for `hash`.
    #[serde(default)]
    pub hash_on: Option<String>,
    #[serde(default)]
    pub health_check: PoolHealthFile,
    #[serde(default)]
    pub ejection: PoolEjectionFile,
    /// TLS to the upstreams (requests and probes). Absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<PoolTlsFile>,
}

/// `pools[].tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolTlsFile {
    /// Name sent as SNI and required in the upstream's certificate. Required.
    pub sni: String,
    /// PEM bundle of the CA(s) the upstream certificates chain to. Default: the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Verify the chain and the name. `false` is insecure (tests, migrations). Default `true`.
    #[serde(default = "yes")]
    pub verify: bool,
}

/// `pools[].health_check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolHealthFile {
    /// Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_host")]
    pub host: String,
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    #[serde(default = "default_health_failures")]
    pub failures: usize,
    #[serde(default = "default_health_successes")]
    pub successes: usize,
}

impl Default for PoolHealthFile {
    fn default() -> Self {
        PoolHealthFile {
            enabled: true,
            path: default_health_path(),
            host: default_health_host(),
            interval: DEFAULT_POOL_HEALTH_INTERVAL,
            timeout: DEFAULT_POOL_HEALTH_TIMEOUT,
            expect_status: DEFAULT_POOL_HEALTH_EXPECT_STATUS,
            failures: DEFAULT_POOL_HEALTH_FAILURES,
            successes: DEFAULT_POOL_HEALTH_SUCCESSES,
        }
    }
}

/// `pools[].ejection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEjectionFile {
    #[serde(default = "default_eject_failures")]
    pub failures: u32,
    #[serde(default = "default_eject_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for PoolEjectionFile {
    fn default() -> Self {
        PoolEjectionFile {
            failures: DEFAULT_POOL_EJECT_FAILURES,
            cooldown: DEFAULT_POOL_EJECT_COOLDOWN,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_health_path() -> String {
    DEFAULT_POOL_HEALTH_PATH.into()
}
fn default_health_host() -> String {
    DEFAULT_POOL_HEALTH_HOST.into()
}
fn default_health_interval() -> Duration {
    DEFAULT_POOL_HEALTH_INTERVAL
}
fn default_health_timeout() -> Duration {
    DEFAULT_POOL_HEALTH_TIMEOUT
}
fn default_expect_status() -> u16 {
    DEFAULT_POOL_HEALTH_EXPECT_STATUS
}
fn default_health_failures() -> usize {
    DEFAULT_POOL_HEALTH_FAILURES
}
fn default_health_successes() -> usize {
    DEFAULT_POOL_HEALTH_SUCCESSES
}
fn default_eject_failures() -> u32 {
    DEFAULT_POOL_EJECT_FAILURES
}
fn default_eject_cooldown() -> Duration {
    DEFAULT_POOL_EJECT_COOLDOWN
}

/// `routes[].redirect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    /// Absolute `http(s)://host[:port][/path][?query]` target. Required.
    pub to: String,
    /// 301, 302, 307 or 308. Default 301.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Append the request path to `to`'s path. Default `true`.
    #[serde(default = "default_keep_path")]
    pub keep_path: bool,
    /// Append the request query. Default `true`.
    #[serde(default = "default_keep_query")]
    pub keep_query: bool,
}

/// `routes[].request_headers` / `routes[].response_headers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesFile {
    /// Header names removed. Default: none.
    #[serde(default)]
    pub remove: Vec<String>,
    /// name: value, replacing any value (added when absent). Default: none.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// name: value, appended as another value. Default: none.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

fn default_status() -> u16 {
    DEFAULT_REDIRECT_STATUS
}
fn default_keep_path() -> bool {
    DEFAULT_REDIRECT_KEEP_PATH
}
fn default_keep_query() -> bool {
    DEFAULT_REDIRECT_KEEP_QUERY
}

/// Compression level (gzip 1-9, brotli 1-11) when `level` is absent.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 6;
/// Smallest `Content-Length` (bytes) compressed when `min_size` is absent.
pub const DEFAULT_COMPRESSION_MIN_SIZE: u64 = 1024;
/// `routes[].compression` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionFile {
    /// Offer gzip. Default `true`.
    #[serde(default = "yes")]
    pub gzip: bool,
    /// Offer brotli (`br`, preferred when the client accepts both). Default `true`.
    #[serde(default = "yes")]
    pub brotli: bool,
    /// 1-9. Default [`DEFAULT_COMPRESSION_LEVEL`].
    #[serde(default = "default_compression_level")]
    pub level: u32,
    /// Bytes; a response with a smaller `Content-Length` is sent as is. Default
    /// [`DEFAULT_COMPRESSION_MIN_SIZE`].
    #[serde(default = "default_compression_min_size")]
    pub min_size: u64,
}

fn default_compression_level() -> u32 {
    DEFAULT_COMPRESSION_LEVEL
}
fn default_compression_min_size() -> u64 {
    DEFAULT_COMPRESSION_MIN_SIZE
}

/// `routes[].timeouts` as written in the file: each absent one is the global value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeoutsFile {
    /// Upstream connect. Default: `timeouts.connect`.
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    /// Upstream read of a plain (not streaming) request, each read. Default:
    /// `timeouts.read`.
    #[serde(default, with = "humantime_serde")]
    pub read: Option<Duration>,
    /// Silence allowed on a stream (SSE, WebSocket, both ways). Default:
    /// `timeouts.stream_idle`.
    #[serde(default, with = "humantime_serde")]
    pub idle: Option<Duration>,
}

/// `content_type` when absent.
pub const DEFAULT_ERROR_PAGE_CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// One `routes[].error_pages.<status>` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPageFile {
    /// `Content-Type` of the page. Default [`DEFAULT_ERROR_PAGE_CONTENT_TYPE`].
    #[serde(default)]
    pub content_type: Option<String>,
    /// A file read at load (at most [`crate::policy::error_pages::MAX_ERROR_PAGE_BYTES`]). One of `file`/`body`.
    #[serde(default)]
    pub file: Option<String>,
    /// The page inline. One of `file`/`body`.
    #[serde(default)]
    pub body: Option<String>,
}
