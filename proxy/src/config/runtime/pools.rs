//! The `http` pools of a config's route table ([`super::routes::RouteTable`]): their
//! validated settings and the live state of their upstreams (health, ejection, requests
//! in flight: atomics, read on every pick without a lock), which a reload carries over
//! ([`HttpPool::adopt`]). The balancing, health checks, DNS discovery and the per-request
//! part are [`crate::pools`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where `hash` reads its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header (lower-cased name).
    Header(http::HeaderName),
    /// A cookie of the `Cookie` header(s).
    Cookie(String),
}

/// A pool's balancing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    Hash(HashOn),
}

impl Balance {
    /// The policy name (`balance:` value).
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::Hash(_) => "hash",
        }
    }
}

/// Active health-check settings of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// Path probed with `GET`.
    pub path: String,
    /// `Host` header of the probe.
    pub host: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// The status a healthy upstream answers.
    pub expect_status: u16,
    /// Consecutive failed probes that mark an upstream down.
    pub failures: usize,
    /// Consecutive good probes that mark it up again.
    pub successes: usize,
}

/// Passive-ejection settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectSpec {
    /// Consecutive connect or proxy failures that eject an upstream.
    pub failures: u32,
    /// How long it stays out.
    pub cooldown: Duration,
}

/// TLS to the upstreams of a pool (`pools[].tls`): the certificate chain is verified
/// against `ca` (or the system roots) and must name `sni`, unless `verify` is off.
#[derive(Clone)]
pub struct PoolTls {
    /// Sent as SNI and checked in the certificate (never empty: pingora skips every
    /// check for an empty SNI).
    pub sni: String,
    pub verify: bool,
    /// `ca_file` as configured (compared across reloads).
    pub ca_file: Option<String>,
    pub ca: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
}

impl PartialEq for PoolTls {
    fn eq(&self, o: &PoolTls) -> bool {
        self.sni == o.sni && self.verify == o.verify && self.ca_file == o.ca_file
    }
}

impl std::fmt::Debug for PoolTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PoolTls {
    /// A TLS peer for `addr` with these settings.
    pub fn peer(&self, addr: SocketAddr) -> pingora::upstreams::peer::HttpPeer {
        let mut peer = pingora::upstreams::peer::HttpPeer::new(addr, true, self.sni.clone());
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
        peer
    }
}

/// Live state of one upstream (atomics: read on every pick without a lock).
#[derive(Debug)]
pub struct UpstreamState {
    /// Active health: starts up (like pingora's health checks), flipped by the thresholds.
    healthy: AtomicBool,
    /// Probes in a row that disagree with `healthy`.
    flips: AtomicU32,
    /// Connect/proxy failures in a row.
    failures: AtomicU32,
    /// Ejected until this many ms after [`epoch`] (0: not ejected).
    ejected_until_ms: AtomicU64,
    /// Requests in flight (`least_conn`).
    in_flight: AtomicUsize,
    /// A probe is running.
    probing: AtomicBool,
    /// When the next probe is due (ms after [`epoch`]).
    next_probe_ms: AtomicU64,
}

impl Default for UpstreamState {
    fn default() -> Self {
        UpstreamState {
            healthy: AtomicBool::new(true),
            flips: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            probing: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
        }
    }
}

/// The process-wide time origin of the millisecond timestamps in [`UpstreamState`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `now` in ms after [`epoch`], at least 1 (0 means "none").
fn ms(now: Instant) -> u64 {
    (now.saturating_duration_since(epoch()).as_millis() as u64).max(1)
}

