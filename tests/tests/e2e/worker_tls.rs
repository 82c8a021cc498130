//! The worker's own TLS listener (`tls: {cert_file, key_file}`, issue 24 item 3), end to
//! end with real worker processes and a real proxy with `upstream_tls` (the private test CA,
//! `server_name` `{id}`): each worker presents a certificate naming its node id, no
//! terminator in front of it.
//!
//! - HTTP create and get, an SSE turn and a WebSocket turn through the proxy reach both
//!   TLS workers; with `worker_auth.key` too, the identity proof over TLS names the address
//!   dialled. The TLS port serves no plain HTTP.
//! - A real TLS worker whose certificate (same CA) names another node id, and one whose
//!   certificate for its own id comes from another CA, are impostors: refused at the
//!   handshake (reason `certificate`), no session and no request reach them.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::proxy::*;
use crate::support::tls::{https_to, spawn_tls_worker, Ca};
use crate::worker_identity::KEY;
use hotplex_common::names;
use hotplex_e2e::sse::Reader;
use hotplex_e2e::{eventually, metric_value};
use serde_json::json;

const LOCAL: SocketAddr = ANY_PORT;

/// The worker's TLS handshake timeout: a request that waited for a silent handshake would
/// take at least this long.
fn listen_timeout() -> std::time::Duration {
    hotplex_worker::listen::TLS_HANDSHAKE_TIMEOUT
}

fn upstream_tls(ca_file: &Path, extra: &str) -> String {
    format!(
        "upstream_tls:\n  enabled: true\n  ca_file: \"{}\"\nhealth_check:\n  interval: 200ms\n  timeout: 2s\n  failures: 1\n  successes: 1\n{extra}",
        ca_file.display()
    )
}

async fn identities_become(c: &reqwest::Client, p: &TestProxy, want: &[(&str, &str)]) {
    let ok = eventually(WAIT, || async {
        for (id, state) in want {
            if admin_worker(c, p, id).await["identity"] != *state {
                return false;
            }
        }
        true
    })
    .await;
    assert!(ok, "identities {want:?}: {}", admin_workers(c, p).await);
}

/// Two real TLS workers behind the proxy: HTTP, SSE and WebSocket turns work on both,
/// identity verified by certificate and by the (address-bound) proof; plain HTTP to a TLS
/// worker's port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_to_real_tls_workers_http_sse_and_websocket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let keyed = format!("proxy_keys: [\"{KEY}\"]\n");
    let w1 = spawn_tls_worker("w1", LOCAL, &ca.leaf(&["w1"]), &keyed).await;
    let w2 = spawn_tls_worker("w2", LOCAL, &ca.leaf(&["w2"]), &keyed).await;

    // Straight to the worker: HTTPS with the CA and the node id as the name answers (also
    // while 50 connections sit silent mid-handshake: handshakes do not wait for each
    // other); the same port in plain HTTP does not.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(
            tokio::net::TcpStream::connect(w1.addr)
                .await
                .expect("connect"),
        );
    }
    let direct = https_to(&ca, "w1", w1.addr);
    let ok = eventually(WAIT, || async {
        let r = direct
            .get(format!("https://w1:{}/health/live", w1.addr.port()))
            .send()
            .await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok, "the TLS worker answers HTTPS");
    let start = std::time::Instant::now();
    let r = direct
        .get(format!("https://w1:{}/health/ready", w1.addr.port()))
        .send()
        .await
        .expect("HTTPS next to 50 silent connections");
    assert_eq!(r.status(), 200);
    assert!(
        start.elapsed() < listen_timeout(),
        "a handshake waited for the silent ones: {:?}",
        start.elapsed()
    );
    drop(silent);
    let plain = client()
        .get(format!("http://{}/health/live", w1.addr))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP on the TLS port must not be served: {plain:?}"
    );

    let p = spawn_proxy(&proxy_yaml(
        &[("w1", w1.addr), ("w2", w2.addr)],
        &upstream_tls(&ca_file, &format!("worker_auth:\n  key: \"{KEY}\"\n")),
    ))
    .await;
    let c = client();
    identities_become(&c, &p, &[("w1", "verified"), ("w2", "verified")]).await;

    let mut on = std::collections::BTreeMap::<String, String>::new();
    for _ in 0..40 {
        let (id, node) = create(&c, &p.base()).await;
        on.entry(node).or_insert(id);
        if on.len() == 2 {
            break;
        }
    }
    assert_eq!(
        on.keys().map(String::as_str).collect::<Vec<_>>(),
        ["w1", "w2"],
        "sessions placed on both TLS workers"
    );
    for (node, id) in &on {
        let r = get_session(&c, &p.base(), id).await;
        assert_eq!(r.status, 200, "{node}: {r:?}");
        // SSE turn over TLS to the worker.
        let r = c
            .post(format!("{}/sessions/{id}/messages", p.base()))
            .json(&json!({"prompt": format!("hello {node}")}))
            .send()
            .await
            .expect("POST messages");
        assert_eq!(r.status(), 200, "{node}");
        let evs = Reader::new(r).collect().await;
        let names: Vec<&str> = evs.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names.first(), Some(&"thinking"), "{node}: {names:?}");
        assert_eq!(names.last(), Some(&"completed"), "{node}: {names:?}");
        // WebSocket turn on the same session, tunnelled over TLS to the worker.
        let url = format!("ws://{}/ws/v1/agent?session_id={id}", p.listen);
        let (mut ws, resp, _) = ws_connect_checked(&url, &[]).await;
        assert_eq!(
            resp.headers()
                .get("x-hotplex-node")
                .and_then(|v| v.to_str().ok()),
            Some(node.as_str())
        );
        let frames = ws_execute(&mut ws, 1, id, "history")
            .await
            .expect("ws turn");
        assert_eq!(terminal_event(&frames), "completed", "{node}: {frames:?}");
        assert!(
            frames
                .iter()
                .any(|f| f["event"] == "answer" && f.to_string().contains(&format!("hello {node}"))),
            "the WebSocket turn ran in the session of the SSE turn: {frames:?}"
        );
    }
    let m = metrics(&c, &p).await;
    for reason in ["certificate", "address_mismatch", "bad_proof"] {
        assert_eq!(
            metric_value(
                &m,
                names::identity::FAILURES,
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(0.0),
            "{reason}: {m}"
        );
    }
}

