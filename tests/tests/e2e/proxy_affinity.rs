//! Proxy e2e: affinity across proxy restarts and two proxy processes, zero moves on
//! scale-out (1000 sessions, 3 → 4 workers), spread of new sessions, removed worker → 410.

use std::collections::HashMap;

use crate::support::proxy::*;
use futures_util::stream::{self, StreamExt};

const CONCURRENCY: usize = 16;

/// Creates `n` sessions through `base`, `CONCURRENCY` at a time; returns (id, node).
async fn create_many(c: &reqwest::Client, base: &str, n: usize) -> Vec<(String, String)> {
    stream::iter(0..n)
        .map(|_| async { create(c, base).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// GETs every session through `base`; returns how many answered from another node, and
/// how many failed.
async fn moved(c: &reqwest::Client, base: &str, sessions: &[(String, String)]) -> (usize, usize) {
    let results: Vec<(bool, bool)> = stream::iter(sessions.iter())
        .map(|(id, node)| async move {
            let r = get_session(c, base, id).await;
            (r.status != 200, r.node.as_deref() != Some(node.as_str()))
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.0).count();
    let moved = results.iter().filter(|r| r.1).count();
    (moved, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_across_restart_and_two_proxies() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let yaml = proxy_yaml(&worker_list(&workers), "");
    let mut p1 = spawn_proxy(&yaml).await;
    let p2 = spawn_proxy(&yaml).await;
    let c = client();

    // Sessions created alternately through both proxies (pinned) plus client-chosen ids.
    let mut sessions = Vec::new();
    for i in 0..24 {
        let base = if i % 2 == 0 { p1.base() } else { p2.base() };
        sessions.push(create(&c, &base).await);
    }
    for i in 0..6 {
        let id = format!("client-key-{i}");
        let r = send(
            c.post(format!("{}/sessions", p1.base()))
                .header("x-hotplex-session", &id),
        )
        .await;
        assert_eq!(r.status, 201);
        sessions.push((id, r.node.expect("node")));
    }
    let nodes: std::collections::HashSet<&String> = sessions.iter().map(|s| &s.1).collect();
    assert_eq!(nodes.len(), 3, "sessions spread over all workers");

    // Alternate every session between the two proxies: always its node.
    for round in 0..4 {
        for (id, node) in &sessions {
            let base = if round % 2 == 0 { p1.base() } else { p2.base() };
            let r = get_session(&c, &base, id).await;
            assert_eq!(
                (r.status, r.node.as_deref()),
                (200, Some(node.as_str())),
                "{id} round {round}"
            );
        }
    }

    // Restart proxy 1 on the same ports: nothing shared but the config file.
    let (listen, admin) = (p1.listen, p1.admin);
    let yaml1 = std::fs::read_to_string(&p1.config_path).expect("config");
    p1.guard.kill();
    drop(p1);
    let rest = yaml1
        .split_once("workers:")
        .map(|(_, r)| format!("workers:{r}"))
        .expect("workers section");
    let p1 = spawn_proxy_at(&rest, Some((listen, admin))).await;
    for (id, node) in &sessions {
        for base in [p1.base(), p2.base()] {
            let r = get_session(&c, &base, id).await;
            assert_eq!(
                (r.status, r.node.as_deref()),
                (200, Some(node.as_str())),
                "{id} after restart"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_moves_no_session_and_new_sessions_spread() {
    let opts = WorkerOpts {
        max_sessions: 2000,
        light: true,
    };
    let mut workers = spawn_workers(3, opts).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();

    let sessions = create_many(&c, &p.base(), 1000).await;
    let mut per: HashMap<&str, usize> = HashMap::new();
    for (_, n) in &sessions {
        *per.entry(n.as_str()).or_default() += 1;
    }
    let mean = 1000.0 / 3.0;
    let max = *per.values().max().expect("some") as f64;
    let ratio = max / mean;
    println!("spread over 3 workers: {per:?}, max/mean = {ratio:.3}");
    assert_eq!(per.len(), 3);
    assert!(ratio <= 1.25, "max/mean {ratio}");

    // Add a 4th worker: restart the proxy with a config that lists it.
    workers.push(spawn_worker_at("w4", None, opts).await);
    drop(p);
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let (moves, failed) = moved(&c, &p.base(), &sessions).await;
    println!("after adding w4: {moves} of 1000 sessions moved, {failed} failed");
    assert_eq!((moves, failed), (0, 0));

    // New sessions fill the empty worker first (least fill).
    let fresh = create_many(&c, &p.base(), 30).await;
    let on_w4 = fresh.iter().filter(|(_, n)| n == "w4").count();
    println!("new sessions after scale-out: {on_w4} of 30 on w4");
    assert_eq!(on_w4, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_worker_gives_410_others_unaffected() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let sessions = create_many(&c, &p.base(), 15).await;
    assert!(sessions.iter().any(|(_, n)| n == "w3"));
    drop(p);
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers[..2]), "")).await;
    for (id, node) in &sessions {
        let r = get_session(&c, &p.base(), id).await;
        if node == "w3" {
            assert_eq!(r.status, 410, "{r:?}");
            assert_eq!(r.body["error"], "session_worker_gone");
            assert_eq!(r.body["worker"], "w3");
            assert_eq!(r.body["session_id"], id.as_str());
        } else {
            assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
        }
    }
}
