//! The worker as its own trust boundary, against real `e2e-worker` child processes with
//! `proxy_keys` set (the trusted setup):
//! - a direct request (bypassing the proxy) with a forged `X-Hotplex-Tenant` is refused
//!   (401 `untrusted_proxy_header`) and creates nothing; a direct API-key client cannot
//!   reach a tenant's session;
//! - through "the proxy" (requests carrying the proxy key), tenant B cannot see, delete,
//!   run or stop tenant A's session (HTTP, SSE, WebSocket), answered like an unknown id;
//! - client-chosen ids are per tenant (two tenants, two `demo-1` sessions);
//! - WebSocket frames never create a session under an id the connection was not routed by
//!   (`session_elsewhere`, `session_not_routed`, with a reconnect hint);
//! - the admin surface: hidden from proxied requests, bearer tokens, a separate admin
//!   listener, `drain` and `resume` (also through the CLI).

use hotplex_common::names;
use std::process::Command;

use crate::support::worker::*;
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The shared proxy-to-worker key of these tests.
const PROXY_KEY: &str = "pk-0123456789abcdef";
/// An API key for direct clients.
const API_KEY: &str = "direct-key";
/// The proxy-side id of the worker under test.
const WORKER_ID: &str = "w1";
/// A proxy-signed id (shape) pinned to this worker, and one pinned to another.
const SIGNED_HERE: &str = "w1.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_";
const SIGNED_ELSEWHERE: &str = "w2.ZyXwVuTs76543210.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_";

fn trusted_yaml() -> String {
    format!("proxy_keys: [{PROXY_KEY}]\napi_keys: [{API_KEY}]\n")
}

/// A request as the proxy forwards it: the key, the tenant, the worker id.
fn as_proxy(b: RequestBuilder, tenant: &str) -> RequestBuilder {
    b.header("x-hotplex-proxy-auth", PROXY_KEY)
        .header("x-hotplex-tenant", tenant)
        .header("x-hotplex-worker", WORKER_ID)
        .header("x-forwarded-for", "203.0.113.7")
}

