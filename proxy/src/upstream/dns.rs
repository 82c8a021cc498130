//! DNS worker discovery (`discovery.dns`): the workers of a headless Service (or any DNS
//! name), re-resolved every `interval`, fed into the same worker set as `workers:`.
//!
//! One round:
//! 1. resolve `name`: A + AAAA (every address gets `port`), or SRV (each record's target,
//!    resolved from the additional section or by its own A/AAAA query, with the record's
//!    port);
//! 2. identify every address: `GET identity_path` answers the worker's `node_id`, which is
//!    its worker id (what signed session ids name). Identity, not DNS order, names a worker,
//!    so proxies that see the records in different orders agree on every route;
//! 3. hand the set to [`Registry::set_discovered`]: new workers get new sessions only,
//!    known ids keep their state, and a worker gone from DNS is removed exactly like one
//!    deleted from `workers:` (draining for `workers_removal_grace`, then 410).
//!
//! Identity is authenticated when it can be ([`super::identity`]): with `worker_auth.key`
//! the identity probe carries a challenge and an answer without a valid proof is not used
//! (`unauthenticated`); with `upstream_tls` the chain is verified and the certificate must
//! name the id the address reports. An address claiming the id of a known worker that
//! still answers as that id at its known address is refused (`identity_conflict`, WARN,
//! audit): a DNS change alone cannot move a worker's sessions to another host. At most
//! `max_records` addresses are used per round (known ones first); the cut is logged.
//!
//! A failed resolution (no answer, timeout, SERVFAIL) or an empty one (NXDOMAIN, no
//! records) changes nothing: the last good set is kept, `hotplex_proxy_discovery_stale` is
//! 1 and a WARN is logged once per outage. An address that stops answering its identity
//! probe keeps the id it had (the health check takes it out of service); an address never
//! identified is not used. Every `discovery` key is reloadable: each round reads the live
//! config, and removing the section removes the discovered workers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::identity::Failure;
pub use super::identity::{identify, Auth, IdentifyError};
use super::Registry;
use crate::config::discovery::{DnsDiscovery, DnsRecord};
use crate::config::{RuntimeConfig, WorkerSpec};
use crate::metrics::DiscoveryMetrics;

/// How often the loop looks at the config while discovery is off, and how quickly a
/// reload interrupts the wait between two rounds.
const CONFIG_POLL: Duration = Duration::from_millis(250);
/// Responses kept by the resolver between rounds (cleared before each round anyway).
const RESOLVER_CACHE: u64 = 64;

/// Why a resolution gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No answer, a timeout, an error response code.
    Failure(String),
    /// NXDOMAIN or no records of the type.
    Empty,
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Failure(e) => f.write_str(e),
            ResolveError::Empty => f.write_str("no records (NXDOMAIN or empty answer)"),
        }
    }
}

fn classify(e: NetError) -> ResolveError {
    if e.is_no_records_found() || e.is_nx_domain() {
        ResolveError::Empty
    } else {
        ResolveError::Failure(e.to_string())
    }
}

/// A resolver for one `discovery.dns` setting.
pub struct DnsResolver {
    settings: DnsDiscovery,
    name: Name,
    resolver: TokioResolver,
}

impl DnsResolver {
    /// Builds the resolver: the configured name server (UDP, TCP fallback), or the system
    /// configuration (`/etc/resolv.conf`).
    pub fn new(d: &DnsDiscovery) -> Result<DnsResolver, String> {
        let name = Name::from_ascii(&d.name).map_err(|e| format!("name {:?}: {e}", d.name))?;
        let (config, mut opts) = match d.resolver {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let mut opts = ResolverOpts::default();
                opts.use_hosts_file = ResolveHosts::Never;
                (ResolverConfig::from_parts(None, vec![], vec![server]), opts)
            }
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?,
        };
        opts.timeout = d.timeout;
        opts.cache_size = RESOLVER_CACHE;
        let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(DnsResolver {
            settings: d.clone(),
            name,
            resolver,
        })
    }

    /// The settings it was built for.
    pub fn settings(&self) -> &DnsDiscovery {
        &self.settings
    }

    /// Resolves the worker addresses (sorted, no duplicates, never empty on `Ok`).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        self.resolver.clear_cache();
        let mut out = match self.settings.record {
            DnsRecord::A => {
                let port = self.settings.port.unwrap_or(0);
                self.ips(&self.name)
                    .await?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            }
            DnsRecord::Srv => self.srv().await?,
        };
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(ResolveError::Empty);
        }
        Ok(out)
    }

    /// A + AAAA of `name`. One family empty is fine; an error of either is a failure.
    async fn ips(&self, name: &Name) -> Result<Vec<IpAddr>, ResolveError> {
        let (a, aaaa) = tokio::join!(
            self.resolver.lookup(name.clone(), RecordType::A),
            self.resolver.lookup(name.clone(), RecordType::AAAA)
        );
        let mut ips = Vec::new();
        for r in [a, aaaa] {
            match r.map_err(classify) {
                Ok(l) => ips.extend(addresses(l.answers(), None)),
                Err(ResolveError::Empty) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ips)
    }

    /// SRV records: (target, port), targets resolved from the additional section first.
    async fn srv(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup = self
            .resolver
            .lookup(self.name.clone(), RecordType::SRV)
            .await
            .map_err(classify)?;
        let mut out = Vec::new();
        for (target, port) in srv_targets(lookup.answers()) {
            let mut ips = addresses(lookup.additionals(), Some(&target));
            if ips.is_empty() {
                ips = self.ips(&target).await?;
            }
            out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
        }
        Ok(out)
    }
}

