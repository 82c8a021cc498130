//! Worker HTTP API end to end, against a real `e2e-worker` child process: every
//! endpoint, SSE turns, JSON errors, body limit, auth, heap profile, config errors.

use std::process::Command;

use crate::support::worker::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const NODE: &str = "api-node";

#[tokio::test]
async fn every_endpoint_over_http_and_sse() {
    let w = spawn_worker("max_sessions: 10\nmax_body_bytes: 1024\n", NODE).await;
    let c = client();
    let base = &w.base;

    // Health: live, ready (the proxy parses these exact fields), node header everywhere.
    let r = c
        .get(format!("{base}/health/live"))
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-hotplex-node"], NODE);
    let r = c
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-hotplex-node"], NODE);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v,
        json!({"status":"ready","node_id":NODE,"sessions_active":0,"max_sessions":10})
    );

    // Create: minted id carries the node id; Location header.
    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-hotplex-node"], NODE);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["node_id"], NODE);
    let id = v["session_id"].as_str().expect("id").to_string();
    assert!(id.starts_with("api-node."), "{id}");

    // Create with a proxy-minted id; duplicate → 409; invalid → 400.
    let r = c
        .post(format!("{base}/sessions"))
        .header("X-Hotplex-Session", "w1.proxyMinted.mac")
        .send()
        .await
        .expect("create with id");
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["session_id"], "w1.proxyMinted.mac");
    let r = c
        .post(format!("{base}/sessions"))
        .header("X-Hotplex-Session", "w1.proxyMinted.mac")
        .send()
        .await
        .expect("dup");
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "session_exists");
    let r = c
        .post(format!("{base}/sessions"))
        .header("X-Hotplex-Session", "bad id!")
        .send()
        .await
        .expect("bad id");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_session_id");

    // A turn over SSE: thinking → tool_use → tool_result → answer → completed; each data
    // is the WebSocket server frame.
    let events = sse_turn(&c, base, &id, "hello world").await;
    assert_eq!(
        event_names(&events),
        ["thinking", "tool_use", "tool_result", "answer", "completed"]
    );
    for e in &events {
        let f = e.json();
        assert_eq!(f["event"], e.event.as_str());
        assert!(f["request_id"].is_u64(), "{f}");
        assert_eq!(f["data"]["session_id"], id.as_str());
    }
    assert_eq!(events[1].json()["data"]["tool"], "echo");
    assert_eq!(
        events[3].json()["data"]["text"],
        "Turn 1: you said: hello world"
    );
    // The same child process serves the next turn and remembers the conversation.
    let pid_before = get_json(&c, &format!("{base}/sessions/{id}")).await["pid"].clone();
    let events = sse_turn(&c, base, &id, "history").await;
    assert_eq!(
        events[3].json()["data"]["text"],
        "Turn 2: history: hello world | history"
    );
    let state = get_json(&c, &format!("{base}/sessions/{id}")).await;
    assert_eq!(state["pid"], pid_before, "agent kept hot between turns");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["turns"], 2);
    assert_eq!(state["node_id"], NODE);
    assert_eq!(state["status"], "idle");
    assert!(state["created_at"].is_string() && state["last_active"].is_string());

    // A client-chosen request id is echoed in every frame.
    let r = c
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"prompt": "third", "request_id": 42}))
        .send()
        .await
        .expect("turn");
    let events = hotplex_e2e::sse::Reader::new(r).collect().await;
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.json()["request_id"] == 42));

    // Admin list.
    let list = get_json(&c, &format!("{base}/sessions")).await;
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&"w1.proxyMinted.mac"));
    assert_eq!(list["stats"]["sessions_active"], 2);

    // Bad bodies: malformed JSON → 400, oversized → 413, both JSON.
    let r = c
        .post(format!("{base}/sessions/{id}/messages"))
        .body("{not json")
        .send()
        .await
        .expect("bad json");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_json"
    );
    let r = c
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"prompt": "x".repeat(4096)}))
        .send()
        .await
        .expect("big body");
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "body_too_large");

    // Unknown session: 404 JSON for GET, DELETE, messages.
    for (method, path) in [
        ("GET", "/sessions/nope"),
        ("DELETE", "/sessions/nope"),
        ("POST", "/sessions/nope/messages"),
    ] {
        let r = c
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .json(&json!({"prompt":"x"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{method} {path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(
            v,
            json!({"error":"session_not_found","session_id":"nope",
                   "message":"no session nope on this worker"})
        );
    }
    // Unknown route / method: JSON too.
    let r = c.get(format!("{base}/nowhere")).send().await.expect("404");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-hotplex-node"], NODE);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "not_found");
    let r = c.put(format!("{base}/sessions")).send().await.expect("405");
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "method_not_allowed"
    );

    // Delete: 204, then gone.
    let r = c
        .delete(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);

    // Metrics and a real jemalloc heap profile (gzipped pprof protobuf).
    let text = metrics_at(&c, base).await;
    assert!(
        text.contains("hotplex_sessions_total{component=\"worker\"} 2"),
        "{text}"
    );
    let r = c
        .get(format!("{base}/debug/pprof/heap"))
        .send()
        .await
        .expect("pprof");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("profile");
    assert!(body.len() > 20 && body[..2] == [0x1f, 0x8b], "gzip profile");
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.expect("GET");
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.expect("json")
}

#[tokio::test]
async fn api_keys_guard_http_and_websocket() {
    let w = spawn_worker("api_keys: [s3cr3t, other]\n", "auth-node").await;
    let c = client();
    let base = &w.base;

    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("no key");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-hotplex-node"], "auth-node");
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "unauthorized"
    );
    let r = c
        .get(format!("{base}/sessions"))
        .header("X-API-Key", "wrong")
        .send()
        .await
        .expect("bad key");
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/sessions"))
        .header("X-API-Key", "other")
        .send()
        .await
        .expect("good key");
    assert_eq!(r.status(), 201);
    // Probes and scraping stay open.
    for p in ["/health/live", "/health/ready", "/metrics"] {
        let r = c.get(format!("{base}{p}")).send().await.expect("open");
        assert_eq!(r.status(), 200, "{p}");
    }

    // WebSocket without a key: the handshake is refused with 401.
    let err = tokio_tungstenite::connect_async(w.ws_url.as_str())
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("unexpected {other}"),
    }
    // Key in the subprotocol list: accepted, `hotplex` selected.
    let mut req = w.ws_url.as_str().into_client_request().expect("req");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "hotplex, hotplex-api-s3cr3t".parse().expect("header"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("ws");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "hotplex");
    assert_eq!(resp.headers()["x-hotplex-node"], "auth-node");
    ws_send(&mut ws, json!({"type":"version","request_id":1})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "version");
    // Key in X-API-Key works for WebSocket too.
    let mut req = w.ws_url.as_str().into_client_request().expect("req");
    req.headers_mut()
        .insert("X-API-Key", "s3cr3t".parse().expect("header"));
    tokio_tungstenite::connect_async(req)
        .await
        .expect("ws with header key");
}

#[test]
fn bad_config_is_rejected_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "max_sessions: 3\nagent:\n  comand: [x]\n").expect("write");
    let out = Command::new(WORKER_BIN)
        .arg("--config")
        .arg(&p)
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("agent.comand") && err.contains("unknown field"),
        "{err}"
    );
    // The demo agent subcommand speaks the line protocol on stdin/stdout.
    let mut child = Command::new(WORKER_BIN)
        .arg("demo-agent")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("demo agent");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, r#"{{"type":"user","prompt":"hi"}}"#).expect("write");
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json line")["type"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ready",
            "thinking",
            "tool_use",
            "tool_result",
            "answer",
            "result"
        ]
    );
}
