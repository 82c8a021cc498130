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
//! The runtime side is [`crate::upstream::dns`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Time between two DNS resolutions.
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(5);
/// Timeout of one DNS query (and of one identity probe).
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Path asked for the worker's `node_id` (the worker id) on each discovered address.
pub const DEFAULT_IDENTITY_PATH: &str = hotplex_common::headers::HEALTH_LIVE_PATH;
/// Most discovered addresses used per round (known addresses first); more are dropped.
pub const DEFAULT_MAX_RECORDS: usize = 64;
/// Upper bound of `max_records`.
pub const MAX_MAX_RECORDS: usize = 4096;
/// Port of a resolver given without one.
pub const DEFAULT_RESOLVER_PORT: u16 = 53;
/// Longest DNS name accepted (RFC 1035).
const MAX_NAME_LEN: usize = 253;

/// `discovery:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    /// DNS discovery (A/AAAA or SRV records of a headless Service). Required.
    pub dns: DnsFile,
}

/// Which records are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecord {
    /// A and AAAA records of `name`; every address gets `port`.
    #[default]
    A,
    /// SRV records of `name`: target host (resolved to A/AAAA) and port of each record.
    Srv,
}

impl DnsRecord {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecord::A => "a",
            DnsRecord::Srv => "srv",
        }
    }
}

/// `discovery.dns:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// Name to resolve, e.g. `hotplex-worker.hotplex.svc.cluster.local.` (a trailing dot
    /// skips the resolv.conf search list). Required.
    pub name: String,
    /// `a` or `srv`. Default `a`.
    #[serde(default)]
    pub record: DnsRecord,
    /// Worker port for `record: a` (required there); not allowed with `srv`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Time between resolutions. Default [`DEFAULT_DNS_INTERVAL`].
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Timeout of one DNS query and of one identity probe. Default [`DEFAULT_DNS_TIMEOUT`].
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Name server `ip` or `ip:port` (UDP, TCP fallback). Default: the system resolver
    /// configuration (`/etc/resolv.conf`).
    #[serde(default)]
    pub resolver: Option<String>,
    /// Path asked (GET) on each discovered address for its JSON `node_id`, the worker id.
    /// Default [`DEFAULT_IDENTITY_PATH`].
    #[serde(default = "default_identity_path")]
    pub identity_path: String,
    /// Weight of each discovered worker (hashing of foreign keys), 1-1000. Default [`super::DEFAULT_WEIGHT`].
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Capacity of each discovered worker (sessions). Default [`super::DEFAULT_CAPACITY`].
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// Most addresses used per round (1-4096): an answer with more records is cut (the
    /// addresses of known workers are kept first) and the cut is logged. Default
    /// [`DEFAULT_MAX_RECORDS`].
    #[serde(default = "default_max_records")]
    pub max_records: usize,
}

/// Validated `discovery.dns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// The name, as written (trailing dot kept).
    pub name: String,
    pub record: DnsRecord,
    /// Worker port (`record: a`).
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// `None`: system configuration.
    pub resolver: Option<SocketAddr>,
    pub identity_path: String,
    pub weight: u32,
    pub capacity: u64,
    pub max_records: usize,
}

impl DnsDiscovery {
    /// One line for `hotplex-proxy check`.
    pub fn summary(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let resolver = self
            .resolver
            .map_or("system resolver".to_string(), |r| format!("resolver {r}"));
        format!(
            "dns {} {}{port} every {:?} ({resolver}, identity {})",
            self.record.as_str(),
            self.name,
            self.interval,
            self.identity_path
        )
    }
}

fn default_interval() -> Duration {
    DEFAULT_DNS_INTERVAL
}
fn default_timeout() -> Duration {
    DEFAULT_DNS_TIMEOUT
}
fn default_identity_path() -> String {
    DEFAULT_IDENTITY_PATH.to_string()
}
fn default_weight() -> u32 {
    super::DEFAULT_WEIGHT
}
fn default_capacity() -> u64 {
    super::DEFAULT_CAPACITY
}
fn default_max_records() -> usize {
    DEFAULT_MAX_RECORDS
}

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

/// `pools[].discovery:` of an `http` pool: its upstreams found by DNS (next to, or
/// instead of, `upstreams`), resolved like the session pool's `discovery.dns` (same
/// resolver code) but without identity probes: an upstream is its address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDiscoveryFile {
    /// Required.
    pub dns: PoolDnsFile,
}

/// `pools[].discovery.dns:`, the keys of `discovery.dns` that apply to plain upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDnsFile {
    /// Name to resolve. Required.
    pub name: String,
    /// `a` or `srv`. Default `a`.
    #[serde(default)]
    pub record: DnsRecord,
    /// Upstream port for `record: a` (required there); not allowed with `srv`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Time between resolutions. Default [`DEFAULT_DNS_INTERVAL`].
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Timeout of one DNS query. Default [`DEFAULT_DNS_TIMEOUT`].
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Name server `ip` or `ip:port`. Default: the system resolver configuration.
    #[serde(default)]
    pub resolver: Option<String>,
    /// Most addresses used per round (1-4096; the ones already in the pool first).
    /// Default [`DEFAULT_MAX_RECORDS`].
    #[serde(default = "default_max_records")]
    pub max_records: usize,
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
        identity_path: default_identity_path(),
        weight: default_weight(),
        capacity: default_capacity(),
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
