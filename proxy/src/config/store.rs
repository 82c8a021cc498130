//! `limits.store`: the shared rate-limit store (Redis): validation of
//! [`super::file::store`] into [`super::runtime::store`] (the types are re-exported here).
//!
//! The address is a URL (`redis://host:port/db`, `rediss://host:port/db` for TLS) or a bare
//! `host:port` (plain TCP, the form of earlier configs); hostnames are resolved when the
//! client connects (and again on every reconnect). Credentials never sit in the address:
//! `username` is a plain key, `password` must be a reference (`file:/path` or `env:NAME`,
//! see [`super::secret_ref`]), read when the config is loaded (a reload re-reads it).

use super::ConfigError;

pub use super::file::store::*;
pub use super::runtime::store::*;

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
    let fail_open = s.fail == FailMode::Open;
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
            fail: FailMode::Closed,
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
        f.fail = FailMode::Open;
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

    #[test]
    fn fail_mode_is_open_or_closed() {
        let cfg = |fail: &str| {
            format!(
                "workers:\n  - id: w1\n    address: 127.0.0.1:8081\nlimits:\n  store:\n    \
                 redis: 127.0.0.1:6379\n    fail: {fail}\n"
            )
        };
        let e = crate::config::parse("f.yaml", &cfg("maybe")).expect_err("unknown mode");
        assert_eq!(
            (e.file.as_str(), e.key.as_str()),
            ("f.yaml", "limits.store.fail")
        );
        assert!(
            e.reason.contains("open") && e.reason.contains("closed"),
            "{e}"
        );
        let store = |fail| {
            crate::config::parse("f.yaml", &cfg(fail))
                .expect("valid")
                .limits
                .store
                .expect("store")
        };
        assert!(store("open").fail_open);
        assert!(!store("closed").fail_open);
        let d: StoreFile = serde_yaml::from_str("redis: localhost\n").expect("yaml");
        assert_eq!(d.fail, DEFAULT_STORE_FAIL);
    }
}
