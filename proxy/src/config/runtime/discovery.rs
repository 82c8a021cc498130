//! Validated `discovery.dns` (built by [`crate::config::discovery`], used by
//! [`crate::upstream::dns`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::file::discovery::DnsRecord;

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
