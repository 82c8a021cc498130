//! `discovery:` — workers found by DNS next to the static `workers:` list.
//!
//! ```yaml
//! discovery:
//!   dns:
//!     name: hotplex-worker.hotplex.svc.cluster.local.   # headless Service
//!     record: a            # a (A + AAAA, `port` required) | srv (target + port from the record)
//!     port: 8080
//!     interval: 5s
//!     timeout: 2s
//!     resolver: 10.96.0.10:53   # optional; default: /etc/resolv.conf
//!     identity_path: /health/live
//!     weight: 1
//!     capacity: 1000
//!     max_records: 64      # addresses used per round; the rest is dropped and logged
//! ```
//!
//! Every key is hot-reloadable (the discovery loop reads the live config each round).
//! Validation of [`super::file::discovery`] into [`super::runtime::discovery`] (the types
//! are re-exported here). The runtime side is [`crate::upstream::dns`].

use std::net::{IpAddr, SocketAddr};

use super::ConfigError;

pub use super::file::discovery::*;
pub use super::runtime::discovery::*;

fn valid_dns_name(n: &str) -> bool {
    let n = n.strip_suffix('.').unwrap_or(n);
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn resolver_addr(v: &str) -> Option<SocketAddr> {
    v.parse::<SocketAddr>().ok().or_else(|| {
        v.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, DEFAULT_RESOLVER_PORT))
    })
}

/// Validates `pools[i].discovery` (`prefix` is that key path).
pub fn validate_pool(
    file: &str,
    prefix: &str,
    d: &PoolDiscoveryFile,
) -> Result<DnsDiscovery, ConfigError> {
    let f = &d.dns;
    let as_workers = DnsFile {
        name: f.name.clone(),
        record: f.record,
        port: f.port,
        interval: f.interval,
        timeout: f.timeout,
        resolver: f.resolver.clone(),
        identity_path: DEFAULT_IDENTITY_PATH.to_string(),
        weight: super::DEFAULT_WEIGHT,
        capacity: super::DEFAULT_CAPACITY,
        max_records: f.max_records,
    };
    validate_dns(file, &format!("{prefix}.dns"), &as_workers)
}

/// Validates `discovery:` (absent: `None`).
pub fn validate(
    file: &str,
    d: Option<&DiscoveryFile>,
) -> Result<Option<DnsDiscovery>, ConfigError> {
    let Some(d) = d else {
        return Ok(None);
    };
    validate_dns(file, "discovery.dns", &d.dns).map(Some)
}

