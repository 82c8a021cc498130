//! Worker configuration: the YAML file types (strict: unknown keys are rejected) and the
//! validated runtime type [`WorkerConfig`] the rest of the crate uses.
//!
//! Precedence: command-line flags > config file > the `DEFAULT_*` constants below.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hotplex_common::logging::LogFormat;
use hotplex_common::telemetry::{TelemetryFile, TelemetrySettings};
use serde::Deserialize;

pub use crate::agent_config::{AgentConfig, AgentFileConfig, AgentLimits, AgentProtocol};
pub use crate::quota_config::{
    OnError, QuotaStoreConfig, QuotaStoreFile, Rate, TenantQuotas, TenantQuotasFile,
};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default pool cap: sessions (child processes) alive at once.
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
/// Default idle timeout: a session with no turn for this long is closed by the reaper.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default execution timeout: the longest one turn may run before it is killed.
pub const DEFAULT_EXECUTION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default startup timeout: how long a new agent process may take to report ready.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between two reaper scans for idle sessions.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);
/// Default grace period on SIGTERM / shutdown for running turns to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default limit on request bodies and WebSocket messages, bytes (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default `Retry-After` on a 503 (pool full / draining), seconds.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 5;
/// Default log level directive (when `RUST_LOG` is unset).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default `service.name` of the worker's trace spans.
pub const DEFAULT_SERVICE_NAME: &str = "hotplex-worker";
/// Default trusted-proxy keys: none (dev mode: every request counts as the proxy's, so
/// the worker must only listen on loopback).
pub const DEFAULT_PROXY_KEYS: &[&str] = &[];
/// Default admin listener: none (the admin endpoints are served on the main listener,
/// to loopback peers only, unless `admin.tokens` is set).
pub const DEFAULT_ADMIN_LISTEN: Option<SocketAddr> = None;
/// Default admin bearer tokens: none.
pub const DEFAULT_ADMIN_TOKENS: &[&str] = &[];

/// The config file, exactly as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address `host:port`. Default [`DEFAULT_LISTEN`]; `--listen` overrides.
    pub listen: Option<SocketAddr>,
    /// Node id reported in `X-Hotplex-Node`, used as the prefix of minted session ids.
    /// Default: the host name; `--node-id` overrides.
    pub node_id: Option<String>,
    /// Sessions alive at once (count). Default [`DEFAULT_MAX_SESSIONS`].
    pub max_sessions: Option<usize>,
    /// Idle time after which a session is closed (humantime, e.g. `30m`). Default 30m.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Longest duration of one turn (humantime). Default 10m.
    #[serde(default, with = "humantime_serde")]
    pub execution_timeout: Option<Duration>,
    /// Longest agent startup until ready (humantime). Default 10s.
    #[serde(default, with = "humantime_serde")]
    pub startup_timeout: Option<Duration>,
    /// Interval of the idle reaper (humantime). Default 5s.
    #[serde(default, with = "humantime_serde")]
    pub reap_interval: Option<Duration>,
    /// Grace period for running turns on shutdown (humantime). Default 30s.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// Request body / WebSocket message limit, bytes. Default 1 MiB.
    pub max_body_bytes: Option<usize>,
    /// `Retry-After` of 503 answers, seconds. Default 5.
    pub retry_after_secs: Option<u64>,
    /// Accepted API keys. Empty or absent: no authentication.
    pub api_keys: Option<Vec<String>>,
    /// Shared keys of the trusted proxy (`X-Hotplex-Proxy-Auth`); each entry is a literal,
    /// `env:NAME` or `file:/path`, resolved at load and trimmed. Default: none (dev mode).
    pub proxy_keys: Option<Vec<String>>,
    /// The admin surface (`/admin/*`, the session list, `/metrics`, `/debug/*`).
    pub admin: Option<AdminFileConfig>,
    /// Log format, `json` or `text`. Default `json`.
    pub log_format: Option<LogFormat>,
    /// Log level directive (`RUST_LOG` wins). Default `info`.
    pub log_level: Option<String>,
    /// The agent process started for each session.
    pub agent: Option<AgentFileConfig>,
    /// OpenTelemetry traces (OTLP/HTTP); absent or without `endpoint`: off. See
    /// `hotplex_common::telemetry` for the keys and their defaults.
    pub telemetry: Option<TelemetryFile>,
    /// Per-tenant quotas on sessions and turns (see [`crate::quota_config`]).
    pub tenant_quotas: Option<TenantQuotasFile>,
    /// Shared store (Redis) that makes the tenant quotas fleet-wide. Default: none.
    pub quota_store: Option<QuotaStoreFile>,
    /// Checks of the secret files named by `proxy_keys` and `admin.tokens` (`file:`).
    pub security: Option<SecurityFileConfig>,
    /// Where audit lines (target `audit`) go, at any log level. Default: stderr.
    pub audit: Option<AuditFileConfig>,
    /// Serve TLS on `listen` with this certificate (see [`crate::tls`]). Default: none
    /// (plain HTTP).
    pub tls: Option<crate::tls::TlsFileConfig>,
}

