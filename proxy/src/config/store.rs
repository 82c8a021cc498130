//! `limits.store`: the shared rate-limit store (Redis), file type and validated settings.
//!
//! The address is a URL (`redis://host:port/db`, `rediss://host:port/db` for TLS) or a bare
//! `host:port` (plain TCP, the form of earlier configs); hostnames are resolved when the
//! client connects (and again on every reconnect). Credentials never sit in the address:
//! `username` is a plain key, `password` must be a reference (`file:/path` or `env:NAME`,
//! see [`super::secret_ref`]), read when the config is loaded (a reload re-reads it).

use serde::Deserialize;

use super::ConfigError;

/// Longest wait for Redis per check (connecting included).
pub const DEFAULT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// Key prefix in Redis.
pub const DEFAULT_STORE_PREFIX: &str = "hotplex:rl:";
/// Redis port when the address names none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// What a check does when Redis does not answer in time.
pub const DEFAULT_STORE_FAIL: &str = "open";

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
    pub fail: String,
    /// Longest wait for Redis per check. Default [`DEFAULT_STORE_TIMEOUT`].
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Key prefix. Default [`DEFAULT_STORE_PREFIX`].
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_fail() -> String {
    DEFAULT_STORE_FAIL.into()
}
fn default_store_timeout() -> std::time::Duration {
    DEFAULT_STORE_TIMEOUT
}
fn default_prefix() -> String {
    DEFAULT_STORE_PREFIX.into()
}

/// A secret read from a reference; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A CA bundle read from `tls_ca_file` (printed as its path).
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: std::path::PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.path)
    }
}

/// Validated `limits.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Hostname or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS, the certificate checked against `host`.
    pub tls: bool,
    /// Database number (`SELECT`).
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls_ca: Option<CaBundle>,
    pub fail_open: bool,
    pub timeout: std::time::Duration,
    pub prefix: String,
}