/// Requests a TLS worker counted (as [`worker_requests_at`], over HTTPS as `name`). A
/// first scrape makes sure the request histogram has a series even when nothing else
/// ever reached the worker (the scrapes themselves are not counted).
async fn tls_worker_requests(ca: &Ca, name: &str, addr: SocketAddr) -> f64 {
    let c = https_to(ca, name, addr);
    let base = format!("https://{name}:{}", addr.port());
    let first = c.get(format!("{base}/metrics")).send().await;
    assert!(first.is_ok_and(|r| r.status() == 200), "{name} over TLS");
    worker_requests_at(&c, &base).await
}

/// Real TLS workers with valid certificates that do not prove the worker: one of the same
/// CA naming another node id, one for its own id from another CA. Both are refused at the
/// handshake; every session goes to the worker whose certificate names it; the refused
/// workers see no request at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_workers_with_the_wrong_name_or_ca_get_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, other_ca) = (Ca::new(), Ca::new());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let w1 = spawn_tls_worker("w1", LOCAL, &ca.leaf(&["w1"]), "").await;
    let w2 = spawn_tls_worker("w2", LOCAL, &ca.leaf(&["w9"]), "").await;
    let w3 = spawn_tls_worker("w3", LOCAL, &other_ca.leaf(&["w3"]), "").await;
    let p = spawn_proxy(&proxy_yaml(
        &[("w1", w1.addr), ("w2", w2.addr), ("w3", w3.addr)],
        &upstream_tls(&ca_file, ""),
    ))
    .await;
    let c = client();
    identities_become(
        &c,
        &p,
        &[("w1", "verified"), ("w2", "impostor"), ("w3", "impostor")],
    )
    .await;
    for _ in 0..8 {
        let (id, node) = create(&c, &p.base()).await;
        assert_eq!(node, "w1", "only the worker its certificate names: {id}");
        assert_eq!(get_session(&c, &p.base(), &id).await.status, 200, "{id}");
    }
    let failures = |m: &str| {
        metric_value(m, names::identity::FAILURES, &["reason=\"certificate\""]).unwrap_or(0.0)
    };
    let m = metrics_when(&c, &p, |m| failures(m) >= 2.0).await;
    assert!(failures(&m) >= 2.0, "{m}");
    assert_eq!(tls_worker_requests(&ca, "w9", w2.addr).await, 0.0, "w2");
    assert_eq!(
        tls_worker_requests(&other_ca, "w3", w3.addr).await,
        0.0,
        "w3"
    );
    assert!(tls_worker_requests(&ca, "w1", w1.addr).await >= 16.0, "w1");
}