/// Validates one `dns:` section whose key path is `prefix`.
fn validate_dns(file: &str, prefix: &str, f: &DnsFile) -> Result<DnsDiscovery, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(file, format!("{prefix}.{key}"), reason);
    if !valid_dns_name(&f.name) {
        return Err(err(
            "name",
            format!(
                "{:?} is not a DNS name (labels of [A-Za-z0-9_-], at most 253 bytes)",
                f.name
            ),
        ));
    }
    let port = match (f.record, f.port) {
        (DnsRecord::A, None) => {
            return Err(err("port", "required with record: a".into()));
        }
        (DnsRecord::A, Some(0)) => return Err(err("port", "must be 1..=65535".into())),
        (DnsRecord::A, Some(p)) => Some(p),
        (DnsRecord::Srv, Some(_)) => {
            return Err(err(
                "port",
                "not used with record: srv (each SRV record carries its port)".into(),
            ));
        }
        (DnsRecord::Srv, None) => None,
    };
    if f.interval.is_zero() {
        return Err(err("interval", "must be greater than 0".into()));
    }
    if f.timeout.is_zero() {
        return Err(err("timeout", "must be greater than 0".into()));
    }
    let resolver = match &f.resolver {
        None => None,
        Some(r) => Some(
            resolver_addr(r)
                .ok_or_else(|| err("resolver", format!("{r:?} is not an ip or ip:port address")))?,
        ),
    };
    if !f.identity_path.starts_with('/')
        || f.identity_path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(err(
            "identity_path",
            "must start with / and contain no spaces or control characters".into(),
        ));
    }
    if f.weight == 0 || f.weight > 1000 {
        return Err(err("weight", "must be 1..=1000".into()));
    }
    if f.capacity == 0 {
        return Err(err("capacity", "must be at least 1".into()));
    }
    if f.max_records == 0 || f.max_records > MAX_MAX_RECORDS {
        return Err(err("max_records", format!("must be 1..={MAX_MAX_RECORDS}")));
    }
    Ok(DnsDiscovery {
        name: f.name.clone(),
        record: f.record,
        port,
        interval: f.interval,
        timeout: f.timeout,
        resolver,
        identity_path: f.identity_path.clone(),
        weight: f.weight,
        capacity: f.capacity,
        max_records: f.max_records,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use std::time::Duration;

    const DNS: &str = "discovery:\n  dns:\n    name: hotplex-worker.hotplex.svc.cluster.local.\n";

    #[test]
    fn dns_only_config_is_valid_with_defaults() {
        let c = parse("t.yaml", &format!("{DNS}    port: 8080\n")).expect("valid");
        assert!(c.workers.is_empty(), "no static workers needed");
        let d = c.discovery.expect("discovery");
        assert_eq!(d.record, DnsRecord::A);
        assert_eq!(d.port, Some(8080));
        assert_eq!(d.interval, DEFAULT_DNS_INTERVAL);
        assert_eq!(d.timeout, DEFAULT_DNS_TIMEOUT);
        assert_eq!(d.resolver, None);
        assert_eq!(d.identity_path, "/health/live");
        assert_eq!((d.weight, d.capacity), (1, 1000));
        assert_eq!(d.max_records, DEFAULT_MAX_RECORDS);
        let c = parse(
            "t.yaml",
            &format!("{DNS}    record: srv\n    resolver: 127.0.0.1:5353\n    interval: 200ms\n"),
        )
        .expect("srv");
        let d = c.discovery.expect("discovery");
        assert_eq!(d.record, DnsRecord::Srv);
        assert_eq!(d.resolver, Some("127.0.0.1:5353".parse().expect("addr")));
        assert_eq!(d.interval, Duration::from_millis(200));
        let c = parse("t", &format!("{DNS}    port: 1\n    resolver: \"::1\"\n")).expect("v6");
        assert_eq!(
            c.discovery.expect("d").resolver,
            Some("[::1]:53".parse().expect("addr"))
        );
    }

    #[test]
    fn errors_name_the_key() {
        let key = |extra: &str| {
            parse("f.yaml", &format!("{DNS}{extra}"))
                .expect_err(extra)
                .key
        };
        assert_eq!(key(""), "discovery.dns.port");
        assert_eq!(key("    record: srv\n    port: 80\n"), "discovery.dns.port");
        assert_eq!(key("    port: 0\n"), "discovery.dns.port");
        assert_eq!(
            key("    port: 1\n    interval: 0s\n"),
            "discovery.dns.interval"
        );
        assert_eq!(
            key("    port: 1\n    timeout: 0s\n"),
            "discovery.dns.timeout"
        );
        assert_eq!(
            key("    port: 1\n    resolver: dns.local\n"),
            "discovery.dns.resolver"
        );
        assert_eq!(
            key("    port: 1\n    identity_path: x\n"),
            "discovery.dns.identity_path"
        );
        assert_eq!(key("    port: 1\n    weight: 0\n"), "discovery.dns.weight");
        assert_eq!(
            key("    port: 1\n    capacity: 0\n"),
            "discovery.dns.capacity"
        );
        assert_eq!(
            key("    port: 1\n    max_records: 0\n"),
            "discovery.dns.max_records"
        );
        assert_eq!(
            key("    port: 1\n    max_records: 5000\n"),
            "discovery.dns.max_records"
        );
        assert!(key("    port: 1\n    record: mx\n").starts_with("discovery.dns"));
        assert!(key("    port: 1\n    nme: x\n").starts_with("discovery.dns"));
        let e = parse(
            "f.yaml",
            "discovery:\n  dns:\n    name: \"bad name\"\n    port: 1\n",
        )
        .expect_err("name");
        assert_eq!(e.key, "discovery.dns.name");
        assert!(
            e.to_string().starts_with("f.yaml: discovery.dns.name: "),
            "{e}"
        );
        // Neither static workers nor discovery: still an error on `workers`.
        assert_eq!(parse("f", "threads: 1\n").expect_err("none").key, "workers");
    }

    #[test]
    fn http_pools_discover_upstreams_with_the_same_keys() {
        let yaml = |pool: &str| {
            format!(
                "workers:\n  - id: w1\n    address: 127.0.0.1:8081\npools:\n  - name: ui\n{pool}\
                 routes:\n  - name: ui\n    path: /\n    pool: ui\n"
            )
        };
        let dns = "    discovery:\n      dns:\n        name: ui.example.test.\n";
        let c = parse("t", &yaml(&format!("{dns}        port: 8090\n        resolver: 127.0.0.1:5353\n        interval: 200ms\n")))
            .expect("dns only, no static upstreams");
        let p = &c.routes.pools[0];
        let d = p.dns.as_ref().expect("dns");
        assert_eq!(
            (d.port, d.interval),
            (Some(8090), Duration::from_millis(200))
        );
        assert_eq!(d.resolver, Some("127.0.0.1:5353".parse().expect("addr")));
        assert!(
            p.members().is_empty(),
            "no member before the first resolution"
        );
        let c = parse(
            "t",
            &yaml(&format!(
                "    upstreams: [\"127.0.0.1:9000\"]\n{dns}        record: srv\n"
            )),
        )
        .expect("static and srv");
        assert_eq!(c.routes.pools[0].members().len(), 1);
        let key = |extra: &str| {
            parse("f", &yaml(&format!("{dns}{extra}")))
                .expect_err(extra)
                .key
        };
        assert_eq!(key(""), "pools[0].discovery.dns.port");
        assert_eq!(
            key("        record: srv\n        port: 1\n"),
            "pools[0].discovery.dns.port"
        );
        assert_eq!(
            key("        port: 1\n        interval: 0s\n"),
            "pools[0].discovery.dns.interval"
        );
        assert_eq!(
            key("        port: 1\n        resolver: nope\n"),
            "pools[0].discovery.dns.resolver"
        );
        assert_eq!(
            key("        port: 1\n        max_records: 0\n"),
            "pools[0].discovery.dns.max_records"
        );
        // Worker-only keys are not pool keys.
        assert!(
            key("        port: 1\n        identity_path: /x\n").starts_with("pools[0].discovery")
        );
        let e = parse("f", &yaml("    upstreams: []\n")).expect_err("nothing");
        assert_eq!(e.key, "pools[0].upstreams");
        assert!(e.reason.contains("discovery.dns"), "{e}");
    }
}