/// A/AAAA addresses among `records` (of `owner` only, when given).
pub fn addresses(records: &[Record], owner: Option<&Name>) -> Vec<IpAddr> {
    records
        .iter()
        .filter(|r| owner.is_none_or(|o| r.name.eq_ignore_root(o)))
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// (target, port) of the SRV records; a `.` target ("no service") is skipped.
pub fn srv_targets(records: &[Record]) -> Vec<(Name, u16)> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) if !s.target.is_root() && s.port != 0 => Some((s.target.clone(), s.port)),
            _ => None,
        })
        .collect()
}

/// A discovered address left out of the set, and why (`reason` is the metric label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub addr: SocketAddr,
    pub reason: &'static str,
    pub detail: String,
    /// An identity failure (unauthenticated, identity conflict): counted, WARN, audited.
    pub identity: Option<Failure>,
}

/// Builds the worker set from the identity answers. `previous`: address → id of the last
/// set (an address that does not answer now keeps its id). One address per id: the one
/// that had it before, else the lowest. Sorted by id.
pub fn assemble(
    answers: Vec<(SocketAddr, Result<String, IdentifyError>)>,
    previous: &HashMap<SocketAddr, String>,
    d: &DnsDiscovery,
) -> (Vec<WorkerSpec>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut by_id: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for (addr, answer) in answers {
        let id = match answer {
            Ok(id) => id,
            Err(IdentifyError::Unreachable(e)) => match previous.get(&addr) {
                Some(id) => id.clone(),
                None => {
                    skipped.push(Skipped {
                        addr,
                        reason: "unreachable",
                        detail: e,
                        identity: None,
                    });
                    continue;
                }
            },
            Err(IdentifyError::InvalidId(e)) => {
                skipped.push(Skipped {
                    addr,
                    reason: "invalid_id",
                    detail: e,
                    identity: None,
                });
                continue;
            }
            Err(IdentifyError::Unauthenticated(f)) => {
                skipped.push(Skipped {
                    addr,
                    reason: "unauthenticated",
                    detail: f.to_string(),
                    identity: Some(f),
                });
                continue;
            }
        };
        by_id.entry(id).or_default().push(addr);
    }
    let mut specs = Vec::with_capacity(by_id.len());
    for (id, mut addrs) in by_id {
        addrs.sort();
        let keep = addrs
            .iter()
            .position(|a| previous.get(a) == Some(&id))
            .unwrap_or(0);
        let known = previous.get(&addrs[keep]) == Some(&id);
        let address = addrs.remove(keep);
        for other in addrs {
            let (reason, detail) = if known {
                (
                    "identity_conflict",
                    format!("claims worker id {id:?}, which is still reachable at its known address {address}"),
                )
            } else {
                (
                    "duplicate_id",
                    format!("worker id {id:?} is already served by {address}"),
                )
            };
            skipped.push(Skipped {
                addr: other,
                reason,
                identity: known.then(|| Failure::new("conflict", detail.clone())),
                detail,
            });
        }
        specs.push(WorkerSpec {
            id,
            address,
            weight: d.weight,
            capacity: d.capacity,
            drain: false,
        });
    }
    (specs, skipped)
}

/// Cuts `addrs` to `max` addresses, those of `known` first (then in order). Returns the
/// number dropped.
pub fn cap_records(
    addrs: &mut Vec<SocketAddr>,
    known: &HashMap<SocketAddr, String>,
    max: usize,
) -> usize {
    if addrs.len() <= max {
        return 0;
    }
    let dropped = addrs.len() - max;
    addrs.sort_by_key(|a| (!known.contains_key(a), *a));
    addrs.truncate(max);
    addrs.sort();
    dropped
}