/// One upstream of an `http` pool.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// `addr` as text: the metric label and the hash identity.
    pub id: String,
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    pub fn new(addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            id: addr.to_string(),
            state: Arc::new(UpstreamState::default()),
        }
    }

    /// Active health up and not passively ejected.
    pub fn available(&self, now: Instant) -> bool {
        let s = &self.state;
        s.healthy.load(Ordering::Relaxed) && s.ejected_until_ms.load(Ordering::Relaxed) <= ms(now)
    }

    /// Active health (the last probes).
    pub fn healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// A probe result, with the pool's thresholds; returns the new health when it flipped.
    pub fn observe_probe(&self, ok: bool, spec: &HealthSpec) -> Option<bool> {
        let s = &self.state;
        if s.healthy.load(Ordering::Relaxed) == ok {
            s.flips.store(0, Ordering::Relaxed);
            return None;
        }
        let n = s.flips.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok { spec.successes } else { spec.failures };
        if n as usize >= needed {
            s.flips.store(0, Ordering::Relaxed);
            s.healthy.store(ok, Ordering::Relaxed);
            if ok {
                // Back up by the health check: a stale passive ejection is over too.
                s.ejected_until_ms.store(0, Ordering::Relaxed);
                s.failures.store(0, Ordering::Relaxed);
            }
            return Some(ok);
        }
        None
    }

    /// A connect or proxy failure; `true` when it ejected the upstream.
    pub fn record_failure(&self, spec: &EjectSpec, now: Instant) -> bool {
        let s = &self.state;
        let n = s.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= spec.failures {
            s.failures.store(0, Ordering::Relaxed);
            let until = ms(now) + spec.cooldown.as_millis() as u64;
            s.ejected_until_ms.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// A response head arrived: the failure streak ends.
    pub fn record_success(&self) {
        if self.state.failures.load(Ordering::Relaxed) != 0 {
            self.state.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Claims the next probe when it is due (one probe at a time per upstream).
    pub fn claim_probe(&self, now: Instant, interval: Duration) -> bool {
        let s = &self.state;
        let now_ms = ms(now);
        if s.next_probe_ms.load(Ordering::Relaxed) > now_ms {
            return false;
        }
        if s.probing.swap(true, Ordering::AcqRel) {
            return false;
        }
        s.next_probe_ms
            .store(now_ms + interval.as_millis() as u64, Ordering::Relaxed);
        true
    }

    /// The claimed probe is over.
    pub fn probe_done(&self) {
        self.state.probing.store(false, Ordering::Release);
    }
}

/// One request in flight on an upstream (decremented on drop, whatever ends the request).
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The members of a pool at one moment.
pub type Members = Arc<Vec<Arc<Upstream>>>;

/// One `http` pool.
#[derive(Debug)]
pub struct HttpPool {
    pub name: String,
    /// `upstreams:` as configured.
    pub configured: Vec<SocketAddr>,
    /// The configured upstreams, then the discovered ones (sorted, none twice).
    upstreams: arc_swap::ArcSwap<Vec<Arc<Upstream>>>,
    /// `discovery.dns` (`None`: the configured upstreams only).
    pub dns: Option<super::discovery::DnsDiscovery>,
    /// Bumped on each change of the member set (the health gauges follow).
    generation: AtomicU64,
    pub balance: Balance,
    /// `None`: no active health check (`health_check.enabled: false`).
    pub health: Option<HealthSpec>,
    pub eject: EjectSpec,
    /// `None`: plain HTTP.
    pub tls: Option<PoolTls>,
    /// Round-robin cursor.
    cursor: AtomicUsize,
}

impl HttpPool {
    pub fn new(
        name: String,
        addrs: Vec<SocketAddr>,
        balance: Balance,
        health: Option<HealthSpec>,
        eject: EjectSpec,
    ) -> HttpPool {
        HttpPool {
            name,
            configured: addrs.clone(),
            upstreams: arc_swap::ArcSwap::from_pointee(
                addrs
                    .into_iter()
                    .map(|a| Arc::new(Upstream::new(a)))
                    .collect(),
            ),
            dns: None,
            generation: AtomicU64::new(0),
            balance,
            health,
            eject,
            tls: None,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The current members (one atomic load).
    pub fn members(&self) -> Members {
        self.upstreams.load_full()
    }

    /// Changes of the member set so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The members for the configured upstreams plus `discovered`: an address already a
    /// member keeps its [`Upstream`] (health, ejection, in-flight count), a new one
    /// starts healthy. Returns whether the set changed.
    pub fn set_discovered(&self, discovered: &[SocketAddr]) -> bool {
        let old = self.members();
        let mut addrs: Vec<SocketAddr> = self.configured.clone();
        addrs.extend(discovered.iter().filter(|a| !self.configured.contains(a)));
        addrs[self.configured.len()..].sort();
        addrs.dedup();
        if addrs.len() == old.len() && addrs.iter().zip(old.iter()).all(|(a, u)| *a == u.addr) {
            return false;
        }
        let next: Vec<Arc<Upstream>> = addrs
            .into_iter()
            .map(|a| match old.iter().find(|u| u.addr == a) {
                Some(u) => u.clone(),
                None => Arc::new(Upstream::new(a)),
            })
            .collect();
        self.upstreams.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The discovered members (not configured).
    pub fn discovered(&self) -> Vec<SocketAddr> {
        self.members()
            .iter()
            .map(|u| u.addr)
            .filter(|a| !self.configured.contains(a))
            .collect()
    }

    /// Takes over the live state of the upstreams `old` (the same pool of the previous
    /// config) has at the same addresses, and, with unchanged DNS settings, the members
    /// DNS found (kept until the next resolution).
    pub fn adopt(&mut self, old: &HttpPool) {
        if self.dns.is_some() && self.dns == old.dns {
            self.set_discovered(&old.discovered());
        }
        let olds = old.members();
        let mine: Vec<Arc<Upstream>> = self
            .members()
            .iter()
            .map(|u| match olds.iter().find(|o| o.addr == u.addr) {
                Some(o) => Arc::new(Upstream {
                    addr: u.addr,
                    id: u.id.clone(),
                    state: o.state.clone(),
                }),
                None => u.clone(),
            })
            .collect();
        self.upstreams.store(Arc::new(mine));
        self.cursor
            .store(old.cursor.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The next round-robin start position.
    pub(crate) fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HealthSpec {
        HealthSpec {
            path: "/".into(),
            host: "localhost".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            expect_status: 200,
            failures: 2,
            successes: 1,
        }
    }

    #[test]
    fn probes_flip_health_after_their_thresholds() {
        let u = Upstream::new("127.0.0.1:1".parse().expect("addr"));
        let now = Instant::now();
        assert!(u.available(now));
        assert_eq!(u.observe_probe(false, &spec()), None);
        assert_eq!(
            u.observe_probe(true, &spec()),
            None,
            "a good probe resets the streak"
        );
        assert_eq!(u.observe_probe(false, &spec()), None);
        assert_eq!(u.observe_probe(false, &spec()), Some(false));
        assert!(!u.available(now));
        assert_eq!(u.observe_probe(true, &spec()), Some(true));
        assert!(u.available(now));
    }

    #[test]
    fn consecutive_failures_eject_for_the_cooldown() {
        let u = Upstream::new("127.0.0.1:1".parse().expect("addr"));
        let e = EjectSpec {
            failures: 3,
            cooldown: Duration::from_secs(10),
        };
        let now = Instant::now();
        assert!(!u.record_failure(&e, now));
        assert!(!u.record_failure(&e, now));
        u.record_success();
        assert!(!u.record_failure(&e, now));
        assert!(!u.record_failure(&e, now));
        assert!(u.record_failure(&e, now));
        assert!(!u.available(now));
        assert!(!u.available(now + Duration::from_secs(9)));
        assert!(u.available(now + Duration::from_secs(11)));
    }

    #[test]
    fn in_flight_guards_count_and_reload_keeps_state() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let e = EjectSpec {
            failures: 1,
            cooldown: Duration::from_secs(60),
        };
        let old = HttpPool::new("p".into(), vec![a, b], Balance::RoundRobin, None, e);
        let g = old.members()[0].begin();
        assert_eq!(old.members()[0].in_flight(), 1);
        assert!(old.members()[1].record_failure(&e, Instant::now()));
        let mut new = HttpPool::new("p".into(), vec![b, a], Balance::LeastConn, None, e);
        new.adopt(&old);
        assert_eq!(new.members()[1].in_flight(), 1, "same address, same state");
        assert!(!new.members()[0].available(Instant::now()), "ejection kept");
        drop(g);
        assert_eq!(new.members()[1].in_flight(), 0);
    }

    #[test]
    fn discovered_members_keep_their_state_while_they_stay() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let (a, b, c) = (
            addr("127.0.0.1:1"),
            addr("10.0.0.2:80"),
            addr("10.0.0.3:80"),
        );
        let e = EjectSpec {
            failures: 1,
            cooldown: Duration::from_secs(60),
        };
        let p = HttpPool::new("p".into(), vec![a], Balance::RoundRobin, None, e);
        assert!(p.set_discovered(&[c, b, a]));
        let ids: Vec<SocketAddr> = p.members().iter().map(|u| u.addr).collect();
        assert_eq!(
            ids,
            vec![a, b, c],
            "configured first, then discovered, sorted"
        );
        assert_eq!(p.discovered(), vec![b, c]);
        assert!(!p.set_discovered(&[b, c]), "same set: no change");
        let gen = p.generation();
        // b is ejected and has a request in flight; c leaves DNS.
        let before = p.members();
        assert!(before[1].record_failure(&e, Instant::now()));
        let inflight = before[1].begin();
        let gone = before[2].begin();
        assert!(p.set_discovered(&[b]));
        assert_eq!(p.generation(), gen + 1);
        let now = p.members();
        assert_eq!(now.len(), 2);
        assert!(Arc::ptr_eq(&now[1], &before[1]), "b kept its state");
        assert!(!now[1].available(Instant::now()) && now[1].in_flight() == 1);
        // The request on c finishes on the upstream it started on.
        assert_eq!(gone.upstream().addr, c);
        drop((inflight, gone));
        // DNS failing keeps nothing configured away: the configured one stays.
        assert!(p.set_discovered(&[]));
        assert_eq!(p.members().len(), 1);
    }

    #[test]
    fn a_reload_keeps_the_discovered_members_until_the_next_answer() {
        let cfg = |name: &str| {
            let y = format!(
                "workers:\n  - id: w1\n    address: 127.0.0.1:8081\npools:\n  - name: ui\n    \
                 upstreams: [\"127.0.0.1:9000\"]\n    discovery:\n      dns: {{name: {name}, port: 80}}\n\
                 routes:\n  - name: ui\n    path: /\n    pool: ui\n"
            );
            crate::config::parse("t", &y).expect("valid")
        };
        let old = cfg("ui.test.");
        let found: SocketAddr = "10.0.0.7:80".parse().expect("addr");
        assert!(old.routes.pools[0].set_discovered(&[found]));
        let mut same = cfg("ui.test.");
        let mut other = cfg("other.test.");
        for (new, kept) in [(&mut same, true), (&mut other, false)] {
            let t = Arc::get_mut(&mut new.routes).expect("unshared table");
            t.adopt(&old.routes);
            let addrs: Vec<SocketAddr> = t.pools[0].members().iter().map(|u| u.addr).collect();
            assert_eq!(addrs.contains(&found), kept, "{addrs:?}");
            assert_eq!(
                addrs[0],
                "127.0.0.1:9000".parse::<SocketAddr>().expect("addr")
            );
        }
    }
}
