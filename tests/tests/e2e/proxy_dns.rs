//! DNS worker discovery (`discovery.dns`), end to end: a real DNS server in the test
//! ([`crate::support::dns`]: UDP on 127.0.0.1:0, records changed while the test runs),
//! real worker processes, real proxy processes.
//!
//! - A records: workers on distinct loopback IPs (127.0.0.2, .3, .4) with one port;
//!   discovered workers get sessions; an added record gets new sessions only and no
//!   session moves; the DNS server going silent, or answering no record, keeps the last
//!   good set (metric `hotplex_proxy_discovery_stale`); a removed record drains its worker for
//!   `workers_removal_grace` (its sessions still served), then 410.
//! - SRV records: workers on one IP with different ports, targets resolved from the
//!   additional section or by their own A query.
//! - Two proxies whose DNS servers return the records in opposite orders agree on every
//!   session (pinned and hashed), because workers are named by their `node_id`.
//! - The proxy config in `conf/k8s/configmap.yaml` passes `hotplex-proxy check`.

use hotplex_common::names;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::support::dns::*;
use crate::support::proxy::*;

/// Waits until `cond` holds on the proxy's `/metrics` text.
async fn wait_metrics(c: &reqwest::Client, admin: &str, what: &str, cond: impl Fn(&str) -> bool) {
    let text = metrics_when_at(c, admin, &cond).await;
    assert!(cond(&text), "never: {what}\n{text}");
}

/// Creates `n` sessions through `base`: (session id, node) in order.
async fn create_n(c: &reqwest::Client, base: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (id, node) = create(c, base).await;
        assert!(
            id.starts_with(&format!("{node}.")),
            "signed id {id} names its worker {node}"
        );
        out.push((id, node));
    }
    out
}

/// Every session still answers 200 from the node that created it.
async fn assert_unmoved(c: &reqwest::Client, base: &str, sessions: &[(String, String)]) {
    for (id, node) in sessions {
        let r = get_session(c, base, id).await;
        assert_eq!(r.status, 200, "session {id}: {r:?}");
        assert_eq!(r.node.as_deref(), Some(node.as_str()), "session {id} moved");
    }
}

fn count_by_node(sessions: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, node) in sessions {
        *m.entry(node.clone()).or_insert(0) += 1;
    }
    m
}

