//! Shared helpers of the worker end-to-end tests: start a worker (in-process on
//! `127.0.0.1:0`, or as a real `e2e-worker` child process), talk HTTP, SSE and WebSocket.

pub use super::{client, metric_at, metrics_at};

use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hotplex_common::profiling::ACTIVATE_ENV;
use hotplex_e2e::sse::{Event, Reader};
use hotplex_e2e::{wait_until_http_ok, ChildGuard};
use hotplex_worker::config::{Rate, TenantQuotas};
use hotplex_worker::{AgentConfig, Server, WorkerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The worker launcher built by this package (behaves exactly like `hotplex-worker`).
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_e2e-worker");

/// How long a test waits for any single expected thing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The demo agent with its test prompts on, started from the launcher binary.
pub fn demo_agent() -> AgentConfig {
    AgentConfig::command(vec![
        WORKER_BIN.to_string(),
        "demo-agent".to_string(),
        "--test-hooks".to_string(),
    ])
}

/// A config for in-process workers: demo agent, small timeouts.
pub fn test_config() -> WorkerConfig {
    WorkerConfig {
        node_id: "test-node".into(),
        max_sessions: 50,
        idle_timeout: Duration::from_secs(60),
        execution_timeout: Duration::from_secs(20),
        startup_timeout: Duration::from_secs(10),
        reap_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        max_body_bytes: 64 * 1024,
        retry_after_secs: 3,
        agent: demo_agent(),
        // Pool tests: one tenant may fill the pool (see POOL_TESTS_TENANT_QUOTAS).
        tenant_quotas: TenantQuotas {
            max_sessions: Some(100_000),
            new_sessions: Rate {
                per_minute: 1_000_000,
                burst: 1_000_000,
            },
            turns: Rate {
                per_minute: 1_000_000,
                burst: 1_000_000,
            },
        },
        ..WorkerConfig::default()
    }
}

/// A worker served in this process.
pub struct InProc {
    server: Option<Server>,
    pub base: String,
    pub ws_url: String,
}

impl InProc {
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Graceful shutdown (kills every agent).
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Starts a worker in-process on `127.0.0.1:0`.
pub async fn start(cfg: WorkerConfig) -> InProc {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let server = hotplex_worker::serve(cfg, listener).await.expect("serve");
    let addr = server.local_addr();
    InProc {
        server: Some(server),
        base: format!("http://{addr}"),
        ws_url: format!("ws://{addr}/ws/v1/agent"),
    }
}

/// A worker running as a real child process.
pub struct ChildWorker {
    pub guard: ChildGuard,
    pub base: String,
    pub ws_url: String,
    /// The bound `admin.listen`, when the config has one (port 0 there is reported too).
    pub admin: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

/// Spawns `e2e-worker --config <yaml> --listen 127.0.0.1:0 --addr-file ..` and waits until it
/// is live.
pub async fn spawn_worker(yaml: &str, node_id: &str) -> ChildWorker {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("worker.yaml");
    // The demo agent's test prompts (spawn, history, crash, garbage) are a config switch.
    let mut yaml = if yaml.contains("agent:") {
        yaml.to_string()
    } else {
        format!("{yaml}\nagent:\n  demo_test_hooks: true\n")
    };
    if !yaml.contains("tenant_quotas:") {
        yaml = format!("{yaml}\n{}", super::POOL_TESTS_TENANT_QUOTAS);
    }
    std::fs::write(&config_path, yaml).expect("write config");
    let addr_path = dir.path().join("addr.json");
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--addr-file")
        .arg(&addr_path)
        .arg("--config")
        .arg(&config_path)
        .arg("--node-id")
        .arg(node_id)
        .env("RUST_LOG", "warn")
        // Heap profiling switched on the way an operator does it (`/debug/pprof/heap` tests).
        .env(ACTIVATE_ENV.0, ACTIVATE_ENV.1);
    let mut guard = ChildGuard::spawn("e2e-worker", &mut cmd);
    let bound = super::addr_file(&addr_path, &mut guard).await;
    let addr = super::addr_of(&bound, "listen");
    let admin = bound["admin"].as_str().and_then(|a| a.parse().ok());
    let base = format!("http://{addr}");
    wait_until_http_ok(&format!("{base}/health/live"), WAIT).await;
    ChildWorker {
        guard,
        base,
        ws_url: format!("ws://{addr}/ws/v1/agent"),
        admin,
        _dir: dir,
    }
}

/// `POST /sessions`, expecting 201; returns the id.
pub async fn create_session(c: &reqwest::Client, base: &str) -> String {
    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("POST /sessions");
    assert_eq!(r.status(), 201, "create session");
    let v: Value = r.json().await.expect("json");
    v["session_id"].as_str().expect("session_id").to_string()
}

/// One turn over SSE; returns every event (the stream ends after the terminal one).
pub async fn sse_turn(c: &reqwest::Client, base: &str, id: &str, prompt: &str) -> Vec<Event> {
    let r = c
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .expect("POST messages");
    assert_eq!(r.status(), 200, "messages status");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    tokio::time::timeout(Duration::from_secs(30), Reader::new(r).collect())
        .await
        .expect("SSE stream ended in time")
}

/// Event names of a list of SSE events.
pub fn event_names(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to the worker.
pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url.into_client_request().expect("request"))
        .await
        .expect("websocket connect");
    ws
}

pub async fn ws_send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("ws send");
}

/// The next text frame as JSON (panics after [`WAIT`]).
pub async fn ws_recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ws frame in time")
            .expect("ws open")
            .expect("ws frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("server frame is JSON");
        }
    }
}

/// Frames with `request_id == rid` until its terminal event (others are returned too,
/// in `others`).
pub async fn ws_turn(ws: &mut Ws, rid: u64) -> (Vec<Value>, Vec<Value>) {
    let mut mine = vec![];
    let mut others = vec![];
    loop {
        let f = ws_recv(ws).await;
        if f["request_id"] == rid {
            let ev = f["event"].as_str().unwrap_or_default().to_string();
            mine.push(f);
            if matches!(ev.as_str(), "completed" | "error" | "stopped") {
                return (mine, others);
            }
        } else {
            others.push(f);
        }
    }
}

pub fn events_of(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["event"].as_str().unwrap_or_default().to_string())
        .collect()
}