/// `audit:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFileConfig {
    /// A file (absolute path), appended to, created with mode 0600.
    pub file: Option<std::path::PathBuf>,
    /// `stderr` or `stdout` (not with `file`).
    pub stream: Option<hotplex_common::logging::AuditStream>,
}

/// `security:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFileConfig {
    /// Refuse the config when a secret file is readable by group or others; otherwise a
    /// warning. Default [`hotplex_common::secrets::DEFAULT_REFUSE_READABLE_SECRETS`].
    pub refuse_readable_secrets: Option<bool>,
}

/// `admin:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFileConfig {
    /// A separate listener (`host:port`) for the admin endpoints and `/health/*`; when set,
    /// the main listener does not serve the admin endpoints at all. Default: none.
    pub listen: Option<SocketAddr>,
    /// Bearer tokens (`Authorization: Bearer <t>`) the admin endpoints require; entries as
    /// in `proxy_keys`. Default: none.
    pub tokens: Option<Vec<String>>,
}

/// A secret (proxy key, admin token): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its (already resolved) value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Resolves a secret reference: `env:NAME` (the variable), `file:/path` (the file's
/// contents) or a literal; trimmed, never empty.
pub fn resolve_secret(raw: &str) -> Result<Secret, String> {
    let value = if let Some(name) = raw.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
    } else if let Some(path) = raw.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
    } else {
        raw.to_string()
    };
    let value = value.trim();
    if value.is_empty() {
        return Err("a secret must not be empty".into());
    }
    Ok(Secret(value.to_string()))
}

/// Resolves a list of secret references (errors name the entry by index).
fn resolve_all(raw: &[String]) -> Result<Vec<Secret>, String> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| resolve_secret(r).map_err(|e| format!("entry {i}: {e}")))
        .collect()
}

/// The validated admin surface settings.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Separate admin listener; `None`: admin endpoints on the main listener.
    pub listen: Option<SocketAddr>,
    /// Accepted bearer tokens; empty: none required on the admin listener, loopback-only
    /// on the main listener.
    pub tokens: Vec<Secret>,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub listen: SocketAddr,
    pub node_id: String,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    pub execution_timeout: Duration,
    pub startup_timeout: Duration,
    pub reap_interval: Duration,
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
    pub retry_after_secs: u64,
    pub api_keys: Vec<String>,
    /// Keys of the trusted proxy; empty: dev mode (every request is the proxy's).
    pub proxy_keys: Vec<Secret>,
    pub admin: AdminConfig,
    pub log_format: LogFormat,
    pub log_level: String,
    pub agent: AgentConfig,
    /// Validated `telemetry:` (the `OTEL_*` environment is applied at startup).
    pub telemetry: TelemetrySettings,
    /// Validated `tenant_quotas:`.
    pub tenant_quotas: TenantQuotas,
    /// Validated `quota_store:`; `None`: per-worker quotas only.
    pub quota_store: Option<QuotaStoreConfig>,
    /// Secret files readable by group or others (`key: reason`), logged at startup.
    pub secret_warnings: Vec<String>,
    /// `audit.file` / `audit.stream`: the audit lines' own sink.
    pub audit_sink: hotplex_common::logging::AuditSink,
    /// `tls:`: the listen address serves TLS only; `None`: plain HTTP.
    pub tls: Option<crate::tls::WorkerTls>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            listen: default_listen(),
            node_id: default_node_id(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            execution_timeout: DEFAULT_EXECUTION_TIMEOUT,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            reap_interval: DEFAULT_REAP_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            api_keys: Vec::new(),
            proxy_keys: DEFAULT_PROXY_KEYS.iter().map(|k| Secret::new(*k)).collect(),
            admin: AdminConfig {
                listen: DEFAULT_ADMIN_LISTEN,
                tokens: DEFAULT_ADMIN_TOKENS
                    .iter()
                    .map(|k| Secret::new(*k))
                    .collect(),
            },
            log_format: LogFormat::Json,
            log_level: DEFAULT_LOG_LEVEL.to_string(),
            agent: AgentConfig::demo(),
            telemetry: TelemetrySettings::off(DEFAULT_SERVICE_NAME),
            tenant_quotas: TenantQuotas::default(),
            quota_store: None,
            secret_warnings: Vec::new(),
            audit_sink: Default::default(),
            tls: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The host name, sanitised to the session-id alphabet (it prefixes minted ids).
pub fn default_node_id() -> String {
    let raw = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "worker".to_string()
    } else {
        clean
    }
}