async fn status_and_json(b: RequestBuilder) -> (u16, Value) {
    let r = b.send().await.expect("request");
    let status = r.status().as_u16();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

/// The admin session list, fetched from loopback with the direct API key.
async fn admin_list(c: &reqwest::Client, base: &str) -> Vec<Value> {
    let (s, v) = status_and_json(
        c.get(format!("{base}/sessions"))
            .header("x-api-key", API_KEY),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// Opens a WebSocket carrying `headers`.
async fn ws_with(url: &str, headers: &[(&'static str, &str)]) -> Ws {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, v.parse().expect("header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    ws
}

/// The proxy headers of a WebSocket upgrade routed by `key` (if any) for `tenant`.
fn proxy_ws_headers<'a>(tenant: &'a str, key: Option<&'a str>) -> Vec<(&'static str, &'a str)> {
    let mut h = vec![
        ("x-hotplex-proxy-auth", PROXY_KEY),
        ("x-hotplex-tenant", tenant),
        ("x-hotplex-worker", WORKER_ID),
    ];
    if let Some(k) = key {
        h.push(("x-hotplex-session", k));
    }
    h
}

async fn refused(c: &reqwest::Client, base: &str, reason: &str) -> f64 {
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let label = format!("reason=\"{reason}\"");
    hotplex_e2e::metric_value(&text, names::worker::REFUSED_TOTAL, &[&label]).unwrap_or(0.0)
}

#[tokio::test]
async fn direct_requests_cannot_forge_a_tenant() {
    let w = spawn_worker(&trusted_yaml(), "trust-node").await;
    let c = client();
    let base = &w.base;

    // Tenant A's session, created through the proxy.
    let (s, v) = status_and_json(as_proxy(c.post(format!("{base}/sessions")), "acme")).await;
    assert_eq!(s, 201, "{v}");
    let a_id = v["session_id"].as_str().expect("id").to_string();

    // Forged tenant, no proxy key (with or without an API key), or a wrong proxy key:
    // 401 untrusted_proxy_header, over HTTP and on the WebSocket handshake.
    let forged = [
        c.post(format!("{base}/sessions"))
            .header("x-hotplex-tenant", "acme"),
        c.post(format!("{base}/sessions"))
            .header("x-hotplex-tenant", "acme")
            .header("x-api-key", API_KEY),
        c.get(format!("{base}/sessions/{a_id}"))
            .header("x-hotplex-tenant", "acme")
            .header("x-api-key", API_KEY),
        c.delete(format!("{base}/sessions/{a_id}"))
            .header("x-hotplex-tenant", "acme")
            .header("x-hotplex-proxy-auth", "not-the-key"),
        c.post(format!("{base}/sessions"))
            .header("x-hotplex-session", "chosen-1")
            .header("x-api-key", API_KEY),
    ];
    for b in forged {
        let (s, v) = status_and_json(b).await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(v["error"], "untrusted_proxy_header", "{v}");
    }
    let mut req = w.ws_url.as_str().into_client_request().expect("req");
    req.headers_mut()
        .insert("x-hotplex-tenant", "acme".parse().expect("v"));
    req.headers_mut()
        .insert("x-api-key", API_KEY.parse().expect("v"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!(
            "forged WebSocket upgrade not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // No key at all: 401 unauthorized.
    let (s, v) = status_and_json(c.post(format!("{base}/sessions"))).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));

    // Nothing was created by any of them: only A's session exists, A's session is intact.
    let list = admin_list(&c, base).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], a_id.as_str());
    assert_eq!(list[0]["tenant"], "acme");
    assert!(refused(&c, base, "untrusted_header").await >= 6.0);

    // A direct API-key client (the anonymous tenant) cannot reach A's session either:
    // 404, the answer of an unknown id.
    for (method, path) in [
        ("GET", format!("/sessions/{a_id}")),
        ("DELETE", format!("/sessions/{a_id}")),
        ("POST", format!("/sessions/{a_id}/messages")),
    ] {
        let b = c
            .request(method.parse().expect("m"), format!("{base}{path}"))
            .header("x-api-key", API_KEY)
            .json(&json!({"prompt": "x"}));
        let (s, v) = status_and_json(b).await;
        assert_eq!(s, 404, "{method} {path}");
        assert_eq!(v["error"], "session_not_found");
    }
    assert!(refused(&c, base, "cross_tenant").await >= 3.0);
    // ...while its own sessions work.
    let (s, v) = status_and_json(
        c.post(format!("{base}/sessions"))
            .header("x-api-key", API_KEY),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = status_and_json(as_proxy(c.get(format!("{base}/sessions/{a_id}")), "acme")).await;
    assert_eq!((s, v["turns"].as_u64()), (200, Some(0)), "{v}");
}

/// An SSE turn through "the proxy" as `tenant`; returns the answer text.
async fn proxied_turn(
    c: &reqwest::Client,
    base: &str,
    tenant: &str,
    id: &str,
    prompt: &str,
) -> String {
    let r = as_proxy(c.post(format!("{base}/sessions/{id}/messages")), tenant)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .expect("messages");
    assert_eq!(r.status(), 200, "turn of {tenant} in {id}");
    let events = hotplex_e2e::sse::Reader::new(r).collect().await;
    let answer = events
        .iter()
        .find(|e| e.event == "answer")
        .expect("an answer event");
    answer.json()["data"]["text"]
        .as_str()
        .expect("text")
        .to_string()
}

#[tokio::test]
async fn tenants_cannot_touch_each_others_sessions() {
    let w = spawn_worker(&trusted_yaml(), "trust-node").await;
    let c = client();
    let base = &w.base;

    // A creates under the proxy-minted (signed) id the proxy routed the request for.
    let b = as_proxy(c.post(format!("{base}/sessions")), "tenant-a")
        .header("x-hotplex-session", SIGNED_HERE);
    let (s, v) = status_and_json(b).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["session_id"], SIGNED_HERE);
    assert_eq!(
        proxied_turn(&c, base, "tenant-a", SIGNED_HERE, "alpha").await,
        "Turn 1: you said: alpha"
    );

    // B: GET, DELETE, messages: 404 exactly like an unknown id.
    for (method, path) in [
        ("GET", format!("/sessions/{SIGNED_HERE}")),
        ("DELETE", format!("/sessions/{SIGNED_HERE}")),
        ("POST", format!("/sessions/{SIGNED_HERE}/messages")),
    ] {
        let b = as_proxy(
            c.request(method.parse().expect("m"), format!("{base}{path}")),
            "tenant-b",
        )
        .json(&json!({"prompt": "steal"}));
        let (s, v) = status_and_json(b).await;
        assert_eq!(s, 404, "{method} {path}");
        assert_eq!(
            v,
            json!({"error":"session_not_found","session_id":SIGNED_HERE,
                   "message":format!("no session {SIGNED_HERE} on this worker")})
        );
    }

    // B over WebSocket (its connection routed by its own key): execute, stop and stats
    // naming A's id are session_not_found, and create nothing.
    let mut ws = ws_with(&w.ws_url, &proxy_ws_headers("tenant-b", Some("b-own"))).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"session_id":SIGNED_HERE,"prompt":"steal"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(
        (f["event"].as_str(), f["data"]["error"].as_str()),
        (Some("error"), Some("session_not_found")),
        "{f}"
    );
    assert_eq!(f["request_id"], 1);
    ws_send(
        &mut ws,
        json!({"type":"stop","request_id":2,"session_id":SIGNED_HERE}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "session_not_found", "{f}");
    ws_send(
        &mut ws,
        json!({"type":"stats","request_id":3,"session_id":SIGNED_HERE}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "session_not_found", "{f}");
    // Stats without an id: pool-level counts and B's own count, no session ids.
    ws_send(&mut ws, json!({"type":"stats","request_id":4})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "stats", "{f}");
    assert_eq!(f["data"]["tenant_sessions"], 0);
    assert_eq!(f["data"]["sessions_active"], 1);
    assert!(!f.to_string().contains(SIGNED_HERE), "{f}");
    drop(ws);

    // A's session is untouched and keeps its history, over SSE and WebSocket.
    let list = admin_list(&c, base).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        proxied_turn(&c, base, "tenant-a", SIGNED_HERE, "history").await,
        "Turn 2: history: alpha | history"
    );
    let mut ws = ws_with(&w.ws_url, &proxy_ws_headers("tenant-a", Some(SIGNED_HERE))).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":7,"session_id":SIGNED_HERE,"prompt":"history"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 7).await;
    assert_eq!(
        events_of(&frames).last().map(String::as_str),
        Some("completed"),
        "{frames:?}"
    );
    let answer = frames
        .iter()
        .find(|f| f["event"] == "answer")
        .expect("answer");
    assert_eq!(
        answer["data"]["text"],
        "Turn 3: history: alpha | history | history"
    );
    ws_send(
        &mut ws,
        json!({"type":"stats","request_id":8,"session_id":SIGNED_HERE}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(
        (
            f["data"]["tenant_sessions"].as_u64(),
            f["data"]["session"]["turns"].as_u64()
        ),
        (Some(1), Some(3)),
        "{f}"
    );
    // A deletes it.
    let (s, _) = status_and_json(as_proxy(
        c.delete(format!("{base}/sessions/{SIGNED_HERE}")),
        "tenant-a",
    ))
    .await;
    assert_eq!(s, 204);
    assert!(refused(&c, base, "cross_tenant").await >= 6.0);
}

#[tokio::test]
async fn client_chosen_ids_are_per_tenant() {
    let w = spawn_worker(&trusted_yaml(), "trust-node").await;
    let c = client();
    let base = &w.base;
    for tenant in ["tenant-a", "tenant-b"] {
        let b = as_proxy(c.post(format!("{base}/sessions")), tenant)
            .header("x-hotplex-session", "demo-1");
        let (s, v) = status_and_json(b).await;
        assert_eq!(s, 201, "{tenant}: {v}");
        assert_eq!(v["session_id"], "demo-1");
    }
    // The same tenant again: 409 as before.
    let b = as_proxy(c.post(format!("{base}/sessions")), "tenant-a")
        .header("x-hotplex-session", "demo-1");
    let (s, v) = status_and_json(b).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("session_exists")));

    // Two sessions, two agents, two histories.
    assert_eq!(
        proxied_turn(&c, base, "tenant-a", "demo-1", "alpha").await,
        "Turn 1: you said: alpha"
    );
    assert_eq!(
        proxied_turn(&c, base, "tenant-b", "demo-1", "beta").await,
        "Turn 1: you said: beta"
    );
    assert_eq!(
        proxied_turn(&c, base, "tenant-a", "demo-1", "history").await,
        "Turn 2: history: alpha | history"
    );
    assert_eq!(
        proxied_turn(&c, base, "tenant-b", "demo-1", "history").await,
        "Turn 2: history: beta | history"
    );
    let list = admin_list(&c, base).await;
    let mut owners: Vec<(String, String, u64)> = list
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["tenant"].as_str().unwrap_or_default().to_string(),
                s["pid"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(owners.len(), 2, "{list:?}");
    assert_eq!(
        (owners[0].0.as_str(), owners[0].1.as_str()),
        ("demo-1", "tenant-a")
    );
    assert_eq!(
        (owners[1].0.as_str(), owners[1].1.as_str()),
        ("demo-1", "tenant-b")
    );
    assert_ne!(owners[0].2, owners[1].2, "one agent process each");
}

#[tokio::test]
async fn websocket_frames_never_split_a_session() {
    let w = spawn_worker(&trusted_yaml(), "trust-node").await;
    let c = client();
    let base = &w.base;
    let mut ws = ws_with(&w.ws_url, &proxy_ws_headers("tenant-a", Some("routed-1"))).await;

    // A signed id of another worker: session_elsewhere with the reconnect hint.
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"session_id":SIGNED_ELSEWHERE,"prompt":"x"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "error", "{f}");
    assert_eq!(f["request_id"], 1);
    let d = &f["data"];
    assert_eq!(d["error"], "session_elsewhere", "{f}");
    assert_eq!(d["session_id"], SIGNED_ELSEWHERE);
    assert_eq!(d["worker"], "w2");
    assert_eq!(
        d["reconnect"],
        format!("/ws/v1/agent?session_id={SIGNED_ELSEWHERE}")
    );
    assert!(
        d["message"]
            .as_str()
            .is_some_and(|m| m.contains("session_id=")),
        "{f}"
    );

    // A client-chosen id that is not the routing key: session_not_routed.
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":2,"session_id":"demo-2","prompt":"x"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "session_not_routed", "{f}");
    assert_eq!(f["data"]["session_id"], "demo-2");
    assert_eq!(f["data"]["reconnect"], "/ws/v1/agent?session_id=demo-2");
    // A signed id of this worker that it does not hold (and was not routed by).
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":3,"session_id":SIGNED_HERE,"prompt":"x"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "session_not_found", "{f}");
    assert!(admin_list(&c, base).await.is_empty(), "nothing created");
    assert_eq!(refused(&c, base, "session_elsewhere").await, 1.0);
    assert_eq!(refused(&c, base, "session_not_routed").await, 1.0);

    // Over HTTP too: a create routed here under another worker's signed id is refused.
    let b = as_proxy(c.post(format!("{base}/sessions")), "tenant-a")
        .header("x-hotplex-session", SIGNED_ELSEWHERE);
    let (s, v) = status_and_json(b).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (421, Some("session_elsewhere")),
        "{v}"
    );
    assert_eq!(v["worker"], "w2");
    assert!(admin_list(&c, base).await.is_empty(), "nothing created");

    // Id-less execute: the routed session, created on first use, then reused; naming
    // the routed key reaches the same session.
    for (rid, frame) in [
        (4, json!({"type":"execute","request_id":4,"prompt":"one"})),
        (5, json!({"type":"execute","request_id":5,"prompt":"two"})),
        (
            6,
            json!({"type":"execute","request_id":6,"session_id":"routed-1","prompt":"history"}),
        ),
    ] {
        ws_send(&mut ws, frame).await;
        let (frames, _) = ws_turn(&mut ws, rid).await;
        assert_eq!(
            events_of(&frames).last().map(String::as_str),
            Some("completed"),
            "{frames:?}"
        );
        assert!(
            frames.iter().all(|f| f["data"]["session_id"] == "routed-1"),
            "{frames:?}"
        );
        if rid == 6 {
            let answer = frames
                .iter()
                .find(|f| f["event"] == "answer")
                .expect("answer");
            assert_eq!(
                answer["data"]["text"],
                "Turn 3: history: one | two | history"
            );
        }
    }
    let list = admin_list(&c, base).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0]["id"].as_str(), list[0]["tenant"].as_str()),
        (Some("routed-1"), Some("tenant-a"))
    );

    // Routed by a signed id of this worker (a keyless connection the proxy minted for):
    // the id-less execute creates exactly that id.
    let mut ws = ws_with(&w.ws_url, &proxy_ws_headers("tenant-a", Some(SIGNED_HERE))).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"prompt":"hi"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 1).await;
    assert_eq!(
        frames.last().map(|f| f["data"]["session_id"].clone()),
        Some(json!(SIGNED_HERE))
    );
    assert_eq!(admin_list(&c, base).await.len(), 2);
}

