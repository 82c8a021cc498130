//! The YAML file layer: serde types that mirror `conf/hotplex.yaml` one to one.
//!
//! Every struct rejects unknown keys (`deny_unknown_fields`) so a typo is an error, not a
//! silently ignored setting. Durations are humantime strings (`500ms`, `2s`, `1h`).
//! Defaults live in the `DEFAULT_*` constants of [`super`]; validation (ranges, uniqueness,
//! address syntax) happens when converting to [`super::RuntimeConfig`].

pub mod discovery;
pub mod jwt;
pub mod routes;
pub mod security;
pub mod store;

use std::time::Duration;

use serde::Deserialize;

use super::*;

/// Top level of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Proxy HTTP listener, `ip:port`. Default [`DEFAULT_LISTEN`].
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Worker threads of the proxy service. Default [`DEFAULT_THREADS`].
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// One work-stealing runtime for all `threads` (true) or one single-threaded runtime
    /// per thread, each connection staying on the thread that accepted it (false: less
    /// cross-thread synchronisation per request). Default [`DEFAULT_WORK_STEALING`].
    #[serde(default = "default_work_stealing")]
    pub work_stealing: bool,
    /// Client-socket buffers of the proxy's listeners (not reloadable).
    #[serde(default)]
    pub buffers: BuffersFile,
    /// Admin listener settings.
    #[serde(default)]
    pub admin: AdminFile,
    /// The workers (HotPlex nodes). At least one, unless `discovery` is set.
    #[serde(default)]
    pub workers: Vec<WorkerFile>,
    /// Workers found by DNS (A/AAAA or SRV), next to `workers`. Default: none.
    #[serde(default)]
    pub discovery: Option<super::discovery::DiscoveryFile>,
    /// How long a worker removed from the config keeps serving its existing sessions
    /// (draining, state `removing`) before it is gone (410). Default [`DEFAULT_WORKERS_REMOVAL_GRACE`].
    #[serde(default = "default_removal_grace", with = "humantime_serde")]
    pub workers_removal_grace: Duration,
    /// Graceful binary upgrade (`--upgrade`).
    #[serde(default)]
    pub upgrade: UpgradeFile,
    /// Session routing.
    #[serde(default)]
    pub routing: RoutingFile,
    /// Active health checks.
    #[serde(default)]
    pub health_check: HealthCheckFile,
    /// Passive ejection after connect errors / timeouts.
    #[serde(default)]
    pub ejection: EjectionFile,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Upstream connection pool.
    #[serde(default)]
    pub upstream: UpstreamFile,
    /// Checks of the secret files the config names.
    #[serde(default)]
    pub security: SecurityFile,
    /// Audit log sink (`audit.file` or `audit.stream`), independent of `log.level`.
    #[serde(default)]
    pub audit: AuditFile,
    /// Logging.
    #[serde(default)]
    pub log: LogFile,
    /// TLS termination (HTTPS + HTTP/2 listener). Absent: no TLS listener.
    #[serde(default)]
    pub tls: Option<hotplex_tls::TlsFile>,
    /// TLS to the workers. Absent or `enabled: false`: plain HTTP.
    #[serde(default)]
    pub upstream_tls: Option<hotplex_tls::UpstreamTlsFile>,
    /// API-key authentication (see [`super::security`]).
    #[serde(default)]
    pub auth: super::security::AuthFile,
    /// Apply this file on reload even though it switches protection off (auth off, every
    /// key removed, a limit removed, the body limit lifted, admin tokens or the worker key
    /// dropped): see `config::downgrade`. Set it for the one reload that means it, then
    /// remove it. Default `false`.
    #[serde(default)]
    pub allow_security_downgrade: bool,
    /// The shared key the proxy presents to the workers. Default: none.
    #[serde(default)]
    pub worker_auth: WorkerAuthFile,
    /// Rate, concurrency and size limits (see [`super::security`]).
    #[serde(default)]
    pub limits: super::security::LimitsFile,
    /// Ordered routes (host, path, method -> pool), first match wins. Absent: every
    /// request goes to the session pool, as without routes (see [`crate::routes`]).
    #[serde(default)]
    pub routes: Option<Vec<super::routes::RouteFile>>,
    /// Named `http` pools the routes may name (see [`crate::pools`]). Default: none.
    #[serde(default)]
    pub pools: Option<Vec<super::routes::PoolFile>>,
    /// OpenTelemetry traces (OTLP/HTTP). No `endpoint`: off. Not reloadable.
    /// Keys and defaults: `hotplex_common::telemetry::TelemetryFile`.
    #[serde(default)]
    pub telemetry: hotplex_common::telemetry::TelemetryFile,
}

