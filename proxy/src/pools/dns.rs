//! DNS discovery of `http` pool upstreams (`pools[].discovery.dns`).
//!
//! One background service ([`PoolDnsService`]) reads the active config every [`TICK`] and
//! re-resolves each pool with a `discovery.dns` section whose `interval` is due, with the
//! session pool's resolver ([`crate::upstream::dns::DnsResolver`]: A + AAAA with the
//! configured port, or SRV targets and ports; a given name server or the system
//! configuration). There are no identity probes: an upstream is its address.
//!
//! - The pool's members become its configured `upstreams` plus the answer
//!   ([`super::HttpPool::set_discovered`]): an address that stays keeps its health,
//!   failure streak, ejection and in-flight count; a new one starts healthy and is
//!   probed from the next health-check tick; one DNS dropped gets no new request, and the
//!   requests it is serving finish (each request holds the members it started with).
//! - A failed or empty resolution changes nothing: the last good set is kept (WARN once
//!   per outage, INFO when DNS answers again).
//! - At most `max_records` addresses are used (those already members first); the cut is
//!   logged once per episode.
//! - Every key is reloadable; a reload with unchanged DNS settings keeps the discovered
//!   members until the next resolution.
//!
//! Pools are resolved one after the other, each bounded by its `timeout` per query.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::HttpPool;
use crate::config::discovery::DnsDiscovery;
use crate::upstream::dns::{cap_records, DnsResolver, ResolveError};
use crate::upstream::Registry;

/// How often the service looks for due resolutions.
pub const TICK: Duration = Duration::from_millis(100);

/// The discovery state of one pool.
struct PoolState {
    settings: DnsDiscovery,
    /// `None`: it could not be built (logged); retried at the next interval.
    resolver: Option<DnsResolver>,
    next: Instant,
    /// The last round failed (WARN once per outage).
    stale: bool,
    /// The last answer was cut to `max_records`.
    capped: bool,
}

/// The background service resolving every `http` pool with `discovery.dns`.
pub struct PoolDnsService {
    registry: Arc<Registry>,
}

impl PoolDnsService {
    pub fn new(registry: Arc<Registry>) -> PoolDnsService {
        PoolDnsService { registry }
    }
}

/// One resolution of `pool`'s name, applied to its members.
async fn round(pool: &HttpPool, st: &mut PoolState) {
    let d = &st.settings;
    if st.resolver.is_none() {
        match DnsResolver::new(d) {
            Ok(r) => st.resolver = Some(r),
            Err(e) => {
                if !st.stale {
                    tracing::warn!(pool = %pool.name, error = %e, "http pool DNS discovery cannot start: keeping the current upstreams");
                }
                st.stale = true;
                return;
            }
        }
    }
    let Some(resolver) = st.resolver.as_ref() else {
        return;
    };
    let mut addrs = match resolver.resolve().await {
        Ok(a) => a,
        Err(e) => {
            let detail = match e {
                ResolveError::Empty => format!("{} {}: no records", d.record.as_str(), d.name),
                ResolveError::Failure(e) => e,
            };
            let kept = pool.members().len();
            if st.stale {
                tracing::debug!(pool = %pool.name, error = %detail, kept, "http pool DNS discovery still failing");
            } else {
                tracing::warn!(pool = %pool.name, error = %detail, kept, "http pool DNS discovery failed: keeping the last good upstreams");
            }
            st.stale = true;
            return;
        }
    };
    let known: HashMap<SocketAddr, String> = pool
        .members()
        .iter()
        .map(|u| (u.addr, String::new()))
        .collect();
    let total = addrs.len();
    let dropped = cap_records(&mut addrs, &known, d.max_records);
    if dropped > 0 && !st.capped {
        tracing::warn!(pool = %pool.name, records = total, max_records = d.max_records, dropped, "DNS answer has more records than discovery.dns.max_records: the excess is not used");
    }
    st.capped = dropped > 0;
    if st.stale {
        tracing::info!(pool = %pool.name, "http pool DNS discovery answers again");
    }
    st.stale = false;
    if pool.set_discovered(&addrs) {
        let now: Vec<String> = pool.members().iter().map(|u| u.id.clone()).collect();
        tracing::info!(pool = %pool.name, upstreams = %now.join(", "), "http pool upstreams changed (DNS)");
    }
}

#[async_trait]
impl BackgroundService for PoolDnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut states: HashMap<String, PoolState> = HashMap::new();
        loop {
            let cfg = self.registry.config();
            let pools = &cfg.routes.pools;
            states.retain(|name, _| pools.iter().any(|p| &p.name == name && p.dns.is_some()));
            for pool in pools {
                let Some(d) = pool.dns.as_ref() else {
                    continue;
                };
                let now = Instant::now();
                let st = states
                    .entry(pool.name.clone())
                    .or_insert_with(|| PoolState {
                        settings: d.clone(),
                        resolver: None,
                        next: now,
                        stale: false,
                        capped: false,
                    });
                if &st.settings != d {
                    // Changed by a reload: a new resolver, resolved now.
                    st.settings = d.clone();
                    st.resolver = None;
                    st.next = now;
                }
                if st.next > now {
                    continue;
                }
                st.next = now + d.interval;
                tokio::select! {
                    _ = round(pool, st) => {}
                    _ = shutdown.changed() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
