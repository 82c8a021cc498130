//! Helpers of the end-to-end suites, each defined once:
//!
//! - [`worker`]: a worker in-process or as an `e2e-worker` child, HTTP/SSE/WebSocket calls;
//! - [`proxy`]: `e2e-worker` and `e2e-proxy` child processes and calls through the proxy;
//! - [`dns`]: an in-test DNS server and the DNS discovery helpers;
//! - [`fake_upstream`]: an in-test fake worker with scripted misbehaviour;
//! - [`http_service`]: a small real HTTP service naming itself in every answer (http pools);
//! - [`h2raw`]: a raw HTTP/2 client (frames by hand, for hostile-peer tests);
//! - [`tls`]: a private test CA, its leaf certificates, a real worker serving TLS;
//! - [`procs`]: `/proc` readers (fds, memory, children) that fail loudly;
//! - [`redis`]: a real `redis-server`, a side connection, a per-bucket decision checker;
//! - here: the HTTP client, header and metric readers both sides use.

pub mod dns;
pub mod fake_upstream;
pub mod h2raw;
pub mod http_service;
pub mod procs;
pub mod proxy;
pub mod redis;
pub mod tls;
pub mod worker;

use std::time::Duration;

/// The HTTP client of the tests (30 s timeout, up to 64 idle connections per host).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// A response header as a string (`None` when absent or not UTF-8).
pub fn hdr(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `/metrics` text served at `base` (`http://host:port`).
pub async fn metrics_at(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// One series of the `/metrics` served at `base` (0 when absent).
pub async fn metric_at(c: &reqwest::Client, base: &str, name: &str, labels: &[&str]) -> f64 {
    metric_in(&metrics_at(c, base).await, name, labels)
}

/// One series of a `/metrics` text (0 when absent).
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    hotplex_e2e::metric_value(text, name, labels).unwrap_or(0.0)
}

/// The bound addresses a child process wrote to its `--addr-file` (JSON), waited for while
/// the child runs (bind-then-pass: the process binds port 0 itself and reports the port, so
/// no port is reserved by the harness and released for it).
pub async fn addr_file(
    path: &std::path::Path,
    child: &mut hotplex_e2e::ChildGuard,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}: {text:?}", path.display()));
        }
        child.assert_alive();
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not write {}",
            child.name(),
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the worker command `cmd` (its flags set, but no `--listen`) on `127.0.0.1:0`:
/// bind-then-pass, it writes its bound address to an address file in `dir`. Returns once
/// it answers `/health/live`.
pub async fn spawn_worker_cmd(
    name: &str,
    cmd: std::process::Command,
    dir: &std::path::Path,
) -> (hotplex_e2e::ChildGuard, std::net::SocketAddr) {
    spawn_worker_cmd_on(name, cmd, dir, ([127, 0, 0, 1], 0).into()).await
}

/// [`spawn_worker_cmd`] on `listen` (port 0: the worker picks, the address file says).
pub async fn spawn_worker_cmd_on(
    name: &str,
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
) -> (hotplex_e2e::ChildGuard, std::net::SocketAddr) {
    let addr_path = dir.join("worker.addr");
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--addr-file")
        .arg(&addr_path);
    let mut guard = hotplex_e2e::ChildGuard::spawn(name, &mut cmd);
    let addr = addr_of(&addr_file(&addr_path, &mut guard).await, "listen");
    hotplex_e2e::wait_until_http_ok(
        &format!("http://{addr}/health/live"),
        Duration::from_secs(15),
    )
    .await;
    (guard, addr)
}

/// Worker `tenant_quotas` for suites that test the pool, routing or load rather than
/// tenant quotas: one tenant (the anonymous one, or a test's key) may fill the pool and
/// create sessions and run turns as fast as the test needs (the shipped defaults hold a
/// tenant to half the pool and 60/120-burst rates; `tenant_quotas.rs` tests those).
pub const POOL_TESTS_TENANT_QUOTAS: &str = "tenant_quotas:\n  max_sessions: 100000\n  \
     new_sessions_per_minute: 1000000\n  new_sessions_burst: 1000000\n  \
     turns_per_minute: 1000000\n  turns_burst: 1000000\n";

/// The `key` address of an addr file.
pub fn addr_of(v: &serde_json::Value, key: &str) -> std::net::SocketAddr {
    v[key]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key} address in {v}"))
}
