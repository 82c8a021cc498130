//! `TlsMetrics`: downstream TLS (`crate::tls`, registered only when `tls:` is configured).

use hotplex_common::names::proxy as n;
use prometheus::{GaugeVec, IntCounterVec, Registry as PromRegistry};

use super::{counter_vec, gauge_vec, TLS_VERSIONS};

/// `result` values of `hotplex_proxy_tls_cert_reloads_total`.
pub const TLS_RELOAD_RESULTS: [&str; 2] = ["success", "failure"];

/// TLS metrics.
#[derive(Clone)]
pub struct TlsMetrics {
    /// `hotplex_proxy_tls_handshakes_total{version}`.
    pub handshakes: IntCounterVec,
    /// `hotplex_proxy_tls_cert_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `hotplex_proxy_tls_cert_expiry_timestamp_seconds{name}`.
    pub expiry: GaugeVec,
}

impl TlsMetrics {
    /// Builds and registers the metrics in `r`. Panics only on a bad constant name.
    pub fn new(r: &PromRegistry) -> TlsMetrics {
        let m = TlsMetrics {
            handshakes: counter_vec(
                r,
                n::TLS_HANDSHAKES,
                "Completed downstream TLS handshakes.",
                &["version"],
            ),
            reloads: counter_vec(
                r,
                n::TLS_CERT_RELOADS,
                "TLS certificate reloads.",
                &["result"],
            ),
            expiry: gauge_vec(
                r,
                n::TLS_CERT_EXPIRY,
                "notAfter of each served certificate, Unix seconds.",
                &["name"],
            ),
        };
        for result in TLS_RELOAD_RESULTS {
            m.reloads.with_label_values(&[result]);
        }
        for v in TLS_VERSIONS {
            m.handshakes.with_label_values(&[v]);
        }
        m
    }
}
