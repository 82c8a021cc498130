//! `DiscoveryMetrics`: DNS worker discovery (`crate::upstream::dns`).

use hotplex_common::names::discovery as n;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Registry as PromRegistry};

use super::{counter, counter_vec, gauge, int_gauge};

/// `result` values of `hotplex_proxy_discovery_resolutions_total`.
pub const DISCOVERY_RESULTS: [&str; 3] = ["success", "failure", "empty"];

/// The discovery metrics.
pub struct DiscoveryMetrics {
    /// `hotplex_proxy_discovery_resolutions_total{result}`.
    pub resolutions: IntCounterVec,
    /// `hotplex_proxy_discovery_workers`.
    pub workers: IntGauge,
    /// `hotplex_proxy_discovery_stale`.
    pub stale: IntGauge,
    /// `hotplex_proxy_discovery_last_success_timestamp_seconds`.
    pub last_success: Gauge,
    /// `hotplex_proxy_discovery_identify_failures_total{reason}`.
    pub identify_failures: IntCounterVec,
    /// `hotplex_proxy_discovery_records_capped_total`.
    pub records_capped: IntCounter,
}

impl DiscoveryMetrics {
    /// Builds and registers the metrics in `r`. Panics only on a bad constant name.
    pub fn new(r: &PromRegistry) -> DiscoveryMetrics {
        let m = DiscoveryMetrics {
            resolutions: counter_vec(
                r,
                n::RESOLUTIONS,
                "DNS discovery rounds by result",
                &["result"],
            ),
            workers: int_gauge(r, n::WORKERS, "Workers currently known from DNS"),
            stale: int_gauge(
                r,
                n::STALE,
                "1 while DNS discovery fails and the last good worker set is kept",
            ),
            last_success: gauge(
                r,
                n::LAST_SUCCESS_TIMESTAMP,
                "Unix time of the last successful DNS discovery round",
            ),
            identify_failures: counter_vec(
                r,
                n::IDENTIFY_FAILURES,
                "Discovered addresses without a usable worker id",
                &["reason"],
            ),
            records_capped: counter(
                r,
                n::RECORDS_CAPPED,
                "Discovered records dropped by discovery.dns.max_records",
            ),
        };
        for result in DISCOVERY_RESULTS {
            m.resolutions.with_label_values(&[result]);
        }
        m
    }
}
