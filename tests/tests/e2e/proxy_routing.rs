//! Proxy e2e: routing by each key source and their order, foreign keys, invalid keys,
//! forwarding headers and request ids, and the `/metrics` names moving.

use hotplex_common::names;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::proxy::*;
use hotplex_e2e::metric_value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Creates sessions through `base` until two land on different nodes.
async fn two_sessions_on_different_nodes(
    c: &reqwest::Client,
    base: &str,
) -> ((String, String), (String, String)) {
    let first = create(c, base).await;
    for _ in 0..50 {
        let other = create(c, base).await;
        if other.1 != first.1 {
            return (first, other);
        }
    }
    panic!("all sessions landed on {}", first.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_source_routes_and_the_order_decides() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let list = worker_list(&workers);
    let p = spawn_proxy(&proxy_yaml(&list, "")).await;
    let base = p.base();
    let c = client();

    let ((a, node_a), (b, node_b)) = two_sessions_on_different_nodes(&c, &base).await;
    assert!(
        a.starts_with(&format!("{node_a}.")),
        "pinned id names its worker: {a}"
    );

    // path
    let r = get_session(&c, &base, &a).await;
    assert_eq!((r.status, r.node.as_deref()), (200, Some(node_a.as_str())));
    assert_eq!(
        r.worker.as_deref(),
        Some(node_a.as_str()),
        "X-Hotplex-Worker"
    );
    // query (GET /sessions has no path key)
    // (a create naming an existing id: the worker answers 409, after routing)
    let r = send(c.post(format!("{base}/sessions?session_id={b}"))).await;
    assert_eq!(r.node.as_deref(), Some(node_b.as_str()), "query");
    // header
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-hotplex-session", &a),
    )
    .await;
    assert_eq!(r.node.as_deref(), Some(node_a.as_str()), "header");
    // cookie: the affinity cookie of a keyless response
    let created = send(c.post(format!("{base}/sessions"))).await;
    let cookie = created
        .set_cookie
        .expect("keyless responses set the affinity cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/")
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let cookie_node = created.node.expect("node");
    for _ in 0..5 {
        let r = send(
            c.post(format!("{base}/sessions"))
                .header("cookie", format!("x=1; {pair}")),
        )
        .await;
        assert_eq!(r.node.as_deref(), Some(cookie_node.as_str()), "cookie");
    }
    // Keyed responses do not set the cookie.
    assert!(get_session(&c, &base, &a).await.set_cookie.is_none());

    // Order: path, query, header by default.
    let mixed = format!("{base}/sessions/{a}?session_id={b}");
    let r = send(c.get(&mixed).header("x-hotplex-session", &b)).await;
    assert_eq!(
        r.node.as_deref(),
        Some(node_a.as_str()),
        "path wins by default"
    );
    // A second proxy (same secret, other order) routes the same request by the header.
    let p2 = spawn_proxy(&proxy_yaml(
        &list,
        "routing:\n  key_sources: [header, query, path]\n  affinity_secrets: [\"e2e-test-secret-0123456789\"]\n",
    ))
    .await;
    let mixed2 = format!("{}/sessions/{a}?session_id={b}", p2.base());
    let r = send(c.get(&mixed2).header("x-hotplex-session", &b)).await;
    assert_eq!(r.node.as_deref(), Some(node_b.as_str()), "header first");
    let r = send(c.get(&mixed2)).await;
    assert_eq!(r.node.as_deref(), Some(node_b.as_str()), "then query");
    let r = send(c.get(format!("{}/sessions/{a}", p2.base()))).await;
    assert_eq!(r.node.as_deref(), Some(node_a.as_str()), "then path");

    // Foreign (client-chosen) keys: hashed, the same on both proxies.
    for k in 0..12 {
        let id = format!("client-chosen-{k}");
        let r = send(
            c.post(format!("{base}/sessions"))
                .header("x-hotplex-session", &id),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.body["session_id"], id.as_str(), "worker adopted the id");
        let node = r.node.expect("node");
        for b in [&base, &p2.base()] {
            let g = get_session(&c, b, &id).await;
            assert_eq!(
                (g.status, g.node.as_deref()),
                (200, Some(node.as_str())),
                "{id}"
            );
        }
    }

    // A forged routable-looking id (mac of another worker) is not trusted: hashed.
    let mut parts: Vec<&str> = a.split('.').collect();
    let other = if node_a == "w1" { "w2" } else { "w1" };
    parts[0] = other;
    let forged = parts.join(".");
    let r = get_session(&c, &base, &forged).await;
    assert_eq!(r.status, 404, "forged id: {r:?}");
    assert_eq!(r.body["error"], "session_not_found", "{r:?}");
    assert!(
        r.node.is_none(),
        "a forged signed id is refused at the edge: {r:?}"
    );

    // Invalid keys: 400 JSON from the proxy.
    for (post, url, hdr) in [
        (false, format!("{base}/sessions/a%20b"), None),
        (true, format!("{base}/sessions?session_id=bad%00"), None),
        (true, format!("{base}/sessions"), Some("x".repeat(200))),
    ] {
        let mut rb = if post { c.post(&url) } else { c.get(&url) };
        if let Some(h) = hdr {
            rb = rb.header("x-hotplex-session", h);
        }
        let r = send(rb).await;
        assert_eq!(r.status, 400, "{url}: {r:?}");
        assert_eq!(r.body["error"], "invalid_session_id");
        assert!(
            r.worker.is_none() && r.node.is_none(),
            "answered by the proxy"
        );
        assert!(r.request_id.is_some());
    }
}

