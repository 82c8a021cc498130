//! Proxy e2e: the edge as a trust boundary (issue 17), with real workers and real clients.
//!
//! - Only the declared public API passes: every worker-internal path, over HTTP/1.1, TLS and
//!   h2, with no key and with a valid tenant key, gets a JSON 404 from the edge, and the
//!   worker's request counters do not move.
//! - Sessions belong to their tenant: tenant B cannot read, drive, stop or delete tenant
//!   A's session (signed id or client-chosen id), over HTTP, SSE or WebSocket, through one
//!   proxy or through a second proxy with the same config; A's session keeps working.
//! - A public non-loopback listener with auth off and no explicit opt-in fails `check`
//!   and start.
//! - Keyless WebSocket connections naming an existing session in frames never create a
//!   second session of that id on any worker; reconnecting with `?session_id=` reaches it.

use hotplex_common::names;
use std::time::Duration;

use crate::support::proxy::*;
use serde_json::{json, Value};

const KEY_A: &str = "tenant-a-secret-key-0123456789";
const KEY_B: &str = "tenant-b-secret-key-0123456789";

fn tenants_yaml(extra: &str) -> String {
    format!(
        "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n    - name: tenant-b\n      hash: \"{}\"\n{extra}",
        key_hash(KEY_A),
        key_hash(KEY_B)
    )
}

/// Requests the worker counted (every route but the scrape itself and the proxy's health
/// probes), from its own /metrics.
async fn worker_requests(c: &reqwest::Client, w: &TestWorker) -> f64 {
    worker_requests_at(c, &w.base()).await
}

/// The sessions a worker holds (its admin list, read directly on loopback).
async fn worker_sessions(c: &reqwest::Client, w: &TestWorker) -> Vec<Value> {
    let r = send(c.get(format!("{}/sessions", w.base()))).await;
    assert_eq!(r.status, 200, "worker session list: {r:?}");
    r.body["sessions"].as_array().cloned().unwrap_or_default()
}

fn session_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter_map(|s| s["session_id"].as_str().map(str::to_string))
        .collect()
}