/// Known addresses to re-check this round: `(known address, id)` for every id that an
/// address answered with although another address (no longer in the answer) had it.
pub fn conflicts_to_check(
    answers: &[(SocketAddr, Result<String, IdentifyError>)],
    previous: &HashMap<SocketAddr, String>,
) -> Vec<(SocketAddr, String)> {
    let resolved: HashSet<SocketAddr> = answers.iter().map(|(a, _)| *a).collect();
    let mut out: Vec<(SocketAddr, String)> = Vec::new();
    for (addr, answer) in answers {
        let Ok(id) = answer else { continue };
        if previous.get(addr) == Some(id) {
            continue;
        }
        for (known, kid) in previous {
            if kid == id && !resolved.contains(known) && !out.iter().any(|(a, _)| a == known) {
                out.push((*known, id.clone()));
            }
        }
    }
    out.sort();
    out
}

/// State kept by the loop between rounds.
#[derive(Default)]
struct LoopState {
    resolver: Option<DnsResolver>,
    /// Address → id of the current set.
    ids: HashMap<SocketAddr, String>,
    /// The last round failed (WARN logged once per outage).
    stale: bool,
    /// Skipped addresses already logged at WARN (logged again at DEBUG only).
    warned: HashSet<(SocketAddr, &'static str)>,
    /// The record cap cut the last answer (WARN once per episode).
    capped: bool,
}

/// The background service running the discovery loop.
pub struct DnsDiscoveryService {
    registry: Arc<Registry>,
    metrics: DiscoveryMetrics,
}

impl DnsDiscoveryService {
    pub fn new(registry: Arc<Registry>, metrics: DiscoveryMetrics) -> DnsDiscoveryService {
        DnsDiscoveryService { registry, metrics }
    }

    /// Identity probes of `addrs`, in parallel.
    async fn identify_all(
        &self,
        cfg: &Arc<RuntimeConfig>,
        d: &DnsDiscovery,
        addrs: Vec<SocketAddr>,
    ) -> Vec<(SocketAddr, Result<String, IdentifyError>)> {
        let mut probes = tokio::task::JoinSet::new();
        for addr in addrs {
            let cfg = cfg.clone();
            let (path, timeout, name) = (d.identity_path.clone(), d.timeout, d.name.clone());
            probes.spawn(async move {
                let auth = Auth {
                    key: cfg.worker_key.as_ref().map(|v| v.as_bytes()),
                    allow_address_translation: cfg.worker_address_translation,
                    tls: cfg.upstream_tls.as_ref(),
                    sni: &name,
                };
                let id = identify(addr, &path, timeout, auth).await;
                (addr, id)
            });
        }
        let mut answers = Vec::new();
        while let Some(r) = probes.join_next().await {
            match r {
                Ok(a) => answers.push(a),
                Err(e) => tracing::error!(error = %e, "identity probe task failed"),
            }
        }
        answers
    }

    fn failed(&self, st: &mut LoopState, result: &str, detail: &str) {
        self.metrics.resolutions.with_label_values(&[result]).inc();
        self.metrics.stale.set(1);
        let kept = self.registry.discovered().len();
        if st.stale {
            tracing::debug!(result, error = %detail, kept, "DNS discovery still failing");
        } else {
            tracing::warn!(result, error = %detail, kept, "DNS discovery failed: keeping the last good worker set");
        }
        st.stale = true;
    }