fn light() -> WorkerOpts {
    WorkerOpts {
        max_sessions: 200,
        light: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_scale_out_outage_and_removal() {
    let ips = [ip(2), ip(3), ip(4)];
    let port = shared_port(&ips);
    let at = |i: usize| Some(SocketAddr::from((ips[i], port)));
    let _wa = spawn_worker_at("dns-a", at(0), light()).await;
    let _wb = spawn_worker_at("dns-b", at(1), light()).await;
    let _wc = spawn_worker_at("dns-c", at(2), light()).await;
    let dns = DnsServer::start(Zone {
        a: vec![ips[0], ips[1]],
        ..Zone::default()
    })
    .await;
    let p = spawn_proxy(&dns_proxy_yaml(&dns, "a", Some(port), "10s")).await;
    let c = client();
    let admin = p.admin_base();
    let all = wait_workers(&c, &admin, &[("dns-a", "active"), ("dns-b", "active")]).await;
    let addrs: BTreeSet<String> = all["workers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|w| {
            assert_eq!(w["source"], "dns", "{w}");
            w["address"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(
        addrs,
        BTreeSet::from([format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")])
    );

    // Discovered workers get sessions (load-aware: evenly).
    let old = create_n(&c, &p.base(), 20).await;
    let split = count_by_node(&old);
    eprintln!("20 sessions on 2 discovered workers: {split:?}");
    assert_eq!(split.keys().collect::<Vec<_>>(), ["dns-a", "dns-b"]);
    assert!(split.values().all(|&n| n >= 8), "{split:?}");

    // A new record: the new worker gets new sessions only; no session moves.
    dns.update(|z| z.a.push(ips[2]));
    wait_workers(
        &c,
        &admin,
        &[
            ("dns-a", "active"),
            ("dns-b", "active"),
            ("dns-c", "active"),
        ],
    )
    .await;
    assert_unmoved(&c, &p.base(), &old).await;
    let new = create_n(&c, &p.base(), 20).await;
    let split = count_by_node(&new);
    eprintln!("20 new sessions after dns-c appeared: {split:?}");
    assert!(
        split.get("dns-c").copied().unwrap_or(0) >= 10,
        "the empty new worker takes the new sessions first: {split:?}"
    );
    assert_unmoved(&c, &p.base(), &old).await;

    // The name server goes silent: the last good set is kept, the metric says so.
    let text = metrics_at(&c, &admin).await;
    assert_eq!(
        metric_in(&text, names::discovery::WORKERS, &[]),
        3.0,
        "{text}"
    );
    assert!(
        metric_in(
            &text,
            names::discovery::RESOLUTIONS,
            &["result=\"success\""]
        ) >= 1.0
    );
    assert_eq!(metric_in(&text, names::discovery::STALE, &[]), 0.0);
    dns.update(|z| z.down = true);
    wait_metrics(&c, &admin, "discovery stale with failures", |t| {
        metric_in(t, names::discovery::STALE, &[]) == 1.0
            && metric_in(t, names::discovery::RESOLUTIONS, &["result=\"failure\""]) >= 2.0
    })
    .await;
    wait_workers(
        &c,
        &admin,
        &[
            ("dns-a", "active"),
            ("dns-b", "active"),
            ("dns-c", "active"),
        ],
    )
    .await;
    assert_unmoved(&c, &p.base(), &old).await;
    assert_unmoved(&c, &p.base(), &new).await;
    let during = create_n(&c, &p.base(), 3).await;
    let text = metrics_at(&c, &admin).await;
    assert_eq!(metric_in(&text, names::discovery::WORKERS, &[]), 3.0);
    dns.update(|z| z.down = false);
    wait_metrics(&c, &admin, "discovery fresh again", |t| {
        metric_in(t, names::discovery::STALE, &[]) == 0.0
    })
    .await;

    // An empty answer (no A record at all) is not "remove every worker": the set is kept.
    let saved = dns.zone.lock().expect("zone").a.clone();
    dns.update(|z| z.a.clear());
    wait_metrics(&c, &admin, "empty answers counted, set kept", |t| {
        metric_in(t, names::discovery::RESOLUTIONS, &["result=\"empty\""]) >= 2.0
            && metric_in(t, names::discovery::STALE, &[]) == 1.0
    })
    .await;
    wait_workers(
        &c,
        &admin,
        &[
            ("dns-a", "active"),
            ("dns-b", "active"),
            ("dns-c", "active"),
        ],
    )
    .await;
    dns.update(|z| z.a = saved);
    wait_metrics(&c, &admin, "discovery fresh again", |t| {
        metric_in(t, names::discovery::STALE, &[]) == 0.0
    })
    .await;

    // A removed record: dns-b drains (its sessions still served, no new ones), then 410.
    dns.update(|z| z.a.retain(|a| *a != ips[1]));
    let removed_at = Instant::now();
    wait_workers(
        &c,
        &admin,
        &[
            ("dns-a", "active"),
            ("dns-b", "removing"),
            ("dns-c", "active"),
        ],
    )
    .await;
    let b_sessions: Vec<(String, String)> = old
        .iter()
        .chain(&new)
        .chain(&during)
        .filter(|(_, n)| n == "dns-b")
        .cloned()
        .collect();
    assert!(!b_sessions.is_empty());
    assert_unmoved(&c, &p.base(), &b_sessions).await;
    let after = create_n(&c, &p.base(), 10).await;
    assert!(
        after.iter().all(|(_, n)| n != "dns-b"),
        "a removed worker gets no new session: {after:?}"
    );
    assert!(
        removed_at.elapsed() < Duration::from_secs(10),
        "checks ran within the grace"
    );
    let deadline = Instant::now() + WAIT;
    let gone = loop {
        let r = get_session(&c, &p.base(), &b_sessions[0].0).await;
        if r.status == 410 {
            break r;
        }
        assert_eq!(r.status, 200, "within the grace: {r:?}");
        assert!(Instant::now() < deadline, "never 410");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        removed_at.elapsed() >= Duration::from_secs(9),
        "410 only after the grace ({:?})",
        removed_at.elapsed()
    );
    assert_eq!(gone.body["error"], "session_worker_gone", "{gone:?}");
    assert_eq!(gone.body["worker"], "dns-b", "{gone:?}");
    for (id, _) in &b_sessions {
        assert_eq!(get_session(&c, &p.base(), id).await.status, 410);
    }
    let others: Vec<(String, String)> = old
        .iter()
        .chain(&new)
        .filter(|(_, n)| n != "dns-b")
        .cloned()
        .collect();
    assert_unmoved(&c, &p.base(), &others).await;
    wait_workers(&c, &admin, &[("dns-a", "active"), ("dns-c", "active")]).await;
    let text = metrics_at(&c, &admin).await;
    assert_eq!(metric_in(&text, names::discovery::WORKERS, &[]), 2.0);
    assert!(metric_in(&text, names::discovery::LAST_SUCCESS_TIMESTAMP, &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_targets_and_ports() {
    let w1 = spawn_worker_at("srv-1", None, light()).await;
    let w2 = spawn_worker_at("srv-2", None, light()).await;
    let w3 = spawn_worker_at("srv-3", None, light()).await;
    let target = |i: u8| format!("srv-{i}.hosts.hotplex.test.");
    let hosts: BTreeMap<String, Ipv4Addr> = (1..=3).map(|i| (target(i), ip(1))).collect();
    let dns = DnsServer::start(Zone {
        srv: vec![(w1.addr.port(), target(1)), (w2.addr.port(), target(2))],
        hosts,
        additional_first: true,
        ..Zone::default()
    })
    .await;
    let p = spawn_proxy(&dns_proxy_yaml(&dns, "srv", None, "1h")).await;
    let c = client();
    let admin = p.admin_base();
    let all = wait_workers(&c, &admin, &[("srv-1", "active"), ("srv-2", "active")]).await;
    let addr_of = |id: &str| {
        all["workers"]
            .as_array()
            .and_then(|l| l.iter().find(|w| w["id"] == id))
            .map(|w| w["address"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        addr_of("srv-1"),
        Some(w1.addr.to_string()),
        "port from the SRV record"
    );
    assert_eq!(
        addr_of("srv-2"),
        Some(w2.addr.to_string()),
        "target by its own A query"
    );
    let old = create_n(&c, &p.base(), 10).await;
    assert_eq!(count_by_node(&old).len(), 2, "{:?}", count_by_node(&old));

    dns.update(|z| z.srv.push((w3.addr.port(), target(3))));
    wait_workers(
        &c,
        &admin,
        &[
            ("srv-1", "active"),
            ("srv-2", "active"),
            ("srv-3", "active"),
        ],
    )
    .await;
    let new = create_n(&c, &p.base(), 10).await;
    let split = count_by_node(&new);
    assert!(split.get("srv-3").copied().unwrap_or(0) >= 5, "{split:?}");
    assert_unmoved(&c, &p.base(), &old).await;

    dns.update(|z| {
        z.srv.remove(0);
    });
    wait_workers(
        &c,
        &admin,
        &[
            ("srv-1", "removing"),
            ("srv-2", "active"),
            ("srv-3", "active"),
        ],
    )
    .await;
    assert_unmoved(&c, &p.base(), &old).await;
    let after = create_n(&c, &p.base(), 6).await;
    assert!(after.iter().all(|(_, n)| n != "srv-1"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_discovering_in_different_orders_agree() {
    let ips = [ip(5), ip(6), ip(7)];
    let port = shared_port(&ips);
    let mut workers = Vec::new();
    for (i, a) in ips.iter().enumerate() {
        let id = format!("two-{}", ["a", "b", "c"][i]);
        workers.push(spawn_worker_at(&id, Some(SocketAddr::from((*a, port))), light()).await);
    }
    let forward = DnsServer::start(Zone {
        a: ips.to_vec(),
        ..Zone::default()
    })
    .await;
    let backward = DnsServer::start(Zone {
        a: ips.to_vec(),
        reverse: true,
        ..Zone::default()
    })
    .await;
    let p1 = spawn_proxy(&dns_proxy_yaml(&forward, "a", Some(port), "1h")).await;
    let p2 = spawn_proxy(&dns_proxy_yaml(&backward, "a", Some(port), "1h")).await;
    let c = client();
    let want = [
        ("two-a", "active"),
        ("two-b", "active"),
        ("two-c", "active"),
    ];
    wait_workers(&c, &p1.admin_base(), &want).await;
    wait_workers(&c, &p2.admin_base(), &want).await;
    assert!(forward.queries() > 0 && backward.queries() > 0);

    // Pinned sessions: created through one proxy, served by the same worker through the other.
    let via1 = create_n(&c, &p1.base(), 60).await;
    let via2 = create_n(&c, &p2.base(), 60).await;
    assert_eq!(count_by_node(&via1).len(), 3, "{:?}", count_by_node(&via1));
    assert_unmoved(&c, &p2.base(), &via1).await;
    assert_unmoved(&c, &p1.base(), &via2).await;

    // Client-chosen ids (rendezvous hashing over worker ids): both proxies agree too.
    let mut hashed: HashMap<String, String> = HashMap::new();
    for i in 0..60 {
        let key = format!("client-chosen-{i}");
        let r = send(
            c.post(format!("{}/sessions", p1.base()))
                .header("X-Hotplex-Session", &key),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        hashed.insert(key, r.node.expect("node"));
    }
    let spread: BTreeSet<&String> = hashed.values().collect();
    assert_eq!(spread.len(), 3, "hashing spreads over the 3 workers");
    for (key, node) in &hashed {
        let r = get_session(&c, &p2.base(), key).await;
        assert_eq!(r.status, 200, "{key}: {r:?}");
        assert_eq!(r.node.as_deref(), Some(node.as_str()), "{key}");
    }
    eprintln!(
        "two proxies, opposite DNS orders: {} pinned + {} hashed sessions agreed",
        via1.len() + via2.len(),
        hashed.len()
    );
}

/// Writes `text` the way the kubelet updates a ConfigMap volume: a new `..<version>`
/// directory, a `..data_tmp` symlink to it renamed over `..data`; `hotplex.yaml` itself is
/// a symlink through `..data` and sees no event of its own.
fn configmap_write(dir: &std::path::Path, version: u32, text: &str) {
    let v = format!("..2026_11_28_{version}");
    std::fs::create_dir(dir.join(&v)).expect("version dir");
    std::fs::write(dir.join(&v).join("hotplex.yaml"), text).expect("write config");
    std::os::unix::fs::symlink(&v, dir.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    let link = dir.join("hotplex.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/hotplex.yaml", &link).expect("symlink config");
    }
}

/// A proxy whose config is a ConfigMap-style volume picks up updates by itself: adding
/// `discovery:` discovers the DNS workers live; removing it removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_volume_update_reloads_discovery_live() {
    let port = shared_port(&[ip(8)]);
    let stat = spawn_worker_at("cm-static", None, light()).await;
    let _found = spawn_worker_at("cm-found", Some(SocketAddr::from((ip(8), port))), light()).await;
    let dns = DnsServer::start(Zone {
        a: vec![ip(8)],
        ..Zone::default()
    })
    .await;
    // Listeners on port 0 (reported by --addr-file); a reload keeps them as configured.
    let head = format!("listen: \"{ANY_PORT}\"\nadmin:\n  listen: \"{ANY_PORT}\"\n");
    let v1 = format!("{head}{}", proxy_yaml(&[("cm-static", stat.addr)], ""));
    let with_dns = dns_proxy_yaml(&dns, "a", Some(port), "0s");
    let v2 = format!(
        "{head}workers:\n  - id: cm-static\n    address: \"{}\"\n{with_dns}",
        stat.addr
    );
    let dir = tempfile::tempdir().expect("tempdir");
    configmap_write(dir.path(), 1, &v1);
    let mut cmd = std::process::Command::new(PROXY_BIN);
    // Outside the watched ConfigMap directory.
    let addr_dir = tempfile::tempdir().expect("tempdir");
    let addr_path = addr_dir.path().join("addr.json");
    cmd.arg("--config")
        .arg(dir.path().join("hotplex.yaml"))
        .arg("--addr-file")
        .arg(&addr_path)
        .env(
            "RUST_LOG",
            std::env::var("HOTPLEX_E2E_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let mut proxy = hotplex_e2e::ChildGuard::spawn("proxy", &mut cmd);
    let bound = addr_file(&addr_path, &mut proxy).await;
    let (listen, admin) = (addr_of(&bound, "listen"), addr_of(&bound, "admin"));
    hotplex_e2e::wait_until_http_ok(&format!("http://{admin}/health/live"), WAIT).await;
    let admin = format!("http://{admin}");
    let c = client();
    wait_workers(&c, &admin, &[("cm-static", "active")]).await;

    // The file watch starts with the other background services: give it a moment.
    // allow-sleep: the file watch has no readiness signal; a write before it starts would be missed
    tokio::time::sleep(Duration::from_secs(1)).await;
    configmap_write(dir.path(), 2, &v2);
    let all = wait_workers(
        &c,
        &admin,
        &[("cm-static", "active"), ("cm-found", "active")],
    )
    .await;
    let sources: BTreeMap<String, String> = all["workers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|w| (w["id"].to_string(), w["source"].to_string()))
        .collect();
    assert_eq!(
        sources.values().collect::<Vec<_>>(),
        [r#""dns""#, r#""config""#],
        "{sources:?}"
    );
    let s = create_n(&c, &format!("http://{listen}"), 6).await;
    assert_eq!(count_by_node(&s).len(), 2, "{:?}", count_by_node(&s));

    // Without `discovery:` (and no removal grace) the discovered worker is gone.
    configmap_write(dir.path(), 3, &format!("{v1}workers_removal_grace: 0s\n"));
    wait_workers(&c, &admin, &[("cm-static", "active")]).await;
    let text = metrics_at(&c, &admin).await;
    assert!(
        metric_in(&text, names::config::RELOADS_TOTAL, &["result=\"success\""]) >= 2.0,
        "{text}"
    );
    wait_metrics(&c, &admin, "no discovered worker left", |t| {
        metric_in(t, names::discovery::WORKERS, &[]) == 0.0
    })
    .await;
}

/// `data.<key>` of the ConfigMap `name` in `conf/k8s/configmap.yaml`.
fn configmap_entry(name: &str, key: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/k8s/configmap.yaml");
    let text = std::fs::read_to_string(path).expect("read conf/k8s/configmap.yaml");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("yaml document");
        if v["kind"].as_str() == Some("ConfigMap") && v["metadata"]["name"].as_str() == Some(name) {
            if let Some(s) = v["data"][key].as_str() {
                return s.to_string();
            }
        }
    }
    panic!("no ConfigMap {name} with data.{key} in {path}");
}

/// Runs `e2e-proxy check FILE` (same binary as hotplex-proxy) with `env`.
fn proxy_check(file: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(PROXY_BIN);
    cmd.arg("check")
        .arg(file)
        .env_remove("HOTPLEX_AFFINITY_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The configs shipped in the Kubernetes ConfigMaps pass the binaries' own checks: the
/// proxy's (`hotplex-proxy check`, with the affinity secret in the environment as the
/// Deployment sets it from the Secret hotplex-keys) and the worker's (`check-config`).
#[test]
fn k8s_configmap_configs_pass_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hotplex.yaml");
    std::fs::write(&file, configmap_entry("hotplex-config", "hotplex.yaml")).expect("write");
    let secret = (
        "HOTPLEX_AFFINITY_SECRET",
        "0123456789abcdef0123456789abcdef",
    );
    let keys = [
        secret,
        ("HOTPLEX_KEY_TENANT_A", "tenant-a-key-0123456789abcdef"),
        ("HOTPLEX_WORKER_KEY", "worker-key-0123456789abcdef0123"),
    ];
    let (code, out) = proxy_check(&file, &keys);
    assert_eq!(code, 0, "check failed:\n{out}");
    assert!(
        out.contains("discovery: dns a hotplex-worker.hotplex.svc.cluster.local.:8080 every 5s"),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "no development secret: {out}");
    // The secrets really come from the environment.
    let (code, out) = proxy_check(&file, &keys[1..]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routing.affinity_secrets[0]") && out.contains("HOTPLEX_AFFINITY_SECRET"),
        "{out}"
    );
    let (code, out) = proxy_check(&file, &keys[..2]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("worker_auth.key") && out.contains("HOTPLEX_WORKER_KEY"),
        "{out}"
    );

    let wfile = dir.path().join("worker.yaml");
    std::fs::write(
        &wfile,
        configmap_entry("hotplex-worker-config", "worker.yaml"),
    )
    .expect("write");
    let out = std::process::Command::new(WORKER_BIN)
        .arg("--config")
        .arg(&wfile)
        .arg("check-config")
        .env(keys[2].0, keys[2].1)
        .output()
        .expect("run worker check-config");
    assert!(
        out.status.success(),
        "worker check-config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The shipped workers trust only the proxy: without the shared key they do not start.
    let out = std::process::Command::new(WORKER_BIN)
        .arg("--config")
        .arg(&wfile)
        .arg("check-config")
        .env_remove(keys[2].0)
        .output()
        .expect("run worker check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without the worker key");
    assert!(
        err.contains("proxy_keys") && err.contains(keys[2].0),
        "{err}"
    );
}
