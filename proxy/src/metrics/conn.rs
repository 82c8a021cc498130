//! `ConnMetrics`: connection limits and the request-head deadline (`crate::conn_guard`).

use hotplex_common::names::proxy as n;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry as PromRegistry};

use super::{counter, counter_vec, int_gauge};

/// `reason` values of `hotplex_proxy_connections_refused_total`, in the order of
/// `conn_guard::Refusal` (`Total`, `PerIp`).
pub const CONN_REFUSAL_REASONS: [&str; 2] = ["max_connections", "max_connections_per_ip"];

/// Metrics of the connection guard.
#[derive(Clone)]
pub struct ConnMetrics {
    /// `hotplex_proxy_connections_active`.
    pub active: IntGauge,
    /// `hotplex_proxy_connections_refused_total{reason}`.
    pub refused: IntCounterVec,
    /// `hotplex_proxy_header_read_timeouts_total`.
    pub header_timeouts: IntCounter,
}

impl ConnMetrics {
    /// Builds and registers the metrics in `r`. Panics only on a bad constant name.
    pub fn new(r: &PromRegistry) -> ConnMetrics {
        let m = ConnMetrics {
            active: int_gauge(r, n::CONNECTIONS_ACTIVE, "Open downstream connections"),
            refused: counter_vec(
                r,
                n::CONNECTIONS_REFUSED,
                "Connections refused on arrival",
                &["reason"],
            ),
            header_timeouts: counter(
                r,
                n::HEADER_READ_TIMEOUTS,
                "Connections closed: request head not complete within limits.header_read_timeout",
            ),
        };
        for reason in CONN_REFUSAL_REASONS {
            m.refused.with_label_values(&[reason]);
        }
        m
    }
}
