//! Active health checks of the `http` pools, and the route/pool metrics.
//!
//! One background service ([`PoolHealthService`]) reads the active config every
//! [`TICK`] and probes each upstream of each pool whose `health_check.interval` is due,
//! one probe at a time per upstream, in parallel across upstreams. A probe is pingora's
//! own `HttpHealthCheck` (pingora's HTTP connector and HTTP/1 client, not a hand-written
//! parser): `GET health_check.path` with `Host: health_check.host`, connect and read
//! bounded by `health_check.timeout`, healthy when the status is
//! `health_check.expect_status`. `failures` bad probes in a row mark an upstream down,
//! `successes` good ones mark it up again. Pools added by a reload are probed from the
//! next tick; removed ones are no longer probed (their gauge series are dropped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{HealthSpec, HttpPool, PoolTls, Upstream};
use crate::metrics::PoolMetrics;
use crate::upstream::Registry;

/// How often the service looks for due probes.
pub const TICK: Duration = Duration::from_millis(100);

/// Updates of the pool metrics (the struct: [`crate::metrics::PoolMetrics`]).
impl PoolMetrics {
    /// Sets the health gauges of every upstream of `pools`.
    pub fn refresh(&self, pools: &[Arc<HttpPool>], now: Instant) {
        for p in pools {
            for u in p.members().iter() {
                self.upstream_healthy
                    .with_label_values(&[&p.name, &u.id])
                    .set(i64::from(u.available(now)));
            }
        }
    }
}

/// The probe of one pool: pingora's HTTP health check with the pool's request and status.
fn checker(spec: &HealthSpec, tls: Option<&PoolTls>) -> Option<HttpHealthCheck> {
    let mut c = HttpHealthCheck::new(&spec.host, tls.is_some());
    if let Some(t) = tls {
        // The pool's TLS settings (SNI, CA, verification) for the probes too.
        // (The address is a placeholder: each probe sets the upstream's.)
        c.peer_template = t.peer(std::net::SocketAddr::from(([0, 0, 0, 0], 1)));
    }
    let mut req = pingora::http::RequestHeader::build("GET", spec.path.as_bytes(), None).ok()?;
    req.insert_header(http::header::HOST, spec.host.as_str())
        .ok()?;
    req.insert_header(http::header::USER_AGENT, "hotplex-proxy-health")
        .ok()?;
    c.req = req;
    c.peer_template.options.connection_timeout = Some(spec.timeout);
    c.peer_template.options.read_timeout = Some(spec.timeout);
    c.peer_template.options.write_timeout = Some(spec.timeout);
    let expect = spec.expect_status;
    c.validator = Some(Box::new(move |resp| {
        if resp.status.as_u16() == expect {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                "http pool health check",
            )
        }
    }));
    Some(c)
}

/// One probe, bounded by the timeout as a whole (the body is drained too).
async fn probe(check: &HttpHealthCheck, u: &Upstream, timeout: Duration) -> Result<(), String> {
    let backend = Backend::new(&u.id).map_err(|e| e.to_string())?;
    // Connect + head + body: twice the per-step timeout at most.
    match tokio::time::timeout(timeout * 2, check.check(&backend)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The background service probing every `http` pool of the active config.
pub struct PoolHealthService {
    registry: Arc<Registry>,
    metrics: Arc<PoolMetrics>,
}

impl PoolHealthService {
    pub fn new(registry: Arc<Registry>, metrics: Arc<PoolMetrics>) -> PoolHealthService {
        PoolHealthService { registry, metrics }
    }
}

#[async_trait]
impl BackgroundService for PoolHealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Checkers by pool name, rebuilt when the pool's health settings change.
        type Key = (HealthSpec, Option<PoolTls>);
        let mut checkers: HashMap<String, (Key, Arc<HttpHealthCheck>)> = HashMap::new();
        let mut last_hash = String::new();
        let mut last_generations = 0u64;
        tracing::debug!("http pool health checks started");
        loop {
            let cfg = self.registry.config();
            let pools = &cfg.routes.pools;
            let now = Instant::now();
            // DNS discovery changed a pool's members: drop the series of those gone.
            let generations: u64 = pools.iter().map(|p| p.generation()).sum();
            if generations != last_generations {
                self.metrics.upstream_healthy.reset();
                last_generations = generations;
            }
            if cfg.hash != last_hash {
                // Pools or upstreams may be gone: drop every series, set the live ones.
                self.metrics.upstream_healthy.reset();
                checkers.retain(|name, _| pools.iter().any(|p| &p.name == name));
                last_hash.clone_from(&cfg.hash);
            }
            for pool in pools {
                let Some(spec) = pool.health.as_ref() else {
                    continue;
                };
                let check = match checkers.get(&pool.name) {
                    Some(((s, t), c)) if s == spec && t == &pool.tls => c.clone(),
                    _ => match checker(spec, pool.tls.as_ref()) {
                        Some(c) => {
                            let c = Arc::new(c);
                            let key = (spec.clone(), pool.tls.clone());
                            checkers.insert(pool.name.clone(), (key, c.clone()));
                            c
                        }
                        None => continue,
                    },
                };
                for u in pool.members().iter() {
                    if !u.claim_probe(now, spec.interval) {
                        continue;
                    }
                    let (u, check, spec, pool) =
                        (u.clone(), check.clone(), spec.clone(), pool.clone());
                    // The gauges follow at the next tick (a probe of a pool a reload
                    // removed meanwhile must not bring its series back).
                    tokio::spawn(async move {
                        let res = probe(&check, &u, spec.timeout).await;
                        tracing::trace!(upstream = %u.id, ?res, "probed");
                        if u.observe_probe(res.is_ok(), &spec).is_some() {
                            match &res {
                                Ok(()) => {
                                    tracing::info!(pool = %pool.name, upstream = %u.id, "http pool upstream up")
                                }
                                Err(e) => {
                                    tracing::warn!(pool = %pool.name, upstream = %u.id, error = %e, "http pool upstream down")
                                }
                            }
                        }
                        u.probe_done();
                    });
                }
            }
            self.metrics.refresh(pools, now);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