/// A config that cannot be used, with the file, the key and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

impl FileConfig {
    /// Parses YAML text; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            // The path names the offending key (for an unknown key, that key itself).
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            ConfigError::Invalid {
                file: file.to_string(),
                key,
                reason: inner,
            }
        })
    }

    /// Reads and parses a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &file)
    }

    /// The `file:` secrets of `proxy_keys` and `admin.tokens` readable by group or others:
    /// warnings, or `Err((key, reason))` with `security.refuse_readable_secrets`.
    fn readable_secrets(&self) -> Result<Vec<String>, (String, String)> {
        use hotplex_common::secrets;
        let mut files = Vec::new();
        for (i, k) in self.proxy_keys.iter().flatten().enumerate() {
            if let Some(p) = secrets::file_ref(k) {
                files.push((format!("proxy_keys[{i}]"), p.to_path_buf()));
            }
        }
        if let Some(t) = &self.tls {
            files.push(("tls.key_file".to_string(), t.key_file.clone()));
        }
        let tokens = self.admin.as_ref().and_then(|a| a.tokens.as_ref());
        for (i, k) in tokens.into_iter().flatten().enumerate() {
            if let Some(p) = secrets::file_ref(k) {
                files.push((format!("admin.tokens[{i}]"), p.to_path_buf()));
            }
        }
        let found = secrets::check(&files);
        let refuse = self
            .security
            .as_ref()
            .and_then(|s| s.refuse_readable_secrets)
            .unwrap_or(secrets::DEFAULT_REFUSE_READABLE_SECRETS);
        match found.first() {
            Some(f) if refuse => Err((
                f.key.clone(),
                format!("{} (security.refuse_readable_secrets is on)", f.reason()),
            )),
            _ => Ok(found
                .iter()
                .map(|x| format!("{}: {}", x.key, x.reason()))
                .collect()),
        }
    }

    /// The worker's own files, whose directories an agent sandbox hides: this config, the
    /// `file:` secrets, the audit log.
    fn worker_files(&self, file: &str) -> Vec<std::path::PathBuf> {
        let admin = self.admin.iter().flat_map(|a| a.tokens.iter().flatten());
        let secrets = self.proxy_keys.iter().flatten().chain(admin);
        std::iter::once(std::path::PathBuf::from(file))
            .chain(
                secrets.filter_map(|k| hotplex_common::secrets::file_ref(k).map(Path::to_path_buf)),
            )
            .chain(self.audit.as_ref().and_then(|a| a.file.clone()))
            .collect()
    }

    /// Validates and fills defaults. `file` names the source in errors.
    pub fn into_runtime(self, file: &str) -> Result<WorkerConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let d = WorkerConfig::default();
        let worker_files = self.worker_files(file);
        let secret_warnings = self.readable_secrets().map_err(|(k, r)| invalid(&k, &r))?;
        let node_id = match self.node_id {
            Some(n) => {
                validate_node_id(&n).map_err(|r| invalid("node_id", &r))?;
                n
            }
            None => d.node_id,
        };
        let max_sessions = self.max_sessions.unwrap_or(d.max_sessions);
        if max_sessions == 0 {
            return Err(invalid("max_sessions", "must be at least 1"));
        }
        let nonzero = |key: &str, v: Option<Duration>, def: Duration| match v {
            Some(x) if x.is_zero() => Err(invalid(key, "must be greater than 0")),
            Some(x) => Ok(x),
            None => Ok(def),
        };
        let idle_timeout = nonzero("idle_timeout", self.idle_timeout, d.idle_timeout)?;
        let execution_timeout = nonzero(
            "execution_timeout",
            self.execution_timeout,
            d.execution_timeout,
        )?;
        let startup_timeout = nonzero("startup_timeout", self.startup_timeout, d.startup_timeout)?;
        let reap_interval = nonzero("reap_interval", self.reap_interval, d.reap_interval)?;
        let shutdown_grace = self.shutdown_grace.unwrap_or(d.shutdown_grace);
        let max_body_bytes = self.max_body_bytes.unwrap_or(d.max_body_bytes);
        if max_body_bytes < 64 {
            return Err(invalid("max_body_bytes", "must be at least 64"));
        }
        let api_keys = self.api_keys.unwrap_or_default();
        if api_keys.iter().any(|k| k.is_empty()) {
            return Err(invalid("api_keys", "keys must not be empty"));
        }
        let proxy_keys = resolve_all(&self.proxy_keys.unwrap_or_default())
            .map_err(|r| invalid("proxy_keys", &r))?;
        let admin_file = self.admin.unwrap_or_default();
        let admin = AdminConfig {
            listen: admin_file.listen.or(d.admin.listen),
            tokens: resolve_all(&admin_file.tokens.unwrap_or_default())
                .map_err(|r| invalid("admin.tokens", &r))?,
        };
        let audit = self.audit.unwrap_or_default();
        let audit_sink =
            hotplex_common::logging::AuditSink::from_config(audit.file.as_deref(), audit.stream)
                .map_err(|r| invalid("audit.file", &r))?;
        let mut agent = match self.agent {
            Some(a) => AgentConfig::from_file(a).map_err(|(k, r)| invalid(k, &r))?,
            None => d.agent,
        };
        agent.isolation.worker_files = worker_files;
        let uids = agent
            .isolation
            .uid_range
            .unwrap_or(crate::agent_config::DEFAULT_UID_RANGE);
        if (uids.count as usize) < max_sessions {
            return Err(invalid(
                "agent.isolation.uid_range.count",
                "must be at least max_sessions (one uid per session)",
            ));
        }
        let telemetry = self
            .telemetry
            .unwrap_or_default()
            .validate("telemetry", DEFAULT_SERVICE_NAME)
            .map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                key: e.key,
                reason: e.reason,
            })?;
        let tenant_quotas = match self.tenant_quotas {
            Some(q) => TenantQuotas::from_file(q).map_err(|(k, r)| invalid(k, &r))?,
            None => d.tenant_quotas,
        };
        let quota_store = match self.quota_store {
            Some(q) => Some(QuotaStoreConfig::from_file(q).map_err(|(k, r)| invalid(k, &r))?),
            None => None,
        };
        let tls = match self.tls {
            Some(t) => Some(crate::tls::WorkerTls::load(t).map_err(|(k, r)| invalid(k, &r))?),
            None => None,
        };
        Ok(WorkerConfig {
            listen: self.listen.unwrap_or(d.listen),
            node_id,
            max_sessions,
            idle_timeout,
            execution_timeout,
            startup_timeout,
            reap_interval,
            shutdown_grace,
            max_body_bytes,
            retry_after_secs: self.retry_after_secs.unwrap_or(d.retry_after_secs),
            api_keys,
            proxy_keys,
            admin,
            log_format: self.log_format.unwrap_or_default(),
            log_level: self.log_level.unwrap_or(d.log_level),
            agent,
            telemetry,
            tenant_quotas,
            quota_store,
            secret_warnings,
            audit_sink,
            tls,
        })
    }
}

