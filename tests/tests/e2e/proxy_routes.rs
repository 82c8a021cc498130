//! Proxy e2e: routes and `http` pools, with real processes: a real worker for the session
//! pool, real HTTP services (axum) for the `http` pools, the real proxy binary.
//! Host and path routing across pools, the no-route 404 that forwards nothing, auth per
//! route, round robin / least_conn / hash, active health ejection and return, passive
//! ejection, reloads that add, change and remove routes under load, and config errors
//! named with their key path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotplex_common::names::{proxy as pn, routes as rn};
use hotplex_e2e::eventually;

use crate::support::http_service::{self, HttpService, HEALTH_PATH};
use crate::support::proxy::*;

/// A pool of `services` with a fast health check on [`HEALTH_PATH`].
fn pool(name: &str, services: &[&HttpService], extra: &str) -> String {
    let ups: Vec<String> = services.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    format!(
        "  - name: {name}\n    upstreams: [{}]\n    health_check:\n      path: {HEALTH_PATH}\n      \
         interval: 200ms\n      timeout: 1s\n      failures: 1\n      successes: 1\n{extra}",
        ups.join(", ")
    )
}

/// The `name` an http service put in its answer.
fn served_by(r: &Resp) -> String {
    r.body["name"].as_str().unwrap_or("").to_string()
}

async fn get(c: &reqwest::Client, p: &TestProxy, host: &str, path: &str) -> Resp {
    send(c.get(format!("{}{path}", p.base())).header("host", host)).await
}

async fn reload(c: &reqwest::Client, p: &TestProxy) -> Resp {
    send(c.post(format!("{}/admin/reload", p.admin_base()))).await
}

/// Waits until every `services` upstream of `pool` has been probed healthy (its gauge
/// series exists and reads 1).
async fn wait_pool_up(c: &reqwest::Client, p: &TestProxy, pool: &str, services: &[&HttpService]) {
    let admin = p.admin_base();
    let up = eventually(WAIT, || async {
        let m = metrics_at(c, &admin).await;
        services.iter().all(|s| {
            let labels = [
                format!("pool=\"{pool}\""),
                format!("upstream=\"{}\"", s.addr),
            ];
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            hotplex_e2e::metric_value(&m, rn::POOL_UPSTREAM_HEALTHY, &labels) == Some(1.0)
        })
    })
    .await;
    assert!(up, "pool {pool} never came up");
}