/// Where a routing key may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// `/sessions/{id}` or `/sessions/{id}/...`.
    Path,
    /// Query parameter `session_id`.
    Query,
    /// Header `X-Hotplex-Session`.
    Header,
    /// Affinity cookie `hotplex_affinity`.
    Cookie,
}

impl KeySource {
    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Path => "path",
            KeySource::Query => "query",
            KeySource::Header => "header",
            KeySource::Cookie => "cookie",
        }
    }
}

/// `admin:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Admin listener (`/metrics`, `/admin/workers`, `/health/live`). Default [`DEFAULT_ADMIN_LISTEN`].
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer tokens accepted on `/admin/*`: plain text or `sha256:<64 hex>`. Default none
    /// (then `/admin/*` is open, and only allowed on a loopback `admin.listen`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// File with more tokens, one per line (same syntax; `#` comments). Default none.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Host names `/admin/*` and `/debug/*` answer to besides IP literals and `localhost`
    /// (a request whose `Host` names anything else is refused: DNS rebinding). Default none.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: default_admin_listen(),
            tokens: Vec::new(),
            token_file: None,
            hosts: Vec::new(),
        }
    }
}

/// One entry of `workers:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    /// Stable id, `[a-z0-9-]`, unique. Part of every pinned session id: never reuse an id
    /// for a different worker while its sessions may still be alive.
    pub id: String,
    /// `ip:port` of the worker's HTTP listener.
    pub address: String,
    /// Relative weight for hashing foreign keys. Default [`DEFAULT_WEIGHT`].
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Most sessions the proxy places on this worker. Default [`DEFAULT_CAPACITY`].
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// Draining: no new sessions, existing ones keep working. Default `false`.
    #[serde(default)]
    pub drain: bool,
}

/// `upgrade:` section: pingora's graceful upgrade (listening sockets handed over).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeFile {
    /// Unix socket the listening sockets are handed over on. Both the old and the new
    /// process must use the same path. Default: a private runtime directory (see
    /// [`crate::upgrade_sock`]); checked at start.
    #[serde(default)]
    pub sock: Option<String>,
    /// After SIGQUIT/SIGTERM, how long the old process keeps serving (open WebSockets and
    /// SSE streams included) before it stops its runtimes. Default [`DEFAULT_UPGRADE_GRACE_PERIOD`].
    #[serde(default = "default_upgrade_grace", with = "humantime_serde")]
    pub grace_period: Duration,
    /// Time allowed for the runtimes to stop after the grace period. Default [`DEFAULT_SHUTDOWN_TIMEOUT`].
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for UpgradeFile {
    fn default() -> Self {
        UpgradeFile {
            sock: None,
            grace_period: DEFAULT_UPGRADE_GRACE_PERIOD,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// `routing:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// Where to look for the routing key, first hit wins. Default: path, query, header, cookie.
    #[serde(default = "default_key_sources")]
    pub key_sources: Vec<KeySource>,
    /// HMAC secrets: the first signs, all verify (each minted id names its secret by a key
    /// id, so removing a secret revokes its ids). `env:NAME` / `file:PATH` read the secret
    /// from outside the config. Default: an insecure development secret.
    #[serde(default = "default_secrets")]
    pub affinity_secrets: Vec<String>,
    /// Absolute lifetime of the session ids the proxy mints (humantime, e.g. `24h`): past
    /// it an id answers 404 `session_not_found` on every proxy. Default: none (ids live as
    /// long as their session and their secret).
    #[serde(default, with = "humantime_serde")]
    pub session_lifetime: Option<Duration>,
}

impl Default for RoutingFile {
    fn default() -> Self {
        RoutingFile {
            key_sources: default_key_sources(),
            affinity_secrets: default_secrets(),
            session_lifetime: None,
        }
    }
}

/// `worker_auth:` section: how the proxy proves itself to the workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerAuthFile {
    /// The shared worker key, sent on every forwarded request as `X-Hotplex-Proxy-Auth`;
    /// a worker with `proxy_keys` trusts the tenant header only with it. `env:NAME`,
    /// `file:PATH` or the key itself (at least 16 bytes). Default: none (workers without
    /// `proxy_keys`, on a private network or loopback, trust the proxy's headers).
    #[serde(default)]
    pub key: Option<String>,
    /// Accept identity proofs made for another address than the one dialled (NAT or port
    /// mapping in front of workers). Insecure: an impostor that receives a probe and can
    /// reach the real worker relays the challenge and passes. Default
    /// [`super::DEFAULT_ALLOW_ADDRESS_TRANSLATION`] (false).
    #[serde(default = "default_allow_address_translation")]
    pub allow_address_translation: bool,
}

fn default_allow_address_translation() -> bool {
    super::DEFAULT_ALLOW_ADDRESS_TRANSLATION
}

impl Default for WorkerAuthFile {
    fn default() -> Self {
        WorkerAuthFile {
            key: None,
            allow_address_translation: default_allow_address_translation(),
        }
    }
}

/// `health_check:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// Path probed with GET. Default [`DEFAULT_HEALTH_PATH`].
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes. Default [`DEFAULT_HEALTH_INTERVAL`].
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Timeout of one probe. Default [`DEFAULT_HEALTH_TIMEOUT`].
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed probes that mark a worker down. Default [`DEFAULT_HEALTH_FAILURES`].
    #[serde(default = "default_failures")]
    pub failures: usize,
    /// Consecutive good probes that mark it up again. Default [`DEFAULT_HEALTH_SUCCESSES`].
    #[serde(default = "default_successes")]
    pub successes: usize,
}

