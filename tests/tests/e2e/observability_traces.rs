//! OpenTelemetry traces and JSON logs end to end: a real OTLP/HTTP receiver in the test
//! (axum on 127.0.0.1:0, protobuf decoded with `opentelemetry-proto`), a real worker and
//! a real proxy exporting to it, requests carrying a client `traceparent`.
//!
//! Proves: both processes export spans of the client's trace that form one tree
//! (client -> proxy.request -> proxy.upstream -> worker.request -> session.turn ->
//! tool.use), with route/status/session/node attributes; the proxy exports within its
//! short batch delay; the worker (batch delay 1 h) exports everything on SIGTERM; the
//! JSON log lines of both carry trace_id/span_id/session_id/node_id, and the proxy's
//! access line has latency, status, bytes and the upstream node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{addr_file, addr_of};
use hotplex_e2e::sse::Reader;
use hotplex_e2e::{free_addr, wait_until_http_ok, ChildGuard};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;
use serde_json::{json, Value};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_e2e-worker");
const PROXY_BIN: &str = env!("CARGO_BIN_EXE_e2e-proxy");
const WAIT: Duration = Duration::from_secs(20);

/// The client's trace.
const TRACE: &str = "5b8efff798038103d269b633813fc60c";
/// The client's span ids, one per request.
const CLIENT_CREATE: &str = "eee19b7ec3c1b174";
const CLIENT_TURN: &str = "eee19b7ec3c1b175";
/// A client trace that is not sampled (flags 00): nothing of it is exported.
const UNSAMPLED: &str = "6c9f00a1b2c3d4e5f60718293a4b5c6d";
const CLIENT_UNSAMPLED: &str = "eee19b7ec3c1b176";

/// SpanKind values of OTLP.
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Rec {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    attrs: HashMap<String, String>,
    status: i32,
}

