//! Every metric the proxy exports, owned here: one struct per area, all registered through
//! the helpers of this module in the registry of [`ProxyMetrics`] (const label
//! `component="proxy"`).
//!
//! | struct | file | families | built by |
//! |---|---|---|---|
//! | [`ProxyMetrics`] | `proxy.rs` | requests, routing, workers, rejections, auth, limits, config | `server` |
//! | [`ConnMetrics`] | `conn.rs` | connections, refusals, head timeouts | `conn_guard::GuardedApp` |
//! | [`TlsMetrics`] | `tls.rs` | handshakes, certificate reloads and expiry | `tls::setup` (TLS on) |
//! | [`DiscoveryMetrics`] | `discovery.rs` | DNS worker discovery | `server` |
//! | [`IdentityMetrics`] | `identity.rs` | worker identity failures | `server` |
//! | [`PoolMetrics`] | `pools.rs` | routes and `http` pools | `proxy::HotplexProxy` |
//!
//! A metric is named only by a constant of `hotplex_common::names` listed in
//! [`names::PROXY_EXPORTED`]: the helpers below refuse any other name (a programming error,
//! found at start-up and by this module's unit test, which renders every struct's families
//! and checks each listed name appears exactly once). The methods that update a struct from
//! another module's types (`TlsMetrics::reloaded`, `PoolMetrics::refresh`, ...) live with
//! those types, so this module depends on no listener, pool or TLS code.

mod conn;
mod discovery;
mod identity;
mod pools;
mod proxy;
mod tls;

#[cfg(test)]
mod tests;

pub use self::proxy::*;
pub use conn::{ConnMetrics, CONN_REFUSAL_REASONS};
pub use discovery::{DiscoveryMetrics, DISCOVERY_RESULTS};
pub use identity::{IdentityMetrics, IDENTITY_FAILURE_REASONS};
pub use pools::PoolMetrics;
pub use tls::{TlsMetrics, TLS_RELOAD_RESULTS};

use hotplex_common::names::{self, LATENCY_BUCKETS};
use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry as PromRegistry,
};

/// The options of metric `name`: panics when `name` is not one of the proxy's metric
/// names ([`names::PROXY_EXPORTED`]), a programming error.
fn opts(name: &'static str, help: &str) -> Opts {
    assert!(
        names::PROXY_EXPORTED.contains(&name),
        "metric {name} is not in hotplex_common::names::PROXY_EXPORTED"
    );
    Opts::new(name, help)
}

/// Registers `m` in `r` (the one place the proxy calls `Registry::register`). A refused
/// registration (a name registered twice) is logged; the metric still counts, unexported.
fn register<T: Collector + Clone + 'static>(r: &PromRegistry, m: T) -> T {
    if let Err(e) = r.register(Box::new(m.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    m
}

/// `m`, or a panic naming the metric (an invalid definition: a programming error).
fn built<T>(name: &str, m: prometheus::Result<T>) -> T {
    m.unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// A counter with labels, registered in `r`.
fn counter_vec(r: &PromRegistry, name: &'static str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, built(name, IntCounterVec::new(opts(name, help), labels)))
}

/// A counter without labels, registered in `r`.
fn counter(r: &PromRegistry, name: &'static str, help: &str) -> IntCounter {
    register(r, built(name, IntCounter::with_opts(opts(name, help))))
}

/// An integer gauge without labels, registered in `r`.
fn int_gauge(r: &PromRegistry, name: &'static str, help: &str) -> IntGauge {
    register(r, built(name, IntGauge::with_opts(opts(name, help))))
}

/// An integer gauge with labels, registered in `r`.
fn int_gauge_vec(r: &PromRegistry, name: &'static str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, built(name, IntGaugeVec::new(opts(name, help), labels)))
}

/// A float gauge without labels, registered in `r`.
fn gauge(r: &PromRegistry, name: &'static str, help: &str) -> Gauge {
    register(r, built(name, Gauge::with_opts(opts(name, help))))
}

/// A float gauge with labels, registered in `r`.
fn gauge_vec(r: &PromRegistry, name: &'static str, help: &str, labels: &[&str]) -> GaugeVec {
    register(r, built(name, GaugeVec::new(opts(name, help), labels)))
}

/// A latency histogram ([`LATENCY_BUCKETS`]) with labels, registered in `r`.
fn histogram_vec(
    r: &PromRegistry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> HistogramVec {
    let o = HistogramOpts::from(opts(name, help)).buckets(LATENCY_BUCKETS.to_vec());
    register(r, built(name, HistogramVec::new(o, labels)))
}