/// An HTTPS client for the proxy's development certificate (`http1`: no h2).
fn https_client(http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30));
    if http1 {
        b = b.http1_only();
    }
    b.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_internals_are_never_reachable_through_the_edge() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let wl = worker_list(&workers);
    let p = spawn_proxy(&proxy_yaml(
        &wl,
        &tenants_yaml(&format!("tls:\n  listen: \"{ANY_PORT}\"\n")),
    ))
    .await;
    let tls = p.tls.expect("TLS listener");
    let plain = client();
    let h1 = https_client(true);
    let h2 = https_client(false);
    let tls_base = format!("https://{tls}");
    assert!(
        hotplex_e2e::eventually(WAIT, || async {
            h1.get(format!("{tls_base}/health/live"))
                .send()
                .await
                .is_ok()
        })
        .await,
        "TLS listener never came up"
    );
    // A real session, so session-shaped internals have something to hit.
    let r = send(
        plain
            .post(format!("{}/sessions", p.base()))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["session_id"].as_str().expect("id").to_string();

    let mut before = Vec::new();
    for w in &workers {
        before.push(worker_requests(&plain, w).await);
    }
    let internals: Vec<(&str, String)> = vec![
        ("POST", "/admin/drain".into()),
        ("POST", "/admin/resume".into()),
        ("GET", "/sessions".into()),
        ("GET", "/sessions/".into()),
        ("GET", "/metrics".into()),
        ("GET", "/debug/pprof/heap".into()),
        ("GET", "/health/ready".into()),
        ("GET", format!("/sessions/{id}/../../admin/drain")),
        ("POST", format!("/admin/drain?session_id={id}")),
        ("GET", format!("/metrics?session_id={id}")),
        ("PUT", format!("/sessions/{id}")),
        ("GET", "/nothing-here".into()),
    ];
    let clients: [(&str, &reqwest::Client, String); 3] = [
        ("http/1.1", &plain, p.base()),
        ("https/1.1", &h1, tls_base.clone()),
        ("h2", &h2, tls_base.clone()),
    ];
    let mut tried = 0;
    for (proto, c, base) in &clients {
        for (method, path) in &internals {
            for key in [None, Some(KEY_A)] {
                let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let mut rb = c.request(m, format!("{base}{path}"));
                if let Some(k) = key {
                    rb = rb.header("x-api-key", k);
                }
                let resp = rb.send().await.expect("request");
                if *proto == "h2" {
                    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{method} {path}");
                }
                let r = read(resp, std::time::Instant::now()).await;
                assert_eq!(r.status, 404, "{proto} {method} {path} key={key:?}: {r:?}");
                assert_eq!(
                    r.body["error"], "not_found",
                    "{proto} {method} {path}: {r:?}"
                );
                assert_eq!(r.node, None, "{proto} {method} {path} reached a worker");
                tried += 1;
            }
        }
    }
    // The proxy answers its own liveness on the public port, without forwarding.
    let live = send(plain.get(format!("{}/health/live", p.base()))).await;
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(live.body["status"], "live");
    assert_eq!(live.node, None);
    for (w, b) in workers.iter().zip(&before) {
        let after = worker_requests(&plain, w).await;
        assert_eq!(after, *b, "worker {} saw {} requests", w.id, after - b);
        // Not drained: still ready.
        let ready = send(plain.get(format!("{}/health/ready", w.base()))).await;
        assert_eq!(ready.status, 200, "{}: {ready:?}", w.id);
    }
    let refused = metric_at(
        &plain,
        &p.admin_base(),
        names::proxy::REJECTIONS,
        &["reason=\"undeclared_route\""],
    )
    .await;
    assert!(refused >= tried as f64, "{refused} < {tried}");
    // The session is intact.
    let r = send(
        plain
            .get(format!("{}/sessions/{id}", p.base()))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// The SSE text of a `history` turn of session `id` through `base`, as the key's tenant
/// (the demo agent answers with every prompt of the session so far).
async fn history(c: &reqwest::Client, base: &str, key: &str, id: &str) -> String {
    c.post(format!("{base}/sessions/{id}/messages"))
        .header("x-api-key", key)
        .json(&json!({"prompt": "history"}))
        .send()
        .await
        .expect("history")
        .text()
        .await
        .expect("text")
}

/// Everything tenant B tries on tenant A's session `id`, through `base`: 404, never
/// forwarded.
async fn b_cannot_touch(c: &reqwest::Client, base: &str, id: &str) {
    for (method, path, body) in [
        ("GET", format!("/sessions/{id}"), None),
        ("DELETE", format!("/sessions/{id}"), None),
        (
            "POST",
            format!("/sessions/{id}/messages"),
            Some(json!({"prompt": "history"})),
        ),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = c
            .request(m, format!("{base}{path}"))
            .header("x-api-key", KEY_B);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = send(rb).await;
        assert_eq!(r.status, 404, "B {method} {path}: {r:?}");
        assert_eq!(r.body["error"], "session_not_found", "{r:?}");
        assert_eq!(r.node, None, "B {method} {path} was forwarded");
    }
    // Nor list sessions (the worker's session list is not on the public surface).
    let r = send(c.get(format!("{base}/sessions")).header("x-api-key", KEY_B)).await;
    assert_eq!(
        (r.status, r.node.as_deref()),
        (404, None),
        "B listed: {r:?}"
    );
    // The session id in the header or the query: the same.
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", KEY_B)
            .header("x-hotplex-session", id),
    )
    .await;
    assert_eq!(r.status, 404, "B create with A's id: {r:?}");
    let url = format!("{}/ws/v1/agent?session_id={id}", base.replace("http", "ws"));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("ws request");
    req.headers_mut()
        .insert("x-api-key", KEY_B.parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404, "B's WebSocket to A's session");
        }
        other => panic!(
            "B's WebSocket to A's session opened: {:?}",
            other.map(|x| x.1)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_cannot_touch_each_others_sessions() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let wl = worker_list(&workers);
    let yaml = proxy_yaml(&wl, &tenants_yaml(""));
    let p1 = spawn_proxy(&yaml).await;
    let p2 = spawn_proxy(&yaml).await;
    let c = client();

    // A: a session with one turn.
    let r = send(
        c.post(format!("{}/sessions", p1.base()))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["session_id"].as_str().expect("id").to_string();
    let turn = send(
        c.post(format!("{}/sessions/{id}/messages", p1.base()))
            .header("x-api-key", KEY_A)
            .json(&json!({"prompt": "a-secret-prompt"})),
    )
    .await;
    assert_eq!(turn.status, 200, "{turn:?}");

    let mut before = Vec::new();
    for w in &workers {
        before.push(worker_requests(&c, w).await);
    }
    for p in [&p1, &p2] {
        b_cannot_touch(&c, &p.base(), &id).await;
    }
    for (w, b) in workers.iter().zip(&before) {
        assert_eq!(worker_requests(&c, w).await, *b, "{}: B reached it", w.id);
    }

    // B over a WebSocket of its own, naming A's id in frames: refused by the worker
    // (the proxy cannot see frames), and nothing is created.
    let url = format!("ws://{}/ws/v1/agent", p2.listen);
    let (mut ws, _, _) = ws_connect_checked(&url, &[("x-api-key", KEY_B)]).await;
    let frames = ws_execute(&mut ws, 7, &id, "history")
        .await
        .expect("a turn");
    assert_eq!(terminal_event(&frames), "error", "{frames:?}");
    let code = frames.last().map(|f| f["data"]["error"].clone());
    assert!(
        matches!(
            code.as_ref().and_then(Value::as_str),
            Some("session_not_found" | "session_elsewhere")
        ),
        "{frames:?}"
    );
    assert!(!format!("{frames:?}").contains("a-secret-prompt"));
    {
        use futures_util::{SinkExt, StreamExt};
        let stop = json!({"type":"stop","request_id":8,"session_id":id});
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            stop.to_string(),
        ))
        .await
        .expect("send stop");
        let reply = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("stop reply")
            .expect("frame")
            .expect("ok");
        let v: Value = serde_json::from_str(reply.to_text().expect("text")).expect("json");
        assert_eq!(v["event"], "error", "B stopped A's session: {v}");
        assert_eq!(v["data"]["error"], "session_not_found", "{v}");
    }

    // Client-chosen ids are per tenant: both create demo-1, each gets its own session.
    for (key, prompt) in [(KEY_A, "a-demo-turn"), (KEY_B, "b-demo-turn")] {
        let r = send(
            c.post(format!("{}/sessions", p1.base()))
                .header("x-api-key", key)
                .header("x-hotplex-session", "demo-1"),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.body["session_id"], "demo-1");
        let t = send(
            c.post(format!("{}/sessions/demo-1/messages", p2.base()))
                .header("x-api-key", key)
                .json(&json!({"prompt": prompt})),
        )
        .await;
        assert_eq!(t.status, 200, "{t:?}");
    }
    let b_hist = history(&c, &p1.base(), KEY_B, "demo-1").await;
    assert!(b_hist.contains("b-demo-turn"), "B's own history: {b_hist}");
    assert!(
        !b_hist.contains("a-demo-turn"),
        "B read A's demo-1: {b_hist}"
    );
    let mut demo = 0;
    for w in &workers {
        demo += session_ids(&worker_sessions(&c, w).await)
            .iter()
            .filter(|s| *s == "demo-1")
            .count();
    }
    assert_eq!(demo, 2, "two tenants, two demo-1 sessions");

    // A's session still works, through either proxy, and still holds A's turn.
    let hist = history(&c, &p2.base(), KEY_A, &id).await;
    assert!(hist.contains("a-secret-prompt"), "{hist}");
    let r = send(
        c.delete(format!("{}/sessions/{id}", p2.base()))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_public_listener_needs_an_explicit_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("listen: 0.0.0.0:18000\n", false),
        ("listen: 127.0.0.1:18000\ntls:\n  listen: 0.0.0.0:18443\n", false),
        ("listen: 0.0.0.0:18000\nauth:\n  allow_anonymous: true\n", true),
        ("listen: 127.0.0.1:18000\n", true),
        (
            &format!(
                "listen: 0.0.0.0:18000\nauth:\n  enabled: true\n  keys:\n    - name: a\n      hash: \"{}\"\n",
                key_hash(KEY_A)
            ),
            true,
        ),
    ];
    for (i, (head, ok)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(
            &path,
            format!("{head}workers:\n  - id: w1\n    address: 127.0.0.1:9\n"),
        )
        .expect("write");
        let (code, out, err) = check(&path);
        if *ok {
            assert_eq!(code, 0, "{head}: {out}{err}");
        } else {
            assert_ne!(code, 0, "{head} passed check: {out}");
            assert!(err.contains("auth.allow_anonymous"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            // And it does not start either.
            let out = std::process::Command::new(PROXY_BIN)
                .arg("--config")
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run proxy");
            assert!(!out.status.success(), "{head}: started");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("auth.allow_anonymous"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_websockets_never_split_a_session() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let wl = worker_list(&workers);
    let p = spawn_proxy(&proxy_yaml(&wl, "")).await;
    let c = client();
    let (id, node) = create(&c, &p.base()).await;
    let t = send(
        c.post(format!("{}/sessions/{id}/messages", p.base()))
            .json(&json!({"prompt": "remember-me"})),
    )
    .await;
    assert_eq!(t.status, 200, "{t:?}");
    let url = format!("ws://{}/ws/v1/agent", p.listen);
    let (mut elsewhere, mut here) = (0, 0);
    for i in 0..6u64 {
        let (mut ws, _, _) = ws_connect_checked(&url, &[]).await;
        let frames = ws_execute(&mut ws, i, &id, "hello").await.expect("a turn");
        match terminal_event(&frames).as_str() {
            "completed" => here += 1,
            "error" => {
                let data = &frames.last().expect("frame")["data"];
                assert_eq!(data["error"], "session_elsewhere", "{frames:?}");
                let hint = data["reconnect"].as_str().unwrap_or_default();
                assert!(hint.contains(&format!("session_id={id}")), "{data}");
                elsewhere += 1;
            }
            other => panic!("{other}: {frames:?}"),
        }
    }
    println!(
        "6 keyless connections: {here} on the session's worker, {elsewhere} told to reconnect"
    );
    let mut holders = Vec::new();
    for w in &workers {
        let n = session_ids(&worker_sessions(&c, w).await)
            .iter()
            .filter(|s| **s == id)
            .count();
        assert!(n <= 1, "{} holds {n} sessions {id}", w.id);
        if n == 1 {
            holders.push(w.id.clone());
        }
    }
    assert_eq!(
        holders,
        vec![node.clone()],
        "only the original worker holds {id}"
    );
    // Reconnecting as documented reaches the original conversation.
    let (mut ws, _, _) = ws_connect_checked(&format!("{url}?session_id={id}"), &[]).await;
    let frames = ws_execute(&mut ws, 99, &id, "history")
        .await
        .expect("a turn");
    assert_eq!(terminal_event(&frames), "completed", "{frames:?}");
    assert!(format!("{frames:?}").contains("remember-me"), "{frames:?}");
}
