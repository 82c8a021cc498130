//! Validation: the file layer ([`super::file::FileConfig`]) -> the runtime layer
//! ([`RuntimeConfig`]). Each section's own validation lives beside it ([`super::security`],
//! [`super::routes`], [`super::discovery`], [`super::store`], [`super::jwt`], [`super::tls`],
//! [`super::tokens`]); every error names the file, the key path and the reason.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::file::FileConfig;
use super::runtime::{
    valid_worker_id, EjectionSettings, KeySource, ListenerBuffers, RuntimeConfig, Timeouts,
    WorkerSpec,
};
use super::{ConfigError, MIN_SECRET_LEN};

fn addr(file: &str, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            file,
            key,
            format!("{v:?} is not an ip:port address (host names are not resolved)"),
        )
    })
}

fn buffer_size(file: &str, key: &str, n: usize) -> Result<usize, ConfigError> {
    if n > super::MAX_BUFFER {
        Err(ConfigError::new(
            file,
            key,
            format!("{n} bytes is more than the maximum {}", super::MAX_BUFFER),
        ))
    } else {
        Ok(n)
    }
}

fn positive(file: &str, key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(file, key, "must be greater than 0"))
    } else {
        Ok(d)
    }
}

impl RuntimeConfig {
    /// Validates the file layer.
    pub fn from_file(file: &str, text: &str, f: FileConfig) -> Result<RuntimeConfig, ConfigError> {
        let listen = addr(file, "listen", &f.listen)?;
        let admin_listen = addr(file, "admin.listen", &f.admin.listen)?;
        // Port 0 is "a free port, reported by --addr-file": two of them never collide.
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::new(
                file,
                "admin.listen",
                "must differ from listen",
            ));
        }
        if f.threads == 0 || f.threads > 256 {
            return Err(ConfigError::new(file, "threads", "must be 1..=256"));
        }
        let discovery = super::discovery::validate(file, f.discovery.as_ref())?;
        if f.workers.is_empty() && discovery.is_none() {
            return Err(ConfigError::new(
                file,
                "workers",
                "at least one worker is required (or a discovery: section)",
            ));
        }
        let mut workers: Vec<WorkerSpec> = Vec::with_capacity(f.workers.len());
        for (i, w) in f.workers.iter().enumerate() {
            if !valid_worker_id(&w.id) {
                return Err(ConfigError::new(
                    file,
                    format!("workers[{i}].id"),
                    format!("{:?} must be 1-63 characters of [a-z0-9-]", w.id),
                ));
            }
            if let Some(j) = workers.iter().position(|o| o.id == w.id) {
                return Err(ConfigError::new(
                    file,
                    format!("workers[{i}].id"),
                    format!("duplicate id {:?} (also workers[{j}])", w.id),
                ));
            }
            let address = addr(file, &format!("workers[{i}].address"), &w.address)?;
            if let Some(j) = workers.iter().position(|o| o.address == address) {
                return Err(ConfigError::new(
                    file,
                    format!("workers[{i}].address"),
                    format!("duplicate address {address} (also workers[{j}])"),
                ));
            }
            if w.weight == 0 || w.weight > 1000 {
                return Err(ConfigError::new(
                    file,
                    format!("workers[{i}].weight"),
                    "must be 1..=1000",
                ));
            }
            if w.capacity == 0 {
                return Err(ConfigError::new(
                    file,
                    format!("workers[{i}].capacity"),
                    "must be at least 1",
                ));
            }
            workers.push(WorkerSpec {
                id: w.id.clone(),
                address,
                weight: w.weight,
                capacity: w.capacity,
                drain: w.drain,
            });
        }

        if f.routing.key_sources.is_empty() {
            return Err(ConfigError::new(
                file,
                "routing.key_sources",
                "list at least one of path, query, header, cookie",
            ));
        }
        let mut key_sources: Vec<KeySource> = Vec::new();
        for (i, k) in f.routing.key_sources.iter().enumerate() {
            if key_sources.contains(k) {
                return Err(ConfigError::new(
                    file,
                    format!("routing.key_sources[{i}]"),
                    format!("{:?} is listed twice", k.as_str()),
                ));
            }
            key_sources.push(*k);
        }
        if f.routing.affinity_secrets.is_empty() {
            return Err(ConfigError::new(
                file,
                "routing.affinity_secrets",
                "at least one secret is required",
            ));
        }
        let mut affinity_secrets = Vec::with_capacity(f.routing.affinity_secrets.len());
        for (i, s) in f.routing.affinity_secrets.iter().enumerate() {
            // `env:NAME` / `file:PATH`: the secret lives outside the config.
            let s =
                &super::secret_ref::resolve(file, &format!("routing.affinity_secrets[{i}]"), s)?;
            affinity_secrets.push(s.as_bytes().to_vec());
            if s.len() < MIN_SECRET_LEN {
                return Err(ConfigError::new(
                    file,
                    format!("routing.affinity_secrets[{i}]"),
                    format!("must be at least {MIN_SECRET_LEN} bytes"),
                ));
            }
        }
        let insecure_secret = f
            .routing
            .affinity_secrets
            .iter()
            .any(|s| s == super::DEFAULT_DEV_SECRET);

        let h = &f.health_check;
        if !h.path.starts_with('/') {
            return Err(ConfigError::new(
                file,
                "health_check.path",
                "must start with /",
            ));
        }
        if h.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::new(
                file,
                "health_check.path",
                "must not contain spaces or control characters",
            ));
        }
        let interval = positive(file, "health_check.interval", h.interval)?;
        let timeout = positive(file, "health_check.timeout", h.timeout)?;
        if h.failures == 0 {
            return Err(ConfigError::new(
                file,
                "health_check.failures",
                "must be at least 1",
            ));
        }
        if h.successes == 0 {
            return Err(ConfigError::new(
                file,
                "health_check.successes",
                "must be at least 1",
            ));
        }
        let base = positive(file, "ejection.base", f.ejection.base)?;
        if f.ejection.max < base {
            return Err(ConfigError::new(
                file,
                "ejection.max",
                "must be at least ejection.base",
            ));
        }
        let t = &f.timeouts;
        let timeouts = Timeouts {
            connect: positive(file, "timeouts.connect", t.connect)?,
            read: positive(file, "timeouts.read", t.read)?,
            write: positive(file, "timeouts.write", t.write)?,
            stream_idle: positive(file, "timeouts.stream_idle", t.stream_idle)?,
        };
        if tracing_level_invalid(&f.log.level) {
            return Err(ConfigError::new(
                file,
                "log.level",
                format!("{:?} is not a valid level/filter directive", f.log.level),
            ));
        }

        let routes = super::routes::validate(file, f.routes.as_deref(), f.pools.as_deref())?;
        // An http route's name is its route label in auth.keys[].routes and limits.routes.
        let http_routes: Vec<_> = routes
            .http_route_names()
            .into_iter()
            .map(super::runtime::route_label::HttpRouteName::new)
            .collect();
        let auth = super::security::auth(file, &f.auth, &http_routes)?;
        let tls = super::tls::validate(file, f.tls.as_ref(), &[listen, admin_listen])?;
        if !auth.enabled && !auth.allow_anonymous {
            // Anonymous public access is a conscious choice, never a default.
            let public = std::iter::once(listen)
                .chain(tls.as_ref().map(|t| t.listen))
                .find(|a| !a.ip().is_loopback());
            if let Some(a) = public {
                return Err(ConfigError::new(
                    file,
                    "auth.allow_anonymous",
                    format!(
                        "the public listener {a} is not loopback and auth is off: set \
                         auth.enabled: true with auth.keys (or auth.jwt), or \
                         auth.allow_anonymous: true to serve anonymous clients on purpose"
                    ),
                ));
            }
        }
        let worker_key = match &f.worker_auth.key {
            None => None,
            Some(k) => {
                let k = super::secret_ref::resolve(file, "worker_auth.key", k)?;
                if k.len() < MIN_SECRET_LEN {
                    return Err(ConfigError::new(
                        file,
                        "worker_auth.key",
                        format!("must be at least {MIN_SECRET_LEN} bytes"),
                    ));
                }
                let mut v = http::HeaderValue::from_str(&k).map_err(|_| {
                    ConfigError::new(file, "worker_auth.key", "must be printable ASCII")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };

        let limits = super::security::limits(file, &f.limits, &http_routes)?;
        // pol-comp: routes[].max_body_bytes obeys limits' streamed-body rule.
        check_body_limits(file, &routes, &limits)?;
        let secret_warnings = super::secret_files::readable_secrets(file, &f)?;
        let digest = Sha256::digest(text.as_bytes());
        Ok(RuntimeConfig {
            source: file.to_string(),
            hash: hex::encode(&digest[..8]),
            listen,
            admin_listen,
            threads: f.threads,
            work_stealing: f.work_stealing,
            buffers: ListenerBuffers {
                read: buffer_size(file, "buffers.read", f.buffers.read)?,
                tls_read: buffer_size(file, "buffers.tls_read", f.buffers.tls_read)?,
                write: buffer_size(file, "buffers.write", f.buffers.write)?,
            },
            workers,
            discovery,
            key_sources,
            affinity_secrets,
            insecure_secret,
            health: super::runtime::HealthSettings {
                path: h.path.clone(),
                interval,
                timeout,
                failures: h.failures,
                successes: h.successes,
            },
            ejection: EjectionSettings {
                base,
                max: f.ejection.max,
            },
            timeouts,
            keepalive_pool_size: f.upstream.keepalive_pool_size,
            keepalive_idle: f.upstream.keepalive_idle,
            log_format: f.log.format,
            log_level: f.log.level.clone(),
            secret_warnings,
            audit_sink: hotplex_common::logging::AuditSink::from_config(
                f.audit.file.as_deref(),
                f.audit.stream,
            )
            .map_err(|reason| ConfigError::new(file, "audit.file", reason))?,
            admin_tokens: super::tokens::admin_tokens(file, &f.admin, admin_listen)?,
            workers_removal_grace: f.workers_removal_grace,
            upgrade_sock: match &f.upgrade.sock {
                Some(s) if !s.starts_with('/') => {
                    return Err(ConfigError::new(
                        file,
                        "upgrade.sock",
                        "must be an absolute path",
                    ))
                }
                Some(s) => Some(std::path::PathBuf::from(s)),
                None => crate::upgrade_sock::default_path_from_env(),
            },
            upgrade_sock_configured: f.upgrade.sock.is_some(),
            upgrade_grace: positive(file, "upgrade.grace_period", f.upgrade.grace_period)?,
            shutdown_timeout: positive(
                file,
                "upgrade.shutdown_timeout",
                f.upgrade.shutdown_timeout,
            )?,
            tls,
            upstream_tls: super::tls::validate_upstream(file, f.upstream_tls.as_ref())?,
            auth,
            session_lifetime: f.routing.session_lifetime,
            allow_security_downgrade: f.allow_security_downgrade,
            admin_hosts: f
                .admin
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            worker_key,
            worker_address_translation: f.worker_auth.allow_address_translation,
            limits,
            telemetry: f
                .telemetry
                .validate("telemetry", super::DEFAULT_SERVICE_NAME)
                .map_err(|e| ConfigError::new(file, e.key, e.reason))?,
            routes: std::sync::Arc::new(routes),
        })
    }
}

/// Every route's `max_body_bytes` against the global streamed-body rule (run once the
/// whole file is validated: the rule is in `limits:`). Here, not in `policy::route_limits`,
/// so that `policy` does not import `routes`.
fn check_body_limits(
    file: &str,
    routes: &super::runtime::routes::RouteTable,
    limits: &super::security::LimitSettings,
) -> Result<(), ConfigError> {
    if limits.allow_streamed_bodies {
        return Ok(());
    }
    for (i, r) in routes.routes.iter().enumerate() {
        if let Some(max) = r.max_body_bytes {
            if max == 0 || max > super::BUFFERED_BODY_MAX {
                return Err(ConfigError::new(
                    file,
                    format!("routes[{i}].max_body_bytes"),
                    format!(
                        "{max} is over the {} bytes the edge reads whole before routing (0: unlimited); \
                         like limits.max_body_bytes, only with limits.allow_streamed_bodies: true",
                        super::BUFFERED_BODY_MAX
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Rough check of an `EnvFilter`-style directive (`info`, `warn,hotplex_proxy=debug`).
fn tracing_level_invalid(s: &str) -> bool {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    s.trim().is_empty()
        || s.split(',').any(|d| {
            let lvl = d
                .rsplit('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !LEVELS.contains(&lvl.as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::super::{embedded_default, parse};
    use super::*;
    use hotplex_common::logging::LogFormat;

    const MIN: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";

    #[test]
    fn embedded_default_is_valid() {
        let c = embedded_default().expect("default parses");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9900");
        let ids: Vec<&str> = c.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["w1", "w2", "w3"]);
        assert_eq!(c.workers[2].address.to_string(), "127.0.0.1:8083");
        assert!(c.insecure_secret);
    }

    #[test]
    fn defaults_apply() {
        let c = parse("t.yaml", MIN).expect("valid");
        assert_eq!(c.workers[0].weight, 1);
        assert_eq!(c.workers[0].capacity, 1000);
        assert_eq!(
            c.key_sources,
            [
                KeySource::Path,
                KeySource::Query,
                KeySource::Header,
                KeySource::Cookie
            ]
        );
        assert_eq!(c.health.path, "/health/ready");
        assert_eq!(c.timeouts.stream_idle, Duration::from_secs(3600));
        assert_eq!(
            c.buffers,
            ListenerBuffers {
                read: super::super::DEFAULT_READ_BUFFER,
                tls_read: super::super::DEFAULT_TLS_READ_BUFFER,
                write: super::super::DEFAULT_WRITE_BUFFER,
            }
        );
    }

    #[test]
    fn buffers_are_bounded() {
        let c = parse(
            "f",
            &format!("{MIN}buffers:\n  read: 4096\n  tls_read: 0\n  write: 0\n"),
        )
        .expect("valid");
        assert_eq!(
            c.buffers,
            ListenerBuffers {
                read: 4096,
                tls_read: 0,
                write: 0
            }
        );
        let e = parse("f", &format!("{MIN}buffers:\n  tls_read: 2000000\n")).expect_err("too big");
        assert_eq!(e.key, "buffers.tls_read");
        assert!(e.to_string().contains("maximum 1048576"), "{e}");
        let e = parse("f", &format!("{MIN}buffers:\n  reed: 1\n")).expect_err("typo");
        assert!(e.to_string().contains("reed"), "{e}");
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let text = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n  - id: w2\n    address: 127.0.0.1:8082\n  - id: w3\n    address: nope\n";
        let e = parse("conf/x.yaml", text).expect_err("bad address");
        assert_eq!(e.file, "conf/x.yaml");
        assert_eq!(e.key, "workers[2].address");
        assert!(
            e.to_string()
                .starts_with("conf/x.yaml: workers[2].address: "),
            "{e}"
        );

        let e = parse("f", "workers:\n  - id: w1\n    adress: 1.2.3.4:5\n").expect_err("typo");
        assert!(e.key.starts_with("workers[0]"), "{e}");
        assert!(e.reason.contains("adress"), "{e}");

        let e = parse("f", &format!("{MIN}health_check:\n  interval: soon\n")).expect_err("dur");
        assert_eq!(e.key, "health_check.interval", "{e}");

        let e = parse("f", &format!("{MIN}bogus: 1\n")).expect_err("unknown");
        assert!(e.reason.contains("bogus"), "{e}");
    }

    #[test]
    fn validation_rules() {
        let dup = "workers:\n  - id: w1\n    address: 127.0.0.1:1\n  - id: w1\n    address: 127.0.0.1:2\n";
        assert_eq!(parse("f", dup).expect_err("dup").key, "workers[1].id");
        let bad_id = "workers:\n  - id: W_1\n    address: 127.0.0.1:1\n";
        assert_eq!(parse("f", bad_id).expect_err("id").key, "workers[0].id");
        assert_eq!(
            parse("f", "listen: 1.2.3.4:5\n").expect_err("none").key,
            "workers"
        );
        let e = parse(
            "f",
            &format!("{MIN}routing:\n  key_sources: [path, body]\n"),
        )
        .expect_err("source");
        assert_eq!(e.key, "routing.key_sources[1]");
        let e = parse(
            "f",
            &format!("{MIN}routing:\n  affinity_secrets: [short]\n"),
        )
        .expect_err("secret");
        assert_eq!(e.key, "routing.affinity_secrets[0]");
        let e = parse("f", &format!("{MIN}ejection:\n  base: 10s\n  max: 1s\n")).expect_err("ej");
        assert_eq!(e.key, "ejection.max");
        let e = parse("f", &format!("{MIN}log:\n  level: loud\n")).expect_err("lvl");
        assert_eq!(e.key, "log.level");
        let e = parse("f", &format!("{MIN}workers_x: 1\n")).expect_err("unknown");
        assert!(e.reason.contains("workers_x"));
        let ok = parse(
            "f",
            &format!("{MIN}log:\n  level: warn,hotplex_proxy=debug\n  format: text\n"),
        )
        .expect("ok");
        assert_eq!(ok.log_format, LogFormat::Text);
    }
}
