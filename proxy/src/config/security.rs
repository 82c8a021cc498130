//! Validation of `auth:` and `limits:`: file layer [`super::file::security`] -> runtime
//! [`super::runtime::security`] (read per request from the live config, so a hot reload
//! changes keys and limits at once; bucket state is kept, see [`crate::security`]).
//!
//! The types are re-exported here under their former paths (`config::security::AuthSettings`).

use super::ConfigError;

pub use super::file::security::*;
pub use super::runtime::security::*;
pub use super::store::StoreSettings;

/// The valid route labels, for an error message.
fn expected_routes(http_routes: &[HttpRouteName]) -> String {
    let mut s = format!("expected one of {}", ROUTE_LABELS.join(", "));
    if !http_routes.is_empty() {
        let names: Vec<&str> = http_routes.iter().map(HttpRouteName::as_str).collect();
        s.push_str(&format!(", or an http route: {}", names.join(", ")));
    }
    s
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
pub fn auth(
    file: &str,
    a: &AuthFile,
    http_routes: &[HttpRouteName],
) -> Result<AuthSettings, ConfigError> {
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
        let routes = match &k.routes {
            None => None,
            Some(names) => {
                let mut routes = Vec::with_capacity(names.len());
                for (j, r) in names.iter().enumerate() {
                    let name = RouteName::resolve(r, http_routes).ok_or_else(|| {
                        ConfigError::new(
                            file,
                            format!("auth.keys[{i}].routes[{j}]"),
                            format!("unknown route {r:?} ({})", expected_routes(http_routes)),
                        )
                    })?;
                    routes.push(name);
                }
                Some(routes)
            }
        };
        keys.push(ApiKey {
            name: k.name.clone(),
            hash,
            routes,
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
    http_routes: &[HttpRouteName],
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
        let route = RouteName::resolve(name, http_routes).ok_or_else(|| {
            ConfigError::new(
                file,
                format!("limits.routes.{name}"),
                format!("unknown route ({})", expected_routes(http_routes)),
            )
        })?;
        routes.insert(route, rate(file, &format!("limits.routes.{name}"), r)?);
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