impl StoreSettings {
    /// The address for logs: `redis[s]://host:port/db`, no credentials.
    pub fn display_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

/// Validates `limits.store` of `file`.
pub fn store(file: &str, s: &StoreFile) -> Result<StoreSettings, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
    let raw = s.redis.trim();
    let text = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("redis://{raw}")
    };
    let url = redis::parse_redis_url(&text).ok_or_else(|| {
        err(
            "limits.store.redis",
            format!("{raw:?} is not a redis://host:port, rediss://host:port or host:port address"),
        )
    })?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        o => {
            return Err(err(
                "limits.store.redis",
                format!("scheme {o:?}: expected redis:// or rediss://"),
            ))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "limits.store.redis",
            "no credentials in the address: use limits.store.username and limits.store.password (file:/path or env:NAME)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(
            "limits.store.redis",
            format!("{raw:?}: no query or fragment allowed"),
        ));
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(err("limits.store.redis", format!("{raw:?} names no host"))),
    };
    let port = url.port().unwrap_or(DEFAULT_REDIS_PORT);
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        p => p.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
            err(
                "limits.store.redis",
                format!("path {p:?}: expected a database number"),
            )
        })?,
    };
    if s.username.as_deref().is_some_and(str::is_empty) {
        return Err(err(
            "limits.store.username",
            "must not be empty (omit it for the default user)".into(),
        ));
    }
    if s.username.is_some() && s.password.is_none() {
        return Err(err(
            "limits.store.username",
            "needs limits.store.password".into(),
        ));
    }
    let password =
        match &s.password {
            None => None,
            Some(p) if p.starts_with("file:") || p.starts_with("env:") => {
                let v = super::secret_ref::resolve(file, "limits.store.password", p)?;
                if v.is_empty() {
                    return Err(err("limits.store.password", format!("{p:?} is empty")));
                }
                Some(Secret(v))
            }
            Some(_) => return Err(err(
                "limits.store.password",
                "must be a reference, file:/path or env:NAME (no password inline in the config)"
                    .into(),
            )),
        };
    let tls_ca = match &s.tls_ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(err(
                "limits.store.tls_ca_file",
                "only with a rediss:// address".into(),
            ))
        }
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                err(
                    "limits.store.tls_ca_file",
                    format!("cannot read {path:?}: {e}"),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(err(
                    "limits.store.tls_ca_file",
                    format!("{path:?} holds no PEM certificate"),
                ));
            }
            Some(CaBundle {
                path: path.clone(),
                pem,
            })
        }
    };
    let fail_open = match s.fail.as_str() {
        "open" => true,
        "closed" => false,
        o => {
            return Err(err(
                "limits.store.fail",
                format!("{o:?}: expected open or closed"),
            ))
        }
    };
    if s.timeout.is_zero() {
        return Err(err("limits.store.timeout", "must be greater than 0".into()));
    }
    Ok(StoreSettings {
        host,
        port,
        tls,
        db,
        username: s.username.clone(),
        password,
        tls_ca,
        fail_open,
        timeout: s.timeout,
        prefix: s.prefix.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(redis: &str) -> StoreFile {
        StoreFile {
            redis: redis.into(),
            username: None,
            password: None,
            tls_ca_file: None,
            fail: "closed".into(),
            timeout: DEFAULT_STORE_TIMEOUT,
            prefix: DEFAULT_STORE_PREFIX.into(),
        }
    }

    #[test]
    fn addresses() {
        let s = store("f", &file("127.0.0.1:6380")).expect("ip:port");
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.db),
            ("127.0.0.1", 6380, false, 0)
        );
        assert!(!s.fail_open);
        let s = store("f", &file("redis.internal:7000")).expect("host:port");
        assert_eq!((s.host.as_str(), s.port), ("redis.internal", 7000));
        let s = store("f", &file("redis://cache")).expect("default port");
        assert_eq!(s.port, DEFAULT_REDIS_PORT);
        let s = store("f", &file("rediss://cache.example:6390/3")).expect("tls url");
        assert_eq!((s.tls, s.db), (true, 3));
        assert_eq!(s.display_url(), "rediss://cache.example:6390/3");
        let s = store("f", &file("redis://[::1]:6379")).expect("ipv6");
        assert_eq!(s.host, "::1");
        assert_eq!(s.display_url(), "redis://[::1]:6379/0");
        for bad in [
            "",
            "http://x:1",
            "redis://:pw@x:1",
            "redis://user:pw@x:1",
            "rediss://x:1/#insecure",
            "redis://x:1/?protocol=resp3",
            "redis://x:1/db0",
            "unix:///tmp/redis.sock",
        ] {
            let e = store("f.yaml", &file(bad)).expect_err(bad);
            assert_eq!(e.key, "limits.store.redis", "{bad}: {e}");
        }
    }

    #[test]
    fn password_only_by_reference() {
        let mut f = file("localhost:6379");
        f.password = Some("hunter2-inline".into());
        let e = store("f", &f).expect_err("inline");
        assert_eq!(e.key, "limits.store.password");
        assert!(!e.to_string().contains("hunter2"), "{e}");

        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("redis-pass");
        std::fs::write(&p, "s3cret-from-file\n").expect("write");
        f.password = Some(format!("file:{}", p.display()));
        f.username = Some("hotplex".into());
        let s = store("f", &f).expect("file ref");
        assert_eq!(
            s.password.as_ref().map(Secret::expose),
            Some("s3cret-from-file")
        );
        assert_eq!(s.username.as_deref(), Some("hotplex"));
        // Never in Debug (the limits are audited as Debug text on a change).
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");

        f.password = Some("file:/nonexistent/redis-pass".into());
        assert_eq!(
            store("f", &f).expect_err("missing").key,
            "limits.store.password"
        );
        f.password = Some("env:HOTPLEX_TEST_SURELY_UNSET_REDIS_PW".into());
        assert_eq!(
            store("f", &f).expect_err("unset").key,
            "limits.store.password"
        );
        f.password = None;
        assert_eq!(
            store("f", &f).expect_err("user alone").key,
            "limits.store.username"
        );
    }

    #[test]
    fn tls_ca_fail_and_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let mut f = file("rediss://localhost:6390");
        f.tls_ca_file = Some(ca.clone());
        let s = store("f", &f).expect("ca");
        assert_eq!(s.tls_ca.as_ref().map(|c| c.path.clone()), Some(ca.clone()));
        let mut plain = file("localhost:6379");
        plain.tls_ca_file = Some(ca);
        assert_eq!(
            store("f", &plain).expect_err("no tls").key,
            "limits.store.tls_ca_file"
        );
        let not_pem = dir.path().join("x.pem");
        std::fs::write(&not_pem, "junk").expect("write");
        f.tls_ca_file = Some(not_pem);
        assert_eq!(
            store("f", &f).expect_err("junk").key,
            "limits.store.tls_ca_file"
        );

        let mut f = file("localhost:6379");
        f.fail = "maybe".into();
        assert_eq!(store("f", &f).expect_err("fail").key, "limits.store.fail");
        f.fail = "open".into();
        assert!(store("f", &f).expect("open").fail_open);
        f.timeout = std::time::Duration::ZERO;
        assert_eq!(
            store("f", &f).expect_err("timeout").key,
            "limits.store.timeout"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_yaml::from_str::<StoreFile>("redis: localhost:6379\npasword: env:X\n")
            .expect_err("typo");
        assert!(e.to_string().contains("pasword"), "{e}");
    }
}