/// Every admin endpoint as (method, path, success status).
const ADMIN: [(&str, &str, u16); 5] = [
    ("GET", "/sessions", 200),
    ("GET", "/metrics", 200),
    ("GET", "/debug/pprof/heap", 200),
    ("POST", "/admin/drain", 202),
    ("POST", "/admin/resume", 200),
];

async fn admin_status(
    c: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut b = c.request(method.parse().expect("method"), format!("{base}{path}"));
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let r = b.send().await.expect("admin request");
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn ready_status(c: &reqwest::Client, base: &str) -> u16 {
    c.get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("ready")
        .status()
        .as_u16()
}

#[tokio::test]
async fn admin_surface_is_hidden_from_proxied_requests() {
    let w = spawn_worker(&format!("proxy_keys: [{PROXY_KEY}]\n"), "admin-node").await;
    let c = client();
    let base = &w.base;
    // Proxied (X-Forwarded-For as the proxy sends, or the proxy's own headers): 404,
    // the answer of an unknown route; nothing drains.
    for (method, path, _) in ADMIN {
        for extra in [
            vec![("x-forwarded-for", "203.0.113.7")],
            vec![("forwarded", "for=203.0.113.7")],
            vec![
                ("x-hotplex-proxy-auth", PROXY_KEY),
                ("x-hotplex-tenant", "acme"),
            ],
        ] {
            let (s, v) = admin_status(&c, base, method, path, &extra).await;
            assert_eq!(
                (s, v["error"].as_str()),
                (404, Some("not_found")),
                "{method} {path} {extra:?}"
            );
        }
    }
    assert_eq!(ready_status(&c, base).await, 200, "not drained");
    // From loopback, not proxied: served (no tokens configured).
    for (method, path, ok) in ADMIN {
        assert_eq!(
            admin_status(&c, base, method, path, &[]).await.0,
            ok,
            "{method} {path}"
        );
    }
    assert!(refused(&c, base, "admin_denied").await >= 15.0);
}

#[tokio::test]
async fn admin_tokens_and_resume() {
    let yaml = format!("proxy_keys: [{PROXY_KEY}]\nadmin:\n  tokens: [admin-tok]\n");
    let w = spawn_worker(&yaml, "admin-node").await;
    let c = client();
    let base = &w.base;
    for (method, path, ok) in ADMIN {
        let (s, v) = admin_status(&c, base, method, path, &[]).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
        let (s, _) =
            admin_status(&c, base, method, path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(s, 401, "{method} {path}");
        let (s, _) = admin_status(
            &c,
            base,
            method,
            path,
            &[
                ("authorization", "Bearer admin-tok"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
        )
        .await;
        assert_eq!(s, ok, "{method} {path} with the token");
    }
    // Drain, then resume: readiness 503 then 200 again, new sessions accepted again.
    let auth = [("authorization", "Bearer admin-tok")];
    let (s, v) = admin_status(&c, base, "POST", "/admin/drain", &auth).await;
    assert_eq!((s, v["status"].as_str()), (202, Some("draining")));
    assert_eq!(ready_status(&c, base).await, 503);
    let (s, v) = status_and_json(as_proxy(c.post(format!("{base}/sessions")), "t")).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("draining")));
    let (s, v) = admin_status(&c, base, "POST", "/admin/resume", &auth).await;
    assert_eq!(
        (s, v["status"].as_str(), v["was_draining"].as_bool()),
        (200, Some("ready"), Some(true)),
        "{v}"
    );
    assert_eq!(ready_status(&c, base).await, 200);
    let (s, _) = status_and_json(as_proxy(c.post(format!("{base}/sessions")), "t")).await;
    assert_eq!(s, 201);

    // The CLI: drain and resume need the token too.
    let cli = |cmd: &str, token: Option<&str>| {
        let mut c = Command::new(WORKER_BIN);
        c.args([cmd, "--url", base.as_str()])
            .env_remove("HOTPLEX_WORKER_ADMIN_TOKEN");
        if let Some(t) = token {
            c.env("HOTPLEX_WORKER_ADMIN_TOKEN", t);
        }
        c.output().expect("run cli")
    };
    assert!(!cli("drain", None).status.success());
    assert_eq!(ready_status(&c, base).await, 200);
    assert!(cli("drain", Some("admin-tok")).status.success());
    assert_eq!(ready_status(&c, base).await, 503);
    let out = cli("resume", Some("admin-tok"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ready\""));
    assert_eq!(ready_status(&c, base).await, 200);
}

#[tokio::test]
async fn separate_admin_listener() {
    let yaml = format!("proxy_keys: [{PROXY_KEY}]\nadmin:\n  listen: 127.0.0.1:0\n");
    let w = spawn_worker(&yaml, "admin-node").await;
    let admin_addr = w.admin.expect("admin listener");
    let c = client();
    let base = &w.base;
    let admin = format!("http://{admin_addr}");
    // The main listener does not serve the admin surface at all, even to loopback.
    for (method, path, _) in ADMIN {
        let (s, v) = admin_status(&c, base, method, path, &[]).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    assert_eq!(ready_status(&c, base).await, 200);
    // The admin listener serves it, and the probes; not the public API.
    for (method, path, ok) in ADMIN {
        assert_eq!(
            admin_status(&c, &admin, method, path, &[]).await.0,
            ok,
            "{method} {path}"
        );
    }
    assert_eq!(ready_status(&c, &admin).await, 200);
    let (s, _) = admin_status(&c, &admin, "POST", "/sessions", &[]).await;
    assert_eq!(s, 405);
    // drain through the CLI on the admin listener (the Kubernetes preStop), resume.
    let run = |cmd: &str| {
        Command::new(WORKER_BIN)
            .args([cmd, "--url", admin.as_str()])
            .output()
            .expect("run cli")
    };
    assert!(run("drain").status.success());
    assert_eq!(ready_status(&c, base).await, 503);
    assert_eq!(ready_status(&c, &admin).await, 503);
    assert!(run("resume").status.success());
    assert_eq!(ready_status(&c, base).await, 200);
}