    async fn round(&self, cfg: &Arc<RuntimeConfig>, d: &DnsDiscovery, st: &mut LoopState) {
        if st.resolver.as_ref().map(|r| r.settings()) != Some(d) {
            match DnsResolver::new(d) {
                Ok(r) => st.resolver = Some(r),
                Err(e) => return self.failed(st, "failure", &e),
            }
        }
        let Some(resolver) = st.resolver.as_ref() else {
            return;
        };
        let mut addrs = match resolver.resolve().await {
            Ok(a) => a,
            Err(ResolveError::Empty) => {
                let what = format!("{} {}: no records", d.record.as_str(), d.name);
                return self.failed(st, "empty", &what);
            }
            Err(ResolveError::Failure(e)) => return self.failed(st, "failure", &e),
        };
        let total = addrs.len();
        let dropped = cap_records(&mut addrs, &st.ids, d.max_records);
        if dropped > 0 {
            self.metrics.records_capped.inc_by(dropped as u64);
            if !st.capped {
                tracing::warn!(name = %d.name, records = total, max_records = d.max_records, dropped, "DNS answer has more records than discovery.dns.max_records: the excess is not used");
            }
        }
        st.capped = dropped > 0;
        let mut answers = self.identify_all(cfg, d, addrs).await;
        // An id answered by a new address while its known address left the answer: the
        // known address keeps it if it still answers as that id.
        let recheck: Vec<SocketAddr> = conflicts_to_check(&answers, &st.ids)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        if !recheck.is_empty() {
            for (addr, answer) in self.identify_all(cfg, d, recheck).await {
                if let Ok(id) = &answer {
                    if st.ids.get(&addr) == Some(id) {
                        answers.push((addr, answer));
                    }
                }
            }
        }
        let (specs, skipped) = assemble(answers, &st.ids, d);
        for s in &skipped {
            self.metrics
                .identify_failures
                .with_label_values(&[s.reason])
                .inc();
            let first = st.warned.insert((s.addr, s.reason));
            if let Some(f) = &s.identity {
                super::identity::record("(discovered)", s.addr, f, first);
            } else if first {
                tracing::warn!(address = %s.addr, reason = s.reason, detail = %s.detail, "discovered address not used");
            } else {
                tracing::debug!(address = %s.addr, reason = s.reason, detail = %s.detail, "discovered address not used");
            }
        }
        st.ids = specs.iter().map(|s| (s.address, s.id.clone())).collect();
        self.metrics
            .resolutions
            .with_label_values(&["success"])
            .inc();
        self.metrics.stale.set(0);
        self.metrics.last_success.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|t| t.as_secs_f64())
                .unwrap_or(0.0),
        );
        if st.stale {
            tracing::info!("DNS discovery answers again");
        }
        st.stale = false;
        self.metrics.workers.set(specs.len() as i64);
        let summary: Vec<String> = specs
            .iter()
            .map(|s| format!("{}={}", s.id, s.address))
            .collect();
        if self.registry.set_discovered(specs) {
            tracing::info!(name = %d.name, workers = %summary.join(", "), "discovered worker set changed");
        }
    }
}

