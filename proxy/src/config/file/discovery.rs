//! `discovery:` in the file layer; validated by [`crate::config::discovery`].

use std::time::Duration;

use serde::Deserialize;

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
pub const MAX_NAME_LEN: usize = 253;

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