/// A node id must be a valid session-id prefix (it is not sanitised silently).
pub fn validate_node_id(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 64 {
        return Err("must be 1 to 64 bytes".into());
    }
    hotplex_common::session_id::validate(n.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = FileConfig::parse("", "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect("valid");
        assert_eq!(c.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.api_keys.is_empty());
        assert_eq!(
            c.agent.command.get(1).map(String::as_str),
            Some("demo-agent")
        );
    }

    #[test]
    fn full_file_parses() {
        let y = r#"
listen: 0.0.0.0:9000
node_id: node-7
max_sessions: 5
idle_timeout: 2m
execution_timeout: 500ms
startup_timeout: 3s
reap_interval: 1s
shutdown_grace: 0s
max_body_bytes: 4096
retry_after_secs: 2
api_keys: [a, b]
log_format: text
log_level: debug
agent:
  command: [/bin/agent, --flag]
  env: {A: "1"}
  cwd: /tmp
  wait_ready: false
"#;
        let c = FileConfig::parse(y, "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect("valid");
        assert_eq!(
            c.audit_sink,
            hotplex_common::logging::AuditSink::Stderr,
            "default audit sink"
        );
        let audit = |y: &str| FileConfig::parse(y, "w.yaml").and_then(|f| f.into_runtime("w.yaml"));
        assert_eq!(
            audit("audit:\n  file: /var/log/a.log\n")
                .expect("file")
                .audit_sink,
            hotplex_common::logging::AuditSink::File("/var/log/a.log".into())
        );
        assert_eq!(
            audit("audit:\n  stream: stdout\n")
                .expect("stdout")
                .audit_sink,
            hotplex_common::logging::AuditSink::Stdout
        );
        let e = audit("audit:\n  file: /a.log\n  stream: stderr\n").expect_err("both");
        assert!(e.to_string().contains("audit.file"), "{e}");
        assert_eq!(c.node_id, "node-7");
        assert_eq!(c.max_sessions, 5);
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.execution_timeout, Duration::from_millis(500));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.api_keys, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(c.agent.command, vec!["/bin/agent", "--flag"]);
        assert!(!c.agent.wait_ready);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../conf/worker.example.yaml");
        let c = FileConfig::parse(text, "worker.example.yaml")
            .and_then(|f| f.into_runtime("worker.example.yaml"))
            .expect("the example config is valid");
        assert_eq!(c.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.execution_timeout, DEFAULT_EXECUTION_TIMEOUT);
        assert_eq!(c.startup_timeout, DEFAULT_STARTUP_TIMEOUT);
        assert_eq!(c.reap_interval, DEFAULT_REAP_INTERVAL);
        assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.retry_after_secs, DEFAULT_RETRY_AFTER_SECS);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.tenant_quotas, TenantQuotas::default());
        assert!(c.quota_store.is_none());
    }

    #[test]
    fn systemd_config_runs_agents_as_per_session_uids() {
        // The config the shipped unit uses: valid, with a uid range that a non-root worker
        // holding the unit's five capabilities turns into per-session uids.
        let text = include_str!("../../conf/systemd/worker.yaml");
        let c = FileConfig::parse(text, "worker.yaml")
            .and_then(|f| f.into_runtime("worker.yaml"))
            .expect("the systemd worker config is valid");
        let range = c.agent.isolation.uid_range.expect("a uid range");
        assert!(range.count as usize >= c.max_sessions, "{range:?}");
        let unit = crate::sandbox::Privileges {
            euid: 990,
            can_switch_uid: true,
            ambient_caps: 0,
            extra_groups: false,
        };
        assert_eq!(
            crate::sandbox::resolve_mode(&c.agent.isolation, unit),
            Ok(crate::sandbox::IsolationMode::PerSessionUid(range))
        );
    }

    #[test]
    fn tenant_quotas_and_store_parse_and_name_bad_keys() {
        let y = "tenant_quotas:\n  max_sessions: 7\n  turns_per_minute: 30\n  turns_burst: 5\n\
                 quota_store:\n  url: redis://127.0.0.1:6379\n  timeout: 50ms\n  on_error: closed\n";
        let c = FileConfig::parse(y, "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect("valid");
        assert_eq!(c.tenant_quotas.session_quota(1000), 7);
        assert_eq!(c.tenant_quotas.turns.per_minute, 30);
        assert_eq!(c.tenant_quotas.turns.burst, 5);
        let store = c.quota_store.expect("store");
        assert_eq!(store.on_error, OnError::Closed);
        assert_eq!(store.timeout, Duration::from_millis(50));
        for (bad, key) in [
            (
                "tenant_quotas: {max_sesions: 1}\n",
                "tenant_quotas.max_sesions",
            ),
            (
                "tenant_quotas: {turns_burst: 0}\n",
                "tenant_quotas.turns_burst",
            ),
            ("quota_store: {url: 'x://y'}\n", "quota_store.url"),
            (
                "quota_store: {url: 'redis://h', on_error: maybe}\n",
                "quota_store.on_error",
            ),
        ] {
            let e = FileConfig::parse(bad, "w.yaml")
                .and_then(|f| f.into_runtime("w.yaml"))
                .expect_err(bad);
            assert!(e.to_string().contains(&format!("key `{key}`")), "{e}");
        }
    }

    #[test]
    fn claude_code_config_is_valid() {
        let text = include_str!("../../conf/worker.claude-code.yaml");
        let c = FileConfig::parse(text, "worker.claude-code.yaml")
            .and_then(|f| f.into_runtime("worker.claude-code.yaml"))
            .expect("the Claude Code config is valid");
        assert_eq!(c.agent.protocol, AgentProtocol::ClaudeStreamJson);
        assert_eq!(c.agent.command.first().map(String::as_str), Some("claude"));
        assert!(c
            .agent
            .env_allowlist
            .iter()
            .any(|v| v == "ANTHROPIC_API_KEY"));
        assert!(!c
            .agent
            .env_allowlist
            .iter()
            .any(|v| v.starts_with("HOTPLEX_")));
        assert!(c.agent.session_dirs.is_some());
    }

    #[test]
    fn proxy_keys_and_admin_resolve_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").expect("write");
        std::env::set_var("HOTPLEX_TEST_PROXY_KEY_1", "  from-env ");
        let y = format!(
            "proxy_keys: [literal, 'env:HOTPLEX_TEST_PROXY_KEY_1']\nadmin:\n  listen: 127.0.0.1:9091\n  tokens: ['file:{}']\n",
            f.display()
        );
        let c = FileConfig::parse(&y, "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect("valid");
        let keys: Vec<&str> = c.proxy_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["literal", "from-env"]);
        assert_eq!(c.admin.listen.map(|a| a.port()), Some(9091));
        assert_eq!(c.admin.tokens, vec![Secret::new("from-file")]);
        assert!(
            !format!("{c:?}").contains("from-env"),
            "secrets are redacted"
        );
        for bad in [
            "proxy_keys: ['env:HOTPLEX_TEST_UNSET_VAR_X']\n",
            "proxy_keys: ['  ']\n",
            "admin: {tokens: ['file:/nonexistent/x']}\n",
        ] {
            let e = FileConfig::parse(bad, "w.yaml")
                .and_then(|f| f.into_runtime("w.yaml"))
                .expect_err(bad);
            let s = e.to_string();
            assert!(
                s.contains("proxy_keys") || s.contains("admin.tokens"),
                "{s}"
            );
        }
        let e = FileConfig::parse("admin: {listn: x}\n", "w.yaml").expect_err("typo");
        assert!(e.to_string().contains("admin.listn"), "{e}");
    }

    #[test]
    fn tls_files_are_validated_and_the_key_is_a_secret_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = (dir.path().join("w1.crt"), dir.path().join("w1.key"));
        std::fs::write(&c, include_str!("../testdata/worker-w1.crt")).expect("write");
        std::fs::write(&k, include_str!("../testdata/worker-w1.key")).expect("write");
        let chmod = |m| std::fs::set_permissions(&k, std::fs::Permissions::from_mode(m));
        chmod(0o600).expect("chmod");
        let y = |extra: &str| {
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n{extra}",
                c.display(),
                k.display()
            )
        };
        let load = |text: String| FileConfig::parse(&text, "w.yaml")?.into_runtime("w.yaml");
        let cfg = load(y("")).expect("valid");
        assert!(cfg.tls.is_some() && cfg.secret_warnings.is_empty());
        chmod(0o644).expect("chmod");
        let cfg = load(y("")).expect("a warning by default");
        assert!(
            cfg.secret_warnings
                .iter()
                .any(|w| w.starts_with("tls.key_file")),
            "{:?}",
            cfg.secret_warnings
        );
        let e = load(y("security:\n  refuse_readable_secrets: true\n")).expect_err("refused");
        assert!(e.to_string().contains("`tls.key_file`"), "{e}");
        let e = load("tls:\n  cert_file: /nonexistent/c.pem\n  key_file: /x\n".into())
            .expect_err("missing file");
        assert!(
            e.to_string().starts_with("w.yaml: key `tls.cert_file`"),
            "{e}"
        );
        let e = load("tls:\n  cert_file: /c\n".into()).expect_err("no key_file");
        assert!(e.to_string().contains("key_file"), "{e}");
        assert!(
            load(String::new()).expect("no tls").tls.is_none(),
            "default: plain"
        );
    }

    #[test]
    fn k8s_worker_config_is_valid_and_trusts_only_the_proxy() {
        let text = include_str!("../../conf/k8s/configmap.yaml");
        let worker_yaml = serde_yaml::Deserializer::from_str(text)
            .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
            .find(|d| d["metadata"]["name"] == "hotplex-worker-config")
            .and_then(|d| d["data"]["worker.yaml"].as_str().map(str::to_string))
            .expect("hotplex-worker-config/worker.yaml");
        std::env::set_var("HOTPLEX_WORKER_KEY", "k8s-test-key");
        let c = FileConfig::parse(&worker_yaml, "configmap.yaml")
            .and_then(|f| f.into_runtime("configmap.yaml"))
            .expect("valid");
        assert_eq!(c.proxy_keys, vec![Secret::new("k8s-test-key")]);
        assert!(c.api_keys.is_empty(), "no direct clients in the cluster");
        assert_eq!(c.admin.listen.map(|a| a.port()), Some(9091));
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let e = FileConfig::parse("max_sesions: 3\n", "w.yaml").expect_err("unknown key");
        let s = e.to_string();
        assert!(
            s.starts_with("w.yaml: key `max_sesions`: unknown field"),
            "{s}"
        );
        let e = FileConfig::parse("agent:\n  comand: [x]\n", "w.yaml").expect_err("unknown");
        assert!(e.to_string().contains("key `agent.comand`"), "{e}");
    }

    #[test]
    fn telemetry_section() {
        let y = "telemetry:\n  endpoint: http://127.0.0.1:4318\n  sampling_ratio: 0.5\n  batch_delay: 200ms\n";
        let c = FileConfig::parse(y, "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect("valid");
        assert_eq!(
            c.telemetry.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(c.telemetry.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(c.telemetry.sampling_ratio, 0.5);
        assert_eq!(c.telemetry.batch_delay, Duration::from_millis(200));
        let e = FileConfig::parse("telemetry:\n  sampling_ratio: 2\n", "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect_err("ratio");
        assert!(
            e.to_string().contains("key `telemetry.sampling_ratio`"),
            "{e}"
        );
        let e = FileConfig::parse("telemetry:\n  endpont: x\n", "w.yaml").expect_err("typo");
        assert!(e.to_string().contains("telemetry.endpont"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected_with_key() {
        let e = FileConfig::parse("idle_timeout: soon\n", "w.yaml").expect_err("bad duration");
        assert!(e.to_string().contains("key `idle_timeout`"), "{e}");
        let e = FileConfig::parse("max_sessions: 0\n", "f")
            .and_then(|f| f.into_runtime("f"))
            .expect_err("zero");
        assert!(e.to_string().contains("max_sessions"), "{e}");
        let e = FileConfig::parse("agent: {command: []}\n", "f")
            .and_then(|f| f.into_runtime("f"))
            .expect_err("empty argv");
        assert!(e.to_string().contains("agent.command"), "{e}");
        let e = FileConfig::parse("node_id: 'a b'\n", "f")
            .and_then(|f| f.into_runtime("f"))
            .expect_err("bad node id");
        assert!(e.to_string().contains("node_id"), "{e}");
        let e = FileConfig::parse(
            "max_sessions: 10\nagent: {isolation: {uid_range: {start: 300000, count: 5}}}\n",
            "w.yaml",
        )
        .and_then(|f| f.into_runtime("w.yaml"))
        .expect_err("fewer uids than sessions");
        let e = e.to_string();
        assert!(
            e.contains("w.yaml") && e.contains("agent.isolation.uid_range.count"),
            "{e}"
        );
        let e = FileConfig::parse("agent: {isolation: {hide_paths: [x]}}\n", "w.yaml")
            .and_then(|f| f.into_runtime("w.yaml"))
            .expect_err("relative hide path");
        assert!(e.to_string().contains("agent.isolation.hide_paths"), "{e}");
    }

    #[test]
    fn the_sandbox_learns_the_worker_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken").expect("token");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let audit = dir.path().join("audit.log");
        let f = FileConfig::parse(
            &format!(
                "admin: {{tokens: ['file:{}', literal]}}\naudit: {{file: {}}}\n",
                token.display(),
                audit.display()
            ),
            "/etc/hotplex/worker.yaml",
        )
        .expect("parse");
        let c = f.into_runtime("/etc/hotplex/worker.yaml").expect("valid");
        let want = vec!["/etc/hotplex/worker.yaml".into(), token, audit];
        assert_eq!(c.agent.isolation.worker_files, want);
    }
}