impl Default for HealthCheckFile {
    fn default() -> Self {
        HealthCheckFile {
            path: default_health_path(),
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            failures: DEFAULT_HEALTH_FAILURES,
            successes: DEFAULT_HEALTH_SUCCESSES,
        }
    }
}

/// `ejection:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectionFile {
    /// First ejection period; doubled for each further ejection in a row. Default [`DEFAULT_EJECTION_BASE`].
    #[serde(default = "default_ejection_base", with = "humantime_serde")]
    pub base: Duration,
    /// Cap of the ejection period. Default [`DEFAULT_EJECTION_MAX`].
    #[serde(default = "default_ejection_max", with = "humantime_serde")]
    pub max: Duration,
}

impl Default for EjectionFile {
    fn default() -> Self {
        EjectionFile {
            base: DEFAULT_EJECTION_BASE,
            max: DEFAULT_EJECTION_MAX,
        }
    }
}

/// `timeouts:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// TCP connect to a worker. Default [`DEFAULT_CONNECT_TIMEOUT`].
    #[serde(default = "default_connect", with = "humantime_serde")]
    pub connect: Duration,
    /// Longest wait for a read from a worker (plain requests). Default [`DEFAULT_READ_TIMEOUT`].
    #[serde(default = "default_read", with = "humantime_serde")]
    pub read: Duration,
    /// Longest wait for a write to a worker. Default [`DEFAULT_WRITE_TIMEOUT`].
    #[serde(default = "default_write", with = "humantime_serde")]
    pub write: Duration,
    /// Idle limit of WebSocket and SSE streams (read timeout of upgraded/streaming requests).
    /// Default [`DEFAULT_STREAM_IDLE_TIMEOUT`].
    #[serde(default = "default_stream_idle", with = "humantime_serde")]
    pub stream_idle: Duration,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        TimeoutsFile {
            connect: DEFAULT_CONNECT_TIMEOUT,
            read: DEFAULT_READ_TIMEOUT,
            write: DEFAULT_WRITE_TIMEOUT,
            stream_idle: DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }
}

/// `buffers:` section: user-space buffers in front of each accepted client socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuffersFile {
    /// Read buffer of a plain-HTTP client socket, bytes; 0: none. Default [`DEFAULT_READ_BUFFER`].
    #[serde(default = "default_read_buffer")]
    pub read: usize,
    /// Read buffer of a TLS client socket, bytes; 0: none. Default [`DEFAULT_TLS_READ_BUFFER`].
    #[serde(default = "default_tls_read_buffer")]
    pub tls_read: usize,
    /// Write buffer of a client socket (both listeners), bytes; 0: none. Default [`DEFAULT_WRITE_BUFFER`].
    #[serde(default = "default_write_buffer")]
    pub write: usize,
}

impl Default for BuffersFile {
    fn default() -> Self {
        BuffersFile {
            read: DEFAULT_READ_BUFFER,
            tls_read: DEFAULT_TLS_READ_BUFFER,
            write: DEFAULT_WRITE_BUFFER,
        }
    }
}