#[async_trait]
impl BackgroundService for DnsDiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut st = LoopState::default();
        loop {
            let cfg = self.registry.config();
            let wait = match cfg.discovery.clone() {
                Some(d) => {
                    self.round(&cfg, &d, &mut st).await;
                    d.interval
                }
                None => {
                    if self.registry.set_discovered(Vec::new()) {
                        tracing::info!("discovery removed from the config: discovered workers are being removed");
                    }
                    st = LoopState::default();
                    self.metrics.workers.set(0);
                    self.metrics.stale.set(0);
                    CONFIG_POLL
                }
            };
            // Sleep `wait`, waking early for a shutdown or a config change.
            let deadline = Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(left.min(CONFIG_POLL)) => {}
                    _ = shutdown.changed() => return,
                }
                if self.registry.config().hash != cfg.hash {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};

    fn dns() -> DnsDiscovery {
        DnsDiscovery {
            name: "w.test.".into(),
            record: DnsRecord::A,
            port: Some(8080),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            resolver: None,
            identity_path: "/health/live".into(),
            weight: 2,
            capacity: 7,
            max_records: 64,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn assemble_names_workers_by_identity_not_order() {
        let a1 = addr("10.0.0.1:8080");
        let a2 = addr("10.0.0.2:8080");
        let a3 = addr("10.0.0.3:8080");
        let a4 = addr("10.0.0.4:8080");
        let answers = |rev: bool| {
            let mut v = vec![
                (a1, Ok("w-b".to_string())),
                (a2, Ok("w-a".to_string())),
                (a3, Err(IdentifyError::Unreachable("refused".into()))),
                (a4, Err(IdentifyError::InvalidId("no node_id".into()))),
            ];
            if rev {
                v.reverse();
            }
            v
        };
        let (one, skipped) = assemble(answers(false), &HashMap::new(), &dns());
        let (two, _) = assemble(answers(true), &HashMap::new(), &dns());
        assert_eq!(one, two, "DNS order does not matter");
        let got: Vec<(&str, SocketAddr)> = one.iter().map(|s| (s.id.as_str(), s.address)).collect();
        assert_eq!(got, [("w-a", a2), ("w-b", a1)]);
        assert_eq!(
            (one[0].weight, one[0].capacity, one[0].drain),
            (2, 7, false)
        );
        let reasons: Vec<&str> = skipped.iter().map(|s| s.reason).collect();
        assert_eq!(reasons, ["unreachable", "invalid_id"]);
        // A known address that stops answering keeps its id.
        let prev = HashMap::from([(a3, "w-c".to_string())]);
        let (three, _) = assemble(answers(false), &prev, &dns());
        assert!(three.iter().any(|s| s.id == "w-c" && s.address == a3));
    }

    #[test]
    fn one_address_per_id_prefers_the_known_one() {
        let a1 = addr("10.0.0.1:8080");
        let a2 = addr("10.0.0.2:8080");
        let both = vec![(a2, Ok("w".to_string())), (a1, Ok("w".to_string()))];
        let (specs, skipped) = assemble(both.clone(), &HashMap::new(), &dns());
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].address, a1, "lowest address without history");
        assert_eq!(skipped[0].reason, "duplicate_id");
        let prev = HashMap::from([(a2, "w".to_string())]);
        let (specs, _) = assemble(both, &prev, &dns());
        assert_eq!(specs[0].address, a2, "the address that had the id keeps it");
    }

    #[test]
    fn a_known_id_claimed_elsewhere_stays_where_it_is() {
        let known = addr("10.0.0.1:8080");
        let fake = addr("10.0.0.9:8080");
        let prev = HashMap::from([(known, "w".to_string())]);
        // DNS now lists only the fake, which claims "w": the known address is re-checked.
        let answers = vec![(fake, Ok("w".to_string()))];
        assert_eq!(
            conflicts_to_check(&answers, &prev),
            [(known, "w".to_string())]
        );
        // It still answers as "w": it keeps the id; the fake is refused as a conflict.
        let mut with_known = answers.clone();
        with_known.push((known, Ok("w".to_string())));
        let (specs, skipped) = assemble(with_known, &prev, &dns());
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].address, known);
        assert_eq!(skipped[0].addr, fake);
        assert_eq!(skipped[0].reason, "identity_conflict");
        assert_eq!(
            skipped[0].identity.as_ref().map(|f| f.reason),
            Some("conflict")
        );
        // The known address is gone (did not answer): the worker moved, the new one is used.
        let (specs, skipped) = assemble(answers, &prev, &dns());
        assert_eq!(specs[0].address, fake);
        assert!(skipped.is_empty());
        // Nothing to re-check when the id stays where it was, or is new.
        let same = vec![(known, Ok("w".to_string())), (fake, Ok("v".to_string()))];
        assert!(conflicts_to_check(&same, &prev).is_empty());
        // An address that cannot prove its identity never keeps its old id.
        let unauth = vec![(
            known,
            Err(IdentifyError::Unauthenticated(Failure::new(
                "bad_proof",
                "x",
            ))),
        )];
        let (specs, skipped) = assemble(unauth, &prev, &dns());
        assert!(specs.is_empty());
        assert_eq!(skipped[0].reason, "unauthenticated");
    }

    #[test]
    fn the_record_cap_keeps_known_addresses_first() {
        let mut addrs: Vec<SocketAddr> =
            (1..=10).map(|i| addr(&format!("10.0.0.{i}:80"))).collect();
        let known = HashMap::from([(addr("10.0.0.9:80"), "w9".to_string())]);
        assert_eq!(cap_records(&mut addrs.clone(), &known, 10), 0);
        assert_eq!(cap_records(&mut addrs, &known, 3), 7);
        assert_eq!(
            addrs,
            [
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80"),
                addr("10.0.0.9:80")
            ]
        );
    }

    #[test]
    fn records_to_addresses() {
        let name = Name::from_ascii("w.test.").expect("name");
        let t1 = Name::from_ascii("t1.test.").expect("name");
        let t2 = Name::from_ascii("t2.test.").expect("name");
        let recs = vec![
            Record::from_rdata(name.clone(), 5, RData::A(A::new(10, 0, 0, 1))),
            Record::from_rdata(
                name.clone(),
                5,
                RData::AAAA(AAAA::new(0, 0, 0, 0, 0, 0, 0, 1)),
            ),
            Record::from_rdata(t1.clone(), 5, RData::A(A::new(10, 0, 0, 9))),
        ];
        assert_eq!(addresses(&recs, None).len(), 3);
        let only_t1 = addresses(&recs, Some(&t1));
        assert_eq!(only_t1, [IpAddr::from([10, 0, 0, 9])]);
        let srv = vec![
            Record::from_rdata(
                name.clone(),
                5,
                RData::SRV(SRV::new(0, 1, 8081, t1.clone())),
            ),
            Record::from_rdata(
                name.clone(),
                5,
                RData::SRV(SRV::new(0, 1, 8082, t2.clone())),
            ),
            Record::from_rdata(
                name.clone(),
                5,
                RData::SRV(SRV::new(0, 1, 8083, Name::root())),
            ),
        ];
        assert_eq!(srv_targets(&srv), [(t1, 8081), (t2, 8082)]);
    }
}
