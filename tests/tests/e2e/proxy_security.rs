//! Proxy e2e: API-key authentication (header, Bearer, WebSocket subprotocol; hash, env and
//! file keys; 401/403 JSON; public paths), body size (413), rate limits (accuracy within
//! ±5%, `RateLimit-*` / `Retry-After` headers), trusted `X-Forwarded-For`, new sessions per
//! minute, concurrent WebSockets per key, the audit log, metrics, and hot reload of it all.

use hotplex_common::names;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use hotplex_e2e::metric_value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY_A: &str = "tenant-a-secret-key-0123456789";
const KEY_B: &str = "tenant-b-secret-key-from-env";
const KEY_C: &str = "tenant-c-secret-key-from-file";
const KEY_B_ENV: &str = "HOTPLEX_E2E_SECURITY_KEY_B";

type WsResult = Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
>;

async fn ws_open(listen: SocketAddr, protocols: Option<&str>) -> WsResult {
    let mut req = format!("ws://{listen}/ws/v1/agent")
        .into_client_request()
        .expect("ws request");
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(req).await
}

fn ws_status(r: &WsResult) -> u16 {
    match r {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("websocket error {e}"),
    }
}

fn auth_yaml(ws: &[(&str, SocketAddr)], dir: &std::path::Path, enabled: bool) -> String {
    let key_c = dir.join("key-c.txt");
    std::fs::write(&key_c, format!("{KEY_C}\n")).expect("key file");
    proxy_yaml(
        ws,
        &format!(
            "auth:\n  enabled: {enabled}\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n    - name: tenant-b\n      env: {KEY_B_ENV}\n    - name: tenant-c\n      file: \"{}\"\n      routes: [session]\nlimits:\n  max_body_bytes: 1000\n",
            key_hash(KEY_A),
            key_c.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_public_paths_body_limit_audit_and_reload() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let wl = worker_list(&workers);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = spawn_logged_proxy(
        dir.path(),
        &auth_yaml(&wl, dir.path(), true),
        &[(KEY_B_ENV, KEY_B)],
    )
    .await;
    let c = client();
    let base = p.base();

    // No key / unknown key: 401 JSON + WWW-Authenticate.
    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 401);
    assert_eq!(
        hdr(&r, "www-authenticate").as_deref(),
        Some("Bearer realm=\"hotplex\"")
    );
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["error"], "unauthorized");
    assert_eq!(v["reason"], "missing_key");
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", "wrong-key"),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["reason"], "invalid_key");

    // Public path: no key needed (the proxy's own liveness).
    let r = send(c.get(format!("{base}/health/live"))).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Hash key via X-API-Key, env key via Bearer, file key limited to `session`.
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["session_id"].as_str().expect("id").to_string();
    // The keys authenticate (404, not 401/403), but tenant A's session is not theirs:
    // the same answer as an unknown session, and nothing reaches a worker.
    for (name, value) in [
        ("authorization", format!("Bearer {KEY_B}")),
        ("x-api-key", KEY_C.to_string()),
    ] {
        let r = send(c.get(format!("{base}/sessions/{id}")).header(name, &value)).await;
        assert_eq!(r.status, 404, "{name}: {r:?}");
        assert_eq!(r.body["error"], "session_not_found", "{r:?}");
        assert_eq!(r.node, None, "{name}: forwarded");
    }
    let r = send(
        c.get(format!("{base}/sessions/{id}"))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 200, "the owner: {r:?}");
    // tenant-b (env key via Bearer) works on its own session.
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("authorization", format!("Bearer {KEY_B}")),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id_b = r.body["session_id"].as_str().expect("id").to_string();
    let r = send(
        c.get(format!("{base}/sessions/{id_b}"))
            .header("authorization", format!("Bearer {KEY_B}")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", KEY_C),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body["error"], "forbidden");

    // WebSocket: key in the subprotocol.
    let ok = ws_open(p.listen, Some(&format!("hotplex, hotplex-api-{KEY_A}"))).await;
    assert_eq!(ws_status(&ok), 101);
    drop(ok);
    let denied = ws_open(p.listen, Some("hotplex")).await;
    assert_eq!(ws_status(&denied), 401);

    // Body over limits.max_body_bytes: 413.
    let r = send(
        c.post(format!("{base}/sessions/{id}/messages"))
            .header("x-api-key", KEY_A)
            .body(vec![b'x'; 5000]),
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["error"], "payload_too_large");

    // Metrics.
    let admin = p.admin_base();
    assert!(
        metric_at(
            &c,
            &admin,
            names::proxy::AUTH_FAILURES,
            &["reason=\"missing_key\""]
        )
        .await
            >= 2.0
    );
    assert!(
        metric_at(
            &c,
            &admin,
            names::proxy::AUTH_FAILURES,
            &["reason=\"invalid_key\""]
        )
        .await
            >= 1.0
    );
    assert!(
        metric_at(
            &c,
            &admin,
            names::proxy::AUTH_FAILURES,
            &["reason=\"forbidden_route\""]
        )
        .await
            >= 1.0
    );
    assert!(metric_at(&c, &admin, names::proxy::REJECTIONS, &["reason=\"auth\""]).await >= 4.0);
    assert!(
        metric_at(
            &c,
            &admin,
            names::proxy::REJECTIONS,
            &["reason=\"too_large\""]
        )
        .await
            >= 1.0
    );

    // Audit log: JSON lines, target audit, who/what/outcome, never a key.
    let log = p.log();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    assert!(audit.len() >= 4, "audit lines: {log}");
    assert!(audit.iter().any(|v| {
        let f = v;
        f["action"] == "auth"
            && f["outcome"] == "denied"
            && f["ip"] == "127.0.0.1"
            && f["detail"].as_str().unwrap_or("").contains("missing_key")
    }));
    assert!(audit.iter().any(|v| v["actor"] == "tenant-c"
        && v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("forbidden_route")));
    for k in [KEY_A, KEY_B, KEY_C, "wrong-key"] {
        assert!(!log.contains(k), "a key leaked into the log");
    }

    // Hot reload: auth off; then a limits change is audited.
    // Not silently: the file must say so (a half-written file reads the same).
    p.write_config(&auth_yaml(&wl, dir.path(), false));
    let r = send(c.post(format!("{admin}/admin/reload"))).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["key"], "auth.enabled", "{r:?}");
    let r = send(c.post(format!("{base}/sessions"))).await;
    assert_eq!(
        r.status, 401,
        "auth still on after the refused reload: {r:?}"
    );
    p.write_config(&format!(
        "allow_security_downgrade: true\n{}",
        auth_yaml(&wl, dir.path(), false)
    ));
    let r = send(c.post(format!("{admin}/admin/reload"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    // No key needed any more: a keyless client is the anonymous tenant (not A)...
    let r = send(c.get(format!("{base}/sessions/{id}"))).await;
    assert_eq!(r.status, 404, "after reload: {r:?}");
    assert_eq!(r.body["error"], "session_not_found", "after reload: {r:?}");
    // ...while a valid key still names its tenant.
    let r = send(
        c.get(format!("{base}/sessions/{id}"))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 200, "after reload: {r:?}");
    p.write_config(&format!(
        "allow_security_downgrade: true\n{}",
        auth_yaml(&wl, dir.path(), false).replace("max_body_bytes: 1000", "max_body_bytes: 60000")
    ));
    let r = send(c.post(format!("{admin}/admin/reload"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        c.post(format!("{base}/sessions/{id}/messages"))
            .header("x-api-key", KEY_A)
            .header("accept", "application/json")
            .body(vec![b'x'; 5000]),
    )
    .await;
    assert_ne!(r.status, 413, "limit raised by reload: {r:?}");
    let deadline = Instant::now() + WAIT;
    while !p.log().contains("limits.change") {
        assert!(Instant::now() < deadline, "no limits.change audit line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Config reloads are audited too: who (the trigger), what, the outcome and the hash.
    let reloads: Vec<serde_json::Value> = p
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit" && v["action"] == "config.reload")
        .collect();
    assert!(reloads.len() >= 3, "reload audit lines: {reloads:?}");
    let ok: Vec<&serde_json::Value> = reloads
        .iter()
        .filter(|v| v["outcome"] == "success")
        .collect();
    assert!(ok.len() >= 2, "{reloads:?}");
    assert!(ok
        .iter()
        .all(|v| v["detail"].as_str().unwrap_or("").starts_with("hash=")));
    // The auth-off reload names what it changed; the refused one says why.
    assert!(
        ok.iter().any(|v| v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("auth.enabled true -> false")),
        "{reloads:?}"
    );
    assert!(
        reloads.iter().any(|v| v["outcome"] == "failure"
            && v["detail"]
                .as_str()
                .unwrap_or("")
                .contains("security downgrade")),
        "{reloads:?}"
    );
}

/// Offers ~2x the configured rate for 4 s from one client: the admitted count must be
/// `rate * T + burst` within ±5%.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_ip_rate_limit_is_accurate_and_sends_headers() {
    const RATE: f64 = 50.0;
    const BURST: u32 = 10;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &format!("limits:\n  per_ip: {{rate: {RATE}, burst: {BURST}}}\n"),
    ))
    .await;
    let c = client();
    // A declared route (forwarded when admitted: the worker answers 404 for the unknown
    // session); the proxy's own /health/live is not limited (load-balancer probes).
    let url = format!("{}/sessions/rate-probe", p.base());
    let offered_rate = 2.0 * RATE;
    let n = (offered_rate * 4.0) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / offered_rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tick.tick().await;
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = c.get(url).send().await.expect("request");
            let h = |n: &str| hdr(&r, n);
            let out = (
                r.status().as_u16(),
                h("retry-after"),
                h("ratelimit-limit"),
                h("ratelimit-remaining"),
                h("ratelimit-reset"),
            );
            (Instant::now(), out)
        }));
    }
    let offered_secs = start.elapsed().as_secs_f64();
    let mut admitted = 0usize;
    let mut limited = 0usize;
    for t in tasks {
        let (_, (status, retry, limit, remaining, reset)) = t.await.expect("task");
        match status {
            429 => {
                limited += 1;
                let retry: u64 = retry.expect("Retry-After").parse().expect("int");
                assert!((1..=2).contains(&retry), "retry-after {retry}");
                assert_eq!(limit.as_deref(), Some("10"));
                assert_eq!(remaining.as_deref(), Some("0"));
                assert!(reset.is_some());
            }
            404 => {
                admitted += 1;
                assert_eq!(limit.as_deref(), Some("10"));
                let rem: u32 = remaining.expect("remaining").parse().expect("int");
                assert!(rem < BURST);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let expected = RATE * offered_secs + f64::from(BURST);
    let err = (admitted as f64 - expected) / expected;
    eprintln!(
        "rate limit: offered {n} in {offered_secs:.2}s ({:.1}/s), admitted {admitted} (expected {expected:.1}, error {:+.2}%), limited {limited}",
        n as f64 / offered_secs,
        err * 100.0
    );
    assert!(
        err.abs() <= 0.05,
        "admitted {admitted} vs expected {expected:.1}"
    );
    let m = metrics(&c, &p).await;
    assert!(
        metric_value(
            &m,
            names::proxy::RATE_LIMITED,
            &["key=\"-\"", "route=\"session\""]
        )
        .unwrap_or(0.0)
            >= limited as f64
    );
}

/// Trusted proxies: the client IP comes from `X-Forwarded-For` only from a trusted peer.
/// Per-key new-session and WebSocket limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trusted_xff_new_sessions_and_websockets_per_key() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let wl = worker_list(&workers);
    let c = client();

    // Per-IP bucket of 3 with a trusted loopback peer: two XFF clients, separate buckets.
    let p = spawn_proxy(&proxy_yaml(
        &wl,
        "limits:\n  trusted_proxies: [127.0.0.0/8]\n  per_ip: {rate: 0.01, burst: 3}\n",
    ))
    .await;
    // Admitted requests are forwarded: the worker answers 404 for the unknown session.
    let url = format!("{}/sessions/xff-probe", p.base());
    let get = |xff: &'static str| c.get(&url).header("x-forwarded-for", xff);
    for _ in 0..3 {
        assert_eq!(send(get("9.9.9.9")).await.status, 404);
    }
    assert_eq!(send(get("9.9.9.9")).await.status, 429);
    // Spoofed left-most entry does not help: the right-most untrusted one counts.
    assert_eq!(send(get("1.1.1.1, 9.9.9.9")).await.status, 429);
    assert_eq!(send(get("8.8.8.8")).await.status, 404);
    drop(p);

    // Untrusted peer: XFF ignored, everything is 127.0.0.1.
    let p = spawn_proxy(&proxy_yaml(
        &wl,
        "limits:\n  per_ip: {rate: 0.01, burst: 2}\n",
    ))
    .await;
    let url = format!("{}/sessions/xff-probe", p.base());
    assert_eq!(
        send(c.get(&url).header("x-forwarded-for", "1.1.1.1"))
            .await
            .status,
        404
    );
    assert_eq!(
        send(c.get(&url).header("x-forwarded-for", "2.2.2.2"))
            .await
            .status,
        404
    );
    assert_eq!(
        send(c.get(&url).header("x-forwarded-for", "3.3.3.3"))
            .await
            .status,
        429
    );
    drop(p);

    // Per key: 3 new sessions a minute, 2 concurrent WebSockets.
    let p = spawn_proxy(&proxy_yaml(
        &wl,
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n    - name: tenant-b\n      hash: \"{}\"\nlimits:\n  new_sessions_per_minute: 3\n  max_websockets_per_key: 2\n",
            key_hash(KEY_A),
            key_hash(KEY_B)
        ),
    ))
    .await;
    let base = p.base();
    for _ in 0..3 {
        let r = send(
            c.post(format!("{base}/sessions"))
                .header("x-api-key", KEY_A),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    let retry: u64 = r.retry_after.expect("retry-after").parse().expect("int");
    assert!((19..=21).contains(&retry), "one session per 20 s: {retry}");
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", KEY_B),
    )
    .await;
    assert_eq!(r.status, 201, "other tenant unaffected: {r:?}");

    let proto_a = format!("hotplex, hotplex-api-{KEY_A}");
    // Two tunnels proven alive (a version round trip) hold the key's two slots.
    let url = format!("ws://{}/ws/v1/agent", p.listen);
    let (mut w1, r1, _) = ws_connect_checked(&url, &[("sec-websocket-protocol", &proto_a)]).await;
    let (_w2, r2, _) = ws_connect_checked(&url, &[("sec-websocket-protocol", &proto_a)]).await;
    assert_eq!((r1.status().as_u16(), r2.status().as_u16()), (101, 101));
    let w3 = ws_open(p.listen, Some(&proto_a)).await;
    assert_eq!(ws_status(&w3), 429);
    let wb = ws_open(p.listen, Some(&format!("hotplex, hotplex-api-{KEY_B}"))).await;
    assert_eq!(ws_status(&wb), 101, "other tenant unaffected");
    let _ = w1.close(None).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let w = ws_open(p.listen, Some(&proto_a)).await;
        if ws_status(&w) == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = metrics(&c, &p).await;
    assert!(
        metric_value(
            &m,
            names::proxy::RATE_LIMITED,
            &["key=\"tenant-a\"", "route=\"websocket\""]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        metric_value(
            &m,
            names::proxy::RATE_LIMITED,
            &["key=\"tenant-a\"", "route=\"create_session\""]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}