/// `upstream:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Idle keep-alive connections kept to workers (all workers together). Default [`DEFAULT_KEEPALIVE_POOL_SIZE`].
    #[serde(default = "default_pool")]
    pub keepalive_pool_size: usize,
    /// How long an idle pooled connection is kept. Default [`DEFAULT_KEEPALIVE_IDLE`].
    #[serde(default = "default_keepalive_idle", with = "humantime_serde")]
    pub keepalive_idle: Duration,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            keepalive_pool_size: DEFAULT_KEEPALIVE_POOL_SIZE,
            keepalive_idle: DEFAULT_KEEPALIVE_IDLE,
        }
    }
}

/// `security:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    /// Refuse the config (at start and on reload) when a private key or secret file it names
    /// is readable by group or others; `false`: a warning. Default
    /// [`hotplex_common::secrets::DEFAULT_REFUSE_READABLE_SECRETS`].
    #[serde(default = "default_refuse_readable_secrets")]
    pub refuse_readable_secrets: bool,
}

impl Default for SecurityFile {
    fn default() -> Self {
        SecurityFile {
            refuse_readable_secrets: default_refuse_readable_secrets(),
        }
    }
}

fn default_refuse_readable_secrets() -> bool {
    hotplex_common::secrets::DEFAULT_REFUSE_READABLE_SECRETS
}

/// `audit:` section: where audit lines (target `audit`) go, at any log level. Default:
/// standard error. Not reloadable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// A file (absolute path), opened for appending, created with mode 0600.
    #[serde(default)]
    pub file: Option<std::path::PathBuf>,
    /// `stderr` or `stdout` (not with `file`).
    #[serde(default)]
    pub stream: Option<hotplex_common::logging::AuditStream>,
}

/// `log:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `json` or `text`. Default `json`.
    #[serde(default)]
    pub format: hotplex_common::logging::LogFormat,
    /// `EnvFilter` directive (`RUST_LOG` wins when set). Default [`DEFAULT_LOG_LEVEL`].
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            format: Default::default(),
            level: default_level(),
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_threads() -> usize {
    DEFAULT_THREADS
}
fn default_work_stealing() -> bool {
    DEFAULT_WORK_STEALING
}
fn default_read_buffer() -> usize {
    DEFAULT_READ_BUFFER
}
fn default_tls_read_buffer() -> usize {
    DEFAULT_TLS_READ_BUFFER
}
fn default_write_buffer() -> usize {
    DEFAULT_WRITE_BUFFER
}
fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.to_string()
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}
fn default_capacity() -> u64 {
    DEFAULT_CAPACITY
}
fn default_key_sources() -> Vec<KeySource> {
    DEFAULT_KEY_SOURCES.to_vec()
}
fn default_secrets() -> Vec<String> {
    vec![DEFAULT_DEV_SECRET.to_string()]
}
fn default_health_path() -> String {
    DEFAULT_HEALTH_PATH.to_string()
}
fn default_health_interval() -> Duration {
    DEFAULT_HEALTH_INTERVAL
}
fn default_health_timeout() -> Duration {
    DEFAULT_HEALTH_TIMEOUT
}
fn default_failures() -> usize {
    DEFAULT_HEALTH_FAILURES
}
fn default_successes() -> usize {
    DEFAULT_HEALTH_SUCCESSES
}
fn default_ejection_base() -> Duration {
    DEFAULT_EJECTION_BASE
}
fn default_ejection_max() -> Duration {
    DEFAULT_EJECTION_MAX
}
fn default_connect() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_read() -> Duration {
    DEFAULT_READ_TIMEOUT
}
fn default_write() -> Duration {
    DEFAULT_WRITE_TIMEOUT
}
fn default_stream_idle() -> Duration {
    DEFAULT_STREAM_IDLE_TIMEOUT
}
fn default_pool() -> usize {
    DEFAULT_KEEPALIVE_POOL_SIZE
}
fn default_keepalive_idle() -> Duration {
    DEFAULT_KEEPALIVE_IDLE
}
fn default_removal_grace() -> Duration {
    DEFAULT_WORKERS_REMOVAL_GRACE
}
fn default_upgrade_grace() -> Duration {
    DEFAULT_UPGRADE_GRACE_PERIOD
}
fn default_shutdown_timeout() -> Duration {
    DEFAULT_SHUTDOWN_TIMEOUT
}
fn default_level() -> String {
    DEFAULT_LOG_LEVEL.to_string()
}

#[cfg(test)]
mod defaults_tests;
