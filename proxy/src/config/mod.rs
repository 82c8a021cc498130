//! Proxy configuration, in three steps:
//!
//! 1. [`mod@file`]: serde types mirroring the YAML (`deny_unknown_fields`, humantime durations,
//!    enums for closed sets such as `routing.key_sources` and `limits.store.fail`), each
//!    default one `DEFAULT_*` constant used by serde and named in `conf/hotplex.yaml`;
//! 2. validation: [`validate`] (the whole document) and one module per section
//!    ([`security`], [`routes`], [`route_policy`], [`route_options`], [`discovery`],
//!    [`store`], [`jwt`], [`tls`], [`tokens`]), file -> runtime;
//! 3. [`runtime`]: the validated [`RuntimeConfig`] the proxy runs on (route labels as
//!    [`runtime::route_label::RouteName`], JWT keys, worker TLS, the route table
//!    [`runtime::routes::RouteTable`] with its matchers and `http` pools
//!    [`runtime::pools::HttpPool`], whose upstreams' live state a reload carries over).
//!
//! `config` sits below every module that reads it: it imports only the leaves `policy`
//! (the route policies' runtime types) and `upgrade_sock` (`scripts/check-cycles.py`, run by
//! `make lint`, keeps it so). The per-request side of the route table is in
//! [`crate::routes`] and [`crate::pools`], which re-export the table's types. The section
//! modules re-export their types under their former paths (`config::security::AuthSettings`).
//!
//! Every error names the file, the key path (`workers[2].address`) and the reason, so
//! `hotplex-proxy check FILE` reads like `nginx -t`. The running config is held in an
//! `ArcSwap` (see [`crate::upstream::Registry`]) and swapped by a hot reload
//! ([`crate::reload`]: `SIGHUP` or `POST /admin/reload`).
//!
//! `conf/hotplex.yaml` is the fully commented reference; `conf/hotplex.default.yaml` is
//! embedded in the binary ([`EMBEDDED_DEFAULT`]) and used when no `--config` is given.

pub mod discovery;
pub mod downgrade;
pub mod file;
pub mod jwt;
pub mod route_options;
pub mod route_policy;
pub mod routes;
pub mod runtime;
pub mod secret_files;
pub mod secret_ref;
pub mod security;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod validate;

use std::time::Duration;

pub use runtime::{KeySource, RuntimeConfig, WorkerSpec};

/// Proxy listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9900";
/// Worker threads of the proxy service.
pub const DEFAULT_THREADS: usize = 2;
/// Work-stealing runtime for the proxy threads (see `work_stealing` in the file config).
pub const DEFAULT_WORK_STEALING: bool = true;
/// Read buffer in front of a plain-HTTP client socket, bytes (`buffers.read`). 0: none.
/// Pingora parses HTTP from its own buffers, so an L4 read buffer on a plain socket only
/// adds a copy per read and its size in resident memory per connection (an idle
/// WebSocket keeps it for its lifetime; pingora's own default is 64 KiB).
pub const DEFAULT_READ_BUFFER: usize = 0;
/// Read buffer in front of a TLS client socket, bytes (`buffers.tls_read`). OpenSSL reads
/// each record's 5-byte header and then its body; the buffer turns those into one
/// `recv` for several records. 16 KiB + 5 + 256: one full TLS record with its header
/// and the largest AEAD overhead.
pub const DEFAULT_TLS_READ_BUFFER: usize = 16 * 1024 + 5 + 256;
/// Write buffer of a client socket, bytes (`buffers.write`): one typical TCP MSS, as in
/// pingora. Response bytes are coalesced up to this size; every response is flushed.
pub const DEFAULT_WRITE_BUFFER: usize = 1460;
/// Largest accepted `buffers.*` value, bytes.
pub const MAX_BUFFER: usize = 1024 * 1024;
/// Largest body read whole at the edge: pingora's replay ("retry") buffer, bytes
/// (`limits.max_body_bytes` and `routes[].max_body_bytes` above it need
/// `limits.allow_streamed_bodies`).
pub const BUFFERED_BODY_MAX: u64 = 64 * 1024;
/// Worker weight for hashing.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Worker capacity (sessions).
pub const DEFAULT_CAPACITY: u64 = 1000;
/// Routing key sources, in order.
pub const DEFAULT_KEY_SOURCES: &[KeySource] = &[
    KeySource::Path,
    KeySource::Query,
    KeySource::Header,
    KeySource::Cookie,
];
/// Development HMAC secret. INSECURE: it is public; set your own in production.
pub const DEFAULT_DEV_SECRET: &str = "hotplex-dev-insecure-secret-change-me";
/// Shortest accepted affinity secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Health probe path.
pub const DEFAULT_HEALTH_PATH: &str = hotplex_common::headers::HEALTH_READY_PATH;
/// Time between health probes.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Timeout of one probe.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed probes in a row to mark a worker down.
pub const DEFAULT_HEALTH_FAILURES: usize = 2;
/// Good probes in a row to mark it up.
pub const DEFAULT_HEALTH_SUCCESSES: usize = 1;
/// First passive-ejection period.
pub const DEFAULT_EJECTION_BASE: Duration = Duration::from_secs(5);
/// Longest passive-ejection period.
pub const DEFAULT_EJECTION_MAX: Duration = Duration::from_secs(120);
/// Upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstream read timeout (plain requests).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Upstream write timeout.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle timeout of WebSocket and SSE streams.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Upstream keep-alive pool size.
pub const DEFAULT_KEEPALIVE_POOL_SIZE: usize = 256;
/// Idle time of a pooled upstream connection.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// How long a worker removed from the config keeps serving its existing sessions.
pub const DEFAULT_WORKERS_REMOVAL_GRACE: Duration = Duration::from_secs(600);
/// After SIGQUIT/SIGTERM, how long the old process keeps serving.
pub const DEFAULT_UPGRADE_GRACE_PERIOD: Duration = Duration::from_secs(1);
/// Time allowed for the runtimes to stop after the grace period.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Log level directive.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `service.name` of the proxy's trace spans (`telemetry.service_name`).
pub const DEFAULT_SERVICE_NAME: &str = "hotplex-proxy";
/// `worker_auth.allow_address_translation`: the address a worker's identity proof names
/// must be the address dialled (a relayed proof is refused).
pub const DEFAULT_ALLOW_ADDRESS_TRANSLATION: bool = false;

