//! Workers prove who they are (issue 24), end to end with real worker and proxy processes,
//! a real DNS server (support::dns) and plain fake HTTP servers:
//!
//! - With `worker_auth.key`, every health probe carries a fresh challenge and a worker
//!   answers with an HMAC proof (one per `proxy_keys` entry). A real worker holding another
//!   secret and a fake reporting 0 sessions are held out as impostors at once: no session is
//!   placed on them, they get no request, and the failure is logged (WARN), audited and
//!   counted (`hotplex_proxy_worker_identity_failures_total`).
//! - DNS discovery: an answer pointing a known node id at an impostor (a real second worker
//!   process claiming the same node id) while the real one still answers at its known
//!   address is refused (`identity_conflict`): pinned sessions keep working on the real
//!   worker and the impostor gets no request. With the worker key, a fake without the secret
//!   is never used, not even once the real worker is gone.
//! - The client's `Authorization` / `X-API-Key` never reach a worker; the tenant does.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::dns::*;
use crate::support::fake_upstream::{self, Mode};
use crate::support::proxy::*;
use crate::support::tls::{https_to, spawn_tls_worker, Ca};
use hotplex_common::identity as idp;
use hotplex_common::names;
use hotplex_e2e::{eventually, metric_value, ChildGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const KEY: &str = "e2e-worker-key-0123456789abcdef";
const OTHER_KEY: &str = "not-the-worker-key-0123456789";
const API_KEY: &str = "tenant-a-secret-key-0123456789";

/// A worker process on `listen` with node id `id` and, when given, `proxy_keys: [key]`.
pub(crate) async fn keyed_worker(
    id: &str,
    listen: SocketAddr,
    key: Option<&str>,
) -> (ChildGuard, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("worker.yaml");
    std::fs::write(
        &cfg,
        "max_sessions: 100\nidle_timeout: 1h\nagent:\n  command: [\"sh\", \"-c\", \"exec cat >/dev/null\"]\n  wait_ready: false\n",
    )
    .expect("write worker config");
    let mut cmd = std::process::Command::new(WORKER_BIN);
    cmd.arg("--node-id")
        .arg(id)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn");
    if let Some(k) = key {
        cmd.arg("--proxy-key").arg(k);
    }
    let name = format!("worker {id}");
    let (guard, addr) = crate::support::spawn_worker_cmd_on(&name, cmd, dir.path(), listen).await;
    (guard, addr, dir)
}

/// A plain fake HTTP server claiming node id `node`: every `/health/*` answer is
/// `{"status":"ready","node_id":node,"sessions_active":0,...}` (the most attractive worker
/// there is) without any proof; any other request is counted in `others` and answered 200.
struct Impostor {
    probes: Arc<AtomicU64>,
    others: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Impostor {
    async fn start(at: SocketAddr, node: &str) -> Impostor {
        let l = tokio::net::TcpListener::bind(at)
            .await
            .expect("bind impostor");
        let (probes, others) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (p, o, node) = (probes.clone(), others.clone(), node.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (p, o, node) = (p.clone(), o.clone(), node.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let stolen = format!(r#"{{"session_id":"stolen","node_id":"{node}"}}"#);
                    let resp =
                        crate::support::tls::fake_worker_answer(&buf[..n], &node, &p, &o, &stolen);
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Impostor {
            probes,
            others,
            task,
        }
    }
}

/// `id`'s `identity` in `/admin/workers` at `admin`.
async fn identity_of(c: &reqwest::Client, admin: &str, id: &str) -> String {
    let all = admin_get(c, admin, "/admin/workers").await;
    all["workers"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["id"] == id))
        .and_then(|w| w["identity"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn wait_identities(c: &reqwest::Client, admin: &str, want: &[(&str, &str)]) {
    let ok = eventually(WAIT, || async {
        for (id, state) in want {
            if identity_of(c, admin, id).await != *state {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        ok,
        "identities never became {want:?}: {}",
        admin_get(c, admin, "/admin/workers").await
    );
}

/// A worker answers a challenge with a proof made with its key over its node id and its
/// exact body; the proxy's key check tells its workers from impostors: a real worker with
/// another secret and a fake reporting 0 sessions get no session and no request, and the
/// failures are logged, audited and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_workers_without_the_secret_get_nothing() {
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (_g1, w1, _d1) = keyed_worker("w1", local, Some(KEY)).await;
    let (_g2, w2, _d2) = keyed_worker("w2", local, Some(OTHER_KEY)).await;
    let fake = fake_upstream::start(Mode::Echo).await;
    let c = client();

    // The worker's proof, checked here with the shared key as the proxy does.
    let challenge = idp::new_challenge();
    for (addr, id, good) in [(w1, "w1", true), (w2, "w2", false)] {
        let r = c
            .get(format!("http://{addr}/health/ready"))
            .header(idp::X_HOTPLEX_CHALLENGE, &challenge)
            .send()
            .await
            .expect("probe");
        let proof =
            hdr(&r, idp::X_HOTPLEX_IDENTITY).expect("a worker with proxy_keys answers a challenge");
        // The proof names the address this probe dialled, as the worker saw it.
        let seen = hdr(&r, idp::X_HOTPLEX_IDENTITY_ADDRESS).expect("the address it saw");
        assert_eq!(seen, addr.to_string(), "{id}");
        let body = r.bytes().await.expect("body");
        assert_eq!(
            idp::verify(KEY.as_bytes(), &challenge, id, &seen, &body, &proof),
            good,
            "{id}"
        );
        assert!(
            !idp::verify(
                KEY.as_bytes(),
                &idp::new_challenge(),
                id,
                &seen,
                &body,
                &proof
            ),
            "replay"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = proxy_yaml(
        &[("w1", w1), ("w2", w2), ("w3", fake.addr)],
        &format!("worker_auth:\n  key: \"{KEY}\"\n"),
    );
    let p = spawn_logged_proxy(dir.path(), &yaml, &[]).await;
    let admin = p.admin_base();
    wait_identities(
        &c,
        &admin,
        &[("w1", "verified"), ("w2", "impostor"), ("w3", "impostor")],
    )
    .await;

    let w2_before = worker_requests_at(&c, &format!("http://{w2}")).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        let (id, node) = create(&c, &p.base()).await;
        assert_eq!(node, "w1", "only the proven worker gets sessions ({id})");
        ids.push(id);
    }
    for id in &ids {
        assert_eq!(get_session(&c, &p.base(), id).await.status, 200, "{id}");
    }
    assert!(
        fake.seen().is_empty(),
        "the fake got requests: {:?}",
        fake.seen()
    );
    assert_eq!(
        worker_requests_at(&c, &format!("http://{w2}")).await,
        w2_before,
        "the worker with another secret got requests"
    );

    let m = metrics(&c, &p).await;
    let failed = |reason: &str| {
        metric_value(
            &m,
            names::identity::FAILURES,
            &[&format!("reason=\"{reason}\"")],
        )
        .unwrap_or(0.0)
    };
    assert!(failed("bad_proof") >= 1.0, "w2: {m}");
    assert!(failed("wrong_node") >= 1.0, "the fake names no node: {m}");
    let log = p.log();
    for w in ["w2", "w3"] {
        assert!(
            log.lines()
                .any(|l| l.contains("worker identity check failed") && l.contains(w)),
            "WARN for {w}: {log}"
        );
        assert!(
            log.lines().any(|l| l.contains("worker.identity")
                && l.contains("denied")
                && l.contains(&format!("worker={w}"))),
            "audit line for {w}: {log}"
        );
    }
}

/// A DNS answer switching a known node id to an impostor (a real second worker process
/// claiming the same node id) while the real worker still answers at its known address:
/// the impostor is refused and gets no request; pinned sessions keep working on the real
/// worker. Without the worker key, once the real worker is gone the claim is accepted (a
/// rescheduled worker looks like that): the key is what closes that gap (next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answer_pointing_a_known_node_at_an_impostor_sends_it_nothing() {
    let ips = [ip(2), ip(3)];
    let port = shared_port(&ips);
    let mut real = spawn_worker_at(
        "dns-a",
        Some(SocketAddr::from((ips[0], port))),
        WorkerOpts::default(),
    )
    .await;
    let impostor = spawn_worker_at(
        "dns-a",
        Some(SocketAddr::from((ips[1], port))),
        WorkerOpts::default(),
    )
    .await;
    let dns = DnsServer::start(Zone {
        a: vec![ips[0]],
        ..Zone::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = spawn_logged_proxy(
        dir.path(),
        &dns_proxy_yaml(&dns, "a", Some(port), "10s"),
        &[],
    )
    .await;
    let (c, admin) = (client(), p.admin_base());
    wait_workers(&c, &admin, &[("dns-a", "active")]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&c, &p.base()).await.0);
    }
    let impostor_before = worker_requests_at(&c, &impostor.base()).await;

    dns.update(|z| z.a = vec![ips[1]]);
    let conflict = |m: &str| {
        metric_value(
            m,
            names::discovery::IDENTIFY_FAILURES,
            &["reason=\"identity_conflict\""],
        )
        .unwrap_or(0.0)
            >= 1.0
            && metric_value(m, names::identity::FAILURES, &["reason=\"conflict\""]).unwrap_or(0.0)
                >= 1.0
    };
    let m = metrics_when_at(&c, &admin, conflict).await;
    assert!(conflict(&m), "the conflict was never counted: {m}");
    let all = admin_get(&c, &admin, "/admin/workers").await;
    assert_eq!(
        all["workers"][0]["address"],
        format!("{}:{port}", ips[0]),
        "{all}"
    );
    for _ in 0..3 {
        // Several rounds (200 ms apart) while both answer: the real worker keeps the id.
        for id in &ids {
            let r = get_session(&c, &p.base(), id).await;
            assert_eq!(
                r.status, 200,
                "pinned session {id} still on the real worker: {r:?}"
            );
        }
        ids.push(create(&c, &p.base()).await.0);
    }
    assert_eq!(
        worker_requests_at(&c, &impostor.base()).await,
        impostor_before,
        "the impostor got requests"
    );
    let log = p.log();
    assert!(
        log.lines().any(|l| l.contains("worker.identity")
            && l.contains("conflict")
            && l.contains(&ips[1].to_string())),
        "audit line for the conflict: {log}"
    );

    // The real worker gone (its known address no longer answers): the claim is accepted.
    real.guard.kill();
    let moved = eventually(WAIT, || async {
        let all = admin_get(&c, &admin, "/admin/workers").await;
        all["workers"].as_array().is_some_and(|l| {
            l.iter()
                .any(|w| w["id"] == "dns-a" && w["address"] == format!("{}:{port}", ips[1]))
        })
    })
    .await;
    assert!(moved, "{}", admin_get(&c, &admin, "/admin/workers").await);
}

/// With `worker_auth.key`, discovery uses only addresses that prove the id they claim: a
/// plain fake claiming the real worker's node id (0 sessions, no secret) is never placed
/// and never gets a request, also after the real worker left DNS and died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_with_the_worker_key_never_uses_a_fake() {
    let ips = [ip(2), ip(3)];
    let port = shared_port(&ips);
    let (mut real, _, _d) =
        keyed_worker("dns-a", SocketAddr::from((ips[0], port)), Some(KEY)).await;
    let fake = Impostor::start(SocketAddr::from((ips[1], port)), "dns-a").await;
    let dns = DnsServer::start(Zone {
        a: vec![ips[0], ips[1]],
        ..Zone::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "{}worker_auth:\n  key: \"{KEY}\"\n",
        dns_proxy_yaml(&dns, "a", Some(port), "10s")
    );
    let p = spawn_logged_proxy(dir.path(), &yaml, &[]).await;
    let (c, admin) = (client(), p.admin_base());
    wait_workers(&c, &admin, &[("dns-a", "active")]).await;
    wait_identities(&c, &admin, &[("dns-a", "verified")]).await;
    let unauth = |m: &str| {
        metric_value(
            m,
            names::discovery::IDENTIFY_FAILURES,
            &["reason=\"unauthenticated\""],
        )
        .unwrap_or(0.0)
            >= 1.0
    };
    let m = metrics_when_at(&c, &admin, unauth).await;
    assert!(unauth(&m), "{m}");
    for _ in 0..8 {
        let (id, node) = create(&c, &p.base()).await;
        assert_eq!(node, "dns-a", "{id}");
    }
    // The real worker leaves DNS and dies: the fake still claims its id, and is refused.
    dns.update(|z| z.a = vec![ips[1]]);
    real.kill();
    let probes = fake.probes.load(Ordering::Relaxed);
    assert!(
        eventually(WAIT, || async {
            fake.probes.load(Ordering::Relaxed) >= probes + 3
        })
        .await,
        "the fake is still being asked (and refused)"
    );
    let r = send(c.post(format!("{}/sessions", p.base()))).await;
    assert_eq!(r.status, 503, "no worker proves it is dns-a: {r:?}");
    assert_eq!(
        fake.others.load(Ordering::Relaxed),
        0,
        "the fake got requests beyond probes"
    );
    let all = admin_get(&c, &admin, "/admin/workers").await;
    let on_fake = all["workers"].as_array().is_some_and(|l| {
        l.iter()
            .any(|w| w["address"] == format!("{}:{port}", ips[1]))
    });
    assert!(!on_fake, "the fake's address is in the set: {all}");
    // allow-sleep: a few more discovery rounds (200 ms) must still not use the fake
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.others.load(Ordering::Relaxed), 0);
}

/// DNS discovery over `upstream_tls`: an address is used only when its certificate (from
/// the private CA) names the id it reports. Two real TLS workers (the worker's own `tls:`
/// listener): the address whose certificate names `dns-a` and that reports `dns-a` is used
/// (and `verified` by its probes); the one with a valid certificate of the same CA for
/// `dns-z` that reports `dns-b` is refused (reason `certificate`) and gets nothing but
/// identity probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_over_tls_uses_only_addresses_whose_certificate_names_them() {
    let ips = [ip(2), ip(3)];
    let port = shared_port(&ips);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let good = ca.leaf(&["dns-a.workers.test"]);
    let other = ca.leaf(&["dns-z.workers.test"]);
    let _a = spawn_tls_worker("dns-a", SocketAddr::from((ips[0], port)), &good, "").await;
    let b = spawn_tls_worker("dns-b", SocketAddr::from((ips[1], port)), &other, "").await;
    // What reached b, read from its own metrics over TLS: (health probes, other requests).
    let b_seen = || async {
        let c = https_to(&ca, "dns-z.workers.test", b.addr);
        let base = format!("https://dns-z.workers.test:{}", b.addr.port());
        let r = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("b's metrics");
        let text = r.text().await.expect("metrics text");
        let count = format!("{}_count{{", names::shared::REQUEST_DURATION_SECONDS);
        let probes: f64 = text
            .lines()
            .filter(|l| l.starts_with(&count) && l.contains("route=\"/health/"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (probes, worker_requests_at(&c, &base).await)
    };
    let dns = DnsServer::start(Zone {
        a: ips.to_vec(),
        ..Zone::default()
    })
    .await;
    let yaml = format!(
        "{}upstream_tls:\n  enabled: true\n  ca_file: \"{}\"\n  server_name: \"{{id}}.workers.test\"\n",
        dns_proxy_yaml(&dns, "a", Some(port), "10s"),
        ca_file.display()
    );
    let p = spawn_logged_proxy(dir.path(), &yaml, &[]).await;
    let (c, admin) = (client(), p.admin_base());
    wait_workers(&c, &admin, &[("dns-a", "active")]).await;
    wait_identities(&c, &admin, &[("dns-a", "verified")]).await;
    let refused = |m: &str| {
        metric_value(
            m,
            names::discovery::IDENTIFY_FAILURES,
            &["reason=\"unauthenticated\""],
        )
        .unwrap_or(0.0)
            >= 1.0
            && metric_value(m, names::identity::FAILURES, &["reason=\"certificate\""])
                .unwrap_or(0.0)
                >= 1.0
    };
    let m = metrics_when_at(&c, &admin, refused).await;
    assert!(refused(&m), "{m}");
    let (probes, others) = b_seen().await;
    assert!(probes >= 1.0, "asked over a verified chain");
    assert_eq!(others, 0.0, "refused address got requests");
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains("worker.identity") && l.contains(&ips[1].to_string())),
        "audit line: {log}"
    );
}

/// `discovery.dns.max_records` caps what one answer can add: 40 A records with a cap of 4
/// use only 4 addresses (the worker among them is found), the 36 others are counted and
/// the cut is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_record_counts_are_capped() {
    let port = shared_port(&[ip(2)]);
    let _w = spawn_worker_at(
        "dns-a",
        Some(SocketAddr::from((ip(2), port))),
        WorkerOpts::default(),
    )
    .await;
    let dns = DnsServer::start(Zone {
        a: (2..42).map(ip).collect(),
        ..Zone::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dns_proxy_yaml(&dns, "a", Some(port), "10s").replacen(
        "    interval: 200ms\n",
        "    interval: 200ms\n    max_records: 4\n",
        1,
    );
    assert!(yaml.contains("max_records: 4"), "{yaml}");
    let p = spawn_logged_proxy(dir.path(), &yaml, &[]).await;
    let (c, admin) = (client(), p.admin_base());
    wait_workers(&c, &admin, &[("dns-a", "active")]).await;
    let capped =
        |m: &str| metric_value(m, names::discovery::RECORDS_CAPPED, &[]).unwrap_or(0.0) >= 72.0;
    let m = metrics_when_at(&c, &admin, capped).await;
    assert!(capped(&m), "two rounds of 36 dropped records: {m}");
    let log = p.log();
    let warns = log
        .lines()
        .filter(|l| l.contains("discovery.dns.max_records"))
        .count();
    assert_eq!(warns, 1, "one WARN per episode: {log}");
    assert!(log.contains("\"dropped\":36"), "{log}");
}

/// The client's credentials (`X-API-Key`, `Authorization`) never reach a worker; the
/// authenticated tenant does (`X-Hotplex-Tenant`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_never_forwarded_to_a_worker() {
    let fake = fake_upstream::start(Mode::Echo).await;
    let yaml = proxy_yaml(
        &[("w1", fake.addr)],
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n",
            key_hash(API_KEY)
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();
    let r = send(
        c.post(format!("{}/sessions", p.base()))
            .header("x-api-key", API_KEY),
    )
    .await;
    assert!(r.status < 300, "{r:?}");
    let r = send(
        c.post(format!("{}/sessions", p.base()))
            .header("authorization", format!("Bearer {API_KEY}")),
    )
    .await;
    assert!(r.status < 300, "{r:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        let names: Vec<&str> = s.headers.iter().map(|(n, _)| n.as_str()).collect();
        for n in &names {
            assert!(
                !n.eq_ignore_ascii_case("x-api-key") && !n.eq_ignore_ascii_case("authorization"),
                "a client credential reached the worker: {names:?}"
            );
        }
        assert!(
            s.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("x-hotplex-tenant") && v == "tenant-a"),
            "the tenant is named: {:?}",
            s.headers
        );
        assert!(
            !s.headers.iter().any(|(_, v)| v.contains(API_KEY)),
            "the key is in no header: {:?}",
            s.headers
        );
    }
}
