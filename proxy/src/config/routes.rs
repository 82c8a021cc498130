//! `routes:` and `pools:`: validation of the file types ([`super::file::routes`],
//! re-exported here) into the live [`RouteTable`] (see [`crate::routes`] and [`crate::pools`]). Every
//! key is documented with its unit and default in `conf/hotplex.yaml`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::runtime::matcher::{valid_path, HostPattern, Matcher, PathPattern};
use super::runtime::pools::{Balance, EjectSpec, HashOn, HealthSpec, HttpPool, PoolTls};
use super::runtime::routes::{AuthMode, PoolRef, Route, RouteTable, SESSIONS_POOL};
use super::ConfigError;

pub use super::file::routes::*;

fn pool_tls(file: &str, i: usize, t: &PoolTlsFile) -> Result<PoolTls, ConfigError> {
    let sni = t.sni.trim().trim_end_matches('.').to_ascii_lowercase();
    let exact = HostPattern::parse(&sni).is_some_and(|p| matches!(p, HostPattern::Exact(_)));
    if !exact {
        return Err(ConfigError::new(
            file,
            format!("pools[{i}].tls.sni"),
            format!("{:?} is not a host name", t.sni),
        ));
    }
    let ca = match &t.ca_file {
        None => None,
        Some(path) => {
            let key = format!("pools[{i}].tls.ca_file");
            let pem = std::fs::read(path)
                .map_err(|e| ConfigError::new(file, key.as_str(), format!("{path}: {e}")))?;
            let certs = pingora::tls::x509::X509::stack_from_pem(&pem)
                .map_err(|e| ConfigError::new(file, key.as_str(), format!("{path}: {e}")))?;
            if certs.is_empty() {
                return Err(ConfigError::new(
                    file,
                    key,
                    format!("{path}: no PEM certificates found"),
                ));
            }
            Some(Arc::new(certs.into_boxed_slice()))
        }
    };
    Ok(PoolTls {
        sni,
        verify: t.verify,
        ca_file: t.ca_file.clone(),
        ca,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn non_zero(file: &str, key: String, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(file, key, "must be greater than 0"))
    } else {
        Ok(d)
    }
}

fn hash_on(file: &str, key: &str, v: &str) -> Result<HashOn, ConfigError> {
    let bad = |why: &str| ConfigError::new(file, key, format!("{v:?}: {why}"));
    match v.split_once(':') {
        Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
            .map(HashOn::Header)
            .map_err(|_| bad("not a valid header name")),
        Some(("cookie", name)) => {
            let name = name.trim();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if token {
                Ok(HashOn::Cookie(name.to_string()))
            } else {
                Err(bad("not a valid cookie name"))
            }
        }
        _ => Err(bad("expected header:<name> or cookie:<name>")),
    }
}

fn pool(file: &str, i: usize, p: &PoolFile) -> Result<HttpPool, ConfigError> {
    let key = |k: &str| format!("pools[{i}].{k}");
    let dns = (p.discovery.as_ref())
        .map(|d| super::discovery::validate_pool(file, &key("discovery"), d))
        .transpose()?;
    if p.upstreams.is_empty() && dns.is_none() {
        return Err(ConfigError::new(
            file,
            key("upstreams"),
            "list at least one ip:port upstream (or find them with discovery.dns)",
        ));
    }
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(p.upstreams.len());
    for (j, u) in p.upstreams.iter().enumerate() {
        let k = format!("pools[{i}].upstreams[{j}]");
        let a: SocketAddr = u.trim().parse().map_err(|_| {
            ConfigError::new(
                file,
                k.as_str(),
                format!("{u:?} is not an ip:port address (host names are not resolved)"),
            )
        })?;
        if a.port() == 0 {
            return Err(ConfigError::new(file, k, "port 0 is not a valid upstream"));
        }
        if let Some(o) = addrs.iter().position(|x| *x == a) {
            return Err(ConfigError::new(
                file,
                k,
                format!("duplicate upstream {a} (also upstreams[{o}])"),
            ));
        }
        addrs.push(a);
    }
    let balance = match (p.balance, &p.hash_on) {
        (BalanceFile::Hash, Some(on)) => Balance::Hash(hash_on(file, &key("hash_on"), on)?),
        (BalanceFile::Hash, None) => {
            return Err(ConfigError::new(
                file,
                key("hash_on"),
                "balance: hash needs hash_on: header:<name> or cookie:<name>",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::new(
                file,
                key("hash_on"),
                "only used with balance: hash",
            ))
        }
        (BalanceFile::RoundRobin, None) => Balance::RoundRobin,
        (BalanceFile::LeastConn, None) => Balance::LeastConn,
    };
    let h = &p.health_check;
    let health = if h.enabled {
        valid_path(&h.path).map_err(|why| ConfigError::new(file, key("health_check.path"), why))?;
        let host_ok = HostPattern::parse(&h.host)
            .is_some_and(|p| matches!(p, HostPattern::Exact(_)))
            || h.host.parse::<std::net::IpAddr>().is_ok();
        if !host_ok {
            return Err(ConfigError::new(
                file,
                key("health_check.host"),
                format!("{:?} is not a host name or IP address", h.host),
            ));
        }
        if !(100..=599).contains(&h.expect_status) {
            return Err(ConfigError::new(
                file,
                key("health_check.expect_status"),
                "must be an HTTP status 100..=599",
            ));
        }
        for (k, n) in [("failures", h.failures), ("successes", h.successes)] {
            if n == 0 {
                return Err(ConfigError::new(
                    file,
                    key(&format!("health_check.{k}")),
                    "must be at least 1",
                ));
            }
        }
        Some(HealthSpec {
            path: h.path.clone(),
            host: h.host.clone(),
            interval: non_zero(file, key("health_check.interval"), h.interval)?,
            timeout: non_zero(file, key("health_check.timeout"), h.timeout)?,
            expect_status: h.expect_status,
            failures: h.failures,
            successes: h.successes,
        })
    } else {
        None
    };
    if p.ejection.failures == 0 {
        return Err(ConfigError::new(
            file,
            key("ejection.failures"),
            "must be at least 1",
        ));
    }
    let eject = EjectSpec {
        failures: p.ejection.failures,
        cooldown: non_zero(file, key("ejection.cooldown"), p.ejection.cooldown)?,
    };
    let mut built = HttpPool::new(p.name.clone(), addrs, balance, health, eject);
    built.tls = p.tls.as_ref().map(|t| pool_tls(file, i, t)).transpose()?;
    built.dns = dns;
    Ok(built)
}

fn route(file: &str, i: usize, r: &RouteFile, pools: &[PoolFile]) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    valid_path(&r.path).map_err(|why| ConfigError::new(file, key("path"), why))?;
    let path = match r.path_match {
        PathMatch::Prefix => PathPattern::Prefix(r.path.clone()),
        PathMatch::Exact => PathPattern::Exact(r.path.clone()),
    };
    let mut hosts = Vec::new();
    if let Some(hs) = &r.hosts {
        if hs.is_empty() {
            return Err(ConfigError::new(
                file,
                key("hosts"),
                "empty list: leave hosts out to match any host",
            ));
        }
        for (j, h) in hs.iter().enumerate() {
            let p = HostPattern::parse(h).ok_or_else(|| {
                ConfigError::new(
                    file,
                    format!("routes[{i}].hosts[{j}]"),
                    format!("{h:?} is not a host name or *.suffix (no port, no scheme)"),
                )
            })?;
            hosts.push(p);
        }
    }
    let mut methods = Vec::new();
    if let Some(ms) = &r.methods {
        if ms.is_empty() {
            return Err(ConfigError::new(
                file,
                key("methods"),
                "empty list: leave methods out to match any method",
            ));
        }
        for (j, m) in ms.iter().enumerate() {
            let upper = m.trim().to_ascii_uppercase();
            let method = http::Method::from_bytes(upper.as_bytes())
                .ok()
                .filter(|_| upper.bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("routes[{i}].methods[{j}]"),
                        format!("{m:?} is not an HTTP method"),
                    )
                })?;
            methods.push(method);
        }
    }
    let policy = super::route_policy::validate(file, i, r)?;
    let pool = if r.pool == SESSIONS_POOL || policy.redirect.is_some() {
        PoolRef::Sessions
    } else {
        let idx = pools.iter().position(|p| p.name == r.pool).ok_or_else(|| {
            let names: Vec<&str> = std::iter::once(SESSIONS_POOL)
                .chain(pools.iter().map(|p| p.name.as_str()))
                .collect();
            ConfigError::new(
                file,
                key("pool"),
                format!("unknown pool {:?} (known: {})", r.pool, names.join(", ")),
            )
        })?;
        PoolRef::Http(idx)
    };
    let auth = match r.auth {
        AuthFile::Required => AuthMode::Required,
        AuthFile::Off if pool == PoolRef::Sessions => return Err(ConfigError::new(
            file,
            key("auth"),
            "the session pool always uses the edge's auth: section (auth: off is for http pools)",
        )),
        AuthFile::Off => AuthMode::Off,
        AuthFile::Optional if pool == PoolRef::Sessions => return Err(ConfigError::new(
            file,
            key("auth"),
            "the session pool always uses the edge's auth: section (auth: optional is for http pools)",
        )),
        AuthFile::Optional => AuthMode::Optional,
    };
    if r.forward_credentials && auth != AuthMode::Off {
        return Err(ConfigError::new(
            file,
            key("forward_credentials"),
            "only with auth: off (with auth: required the credentials are the edge's, never an upstream's)",
        ));
    }
    Ok(Route {
        name: r.name.clone(),
        matcher: Matcher {
            hosts,
            path,
            methods,
        },
        pool,
        auth,
        forward_credentials: r.forward_credentials,
        policy,
        // pol-comp
        compression: r
            .compression
            .as_ref()
            .map(|c| c.validate(file, &key("compression")))
            .transpose()?,
        timeouts: r
            .timeouts
            .as_ref()
            .map(|t| t.validate(file, &key("timeouts")))
            .transpose()?
            .unwrap_or_default(),
        max_body_bytes: r.max_body_bytes,
        error_pages: r
            .error_pages
            .as_ref()
            .map(|p| super::route_options::error_pages(file, &key("error_pages"), p))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Validates `routes:` and `pools:` into a fresh table (no live state yet).
pub fn validate(
    file: &str,
    routes: Option<&[RouteFile]>,
    pools: Option<&[PoolFile]>,
) -> Result<RouteTable, ConfigError> {
    let Some(routes) = routes else {
        if pools.is_some() {
            return Err(ConfigError::new(
                file,
                "pools",
                "pools are only reached through routes: add a routes: list that names them",
            ));
        }
        return Ok(RouteTable::default());
    };
    if routes.is_empty() {
        return Err(ConfigError::new(
            file,
            "routes",
            "empty list: leave routes out to send every request to the session pool",
        ));
    }
    if pools.is_some_and(|p| p.is_empty()) {
        return Err(ConfigError::new(
            file,
            "pools",
            "empty list: leave pools out when every route goes to the session pool",
        ));
    }
    let pools = pools.unwrap_or(&[]);
    let mut built = Vec::with_capacity(pools.len());
    for (i, p) in pools.iter().enumerate() {
        let k = format!("pools[{i}].name");
        if !valid_name(&p.name) {
            return Err(ConfigError::new(
                file,
                k,
                format!(
                    "{:?} must be 1-{MAX_NAME_LEN} characters of [a-z0-9_-]",
                    p.name
                ),
            ));
        }
        if p.name == SESSIONS_POOL {
            return Err(ConfigError::new(
                file,
                k,
                "\"sessions\" is the session pool (workers:): pick another name",
            ));
        }
        if let Some(j) = pools[..i].iter().position(|o| o.name == p.name) {
            return Err(ConfigError::new(
                file,
                k,
                format!("duplicate pool name {:?} (also pools[{j}])", p.name),
            ));
        }
        built.push(Arc::new(pool(file, i, p)?));
    }
    let mut table = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let k = format!("routes[{i}].name");
        if !valid_name(&r.name) {
            return Err(ConfigError::new(
                file,
                k,
                format!(
                    "{:?} must be 1-{MAX_NAME_LEN} characters of [a-z0-9_-]",
                    r.name
                ),
            ));
        }
        // The session API's route labels (metrics, `limits.routes`, `auth.keys[].routes`)
        // are reserved: a route may not take one as its name.
        if super::runtime::route_label::RouteLabel::parse(&r.name).is_some() {
            return Err(ConfigError::new(
                file,
                k,
                format!(
                    "{:?} is a route label of the session API: pick another name",
                    r.name
                ),
            ));
        }
        if let Some(j) = routes[..i].iter().position(|o| o.name == r.name) {
            return Err(ConfigError::new(
                file,
                k,
                format!("duplicate route name {:?} (also routes[{j}])", r.name),
            ));
        }
        table.push(route(file, i, r, pools)?);
    }
    let mut table = RouteTable {
        configured: true,
        host_routes: false,
        routes: table,
        pools: built,
    };
    table.host_routes = table.uses_hosts();
    Ok(table)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";
    const POOL: &str = "pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9001\"]\n";

    fn err(extra: &str) -> (String, String) {
        let e = parse("conf/x.yaml", &format!("{BASE}{extra}")).expect_err("invalid");
        assert_eq!(e.file, "conf/x.yaml");
        (e.key, e.reason)
    }

    #[test]
    fn defaults_and_a_valid_table() {
        let c = parse(
            "f",
            &format!("{BASE}{POOL}routes:\n  - name: ui\n    path: /\n    pool: ui\n"),
        )
        .expect("valid");
        let t = &c.routes;
        assert!(t.configured);
        let p = &t.pools[0];
        assert_eq!(p.balance.as_str(), "round_robin");
        let h = p.health.as_ref().expect("health on by default");
        assert_eq!(h.path, super::DEFAULT_POOL_HEALTH_PATH);
        assert_eq!(h.interval, super::DEFAULT_POOL_HEALTH_INTERVAL);
        assert_eq!(h.expect_status, 200);
        assert_eq!(p.eject.failures, super::DEFAULT_POOL_EJECT_FAILURES);
        assert_eq!(t.routes[0].auth, super::AuthMode::Required);
        assert!(
            c.summary().contains("ui: host * path / (prefix) -> ui"),
            "{}",
            c.summary()
        );
        assert!(!parse("f", BASE).expect("valid").routes.configured);
    }

    #[test]
    fn errors_name_the_key_path() {
        let route =
            |r: &str| format!("{POOL}routes:\n  - name: ui\n    path: /\n    pool: ui\n{r}");
        let cases: Vec<(String, &str, &str)> = vec![
            (route("  - name: x\n    path: /x\n    pool: nope\n"), "routes[1].pool", "unknown pool \"nope\""),
            (route("  - name: ui\n    path: /x\n    pool: ui\n"), "routes[1].name", "duplicate route name"),
            (route("  - name: session\n    path: /x\n    pool: ui\n"), "routes[1].name", "route label"),
            (route("  - name: x\n    path: x\n    pool: ui\n"), "routes[1].path", "must start with /"),
            (route("  - name: x\n    path: /a?b\n    pool: ui\n"), "routes[1].path", "query"),
            (route("  - name: x\n    hosts: [\"a b\"]\n    path: /\n    pool: ui\n"), "routes[1].hosts[0]", "not a host name"),
            (route("  - name: x\n    hosts: []\n    path: /\n    pool: ui\n"), "routes[1].hosts", "empty list"),
            (route("  - name: x\n    methods: [GE T]\n    path: /\n    pool: ui\n"), "routes[1].methods[0]", "not an HTTP method"),
            (route("  - name: x\n    path: /\n    pool: sessions\n    auth: off\n"), "routes[1].auth", "session pool"),
            (route("  - name: x\n    path: /\n    pool: sessions\n    auth: optional\n"), "routes[1].auth", "session pool"),
            (route("  - name: x\n    path: /x\n    pool: ui\n    auth: optional\n    forward_credentials: true\n"), "routes[1].forward_credentials", "only with auth: off"),
            (route("  - name: x\n    path: /\n    pool: ui\n    forward_credentials: true\n"), "routes[1].forward_credentials", "only with auth: off"),
            (route("  - name: X\n    path: /\n    pool: ui\n"), "routes[1].name", "[a-z0-9_-]"),
            ("routes: []\n".into(), "routes", "empty list"),
            (POOL.into(), "pools", "only reached through routes"),
            ("pools: []\nroutes:\n  - name: a\n    path: /\n    pool: sessions\n".into(), "pools", "empty list"),
            ("pools:\n  - name: ui\n    upstreams: []\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].upstreams", "at least one"),
            ("pools:\n  - name: ui\n    upstreams: [\"ui.local:80\"]\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].upstreams[0]", "not an ip:port"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].upstreams[1]", "duplicate upstream"),
            (format!("{POOL}  - name: ui\n    upstreams: [\"127.0.0.1:2\"]\nroutes:\n  - name: a\n    path: /\n    pool: ui\n"), "pools[1].name", "duplicate pool name"),
            ("pools:\n  - name: sessions\n    upstreams: [\"127.0.0.1:1\"]\nroutes:\n  - name: a\n    path: /\n    pool: sessions\n".into(), "pools[0].name", "session pool"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    balance: hash\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].hash_on", "needs hash_on"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    balance: hash\n    hash_on: body:x\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].hash_on", "expected header"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    hash_on: header:x\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].hash_on", "only used with"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    health_check:\n      interval: 0s\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].health_check.interval", "greater than 0"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    health_check:\n      expect_status: 42\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].health_check.expect_status", "100..=599"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    ejection:\n      failures: 0\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].ejection.failures", "at least 1"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    tls:\n      sni: \"a b\"\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].tls.sni", "not a host name"),
            ("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    tls:\n      sni: ui.internal\n      ca_file: /nonexistent/ca.pem\nroutes:\n  - name: a\n    path: /\n    pool: ui\n".into(), "pools[0].tls.ca_file", "/nonexistent/ca.pem"),
        ];
        for (extra, key, reason) in cases {
            let (k, r) = err(&extra);
            assert_eq!(k, key, "{extra}: {r}");
            assert!(r.contains(reason), "{key}: {r:?} should mention {reason:?}");
        }
        // Unknown keys are refused with their path.
        let (k, r) = err(&format!(
            "{POOL}routes:\n  - name: ui\n    path: /\n    pool: ui\n    upstream: x\n"
        ));
        assert!(k.starts_with("routes[0]"), "{k}");
        assert!(r.contains("upstream"), "{r}");
        let (k, r) = err("pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:1\"]\n    balance: random\nroutes:\n  - name: a\n    path: /\n    pool: ui\n");
        assert_eq!(k, "pools[0].balance");
        assert!(r.contains("random"), "{r}");
    }

    #[test]
    fn a_reload_opening_a_public_route_is_a_downgrade() {
        let auth = "auth:\n  enabled: true\n  keys:\n    - name: a\n      hash: \"sha256:7e9f8fd111802be56c379d597842e29b2cebd35ff2133d431a49fa556a18704e\"\n";
        let cfg = |routes: &str, extra: &str| {
            parse(
                "t.yaml",
                &format!("{BASE}{auth}{POOL}routes:\n{routes}{extra}"),
            )
            .expect("valid")
        };
        let private = "  - name: ui\n    path: /\n    pool: ui\n";
        let public = "  - name: ui\n    path: /ui\n    pool: ui\n    auth: off\n";
        let wider = "  - name: ui\n    path: /\n    pool: ui\n    auth: off\n";
        let check = crate::config::downgrade::check;
        let e = check(&cfg(private, ""), &cfg(public, "")).expect_err("opened");
        assert_eq!(e.key, "routes[0].auth");
        assert!(e.reason.contains("without authentication"), "{e}");
        check(&cfg(public, ""), &cfg(public, "")).expect("unchanged");
        check(&cfg(public, ""), &cfg(private, "")).expect("closing is fine");
        assert_eq!(
            check(&cfg(public, ""), &cfg(wider, ""))
                .expect_err("widened")
                .key,
            "routes[0].auth"
        );
        check(
            &cfg(private, ""),
            &cfg(public, "allow_security_downgrade: true\n"),
        )
        .expect("explicit");
        let d = crate::config::downgrade::diff(&cfg(private, ""), &cfg(public, ""));
        assert!(d.contains("auth: off"), "{d}");
    }

    #[test]
    fn the_nginx_replacement_example_is_valid() {
        let text = include_str!("../../../conf/examples/nginx-replacement.yaml");
        let c = parse("conf/examples/nginx-replacement.yaml", text).expect("the example is valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        let ws: Vec<String> = c.workers.iter().map(|w| w.address.to_string()).collect();
        assert_eq!(ws, ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]);
        let t = &c.routes;
        assert_eq!(t.pools.len(), 1);
        assert_eq!(t.pools[0].members()[0].id, "127.0.0.1:8090");
        let last = t.routes.last().expect("routes");
        assert_eq!(last.matcher.path.as_str(), "/");
        assert_eq!(last.pool, super::PoolRef::Http(0));
        assert!(t.routes.iter().any(|r| r.pool == super::PoolRef::Sessions));
        // At least one IP rule and one header rule (issue #19), and a redirect.
        let admin = t
            .routes
            .iter()
            .find(|r| r.name == "ui-admin")
            .expect("ui-admin");
        let ip = admin.policy.ip.as_ref().expect("ip rule");
        assert!(ip.permits(Some("::1".parse().expect("ip"))));
        assert!(!ip.permits(Some("192.0.2.1".parse().expect("ip"))));
        assert!(last.policy.response_headers.is_some());
        assert!(t.routes.iter().any(|r| r.policy.redirect.is_some()));
    }
}