/// A fake worker that answers every request with the request's headers as JSON.
async fn echo_worker() -> (SocketAddr, Arc<Mutex<Vec<HashMap<String, String>>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                        buf.drain(..i + 4);
                        let mut lines = head.lines();
                        let path = lines
                            .next()
                            .unwrap_or("")
                            .split(' ')
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        let headers: HashMap<String, String> = lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect();
                        let body = if path == "/health/ready" {
                            r#"{"status":"ready","node_id":"echo","sessions_active":0,"max_sessions":100}"#.to_string()
                        } else {
                            let b = serde_json::to_string(&headers).unwrap_or_default();
                            seen.lock().expect("lock").push(headers);
                            b
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-hotplex-node: echo\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_request_ids() {
    let (addr, seen) = echo_worker().await;
    let p = spawn_proxy(&proxy_yaml(&[("echo", addr)], "")).await;
    let c = client();

    // Request id generated (uuid v4) when absent, same upstream and in the response.
    let r = send(c.get(format!("{}/sessions/anything", p.base()))).await;
    assert_eq!(r.status, 200);
    let rid = r.request_id.expect("x-request-id echoed");
    assert_eq!(rid.len(), 36, "uuid: {rid}");
    assert_eq!(r.body["x-request-id"], rid.as_str());
    assert_eq!(r.body["x-forwarded-for"], "127.0.0.1");
    assert_eq!(r.body["x-forwarded-proto"], "http");
    assert_eq!(r.body["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(r.worker.as_deref(), Some("echo"));

    // Passed on when present; XFF / Forwarded appended; hop-by-hop stripped.
    let r = send(
        c.get(format!("{}/sessions/anything", p.base()))
            .header("x-forwarded-proto", "https")
            .header("x-hotplex-tenant", "forged-tenant")
            .header("x-hotplex-proxy-auth", "forged")
            .header("x-hotplex-worker", "w9")
            .header("x-api-key", "client-credential")
            .header("x-request-id", "my-trace-42")
            .header("x-forwarded-for", "203.0.113.7")
            .header("forwarded", "for=203.0.113.7")
            .header("connection", "x-secret-hop")
            .header("x-secret-hop", "1")
            .header("te", "gzip")
            .header("proxy-connection", "keep-alive"),
    )
    .await;
    assert_eq!(r.request_id.as_deref(), Some("my-trace-42"));
    assert_eq!(r.body["x-request-id"], "my-trace-42");
    assert_eq!(r.body["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        r.body["forwarded"],
        "for=203.0.113.7, for=127.0.0.1;proto=http"
    );
    for hop in ["x-secret-hop", "te", "proxy-connection"] {
        assert!(r.body.get(hop).is_none(), "{hop} forwarded: {}", r.body);
    }
    // The edge's own view, never the client's: scheme, tenant (anonymous: none), worker,
    // routed session; no client credential reaches the worker.
    assert_eq!(r.body["x-forwarded-proto"], "http", "{}", r.body);
    for h in ["x-hotplex-tenant", "x-hotplex-proxy-auth", "x-api-key"] {
        assert!(r.body.get(h).is_none(), "{h} forwarded: {}", r.body);
    }
    assert_eq!(r.body["x-hotplex-worker"], "echo", "{}", r.body);
    assert_eq!(r.body["x-hotplex-session"], "anything", "{}", r.body);
    // New sessions carry the minted id to the worker.
    let r = send(c.post(format!("{}/sessions", p.base()))).await;
    let minted = r.body["x-hotplex-session"]
        .as_str()
        .expect("minted id sent")
        .to_string();
    assert!(minted.starts_with("echo."), "{minted}");
    let shape = hotplex_common::signed_shape(&minted).expect("a signed id");
    assert_eq!(shape.worker, "echo");
    assert!(!seen.lock().expect("lock").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_names_move() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let (id, node) = create(&c, &p.base()).await;
    assert_eq!(get_session(&c, &p.base(), &id).await.status, 200);
    let _ = send(c.get(format!("{}/sessions/bad%20id", p.base()))).await;
    // The three requests' own series move after their responses (pingora's logging phase).
    let text = metrics_when(&c, &p, |t| {
        [
            ["route=\"create_session\"", "status=\"201\""],
            ["route=\"session\"", "status=\"200\""],
            ["route=\"session\"", "status=\"400\""],
        ]
        .iter()
        .all(|l| metric_value(t, names::proxy::REQUESTS_TOTAL, l).is_some())
    })
    .await;
    let m = |name: &str, labels: &[&str]| metric_value(&text, name, labels);
    let comp = "component=\"proxy\"";
    assert!(
        m(
            names::proxy::REQUESTS_TOTAL,
            &[comp, "route=\"create_session\"", "status=\"201\""]
        ) >= Some(1.0),
        "{text}"
    );
    assert!(
        m(
            names::proxy::REQUESTS_TOTAL,
            &["route=\"session\"", "status=\"400\""]
        ) >= Some(1.0)
    );
    assert!(
        m(
            &format!("{}_count", names::shared::REQUEST_DURATION_SECONDS),
            &[
                comp,
                "route=\"session\"",
                "method=\"GET\"",
                "status=\"200\""
            ]
        ) >= Some(1.0)
    );
    assert!(
        m(
            &format!("{}_count", names::proxy::UPSTREAM_DURATION_SECONDS),
            &[&format!("worker=\"{node}\"")]
        ) >= Some(1.0)
    );
    assert!(
        m(
            names::proxy::ROUTING_DECISIONS,
            &["source=\"none\"", "outcome=\"placed\""]
        ) >= Some(1.0)
    );
    assert!(
        m(
            names::proxy::ROUTING_DECISIONS,
            &["source=\"path\"", "outcome=\"pinned\""]
        ) >= Some(1.0)
    );
    assert!(
        m(
            names::proxy::ROUTING_DECISIONS,
            &["source=\"path\"", "outcome=\"invalid\""]
        ) >= Some(1.0)
    );
    assert_eq!(
        m(
            names::proxy::SESSIONS_PLACED,
            &[&format!("worker=\"{node}\"")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m(names::proxy::WORKER_HEALTHY, &["worker=\"w1\""]),
        Some(1.0)
    );
    assert_eq!(
        m(names::proxy::WORKER_DRAINING, &["worker=\"w2\""]),
        Some(0.0)
    );
    assert_eq!(
        m(names::proxy::WORKER_CAPACITY, &["worker=\"w1\""]),
        Some(100.0),
        "min(1000, max_sessions)"
    );
    assert!(
        m(
            names::proxy::WORKER_SESSIONS,
            &[&format!("worker=\"{node}\"")]
        ) >= Some(1.0)
    );
    assert!(m(names::proxy::REJECTIONS, &["reason=\"bad_request\""]) >= Some(1.0));
    assert_eq!(m(names::proxy::WEBSOCKETS_ACTIVE, &[]), Some(0.0));
    assert!(m(names::proxy::REQUESTS_IN_FLIGHT, &[]).is_some());
    assert_eq!(m(names::config::ACTIVE_HASH_INFO, &[]), Some(1.0));
    assert!(m(names::config::LAST_RELOAD_SUCCESS_TIMESTAMP, &[]) > Some(1.0e9));
    assert_eq!(
        m(names::config::RELOADS_TOTAL, &["result=\"failure\""]),
        Some(0.0)
    );
}
