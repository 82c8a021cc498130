//! The identity proof cannot be relayed (issue 24, item 3), end to end with a real worker
//! process, a real proxy process, the in-test DNS server (support::dns) and a real TCP
//! relay: an impostor announced by DNS at a new address, claiming the real worker's node
//! id, that forwards every connection to the real worker (whose own address the proxy does
//! not know). The worker's proof is genuine but names the address it was dialled at (the
//! relay's connection to it), not the address the proxy dialled: refused as
//! `address_mismatch` (counted, WARN, audit), and the relay gets no request. With the
//! explicit opt-out for NAT (`worker_auth.allow_address_translation: true`) the same relay
//! is accepted and carries sessions: the reason the opt-out is documented as insecure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::support::dns::*;
use crate::support::proxy::*;
use crate::worker_identity::{keyed_worker, KEY};
use hotplex_common::names;
use hotplex_e2e::{eventually, metric_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP relay on `at` that forwards every connection to `to`, counting the connections
/// that start with a health probe (`probes`) and every other one (`others`).
struct Relay {
    probes: Arc<AtomicU64>,
    others: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(at: SocketAddr, to: SocketAddr) -> Relay {
        let l = tokio::net::TcpListener::bind(at).await.expect("bind relay");
        let (probes, others) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (p, o) = (probes.clone(), others.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                let (p, o) = (p.clone(), o.clone());
                tokio::spawn(async move {
                    let mut first = vec![0u8; 16 * 1024];
                    let n = client.read(&mut first).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let counter = if first.starts_with(b"GET /health/") {
                        &p
                    } else {
                        &o
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    if upstream.write_all(&first[..n]).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Relay {
            probes,
            others,
            task,
        }
    }
}

struct Setup {
    _real: (hotplex_e2e::ChildGuard, tempfile::TempDir),
    /// The real worker's address (unknown to the proxy).
    real_addr: SocketAddr,
    relay: Relay,
    /// The relay's address (the only one DNS announces).
    relay_addr: SocketAddr,
    _dns: DnsServer,
    _dir: tempfile::TempDir,
    p: LoggedProxy,
}

/// The real worker `dns-a` on 127.0.0.1 (unknown to the proxy) and a relay to it on
/// 127.0.0.4, the only address DNS announces; a proxy with the worker key (and `extra`).
async fn relay_setup(extra: &str) -> Setup {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let (guard, real_addr, wdir) = keyed_worker("dns-a", local, Some(KEY)).await;
    let port = shared_port(&[ip(4)]);
    let relay_addr = SocketAddr::from((ip(4), port));
    let relay = Relay::start(relay_addr, real_addr).await;
    let dns = DnsServer::start(Zone {
        a: vec![ip(4)],
        ..Zone::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "{}worker_auth:\n  key: \"{KEY}\"\n{extra}",
        dns_proxy_yaml(&dns, "a", Some(port), "10s")
    );
    let p = spawn_logged_proxy(dir.path(), &yaml, &[]).await;
    Setup {
        _real: (guard, wdir),
        real_addr,
        relay,
        relay_addr,
        _dns: dns,
        _dir: dir,
        p,
    }
}

/// A relay in front of the real worker, announced by DNS as a new address claiming its
/// node id: the relayed proof names the real worker's address, so the address is never
/// used: no session, no request through the relay, `address_mismatch` counted, logged and
/// audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_of_the_identity_proof_gets_no_request() {
    let s = relay_setup("").await;
    let (p, relay, real_addr) = (&s.p, &s.relay, s.real_addr);
    let (c, admin) = (client(), p.admin_base());
    let mismatch = |m: &str| {
        metric_value(
            m,
            names::identity::FAILURES,
            &["reason=\"address_mismatch\""],
        )
        .unwrap_or(0.0)
            >= 2.0
            && metric_value(
                m,
                names::discovery::IDENTIFY_FAILURES,
                &["reason=\"unauthenticated\""],
            )
            .unwrap_or(0.0)
                >= 2.0
    };
    let m = metrics_when_at(&c, &admin, mismatch).await;
    assert!(mismatch(&m), "two refused rounds: {m}");
    assert!(
        relay.probes.load(Ordering::Relaxed) >= 2,
        "the probes went through the relay to the real worker"
    );
    let all = admin_get(&c, &admin, "/admin/workers").await;
    assert_eq!(all["workers"].as_array().map(Vec::len), Some(0), "{all}");
    let r = send(c.post(format!("{}/sessions", p.base()))).await;
    assert_eq!(r.status, 503, "no worker proves it is at the relay: {r:?}");
    assert_eq!(
        relay.others.load(Ordering::Relaxed),
        0,
        "the relay got requests beyond probes"
    );
    assert_eq!(
        worker_requests_at(&c, &format!("http://{real_addr}")).await,
        0.0,
        "a request reached the real worker through the relay"
    );
    let m = metrics(&c, p).await;
    println!(
        "relay refused: {} probes relayed to the real worker, {} other connections, address_mismatch {:?}, POST /sessions {}",
        relay.probes.load(Ordering::Relaxed),
        relay.others.load(Ordering::Relaxed),
        metric_value(&m, names::identity::FAILURES, &["reason=\"address_mismatch\""]),
        r.status
    );
    let log = p.log();
    let relay_addr = s.relay_addr.to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("worker identity check failed")
                && l.contains("address_mismatch")
                && l.contains(&relay_addr)),
        "WARN: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("worker.identity")
            && l.contains("denied")
            && l.contains("reason=address_mismatch")
            && l.contains(&real_addr.to_string())),
        "audit line naming both addresses: {log}"
    );
}

/// The same relay with `worker_auth.allow_address_translation: true` (the opt-out for NAT
/// in front of workers): the proof is accepted, the relay's address becomes `dns-a` and
/// carries sessions to the real worker. This is why the opt-out is insecure: a relay
/// cannot be told from a NAT. The proxy says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_address_translation_allowed_the_relay_is_accepted() {
    let s = relay_setup("  allow_address_translation: true\n").await;
    let (p, relay, real_addr) = (&s.p, &s.relay, s.real_addr);
    let (c, admin) = (client(), p.admin_base());
    let all = wait_workers(&c, &admin, &[("dns-a", "active")]).await;
    assert_eq!(
        all["workers"][0]["address"],
        s.relay_addr.to_string(),
        "{all}"
    );
    let verified = eventually(WAIT, || async {
        let all = admin_get(&c, &admin, "/admin/workers").await;
        all["workers"][0]["identity"] == "verified"
    })
    .await;
    assert!(
        verified,
        "{}",
        admin_get(&c, &admin, "/admin/workers").await
    );
    for _ in 0..3 {
        let (id, node) = create(&c, &p.base()).await;
        assert_eq!(node, "dns-a", "{id}");
        assert_eq!(get_session(&c, &p.base(), &id).await.status, 200, "{id}");
    }
    assert!(
        relay.others.load(Ordering::Relaxed) >= 1,
        "through the relay"
    );
    assert!(
        worker_requests_at(&c, &format!("http://{real_addr}")).await >= 6.0,
        "the real worker served them"
    );
    let m = metrics(&c, p).await;
    assert_eq!(
        metric_value(
            &m,
            names::identity::FAILURES,
            &["reason=\"address_mismatch\""]
        ),
        Some(0.0),
        "{m}"
    );
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains("worker_auth.allow_address_translation") && l.contains("relay")),
        "the start-up WARN: {log}"
    );
}