const KEY: &str = "routes-test-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_path_routing_across_pools_and_no_route_forwards_nothing() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let ui = http_service::start("ui").await;
    let docs = http_service::start("docs").await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n\
             pools:\n{}{}\
             routes:\n  - name: docs\n    hosts: [\"docs.example.test\"]\n    path: /\n    pool: docs\n\
             \x20 - name: api\n    path: /sessions\n    pool: sessions\n\
             \x20 - name: public\n    hosts: [\"public.example.test\"]\n    path: /\n    pool: ui\n    auth: off\n\
             \x20 - name: ui\n    hosts: [\"*.example.test\"]\n    path: /\n    pool: ui\n    auth: off\n    forward_credentials: true\n",
            key_hash(KEY),
            pool("ui", &[&ui], ""),
            pool("docs", &[&docs], ""),
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();
    wait_pool_up(&c, &p, "ui", &[&ui]).await;
    wait_pool_up(&c, &p, "docs", &[&docs]).await;

    // Host routing: the same path to two pools; the UI route is public.
    let r = get(&c, &p, "app.example.test", "/index.html").await;
    assert_eq!((r.status, served_by(&r)), (200, "ui".into()), "{r:?}");
    let r = get(&c, &p, "APP.Example.TEST:8000", "/").await;
    assert_eq!(served_by(&r), "ui", "case-insensitive, port ignored: {r:?}");
    // auth: off strips the client's credentials by default: an edge key or token sent
    // by mistake never reaches the service.
    let r = send(
        c.get(format!("{}/account", p.base()))
            .header("host", "public.example.test")
            .header("authorization", "Bearer edge-token")
            .header("x-api-key", KEY),
    )
    .await;
    assert_eq!((r.status, served_by(&r)), (200, "ui".into()), "{r:?}");
    let h = ui.headers_of(ui.seen().len() - 1);
    assert!(
        h.iter().any(|(k, _)| k == "host"),
        "the request's headers: {h:?}"
    );
    assert!(
        !h.iter()
            .any(|(k, _)| k == "authorization" || k == "x-api-key"),
        "auth: off without forward_credentials strips credentials: {h:?}"
    );
    // forward_credentials: true passes the client's own credentials on (the service's own
    // auth) but never a HotPlex trust header.
    let r = send(
        c.get(format!("{}/account", p.base()))
            .header("host", "app.example.test")
            .header("authorization", "Bearer ui-session-token")
            .header("x-hotplex-tenant", "forged"),
    )
    .await;
    assert_eq!((r.status, served_by(&r)), (200, "ui".into()), "{r:?}");
    let h = ui.headers_of(ui.seen().len() - 1);
    assert!(
        h.iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer ui-session-token"),
        "{h:?}"
    );
    assert!(!h.iter().any(|(k, _)| k.starts_with("x-hotplex-")), "{h:?}");
    // The docs route keeps the edge's auth: no key 401, never forwarded.
    let r = get(&c, &p, "docs.example.test", "/guide").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(docs.seen().is_empty(), "{:?}", docs.seen());
    let r = send(
        c.get(format!("{}/guide", p.base()))
            .header("host", "docs.example.test")
            .header("x-api-key", KEY),
    )
    .await;
    assert_eq!((r.status, served_by(&r)), (200, "docs".into()), "{r:?}");
    let h = docs.headers_of(0);
    assert!(
        !h.iter()
            .any(|(k, _)| k == "x-api-key" || k.starts_with("x-hotplex-")),
        "credentials and HotPlex trust headers never reach an http service: {h:?}"
    );
    assert!(h.iter().any(|(k, _)| k == "x-forwarded-for"), "{h:?}");

    // Path routing: /sessions goes to the session pool (real worker), with its auth.
    let r = send(
        c.post(format!("{}/sessions", p.base()))
            .header("host", "app.example.test")
            .header("x-api-key", KEY),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.worker.as_deref(), Some("w1"));
    assert!(r.body["session_id"].as_str().is_some(), "{r:?}");
    let r = send(
        c.post(format!("{}/sessions", p.base()))
            .header("host", "app.example.test"),
    )
    .await;
    assert_eq!(
        r.status, 401,
        "the session API keeps the edge's auth: {r:?}"
    );

    // No route: a JSON 404 from the edge, nothing forwarded anywhere.
    let (ui_before, docs_before) = (ui.seen().len(), docs.seen().len());
    let worker_before = worker_requests_at(&c, &workers[0].base()).await;
    for (host, path) in [
        ("other.test", "/"),
        ("example.test", "/x"),
        ("other.test", "/admin/drain"),
    ] {
        let r = get(&c, &p, host, path).await;
        assert_eq!(r.status, 404, "{host}{path}: {r:?}");
        assert_eq!(r.body["error"], "no_route", "{r:?}");
    }
    assert_eq!(ui.seen().len(), ui_before);
    assert_eq!(docs.seen().len(), docs_before);
    assert_eq!(
        worker_requests_at(&c, &workers[0].base()).await,
        worker_before
    );

    let m = metrics(&c, &p).await;
    assert_eq!(metric_in(&m, pn::REJECTIONS, &["reason=\"no_route\""]), 3.0);
    assert_eq!(
        metric_in(
            &m,
            rn::ROUTE_REQUESTS,
            &["route=\"ui\"", "pool=\"ui\"", "status=\"200\""]
        ),
        3.0
    );
    assert_eq!(
        metric_in(
            &m,
            rn::ROUTE_REQUESTS,
            &["route=\"api\"", "pool=\"sessions\"", "status=\"201\""]
        ),
        1.0
    );
    let up = format!("upstream=\"{}\"", ui.addr);
    assert_eq!(
        metric_in(&m, rn::POOL_UPSTREAM_HEALTHY, &["pool=\"ui\"", &up]),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_least_conn_and_hash_balance_as_documented() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let s: Vec<HttpService> = vec![
        http_service::start("s0").await,
        http_service::start("s1").await,
        http_service::start("s2").await,
    ];
    let all: Vec<&HttpService> = s.iter().collect();
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "pools:\n{}{}{}\
             routes:\n  - name: rr\n    path: /rr\n    pool: rr\n\
             \x20 - name: lc\n    path: /lc\n    pool: lc\n\
             \x20 - name: hash\n    path: /h\n    pool: hash\n",
            pool("rr", &all, ""),
            pool("lc", &all, "    balance: least_conn\n"),
            pool(
                "hash",
                &all,
                "    balance: hash\n    hash_on: header:X-User\n"
            ),
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();
    for name in ["rr", "lc", "hash"] {
        wait_pool_up(&c, &p, name, &all).await;
    }

    // Round robin: an even spread.
    let mut counts: HashMap<String, u32> = HashMap::new();
    for i in 0..30 {
        let r = get(&c, &p, "x", &format!("/rr/{i}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(served_by(&r)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "{counts:?}");

    // least_conn: a held request keeps its upstream busy; the next requests go elsewhere.
    let held = {
        let (c, url) = (c.clone(), format!("{}/lc/slow/1", p.base()));
        tokio::spawn(async move { send(c.get(url)).await })
    };
    let busy = loop {
        let found = s
            .iter()
            .find(|x| x.seen().iter().any(|(_, p)| p == "/lc/slow/1"));
        if let Some(b) = found {
            break b.name.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for i in 0..12 {
        let r = get(&c, &p, "x", &format!("/lc/quick/{i}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_ne!(
            served_by(&r),
            busy,
            "least_conn sent a request to the busy upstream"
        );
    }
    for x in &s {
        x.release();
    }
    let r = held.await.expect("held request");
    assert_eq!((r.status, served_by(&r)), (200, busy));

    // hash: a user sticks to one upstream; users spread over several.
    let mut homes = std::collections::HashSet::new();
    for u in 0..20 {
        let mut seen = std::collections::HashSet::new();
        for k in 0..3 {
            let r = send(
                c.get(format!("{}/h/{k}", p.base()))
                    .header("x-user", format!("user-{u}")),
            )
            .await;
            assert_eq!(r.status, 200, "{r:?}");
            seen.insert(served_by(&r));
        }
        assert_eq!(seen.len(), 1, "user-{u} moved: {seen:?}");
        homes.extend(seen);
    }
    assert!(homes.len() >= 2, "20 users on one upstream: {homes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_ejects_a_down_upstream_and_brings_it_back() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let a = http_service::start("a").await;
    let b = http_service::start("b").await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "pools:\n{}routes:\n  - name: ui\n    path: /\n    pool: ui\n",
            pool("ui", &[&a, &b], "")
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();
    wait_pool_up(&c, &p, "ui", &[&a, &b]).await;
    let gauge = |addr: SocketAddr| {
        let c = c.clone();
        let admin = p.admin_base();
        async move {
            let up = format!("upstream=\"{addr}\"");
            metric_at(&c, &admin, rn::POOL_UPSTREAM_HEALTHY, &["pool=\"ui\"", &up]).await
        }
    };

    b.set_healthy(false);
    assert!(
        eventually(WAIT, || async { gauge(b.addr).await == 0.0 }).await,
        "b never marked down"
    );
    let before = b.seen().len();
    for i in 0..20 {
        let r = get(&c, &p, "x", &format!("/p/{i}")).await;
        assert_eq!((r.status, served_by(&r)), (200, "a".into()), "{r:?}");
    }
    assert_eq!(b.seen().len(), before, "a down upstream got requests");

    // Every upstream down: 503 with a stable code.
    a.set_healthy(false);
    assert!(eventually(WAIT, || async { gauge(a.addr).await == 0.0 }).await);
    let r = get(&c, &p, "x", "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["error"], "no_healthy_upstream", "{r:?}");
    assert_eq!(r.body["pool"], "ui", "{r:?}");

    a.set_healthy(true);
    b.set_healthy(true);
    assert!(
        eventually(WAIT, || async {
            gauge(a.addr).await == 1.0 && gauge(b.addr).await == 1.0
        })
        .await,
        "never back up"
    );
    let mut names = std::collections::HashSet::new();
    for i in 0..10 {
        let r = get(&c, &p, "x", &format!("/q/{i}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        names.insert(served_by(&r));
    }
    assert_eq!(names.len(), 2, "both serve again: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_elsewhere_and_eject_passively() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let a = http_service::start("a").await;
    let b = http_service::start("b").await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "pools:\n  - name: ui\n    upstreams: [\"{}\", \"{}\"]\n    health_check:\n      enabled: false\n    \
             ejection:\n      failures: 2\n      cooldown: 1m\n\
             routes:\n  - name: ui\n    path: /\n    pool: ui\n",
            a.addr, b.addr
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();
    for i in 0..4 {
        assert_eq!(get(&c, &p, "x", &format!("/warm/{i}")).await.status, 200);
    }
    // b goes away (connections refused, pooled ones closed); no health check runs.
    let dead = b.stop().await;
    for i in 0..20 {
        let r = get(&c, &p, "x", &format!("/r/{i}")).await;
        assert_eq!(
            (r.status, served_by(&r)),
            (200, "a".into()),
            "retried on a: {r:?}"
        );
    }
    let up = format!("upstream=\"{dead}\"");
    let m = metrics(&c, &p).await;
    assert_eq!(
        metric_in(&m, rn::POOL_UPSTREAM_EJECTIONS, &["pool=\"ui\"", &up]),
        1.0,
        "2 failures in a row eject once for the 1m cooldown"
    );
    let admin = p.admin_base();
    let ejected = eventually(WAIT, || async {
        metric_at(&c, &admin, rn::POOL_UPSTREAM_HEALTHY, &["pool=\"ui\"", &up]).await == 0.0
    })
    .await;
    assert!(ejected, "the ejected upstream's gauge never read 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_routes_under_load_with_zero_failures() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let k1 = http_service::start("k1").await;
    let k2 = http_service::start("k2").await;
    let b = http_service::start("b").await;
    let base = |routes: &str, pools: &str| {
        proxy_yaml(
            &worker_list(&workers),
            &format!("pools:\n{pools}routes:\n{routes}"),
        )
    };
    let keep_k1 = "  - name: keep\n    path: /keep\n    pool: k1\n";
    let keep_k2 = "  - name: keep\n    path: /keep\n    pool: k2\n";
    let route_b = "  - name: b\n    path: /b\n    pool: b\n";
    let (pk1, pk2, pb) = (
        pool("k1", &[&k1], ""),
        pool("k2", &[&k2], ""),
        pool("b", &[&b], ""),
    );
    let p = spawn_proxy(&base(keep_k1, &pk1)).await;
    let c = client();
    wait_pool_up(&c, &p, "k1", &[&k1]).await;

    // Load: 4 clients on /keep all along.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for t in 0..4 {
        let (c, url) = (c.clone(), format!("{}/keep/{t}", p.base()));
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        bad.push(format!("{other:?}"));
                    }
                }
            }
            bad
        }));
    }

    // Add route b (and its pool).
    p.write_config(&base(&format!("{keep_k1}{route_b}"), &format!("{pk1}{pb}")));
    assert_eq!(reload(&c, &p).await.status, 200);
    let r = get(&c, &p, "x", "/b/1").await;
    assert_eq!((r.status, served_by(&r)), (200, "b".into()), "{r:?}");

    // A request held on pool b while a reload removes b: it finishes.
    let held = {
        let (c, url) = (c.clone(), format!("{}/b/slow/1", p.base()));
        tokio::spawn(async move { send(c.get(url)).await })
    };
    assert!(
        eventually(WAIT, || async {
            b.seen().iter().any(|(_, p)| p == "/b/slow/1")
        })
        .await
    );

    // Change keep to k2, remove b.
    p.write_config(&base(keep_k2, &pk2));
    assert_eq!(reload(&c, &p).await.status, 200);
    let r = get(&c, &p, "x", "/keep/x").await;
    assert_eq!(served_by(&r), "k2", "{r:?}");
    let r = get(&c, &p, "x", "/b/2").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (404, Some("no_route")),
        "{r:?}"
    );
    b.release();
    let r = held.await.expect("held");
    assert_eq!(
        (r.status, served_by(&r)),
        (200, "b".into()),
        "in-flight request on a removed pool"
    );

    // Back and forth under load.
    for i in 0..6 {
        let (routes, pools) = if i % 2 == 0 {
            (keep_k1, pk1.clone())
        } else {
            (keep_k2, pk2.clone())
        };
        p.write_config(&base(routes, &pools));
        assert_eq!(reload(&c, &p).await.status, 200);
    }
    let before = ok.load(Ordering::SeqCst);
    assert!(
        eventually(WAIT, || async { ok.load(Ordering::SeqCst) > before + 20 }).await,
        "load stalled"
    );
    stop.store(true, Ordering::SeqCst);
    let mut bad = Vec::new();
    for l in load {
        bad.extend(l.await.expect("load task"));
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests: {bad:?}");
    assert!(!k1.seen().is_empty() && !k2.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";
    let cases = [
        (
            "pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9\"]\nroutes:\n  - name: ui\n    path: /\n    pool: ui\n  - name: x\n    path: /x\n    pool: nope\n",
            "routes[1].pool: unknown pool \"nope\"",
        ),
        (
            "pools:\n  - name: ui\n    upstreams: [\"127.0.0.1:9\"]\n  - name: ui\n    upstreams: [\"127.0.0.1:8\"]\nroutes:\n  - name: ui\n    path: /\n    pool: ui\n",
            "pools[1].name: duplicate pool name",
        ),
        ("routes: []\n", "routes: empty list"),
        (
            "routes:\n  - name: a\n    hosts: [\"bad host\"]\n    path: /\n    pool: sessions\n",
            "routes[0].hosts[0]:",
        ),
        (
            "routes:\n  - name: a\n    path: nope\n    pool: sessions\n",
            "routes[0].path: must start with /",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&f, format!("{base}{extra}")).expect("write");
        let (code, out, err) = check(&f);
        assert_ne!(code, 0, "{extra}: {out}");
        let expected = format!("{}: {want}", f.display());
        assert!(
            err.contains(&expected),
            "{err:?} should contain {expected:?}"
        );
    }
    // The shipped example passes as is.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf/examples/nginx-replacement.yaml");
    let (code, out, err) = check(&example);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ui: host * path / (prefix) -> ui (auth off)"),
        "{out}"
    );

    // A reload with a bad route keeps the running config and names the key.
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    p.write_config(&proxy_yaml(
        &worker_list(&workers),
        "routes:\n  - name: a\n    path: /\n    pool: missing\n",
    ));
    let r = reload(&c, &p).await;
    assert_ne!(r.status, 200, "{r:?}");
    assert!(r.body.to_string().contains("routes[0].pool"), "{r:?}");
    let r = send(c.post(format!("{}/sessions", p.base()))).await;
    assert_eq!(
        r.status, 201,
        "the running config (no routes) still serves: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pool_over_tls_verifies_the_upstream_certificate() {
    use crate::support::tls::Ca;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let good = http_service::start_tls("secure", &ca.leaf(&["ui.internal"])).await;
    let wrong = http_service::start_tls("impostor", &ca.leaf(&["other.internal"])).await;
    let tls_pool = |name: &str, addr: SocketAddr| {
        format!(
            "  - name: {name}\n    upstreams: [\"{addr}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
             interval: 200ms\n      failures: 1\n    tls:\n      sni: ui.internal\n      ca_file: \"{}\"\n",
            ca_file.display()
        )
    };
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "pools:\n{}{}routes:\n  - name: good\n    path: /good\n    pool: good\n\
             \x20 - name: wrong\n    path: /wrong\n    pool: wrong\n",
            tls_pool("good", good.addr),
            tls_pool("wrong", wrong.addr),
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();

    let r = get(&c, &p, "x", "/good/page").await;
    assert_eq!((r.status, served_by(&r)), (200, "secure".into()), "{r:?}");
    assert_eq!(good.requests.load(Ordering::SeqCst), 1);

    // A certificate that does not name the SNI: no request ever reaches it, and its
    // health check fails too.
    let r = get(&c, &p, "x", "/wrong/page").await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    let admin = p.admin_base();
    let up = format!("upstream=\"{}\"", wrong.addr);
    let down = eventually(WAIT, || async {
        let m = metrics_at(&c, &admin).await;
        hotplex_e2e::metric_value(&m, rn::POOL_UPSTREAM_HEALTHY, &["pool=\"wrong\"", &up])
            == Some(0.0)
    })
    .await;
    assert!(down, "the impostor's health check passed");
    let r = get(&c, &p, "x", "/wrong/page").await;
    assert_eq!(r.body["error"], "no_healthy_upstream", "{r:?}");
    assert_eq!(wrong.requests.load(Ordering::SeqCst), 0);
}

/// `auth.keys[].routes` scopes a key to http routes by name too: a key of another tenant
/// scoped to the session API gets 403 on the http route and the service sees nothing; the
/// key scoped to the http route gets it, and nothing of the session API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scoped_by_route_name_keep_other_tenants_off_an_http_route() {
    const DOCS_KEY: &str = "routes-docs-key-0123456789";
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let docs = http_service::start("docs").await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "auth:\n  enabled: true\n  keys:\n\
             \x20   - name: tenant-api\n      hash: \"{}\"\n      routes: [create_session, session, messages]\n\
             \x20   - name: tenant-docs\n      hash: \"{}\"\n      routes: [docs]\n\
             pools:\n{}\
             routes:\n  - name: api\n    path: /sessions\n    pool: sessions\n\
             \x20 - name: docs\n    path: /docs\n    pool: docs\n",
            key_hash(KEY),
            key_hash(DOCS_KEY),
            pool("docs", &[&docs], ""),
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = crate::support::client();
    wait_pool_up(&c, &p, "docs", &[&docs]).await;
    let seen_before = docs.seen().len();

    let with_key = |key: &str, rb: reqwest::RequestBuilder| rb.header("x-api-key", key.to_string());
    let r = send(with_key(KEY, c.get(format!("{}/docs/guide", p.base())))).await;
    assert_eq!(
        r.status, 403,
        "the session API's key on the docs route: {r:?}"
    );
    assert_eq!(
        docs.seen().len(),
        seen_before,
        "a refused request never reaches the service"
    );
    let r = send(with_key(
        DOCS_KEY,
        c.get(format!("{}/docs/guide", p.base())),
    ))
    .await;
    assert_eq!((r.status, served_by(&r)), (200, "docs".into()), "{r:?}");
    let r = send(with_key(DOCS_KEY, c.post(format!("{}/sessions", p.base())))).await;
    assert_eq!(r.status, 403, "the docs key on the session API: {r:?}");
    let r = send(with_key(KEY, c.post(format!("{}/sessions", p.base())))).await;
    assert_eq!(r.status, 201, "{r:?}");

    // An unknown route label is still refused, naming the http routes it could have been.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, yaml.replace("routes: [docs]", "routes: [doc]")).expect("write");
    let (code, _, e) = check(&bad);
    assert_ne!(code, 0, "{e}");
    assert!(
        e.contains("auth.keys[1].routes[0]") && e.contains("or an http route: docs"),
        "{e}"
    );
}
