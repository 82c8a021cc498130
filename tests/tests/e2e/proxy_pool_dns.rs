//! DNS discovery of an `http` pool's upstreams (issue #19, item 2): `pools[].discovery.dns`
//! against the in-test DNS server, real HTTP services on 127.0.0.2-4 (one port), a real
//! proxy. The pool follows the record set: an added address gets traffic, a removed one
//! gets no new request while the one it is serving finishes; an upstream that stays keeps
//! its health state; a DNS outage keeps the last good set.

use std::net::SocketAddr;
use std::time::Duration;

use hotplex_e2e::eventually;

use crate::support::dns::{ip, shared_port, DnsServer, Zone, NAME};
use crate::support::http_service::{self, HEALTH_PATH};
use crate::support::proxy::*;

/// Which service answered `GET path` (its name), or the status when not 200.
async fn served(c: &reqwest::Client, p: &TestProxy, path: &str) -> String {
    let r = send(c.get(format!("{}{path}", p.base()))).await;
    if r.status == 200 {
        r.body["name"].as_str().unwrap_or("?").to_string()
    } else {
        format!("status {}", r.status)
    }
}

/// The names serving `n` requests in a row.
async fn spread(c: &reqwest::Client, p: &TestProxy, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(served(c, p, &format!("/spread/{i}")).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pool_follows_its_dns_records() {
    let workers = spawn_workers(
        1,
        WorkerOpts {
            light: true,
            ..WorkerOpts::default()
        },
    )
    .await;
    let port = shared_port(&[ip(2), ip(3), ip(4)]);
    let at = |last: u8| SocketAddr::from((ip(last), port));
    let a = http_service::start_at("a", at(2)).await;
    let b = http_service::start_at("b", at(3)).await;
    let d = http_service::start_at("d", at(4)).await;
    let dns = DnsServer::start(Zone {
        a: vec![ip(2), ip(3)],
        ..Zone::default()
    })
    .await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "pools:\n  - name: ui\n    discovery:\n      dns:\n        name: {NAME}\n        \
             port: {port}\n        interval: 200ms\n        timeout: 500ms\n        resolver: \"{}\"\n    \
             health_check:\n      path: {HEALTH_PATH}\n      interval: 200ms\n      timeout: 1s\n      \
             failures: 1\n      successes: 1\n\
             routes:\n  - name: ui\n    path: /\n    pool: ui\n    auth: off\n    timeouts:\n      read: 60s\n",
            dns.addr
        ),
    );
    let mut p = spawn_proxy(&yaml).await;
    let c = client();
    let has = |v: &[String], n: &str| v.iter().any(|x| x == n);

    // The first resolution: both A records serve (round robin), nothing else.
    let both = eventually(WAIT, || async {
        let s = spread(&c, &p, 6).await;
        has(&s, "a") && has(&s, "b")
    })
    .await;
    assert!(
        both,
        "a and b never both served: {:?}",
        spread(&c, &p, 6).await
    );
    assert!(d.seen().is_empty(), "d is not in DNS yet");

    // b's health check fails: it is taken out.
    b.set_healthy(false);
    let out = eventually(WAIT, || async { !has(&spread(&c, &p, 6).await, "b") }).await;
    assert!(out, "b never left after failing its health check");

    // A record added: d gets traffic; b, still a member, keeps its (down) health.
    dns.update(|z| z.a.push(ip(4)));
    let added = eventually(WAIT, || async { has(&spread(&c, &p, 6).await, "d") }).await;
    assert!(added, "d never got traffic after its record was added");
    let s = spread(&c, &p, 12).await;
    assert!(
        !has(&s, "b"),
        "b's health carried over the DNS change: {s:?}"
    );
    assert!(has(&s, "a") && has(&s, "d"), "{s:?}");
    b.set_healthy(true);
    let back = eventually(WAIT, || async { has(&spread(&c, &p, 6).await, "b") }).await;
    assert!(back, "b never came back");

    // A request in flight on a (held by the service); then a's record is removed.
    let mut held = Vec::new();
    let mut slow_on_a = None;
    for round in 0..5 {
        for i in 0..3 {
            let path = format!("/slow/{round}-{i}");
            let (c, url) = (c.clone(), format!("{}{path}", p.base()));
            let task = tokio::spawn(async move {
                let r = send(c.get(url)).await;
                let name = r.body["name"].as_str().unwrap_or("").to_string();
                (r.status, name)
            });
            held.push((path, task));
        }
        let on_a = || {
            a.seen()
                .into_iter()
                .map(|s| s.1)
                .find(|s| s.starts_with("/slow/"))
        };
        if eventually(Duration::from_secs(3), || async { on_a().is_some() }).await {
            slow_on_a = on_a();
            break;
        }
    }
    let slow_on_a = slow_on_a.expect("no slow request reached a");
    b.release();
    d.release();
    dns.update(|z| z.a.retain(|x| *x != ip(2)));
    let gone = eventually(WAIT, || async { !has(&spread(&c, &p, 9).await, "a") }).await;
    assert!(
        gone,
        "a still got new requests after its record was removed"
    );
    let before = a.seen().len();
    let s = spread(&c, &p, 9).await;
    assert!(has(&s, "b") && has(&s, "d") && !has(&s, "a"), "{s:?}");
    assert_eq!(a.seen().len(), before, "nothing new reached a");
    // The request a was serving finishes there (the others are released too, not awaited).
    for s in [&a, &b, &d] {
        s.release();
    }
    let (_, task) = held
        .into_iter()
        .find(|(path, _)| *path == slow_on_a)
        .expect("the held request's task");
    let (status, name) = task.await.expect("request task");
    assert_eq!(
        (status, name.as_str()),
        (200, "a"),
        "the in-flight request on a finished there"
    );

    // DNS down: the last good set (b, d) keeps serving.
    dns.update(|z| z.down = true);
    let q = dns.queries();
    let asked = eventually(WAIT, || async { dns.queries() >= q + 4 }).await;
    assert!(asked, "the proxy stopped asking DNS");
    let s = spread(&c, &p, 8).await;
    assert!(
        has(&s, "b") && has(&s, "d"),
        "the last good set is kept: {s:?}"
    );
    assert!(s.iter().all(|x| x == "b" || x == "d"), "{s:?}");
    p.guard.assert_alive();
}