impl Rec {
    fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map(String::as_str).unwrap_or("")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn any(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The OTLP receiver: every span of every `POST /v1/traces`.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Rec>>>,
    posts: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let state = r.clone();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(
                    |axum::extract::State(st): axum::extract::State<Receiver>,
                     headers: axum::http::HeaderMap,
                     body: axum::body::Bytes| async move {
                        let ct = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        st.posts.lock().expect("lock").push(ct);
                        let Ok(req) = ExportTraceServiceRequest::decode(body.as_ref()) else {
                            return axum::http::StatusCode::BAD_REQUEST;
                        };
                        let mut out = st.spans.lock().expect("lock");
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .as_ref()
                                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                                .map(|a| any(&a.value))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    out.push(Rec {
                                        service: service.clone(),
                                        name: s.name.clone(),
                                        trace_id: hex(&s.trace_id),
                                        span_id: hex(&s.span_id),
                                        parent: hex(&s.parent_span_id),
                                        kind: s.kind,
                                        attrs: s
                                            .attributes
                                            .iter()
                                            .map(|a| (a.key.clone(), any(&a.value)))
                                            .collect(),
                                        status: s.status.as_ref().map_or(0, |st| st.code),
                                    });
                                }
                            }
                        }
                        axum::http::StatusCode::OK
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (r, addr)
    }

    fn spans(&self) -> Vec<Rec> {
        self.spans.lock().expect("lock").clone()
    }

    /// Waits until `cond` holds on the received spans (panics after [`WAIT`]).
    async fn wait_for(&self, what: &str, cond: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.spans();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; spans: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(name: &str, bin: &str, args: &[&str], env: &[(&str, String)], log: &Path) -> ChildGuard {
    let mut cmd = command(bin, args);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(std::fs::File::create(log).expect("log file"));
    ChildGuard::spawn_with_output(name, &mut cmd)
}

/// `bin args` with `RUST_LOG=info` and no ambient `OTEL_*` variable.
fn command(bin: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("RUST_LOG", "info")
        // The file is the only source: no ambient OTEL_* from the test environment.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        .env_remove("OTEL_SDK_DISABLED");
    cmd
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The proxy's request span (named `<METHOD> <route label>`).
fn is_proxy_request(s: &Rec) -> bool {
    s.service == "edge-proxy" && s.kind == KIND_SERVER
}

/// The worker's request span (named `<METHOD> <route>`).
fn is_worker_request(s: &Rec) -> bool {
    s.service == "hotplex-worker" && s.kind == KIND_SERVER
}

fn find<'a>(spans: &'a [Rec], pred: impl Fn(&Rec) -> bool, what: &str) -> &'a Rec {
    let hits: Vec<&Rec> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one {what}; spans: {spans:#?}"
    );
    hits[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_logs_follow_a_request_through_proxy_and_worker() {
    let (rx, rx_addr) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Worker: batch delay 1 h, so its spans can only arrive through the shutdown flush;
    // endpoint and service name from the standard variables (no endpoint in the file).
    let worker_cfg = dir.path().join("worker.yaml");
    let worker_addr_file = dir.path().join("worker-addr.json");
    std::fs::write(
        &worker_cfg,
        "max_sessions: 10\nexecution_timeout: 30s\nshutdown_grace: 2s\n\
         telemetry:\n  service_name: from-file\n  batch_delay: 1h\n",
    )
    .expect("write worker config");
    let worker_log = dir.path().join("worker.log");
    let mut worker = spawn(
        "worker w1",
        WORKER_BIN,
        &[
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
            worker_addr_file.to_str().expect("utf8"),
            "--node-id",
            "w1",
            "--config",
            worker_cfg.to_str().expect("utf8"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{rx_addr}")),
            ("OTEL_SERVICE_NAME", "hotplex-worker".to_string()),
        ],
        &worker_log,
    );
    let worker_addr = addr_of(&addr_file(&worker_addr_file, &mut worker).await, "listen");
    wait_until_http_ok(&format!("http://{worker_addr}/health/live"), WAIT).await;

    // Proxy: batch delay 100 ms, service name from the file; listeners on port 0.
    let (listen, admin) = ("127.0.0.1:0", "127.0.0.1:0");
    let proxy_cfg = dir.path().join("proxy.yaml");
    let proxy_addr_file = dir.path().join("proxy-addr.json");
    std::fs::write(
        &proxy_cfg,
        format!(
            "listen: \"{listen}\"\nadmin:\n  listen: \"{admin}\"\n\
             workers:\n  - id: w1\n    address: \"{worker_addr}\"\n\
             health_check:\n  interval: 200ms\n  timeout: 500ms\n\
             routing:\n  affinity_secrets: [\"e2e-test-secret-0123456789\"]\n\
             upgrade:\n  grace_period: 1s\n  shutdown_timeout: 2s\n\
             telemetry:\n  endpoint: http://{rx_addr}/\n  service_name: edge-proxy\n  \
             sampling_ratio: 1.0\n  batch_delay: 100ms\n"
        ),
    )
    .expect("write proxy config");
    let proxy_log = dir.path().join("proxy.log");
    let mut proxy = spawn(
        "proxy",
        PROXY_BIN,
        &[
            "--config",
            proxy_cfg.to_str().expect("utf8"),
            "--addr-file",
            proxy_addr_file.to_str().expect("utf8"),
        ],
        &[],
        &proxy_log,
    );
    let bound = addr_file(&proxy_addr_file, &mut proxy).await;
    let (listen, admin) = (addr_of(&bound, "listen"), addr_of(&bound, "admin"));
    wait_until_http_ok(&format!("http://{admin}/health/live"), WAIT).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    // Wait for the listener and the first good health probe (no traced request before).
    let deadline = Instant::now() + WAIT;
    loop {
        let healthy = match c.get(format!("http://{admin}/admin/workers")).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["workers"][0]["healthy"] == true),
            Err(_) => false,
        };
        if healthy && tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy or worker never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .post(format!("http://{listen}/sessions"))
        .header("traceparent", format!("00-{TRACE}-{CLIENT_CREATE}-01"))
        .send()
        .await
        .expect("POST /sessions");
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.expect("json");
    let session_id = v["session_id"].as_str().expect("id").to_string();

    // One SSE turn (execute + a tool use) in the same client trace.
    let r = c
        .post(format!("http://{listen}/sessions/{session_id}/messages"))
        .header("traceparent", format!("00-{TRACE}-{CLIENT_TURN}-01"))
        .header("accept", "text/event-stream")
        .json(&json!({"prompt": "trace me"}))
        .send()
        .await
        .expect("POST messages");
    assert_eq!(r.status(), 200);
    let events = tokio::time::timeout(WAIT, Reader::new(r).collect())
        .await
        .expect("SSE in time");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(names.contains(&"tool_use"), "{names:?}");
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");

    // A request of a trace the client did not sample: the proxy creates no span and sends
    // an unsampled `traceparent` on, so neither it nor the worker exports anything of it
    // (checked below: every exported span is in TRACE); its access line names the trace.
    let r = c
        .get(format!("http://{listen}/sessions/{session_id}"))
        .header(
            "traceparent",
            format!("00-{UNSAMPLED}-{CLIENT_UNSAMPLED}-00"),
        )
        .send()
        .await
        .expect("GET session");
    assert_eq!(r.status(), 200);

    // The proxy exports within its 100 ms batch delay, while still running.
    let is_turn_req = |s: &Rec| is_proxy_request(s) && s.parent == CLIENT_TURN;
    rx.wait_for("the proxy's spans", |s| {
        s.iter().any(is_turn_req)
            && s.iter()
                .filter(|x| x.name == "proxy.upstream" && x.trace_id == TRACE)
                .count()
                >= 2
    })
    .await;
    assert!(
        rx.spans().iter().all(|s| s.service != "hotplex-worker"),
        "the worker must hold its spans until shutdown (batch delay 1h)"
    );

    // The worker flushes its queued spans on SIGTERM.
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let status = worker.wait_timeout(WAIT).expect("worker exited");
    assert!(status.success(), "worker exit: {status:?}");
    let spans = rx
        .wait_for("the worker's spans", |s| {
            s.iter().any(|x| x.name == "tool echo")
                && s.iter().filter(|x| is_worker_request(x)).count() >= 2
        })
        .await;

    // Every span of the test's requests is in the client's trace.
    let ours: Vec<Rec> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE)
        .cloned()
        .collect();
    for s in &spans {
        assert_eq!(
            s.trace_id, TRACE,
            "a span outside the client's trace: {s:#?}"
        );
    }
    let ids: HashMap<&str, &Rec> = ours.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // One connected tree: each parent is a span we received, or the client's own span.
    for s in &ours {
        assert!(
            ids.contains_key(s.parent.as_str())
                || s.parent == CLIENT_CREATE
                || s.parent == CLIENT_TURN,
            "span {} ({}) has an unknown parent {}",
            s.name,
            s.service,
            s.parent
        );
    }

    // Proxy side of the turn.
    let preq = find(&ours, is_turn_req, "proxy.request of the turn");
    assert_eq!(preq.name, "POST messages");
    assert_eq!(preq.attr("http.route"), "messages");
    assert_eq!(preq.attr("http.request.method"), "POST");
    assert_eq!(preq.attr("http.response.status_code"), "200");
    assert_eq!(preq.attr("session.id"), session_id);
    assert_eq!(preq.attr("node.id"), "w1");
    assert_eq!(preq.attr("hotplex.route_outcome"), "pinned");
    let select = find(
        &ours,
        |s| s.name == "proxy.select_upstream" && s.parent == preq.span_id,
        "proxy.select_upstream",
    );
    assert_eq!(select.attr("node.id"), "w1");
    assert_eq!(select.attr("hotplex.key_source"), "path");
    let pup = find(
        &ours,
        |s| s.name == "proxy.upstream" && s.parent == preq.span_id,
        "proxy.upstream of the turn",
    );
    assert_eq!(pup.kind, KIND_CLIENT);
    assert_eq!(pup.attr("node.id"), "w1");
    assert_eq!(pup.attr("server.address"), worker_addr.to_string());
    assert_eq!(pup.attr("http.response.status_code"), "200");

    // Worker side: its server span's parent is the proxy span that sent the request.
    let wreq = find(
        &ours,
        |s| is_worker_request(s) && s.parent == pup.span_id,
        "worker.request of the turn",
    );
    assert_eq!(wreq.name, "POST /sessions/{id}/messages");
    assert_eq!(wreq.attr("http.route"), "/sessions/{id}/messages");
    assert_eq!(wreq.attr("http.response.status_code"), "200");
    assert_eq!(wreq.attr("session.id"), session_id);
    assert_eq!(wreq.attr("node.id"), "w1");
    let turn = find(
        &ours,
        |s| s.name == "session.turn" && s.parent == wreq.span_id,
        "session.turn",
    );
    assert_eq!(turn.attr("session.id"), session_id);
    assert_eq!(turn.attr("node.id"), "w1");
    assert_eq!(turn.attr("turn.outcome"), "completed");
    assert_ne!(turn.status, 2, "a completed turn is not an error");
    let tool = find(
        &ours,
        |s| s.name == "tool echo" && s.parent == turn.span_id,
        "tool.use",
    );
    assert_eq!(tool.attr("tool.name"), "echo");
    assert_eq!(tool.attr("session.id"), session_id);

    // The create request: same trace, minted id on both sides.
    let pcreate = find(
        &ours,
        |s| is_proxy_request(s) && s.parent == CLIENT_CREATE,
        "proxy.request of the create",
    );
    assert_eq!(pcreate.attr("http.route"), "create_session");
    assert_eq!(pcreate.attr("http.response.status_code"), "201");
    assert_eq!(pcreate.attr("session.id"), session_id);
    assert_eq!(pcreate.attr("hotplex.route_outcome"), "placed");
    let cup = find(
        &ours,
        |s| s.name == "proxy.upstream" && s.parent == pcreate.span_id,
        "proxy.upstream of the create",
    );
    let wcreate = find(
        &ours,
        |s| is_worker_request(s) && s.parent == cup.span_id,
        "worker.request of the create",
    );
    assert_eq!(wcreate.attr("http.route"), "/sessions");
    assert_eq!(wcreate.attr("http.response.status_code"), "201");
    assert_eq!(wcreate.attr("session.id"), session_id);

    // Health probes and metrics scrapes are not traced.
    assert!(spans
        .iter()
        .all(|s| !s.attr("url.path").starts_with("/health")));
    for ct in rx.posts.lock().expect("lock").iter() {
        assert_eq!(ct, "application/x-protobuf");
    }

    // Logs. Proxy access line: a child of the request span, with latency, status,
    // bytes, upstream node, session.
    proxy.signal(nix::sys::signal::Signal::SIGTERM);
    let status = proxy.wait_timeout(WAIT).expect("proxy exited");
    assert!(status.success(), "proxy exit: {status:?}");
    let plog = json_lines(&proxy_log);
    let access: Vec<&Value> = plog
        .iter()
        .filter(|l| {
            l["target"] == "access" && l["path"] == format!("/sessions/{session_id}/messages")
        })
        .collect();
    assert_eq!(access.len(), 1, "access lines: {plog:#?}");
    let a = access[0];
    assert_eq!(a["level"], "INFO");
    assert_eq!(a["status"], 200);
    assert_eq!(a["method"], "POST");
    assert_eq!(a["node_id"], "w1");
    assert_eq!(a["worker"], "w1");
    assert_eq!(a["session_id"], session_id.as_str());
    assert_eq!(a["trace_id"], TRACE);
    assert_eq!(a["span_id"], preq.span_id.as_str());
    assert!(a["latency_ms"].as_f64().is_some_and(|v| v > 0.0), "{a}");
    assert!(
        a["upstream_latency_ms"].as_f64().is_some_and(|v| v > 0.0),
        "{a}"
    );
    assert!(a["bytes"].as_u64().is_some_and(|b| b > 100), "{a}");
    assert!(a["bytes_received"].as_u64().is_some_and(|b| b > 0), "{a}");
    assert!(
        a["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{a}"
    );
    // The sampled-out request: its trace, and the new span id it sent on (not the
    // client's), written by the access line itself (no span exists).
    let unsampled: Vec<&Value> = plog
        .iter()
        .filter(|l| {
            l["target"] == "access"
                && l["method"] == "GET"
                && l["path"] == format!("/sessions/{session_id}")
        })
        .collect();
    assert_eq!(unsampled.len(), 1, "access lines: {plog:#?}");
    let u = unsampled[0];
    assert_eq!(u["trace_id"], UNSAMPLED, "{u}");
    let sid = u["span_id"].as_str().unwrap_or_default();
    assert!(
        sid.len() == 16 && sid.bytes().all(|b| b.is_ascii_hexdigit()) && sid != CLIENT_UNSAMPLED,
        "{u}"
    );
    assert_eq!(u["session_id"], session_id.as_str());
    assert_eq!(u["status"], 200);

    // Worker: the turn's log line carries the turn span's ids, the session and the node.
    let wlog = json_lines(&worker_log);
    let done: Vec<&Value> = wlog
        .iter()
        .filter(|l| l["message"] == "turn finished")
        .collect();
    assert_eq!(done.len(), 1, "worker log: {wlog:#?}");
    let d = done[0];
    assert_eq!(d["session_id"], session_id.as_str());
    assert_eq!(d["node_id"], "w1");
    assert_eq!(d["trace_id"], TRACE);
    assert_eq!(d["span_id"], turn.span_id.as_str());
    assert_eq!(d["outcome"], "completed");
    // Lines outside any span still name the node.
    assert!(
        wlog.iter()
            .any(|l| l["message"] == "worker listening" && l["node_id"] == "w1"),
        "{wlog:#?}"
    );
}

/// An invalid `OTEL_*` variable stops either binary at startup, naming the variable.
#[test]
fn invalid_otel_environment_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("proxy.yaml");
    // The processes exit before binding: port 0 for their listeners; the worker address of
    // the proxy config is never dialled (a picked, unused port).
    let (listen, admin, worker) = ("127.0.0.1:0", "127.0.0.1:0", free_addr());
    std::fs::write(
        &cfg,
        format!(
            "listen: \"{listen}\"\nadmin:\n  listen: \"{admin}\"\n\
             workers:\n  - id: w1\n    address: \"{worker}\"\n"
        ),
    )
    .expect("write");
    let out = command(PROXY_BIN, &["--config", cfg.to_str().expect("utf8")])
        .env("OTEL_TRACES_SAMPLER_ARG", "lots")
        .output()
        .expect("run proxy");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_TRACES_SAMPLER_ARG"), "{err}");

    let out = command(WORKER_BIN, &["--listen", listen])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector")
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
}
