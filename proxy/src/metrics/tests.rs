//! Every proxy metric struct, built in one registry and rendered: each name of
//! `hotplex_common::names::PROXY_EXPORTED` is exported exactly once, and nothing else is.

use std::collections::BTreeMap;

use hotplex_common::names::{self, PROXY_EXPORTED};

use super::*;

/// Builds every metric struct of the proxy in one registry, and gives each labelled family
/// one series (a vector without series is not rendered at all).
fn everything() -> ProxyMetrics {
    let m = ProxyMetrics::new();
    let r = &m.registry;
    let conn = ConnMetrics::new(r);
    let tls = TlsMetrics::new(r);
    let dns = DiscoveryMetrics::new(r);
    let pools = PoolMetrics::new(r);
    let identity = IdentityMetrics::register(r);

    m.config_loaded("0123456789abcdef");
    for g in [
        &m.worker_sessions,
        &m.worker_capacity,
        &m.worker_healthy,
        &m.worker_draining,
    ] {
        g.with_label_values(&["w1"]).set(1);
    }
    for c in [
        &m.worker_ejections,
        &m.sessions_placed,
        &m.sessions_replaced,
    ] {
        c.with_label_values(&["w1"]).inc();
    }
    m.upstream_duration.with_label_values(&["w1"]).observe(0.01);
    m.upstream_errors
        .with_label_values(&["w1", "connect"])
        .inc();
    conn.active.inc();
    conn.header_timeouts.inc();
    tls.expiry.with_label_values(&["dev"]).set(1.0);
    dns.identify_failures
        .with_label_values(&["unreachable"])
        .inc();
    dns.records_capped.inc();
    pools
        .route_requests
        .with_label_values(&["ui", "ui", "200"])
        .inc();
    pools
        .upstream_healthy
        .with_label_values(&["ui", "127.0.0.1:1"])
        .set(1);
    pools
        .ejections
        .with_label_values(&["ui", "127.0.0.1:1"])
        .inc();
    identity.failures.with_label_values(&["bad_proof"]).inc();
    m
}

/// `# <kind> <family> ...` lines of `text`, counted per family.
fn families(text: &str, kind: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let prefix = format!("# {kind} ");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let name = rest.split(' ').next().unwrap_or_default();
            *out.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn every_proxy_name_is_exported_exactly_once_and_nothing_else() {
    let text = hotplex_common::metrics::render(&everything().registry);
    for kind in ["TYPE", "HELP"] {
        let found = families(&text, kind);
        for name in PROXY_EXPORTED {
            assert_eq!(
                found.get(*name).copied(),
                Some(1),
                "{name}: {kind} lines in\n{text}"
            );
        }
        for name in found.keys() {
            assert!(
                PROXY_EXPORTED.contains(&name.as_str()),
                "{name} is registered but not a name of hotplex_common::names::PROXY_EXPORTED"
            );
        }
        assert_eq!(found.len(), PROXY_EXPORTED.len(), "{found:?}");
    }
    // Every sample belongs to a listed family and carries the component label.
    let component = format!("{}=\"{}\"", names::COMPONENT_LABEL, names::COMPONENT_PROXY);
    let mut samples = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| PROXY_EXPORTED.contains(f))
            .unwrap_or(name);
        assert!(PROXY_EXPORTED.contains(&family), "sample of {name}: {line}");
        assert!(line.contains(&component), "no {component}: {line}");
        samples += 1;
    }
    assert!(samples > PROXY_EXPORTED.len(), "{samples} samples");
}

#[test]
fn a_second_registration_is_refused_not_exported_twice() {
    let m = ProxyMetrics::new();
    let first = ConnMetrics::new(&m.registry);
    let second = ConnMetrics::new(&m.registry);
    first.active.set(2);
    second.active.set(5);
    let text = hotplex_common::metrics::render(&m.registry);
    let active = names::proxy::CONNECTIONS_ACTIVE;
    assert_eq!(families(&text, "TYPE").get(active).copied(), Some(1));
    // The registered one is the first: the second counts, unexported.
    assert!(
        text.lines()
            .any(|l| l.starts_with(active) && l.ends_with(" 2")),
        "{text}"
    );
}

#[test]
#[should_panic(expected = "not in hotplex_common::names::PROXY_EXPORTED")]
fn a_name_outside_the_constants_is_refused() {
    let r = prometheus::Registry::new();
    counter(&r, "hotplex_proxy_made_up_total", "not a constant");
}

#[test]
#[should_panic(expected = "not in hotplex_common::names::PROXY_EXPORTED")]
fn a_worker_name_is_refused_in_the_proxy() {
    let r = prometheus::Registry::new();
    int_gauge(&r, names::worker::DRAINING, "a worker metric");
}

#[test]
fn the_fresh_proxy_registry_has_its_zero_series() {
    // What a fresh process shows before any event (dashboards and absent() alerts).
    let m = ProxyMetrics::new();
    let _conn = ConnMetrics::new(&m.registry);
    let _dns = DiscoveryMetrics::new(&m.registry);
    let text = hotplex_common::metrics::render(&m.registry);
    for (family, label) in [
        (names::proxy::REJECTIONS, "reason=\"no_route\""),
        (names::proxy::AUTH_FAILURES, "reason=\"jwt_expired\""),
        (
            names::proxy::CONNECTIONS_REFUSED,
            "reason=\"max_connections_per_ip\"",
        ),
        (names::discovery::RESOLUTIONS, "result=\"empty\""),
        (names::config::RELOADS_TOTAL, "result=\"failure\""),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(family) && l.contains(label) && l.ends_with(" 0")),
            "{family}{{{label}}} 0 missing in\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with(names::proxy::RATELIMIT_STORE_UP) && l.ends_with(" 1")),
        "{text}"
    );
}
