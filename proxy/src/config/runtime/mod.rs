//! The validated runtime config.

pub mod discovery;
pub mod jwt;
pub mod matcher;
pub mod pools;
pub mod route_label;
pub mod routes;
pub mod security;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use hotplex_common::logging::LogFormat;

pub use super::file::KeySource;

/// One worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub id: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub capacity: u64,
    /// `workers[].drain`: no new sessions.
    pub drain: bool,
}

/// Health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: usize,
    pub successes: usize,
}

/// Passive-ejection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionSettings {
    pub base: Duration,
    pub max: Duration,
}

/// Validated `buffers:` (bytes; 0 = unbuffered), applied to every accepted client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerBuffers {
    /// Plain-HTTP listener read buffer.
    pub read: usize,
    /// TLS listener read buffer.
    pub tls_read: usize,
    /// Write buffer (both listeners).
    pub write: usize,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub stream_idle: Duration,
}

/// The validated config the proxy runs on.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// File it came from (for messages).
    pub source: String,
    /// First 16 hex chars of the SHA-256 of the config text.
    pub hash: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    /// `work_stealing`: one shared runtime (true) or one runtime per thread.
    pub work_stealing: bool,
    /// `buffers:`: client-socket buffer sizes.
    pub buffers: ListenerBuffers,
    pub workers: Vec<WorkerSpec>,
    /// `discovery.dns`: workers found by DNS (see [`crate::upstream::dns`]).
    pub discovery: Option<super::discovery::DnsDiscovery>,
    pub key_sources: Vec<KeySource>,
    /// HMAC secrets; the first signs, all verify.
    pub affinity_secrets: Vec<Vec<u8>>,
    /// True when the public development secret is in use.
    pub insecure_secret: bool,
    pub health: HealthSettings,
    pub ejection: EjectionSettings,
    pub timeouts: Timeouts,
    pub keepalive_pool_size: usize,
    pub keepalive_idle: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Secret files readable by group or others (`key: reason`), logged as warnings at start
    /// and on reload (with `security.refuse_readable_secrets` the config is refused instead).
    pub secret_warnings: Vec<String>,
    /// `audit.file` / `audit.stream`: the audit lines' own sink.
    pub audit_sink: hotplex_common::logging::AuditSink,
    /// SHA-256 digests of the admin bearer tokens (empty: admin API open, loopback only).
    pub admin_tokens: Vec<[u8; 32]>,
    /// Grace of a worker removed from the config.
    pub workers_removal_grace: Duration,
    /// `upgrade.sock`: the graceful-upgrade socket path (configured, or the private runtime
    /// directory's: see [`crate::upgrade_sock`]); `None`: upgrades are disabled.
    pub upgrade_sock: Option<std::path::PathBuf>,
    /// Whether `upgrade.sock` was set in the file (else the default is used).
    pub upgrade_sock_configured: bool,
    /// `upgrade.grace_period`.
    pub upgrade_grace: Duration,
    /// `upgrade.shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// Validated `tls:` section (see [`crate::tls`]).
    pub tls: Option<hotplex_tls::TlsConfig>,
    /// TLS to the workers (`upstream_tls:` enabled), see [`crate::tls::worker_peer`].
    pub upstream_tls: Option<tls::WorkerTls>,
    /// Validated `auth:` (see [`crate::security`]).
    pub auth: super::security::AuthSettings,
    /// `allow_security_downgrade` (reloads only).
    pub allow_security_downgrade: bool,
    /// `admin.hosts`, lower-cased.
    pub admin_hosts: Vec<String>,
    /// Lifetime of minted session ids (`routing.session_lifetime`).
    pub session_lifetime: Option<Duration>,
    /// `X-Hotplex-Proxy-Auth` value sent to the workers (`worker_auth.key`).
    pub worker_key: Option<http::HeaderValue>,
    /// `worker_auth.allow_address_translation`: identity proofs need not name the address
    /// dialled.
    pub worker_address_translation: bool,
    /// Validated `limits:` (see [`crate::security`]).
    pub limits: super::security::LimitSettings,
    /// Validated `telemetry:` (the `OTEL_*` environment is applied at startup).
    pub telemetry: hotplex_common::telemetry::TelemetrySettings,
    /// `routes:` and `pools:` with the pools' live state (see [`crate::routes`]).
    pub routes: std::sync::Arc<routes::RouteTable>,
}

pub use hotplex_common::session_id::valid_worker_id;

impl RuntimeConfig {
    /// One-paragraph summary for `check`.
    pub fn summary(&self) -> String {
        let workers: Vec<String> = self
            .workers
            .iter()
            .map(|w| {
                format!(
                    "{}={} (weight {}, capacity {})",
                    w.id, w.address, w.weight, w.capacity
                )
            })
            .collect();
        let sources: Vec<&str> = self.key_sources.iter().map(|k| k.as_str()).collect();
        format!(
            "config {} is valid (hash {})\n  listen {}, admin {}\n  workers: {}{}\n  key sources: {}\n  affinity secrets: {}{}\n  {}",
            self.source,
            self.hash,
            self.listen,
            self.admin_listen,
            workers.join(", "),
            self.discovery
                .as_ref()
                .map(|d| format!("\n  discovery: {}", d.summary()))
                .unwrap_or_default(),
            sources.join(", "),
            self.affinity_secrets.len(),
            if self.insecure_secret {
                " (WARNING: the public development secret is in use)"
            } else {
                ""
            },
            self.routes.summary()
        )
    }

    /// Position of a worker id in the config.
    pub fn worker(&self, id: &str) -> Option<&WorkerSpec> {
        self.workers.iter().find(|w| w.id == id)
    }
}
