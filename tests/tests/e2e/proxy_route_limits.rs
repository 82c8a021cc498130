//! Proxy e2e: per-route timeouts and body limits (`routes[].timeouts`,
//! `routes[].max_body_bytes`, issue #19), with the real proxy binary, a real HTTP service
//! behind an `http` pool and a real worker behind a `sessions` route.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::client;
use crate::support::http_service::{self, HttpService, HEALTH_PATH};
use crate::support::proxy::*;

fn pool(svc: &HttpService) -> String {
    format!(
        "pools:\n  - name: svc\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
         interval: 200ms\n      failures: 1\n      successes: 1\n",
        svc.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_read_timeout_answers_504_long_before_the_global_one() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let svc = http_service::start("svc").await;
    // Global read timeout 10 s (proxy_yaml); the `quick` route's 300 ms.
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &format!(
            "{}routes:\n  - name: quick\n    path: /quick\n    pool: svc\n    auth: off\n    \
             timeouts: {{read: 300ms}}\n  - name: rest\n    path: /\n    pool: svc\n    auth: off\n",
            pool(&svc)
        ),
    ))
    .await;
    let c = client();
    let ok = send(c.get(format!("{}/quick/fast", p.base()))).await;
    assert_eq!(ok.status, 200, "{ok:?}");

    let start = Instant::now();
    let r = send(c.get(format!("{}/quick/slow/x", p.base()))).await;
    let took = start.elapsed();
    svc.release();
    println!("route read timeout 300ms: 504 after {took:?}");
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body["error"], "upstream_timeout", "{:?}", r.body);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the global 10 s applied: {took:?}"
    );

    // The other route keeps the global timeout: a held request is answered once released.
    let c2 = c.clone();
    let url = format!("{}/rest/slow/y", p.base());
    let held = tokio::spawn(async move { send(c2.get(url)).await });
    let seen = hotplex_e2e::eventually(WAIT, || async {
        svc.seen().iter().any(|(_, path)| path == "/rest/slow/y")
    })
    .await;
    assert!(seen, "the held request reached the service");
    // allow-sleep: the held request must outlive the route's 300 ms to show it is not cut.
    tokio::time::sleep(Duration::from_millis(800)).await;
    svc.release();
    let r = held.await.expect("join");
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_body_limit_answers_413_and_other_routes_keep_the_global_one() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let svc = http_service::start("svc").await;
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &format!(
            "{}routes:\n  - name: upload\n    path: /upload\n    pool: svc\n    auth: off\n    max_body_bytes: 1024\n\
             \x20 - name: api\n    path: /sessions\n    pool: sessions\n    max_body_bytes: 64\n\
             \x20 - name: rest\n    path: /\n    pool: svc\n    auth: off\n",
            pool(&svc)
        ),
    ))
    .await;
    let c = client();
    let post = |path: &str, n: usize| c.post(format!("{}{path}", p.base())).body(vec![b'a'; n]);

    let r = send(post("/upload/a", 1024)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(post("/upload/b", 1025)).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["error"], "payload_too_large", "{:?}", r.body);
    assert!(
        !svc.seen().iter().any(|(_, path)| path == "/upload/b"),
        "a refused body is never forwarded"
    );
    // Without Content-Length (chunked): the same limit.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'c'; 400]))),
    );
    let r = send(
        c.post(format!("{}/upload/c", p.base()))
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    // Another route: the global 64 KiB.
    let r = send(post("/other", 30_000)).await;
    assert_eq!(r.status, 200, "{r:?}");

    // A sessions route with 64 bytes: a short turn passes, a long prompt is refused.
    let (id, _) = create(&c, &p.base()).await;
    let turn = |prompt: String| {
        c.post(format!("{}/sessions/{id}/messages", p.base()))
            .json(&json!({ "prompt": prompt }))
    };
    let r = turn("hi".into()).send().await.expect("turn");
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let r = send(turn("x".repeat(100))).await;
    assert_eq!(r.status, 413, "{r:?}");
}