/// The embedded default config (`conf/hotplex.default.yaml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../conf/hotplex.default.yaml");
/// Name used for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded conf/hotplex.default.yaml>";

/// A config error: which file, which key, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// File path (or [`EMBEDDED_NAME`]).
    pub file: String,
    /// Key path such as `workers[2].address` (`.` for the whole document).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(file: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Parses and validates YAML text; `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<RuntimeConfig, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let parsed: file::FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::new(file, key.as_str(), serde_reason(&key, &inner))
    })?;
    RuntimeConfig::from_file(file, text, parsed)
}

/// The reason of a serde error without what [`ConfigError`] already says: serde_yaml's
/// message repeats the key path in front and the position at the end
/// (`log.format: unknown variant ... at line 5 column 11`); the position is kept once.
fn serde_reason(key: &str, e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let mut reason = text.strip_prefix(&format!("{key}: ")).unwrap_or(&text);
    if let Some(loc) = e.location() {
        let at = format!(" at line {} column {}", loc.line(), loc.column());
        reason = reason.strip_suffix(&at).unwrap_or(reason);
        return format!("{reason} (line {}, column {})", loc.line(), loc.column());
    }
    reason.to_string()
}

/// Reads, parses and validates a config file.
pub fn load(path: &std::path::Path) -> Result<RuntimeConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&name, ".", format!("cannot read file: {e}")))?;
    parse(&name, &text)
}

/// The embedded default config.
pub fn embedded_default() -> Result<RuntimeConfig, ConfigError> {
    parse(EMBEDDED_NAME, EMBEDDED_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::parse;

    const MIN: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";

    #[test]
    fn serde_errors_name_key_and_position_once() {
        let e = parse("f.yaml", &format!("{MIN}log:\n  format: xml\n")).expect_err("enum");
        assert_eq!(e.key, "log.format");
        assert_eq!(
            e.reason,
            "unknown variant `xml`, expected `json` or `text` (line 5, column 11)"
        );
        let e = parse(
            "f.yaml",
            &format!("{MIN}routing:\n  key_sources: [path, body]\n"),
        )
        .expect_err("source");
        assert_eq!(e.key, "routing.key_sources[1]");
        assert!(
            e.reason
                .starts_with("unknown variant `body`, expected one of `path`"),
            "{e}"
        );
        assert!(e.reason.ends_with("(line 5, column 23)"), "{e}");
        let e = parse("f.yaml", &format!("{MIN}threads: abc\n")).expect_err("type");
        assert_eq!(
            e.to_string(),
            "f.yaml: threads: invalid type: string \"abc\", expected usize (line 4, column 10)"
        );
    }
}
