//! Helpers of the proxy end-to-end tests: real `e2e-worker` and `e2e-proxy` child
//! processes on loopback ports, killed on drop.

pub use super::{
    addr_file, addr_of, client, hdr, metric_at, metric_in, metrics_at, POOL_TESTS_TENANT_QUOTAS,
};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hotplex_e2e::{wait_until_http_ok, ChildGuard};
use serde_json::Value;

pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_e2e-worker");
pub const PROXY_BIN: &str = env!("CARGO_BIN_EXE_e2e-proxy");
/// Upper bound for any single wait.
pub const WAIT: Duration = Duration::from_secs(15);

/// Worker options.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOpts {
    pub max_sessions: usize,
    /// A do-nothing agent (cheap, for 1000-session tests) instead of the demo agent: `cat`
    /// reading stdin to `/dev/null`. It exits when its stdin closes, so agents of a worker
    /// the test killed (SIGKILL: the worker cannot close them) do not outlive the test
    /// (`sleep` did, for an hour, holding the test's stderr open).
    pub light: bool,
}

impl Default for WorkerOpts {
    fn default() -> Self {
        WorkerOpts {
            max_sessions: 100,
            light: false,
        }
    }
}

/// A worker child process.
pub struct TestWorker {
    pub id: String,
    pub addr: SocketAddr,
    pub guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl TestWorker {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn worker_yaml(o: &WorkerOpts) -> String {
    let mut y = format!(
        "max_sessions: {}\nidle_timeout: 1h\nexecution_timeout: 60s\nretry_after_secs: 1\n",
        o.max_sessions
    );
    y.push_str(POOL_TESTS_TENANT_QUOTAS);
    if o.light {
        y.push_str(
            "agent:\n  command: [\"sh\", \"-c\", \"exec cat >/dev/null\"]\n  wait_ready: false\n",
        );
    } else {
        y.push_str("agent:\n  demo_test_hooks: true\n");
    }
    y
}

/// Spawns a worker on `addr` (a free port when `None`) and waits until it is live.
pub async fn spawn_worker_at(id: &str, addr: Option<SocketAddr>, opts: WorkerOpts) -> TestWorker {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("worker.yaml");
    std::fs::write(&cfg, worker_yaml(&opts)).expect("write worker config");
    // Port 0 unless a test restarts a worker on its old address: the worker binds and
    // reports the port (`--addr-file`).
    let addr_path = dir.path().join("addr.json");
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--listen")
        .arg(addr.map_or("127.0.0.1:0".to_string(), |a| a.to_string()))
        .arg("--addr-file")
        .arg(&addr_path)
        .arg("--node-id")
        .arg(id)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn");
    let mut guard = ChildGuard::spawn(&format!("worker {id}"), &mut cmd);
    let addr = addr_of(&addr_file(&addr_path, &mut guard).await, "listen");
    wait_until_http_ok(&format!("http://{addr}/health/live"), WAIT).await;
    TestWorker {
        id: id.to_string(),
        addr,
        guard,
        _dir: dir,
    }
}

/// Spawns `n` workers `w1..wn`.
pub async fn spawn_workers(n: usize, opts: WorkerOpts) -> Vec<TestWorker> {
    let mut v = Vec::new();
    for i in 1..=n {
        v.push(spawn_worker_at(&format!("w{i}"), None, opts).await);
    }
    v
}

/// The proxy YAML for `workers` plus `extra` top-level sections (fast health checks).
pub fn proxy_yaml(workers: &[(&str, SocketAddr)], extra: &str) -> String {
    let mut y = String::from("workers:\n");
    for (id, addr) in workers {
        y.push_str(&format!("  - id: {id}\n    address: \"{addr}\"\n"));
    }
    if !extra.contains("health_check:") {
        y.push_str(
            "health_check:\n  interval: 200ms\n  timeout: 500ms\n  failures: 1\n  successes: 1\n",
        );
    }
    if !extra.contains("ejection:") {
        y.push_str("ejection:\n  base: 1s\n  max: 4s\n");
    }
    if !extra.contains("timeouts:") {
        y.push_str("timeouts:\n  connect: 500ms\n  read: 10s\n  write: 10s\n");
    }
    if !extra.contains("routing:") {
        y.push_str("routing:\n  affinity_secrets: [\"e2e-test-secret-0123456789\"]\n");
    }
    y.push_str(extra);
    y
}

pub fn worker_list(ws: &[TestWorker]) -> Vec<(&str, SocketAddr)> {
    ws.iter().map(|w| (w.id.as_str(), w.addr)).collect()
}

/// `127.0.0.1:0`: the process binds a free port itself and reports it.
pub const ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A proxy child process.
pub struct TestProxy {
    pub guard: ChildGuard,
    /// The bound addresses.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The addresses in its config file (port 0 unless given): a rewrite keeps them, since
    /// a reload refuses a changed `listen`/`admin.listen`.
    pub configured: (SocketAddr, SocketAddr),
    /// The bound TLS listener, when the config has one.
    pub tls: Option<SocketAddr>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestProxy {
    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }
    /// Panics unless the proxy process is running (not exited, not a zombie) and its admin
    /// listener answers `/health/live`.
    pub async fn assert_alive(&mut self) {
        let url = format!("http://{}/health/live", self.admin);
        self.guard.assert_serving(&url).await;
    }
    /// Replaces the config file (same listeners), e.g. before a reload; returns the new
    /// file's content hash.
    pub fn write_config(&self, yaml: &str) -> String {
        self.write_config_with("", yaml)
    }
    /// [`Self::write_config`] with `admin_extra` (indented lines of the `admin:` section).
    pub fn write_config_with(&self, admin_extra: &str, yaml: &str) -> String {
        let (listen, admin) = self.configured;
        write_config_file(&self.config_path, listen, admin, admin_extra, yaml)
    }
}

/// A proxy with an admin listener (`http://host:port`).
pub trait Admin {
    fn admin_base(&self) -> String;
}

impl Admin for TestProxy {
    fn admin_base(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// Writes a proxy config file: the listeners, `admin_extra` (indented lines of the
/// `admin:` section), then `yaml`. Returns the file's content hash.
pub fn write_config_file(
    path: &std::path::Path,
    listen: SocketAddr,
    admin: SocketAddr,
    admin_extra: &str,
    yaml: &str,
) -> String {
    let full = format!("listen: \"{listen}\"\nadmin:\n  listen: \"{admin}\"\n{admin_extra}{yaml}");
    std::fs::write(path, &full).expect("write proxy config");
    hotplex_proxy::reload::content_hash(full.as_bytes())
}

/// Starts the proxy with `yaml` and waits until both listeners answer and every worker has
/// been probed. Listen and admin are `127.0.0.1:0` (the proxy binds them and reports the
/// ports with `--addr-file`) unless `at` is given (a restart on the same addresses).
pub async fn spawn_proxy_at(yaml: &str, at: Option<(SocketAddr, SocketAddr)>) -> TestProxy {
    let configured = at.unwrap_or((ANY_PORT, ANY_PORT));
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("proxy.yaml");
    write_config_file(&config_path, configured.0, configured.1, "", yaml);
    let addr_path = dir.path().join("addr.json");
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--addr-file")
        .arg(&addr_path)
        .env(
            "RUST_LOG",
            std::env::var("HOTPLEX_E2E_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
        );
    // Heap profiling switched on the way an operator does it (`/debug/pprof/heap` tests).
    let (k, v) = hotplex_common::profiling::ACTIVATE_ENV;
    cmd.env(k, v);
    let mut guard = ChildGuard::spawn("proxy", &mut cmd);
    let bound = addr_file(&addr_path, &mut guard).await;
    let (listen, admin) = (addr_of(&bound, "listen"), addr_of(&bound, "admin"));
    let tls = bound["tls"].as_str().and_then(|a| a.parse().ok());
    let mut p = TestProxy {
        guard,
        listen,
        admin,
        configured,
        tls,
        config_path,
        _dir: dir,
    };
    let health = format!("{}/health/live", p.admin_base());
    let probe = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = probe
            .get(&health)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok && tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        p.guard.assert_alive();
        assert!(
            Instant::now() < deadline,
            "proxy on {listen} (admin {admin}) never came up"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_probed(p.admin).await;
    p
}

/// A proxy whose logs (stderr, `RUST_LOG=warn,audit=info`) are kept in `dir/proxy.log`,
/// for the tests that read the audit log or a reload's messages.
pub struct LoggedProxy {
    _guard: ChildGuard,
    /// The bound addresses (the config file has `127.0.0.1:0`).
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Admin for LoggedProxy {
    fn admin_base(&self) -> String {
        format!("http://{}", self.admin)
    }
}

impl LoggedProxy {
    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }
    /// Replaces the config file (same listeners), e.g. before a reload; returns its hash.
    pub fn write_config(&self, yaml: &str) -> String {
        write_config_file(&self.config_path, ANY_PORT, ANY_PORT, "", yaml)
    }
    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Starts a [`LoggedProxy`] with `yaml` and the extra environment `env`, its config and
/// log in `dir`; waits for both listeners and one probe round.
pub async fn spawn_logged_proxy(
    dir: &std::path::Path,
    yaml: &str,
    env: &[(&str, &str)],
) -> LoggedProxy {
    let config_path = dir.join("proxy.yaml");
    let log_path = dir.join("proxy.log");
    let addr_path = dir.join("addr.json");
    write_config_file(&config_path, ANY_PORT, ANY_PORT, "", yaml);
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--addr-file")
        .arg(&addr_path)
        .env("RUST_LOG", "warn,audit=info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"));
    let mut guard = ChildGuard::spawn_with_output("proxy", &mut cmd);
    let bound = addr_file(&addr_path, &mut guard).await;
    let (listen, admin) = (addr_of(&bound, "listen"), addr_of(&bound, "admin"));
    let p = LoggedProxy {
        _guard: guard,
        listen,
        admin,
        config_path,
        log_path,
    };
    wait_until_http_ok(&format!("{}/health/live", p.admin_base()), WAIT).await;
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "proxy listener never came up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_probed(p.admin).await;
    p
}

/// Waits until every worker the proxy at `admin` lists has been probed: it answered (its
/// fill numbers are known, `probed`) or was marked unhealthy. Bounded by 2 s, after which
/// the test goes on as it would have after the single probe round this replaces (a config
/// whose probes take longer, e.g. `failures: 3` against a dead worker, or no workers yet).
pub async fn wait_probed(admin: SocketAddr) {
    let c = reqwest::Client::new();
    let url = format!("http://{admin}/admin/workers");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(r) = c.get(&url).timeout(Duration::from_millis(500)).send().await {
            if r.status() == reqwest::StatusCode::UNAUTHORIZED {
                // admin.tokens are set (possibly as hashes the harness cannot invert): the
                // worker states cannot be read, so wait one probe round (200 ms interval).
                // allow-sleep: the token-protected admin API cannot be polled by the harness
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            if let Ok(v) = r.json::<Value>().await {
                let list = v["workers"].as_array().cloned().unwrap_or_default();
                if !list.is_empty()
                    && list
                        .iter()
                        .all(|w| w["probed"] == true || w["healthy"] == false)
                {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `sha256:<hex>` of an API key, as `auth.keys[].hash` takes it.
pub fn key_hash(key: &str) -> String {
    let h = hotplex_proxy::config::security::hash_key(key);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub async fn spawn_proxy(yaml: &str) -> TestProxy {
    spawn_proxy_at(yaml, None).await
}

/// A response, reduced.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub node: Option<String>,
    pub worker: Option<String>,
    pub request_id: Option<String>,
    pub retry_after: Option<String>,
    pub set_cookie: Option<String>,
    pub body: Value,
    pub elapsed: Duration,
}

pub async fn read(r: reqwest::Response, start: Instant) -> Resp {
    let status = r.status().as_u16();
    let node = hdr(&r, "x-hotplex-node");
    let worker = hdr(&r, "x-hotplex-worker");
    let request_id = hdr(&r, "x-request-id");
    let retry_after = hdr(&r, "retry-after");
    let set_cookie = hdr(&r, "set-cookie");
    let text = r.text().await.unwrap_or_default();
    Resp {
        status,
        node,
        worker,
        request_id,
        retry_after,
        set_cookie,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        elapsed: start.elapsed(),
    }
}

pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let start = Instant::now();
    let r = rb.send().await.expect("request");
    read(r, start).await
}

/// `POST /sessions` through `base`; panics unless 201. Returns (session id, node).
pub async fn create(c: &reqwest::Client, base: &str) -> (String, String) {
    let r = send(c.post(format!("{base}/sessions"))).await;
    assert_eq!(r.status, 201, "create: {r:?}");
    let id = r.body["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();
    (id, r.node.expect("x-hotplex-node"))
}

/// `GET /sessions/{id}` through `base`.
pub async fn get_session(c: &reqwest::Client, base: &str, id: &str) -> Resp {
    send(c.get(format!("{base}/sessions/{id}"))).await
}

/// `GET /admin/workers`.
pub async fn admin_workers(c: &reqwest::Client, p: &TestProxy) -> Value {
    send(c.get(format!("{}/admin/workers", p.admin_base())))
        .await
        .body
}

/// The `/admin/workers` entry of `id`.
pub async fn admin_worker(c: &reqwest::Client, p: &TestProxy, id: &str) -> Value {
    let all = admin_workers(c, p).await;
    all["workers"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

/// The `/metrics` text of `p`.
pub async fn metrics(c: &reqwest::Client, p: &impl Admin) -> String {
    metrics_at(c, &p.admin_base()).await
}

/// One series of the admin listener of `p` (0 when absent).
pub async fn metric(c: &reqwest::Client, p: &impl Admin, name: &str, labels: &[&str]) -> f64 {
    metric_at(c, &p.admin_base(), name, labels).await
}

/// `/metrics` once `ready` holds for its text, or the last text after [`WAIT`]. For values
/// that move after the response a client has seen: the per-request series
/// (`requests_total`, `request_duration_seconds`) are recorded in pingora's `logging`
/// phase, after the response has gone out; gauges of closing connections.
pub async fn metrics_when(
    c: &reqwest::Client,
    p: &impl Admin,
    ready: impl Fn(&str) -> bool,
) -> String {
    metrics_when_at(c, &p.admin_base(), ready).await
}

/// [`metrics_when`] for the admin listener at `admin` (`http://host:port`).
pub async fn metrics_when_at(
    c: &reqwest::Client,
    admin: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics_at(c, admin).await;
        if ready(&text) || Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs `hotplex-proxy check FILE`; returns (exit code, stdout, stderr).
pub fn check(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(PROXY_BIN)
        .arg("check")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One WebSocket `execute` turn over any stream (plain or TLS): sends the frame and reads
/// until the terminal event (`completed`, `error`, `stopped`). Returns every JSON frame of
/// the turn, the terminal one last, or a description of what went wrong (timeout after
/// [`WAIT`], closed stream, transport error).
pub async fn ws_execute<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    rid: u64,
    session: &str,
    prompt: &str,
) -> Result<Vec<Value>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let frame =
        serde_json::json!({"type":"execute","request_id":rid,"session_id":session,"prompt":prompt});
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut frames = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| "frame timeout".to_string())?
            .ok_or("stream closed")?
            .map_err(|e| format!("frame: {e}"))?;
        let Ok(text) = msg.to_text() else { continue };
        if text.is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("non-JSON frame {text:?}: {e}"))?;
        let terminal = matches!(
            v["event"].as_str().unwrap_or(""),
            "completed" | "error" | "stopped"
        );
        frames.push(v);
        if terminal {
            return Ok(frames);
        }
    }
}

/// The `event` of the last frame of a turn (`completed`, `error`, `stopped`).
pub fn terminal_event(frames: &[Value]) -> String {
    frames
        .last()
        .and_then(|v| v["event"].as_str())
        .unwrap_or("")
        .to_string()
}

/// A plain WebSocket through the proxy.
pub type ProxyWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (with extra request `headers`) and proves the tunnel carries
/// frames with a `version` round trip before returning it.
///
/// Known pingora 0.9 bug (issue 946, fixes pending upstream in PRs 947/1016): when the
/// worker's `101` is read before the proxy has consumed the upgrade request's empty body,
/// pingora tears the fresh tunnel down (the client sees `101`, then a reset). It needs a
/// fast upstream and a busy machine; a client reconnects. This helper does the same, at
/// most 3 attempts, and reports how many it needed so a test can bound it.
pub async fn ws_connect_checked(
    url: &str,
    headers: &[(&str, &str)],
) -> (
    ProxyWs,
    tokio_tungstenite::tungstenite::handshake::client::Response,
    u32,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mut last_err = String::new();
    for attempt in 0..3u32 {
        let mut req = url.into_client_request().expect("ws request");
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("header name"),
                v.parse().expect("header value"),
            );
        }
        let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("ws connect timeout")
            .expect("websocket handshake");
        let probe = serde_json::json!({"type":"version","request_id":0});
        let alive = async {
            ws.send(Message::text(probe.to_string()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                let msg = tokio::time::timeout(WAIT, ws.next())
                    .await
                    .map_err(|_| "probe timeout".to_string())?
                    .ok_or("closed")?
                    .map_err(|e| format!("frame: {e}"))?;
                let Ok(text) = msg.to_text() else { continue };
                if serde_json::from_str::<Value>(text)
                    .map(|v| v["event"] == "version")
                    .unwrap_or(false)
                {
                    return Ok::<(), String>(());
                }
            }
        }
        .await;
        match alive {
            Ok(()) => return (ws, resp, attempt),
            Err(e) => {
                eprintln!(
                    "websocket torn down right after 101 (pingora issue 946): {e}; reconnecting"
                );
                last_err = e;
                // Let the proxy finish the torn request (and release any per-key slot).
                // allow-sleep: grace for the proxy to finish the torn request and release its per-key slot before reconnecting
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("websocket tunnel failed 3 times in a row: {last_err}");
}

/// Requests the worker counted (every route but the scrape itself and the proxy's health
/// probes), from its own /metrics at `base` (loopback: no admin token needed).
pub async fn worker_requests_at(c: &reqwest::Client, base: &str) -> f64 {
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("worker metrics")
        .text()
        .await
        .expect("text");
    let count = format!(
        "{}_count{{",
        hotplex_common::names::shared::REQUEST_DURATION_SECONDS
    );
    let n: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with(&count)
                && !l.contains("route=\"/metrics\"")
                && !l.contains("route=\"/health/")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(
        !text.is_empty() && text.contains(&count),
        "no request counts: {text}"
    );
    n.iter().sum()
}
