//! A real `redis-server` for the shared-limit-store suites (`proxy_limits_redis*`), a side
//! connection to it (the `redis` crate), and a per-bucket decision checker.
//!
//! Needs Debian's `redis-server`. A suite skips (with a message) only when it is missing
//! and `CI` is not set; in CI a missing `redis-server` fails the test.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hotplex_e2e::ChildGuard;

use super::hdr;

fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether the test must be skipped (no `redis-server`, not in CI; says so on stderr).
pub fn skip_without_redis() -> bool {
    if redis_installed() {
        return false;
    }
    assert!(
        !in_ci(),
        "redis-server is not installed but CI is set: apt-get install redis-server"
    );
    eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    true
}

/// `redis-server` on loopback `port` (127.0.0.1, and ::1 when the host has IPv6), no
/// persistence, plus `extra` arguments (`--port 0 --tls-port P ...` for TLS: `port` is
/// then the TLS port). Returns once the port accepts connections.
pub async fn start_redis(port: u16, extra: &[&str]) -> ChildGuard {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        // `-::1`: bind ::1 too when it exists (hostname `localhost` may resolve to it).
        .args(["--bind", "127.0.0.1", "-::1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null());
    let mut guard = ChildGuard::spawn("redis-server", &mut cmd);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + super::proxy::WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        guard.assert_alive();
        assert!(Instant::now() < deadline, "redis-server never came up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    guard
}

/// A side connection to the test's Redis (`url` with credentials when needed), no
/// response timeout (for `DEBUG SLEEP`).
pub async fn side(url: &str) -> redis::aio::MultiplexedConnection {
    let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .expect("side connection to redis")
}

/// `INFO commandstats` calls of `cmd` minus its failed and rejected calls (the commands
/// Redis ran to completion).
pub async fn completed_calls(c: &mut redis::aio::MultiplexedConnection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{cmd}:");
    let Some(line) = info.lines().find(|l| l.starts_with(&prefix)) else {
        return 0;
    };
    let field = |name: &str| -> u64 {
        line[prefix.len()..]
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("calls") - field("failed_calls").min(field("calls")) - field("rejected_calls")
}

/// Worker health checks and timeouts for the suites that load a 2-core machine on purpose
/// (proxy config sections): the worker stays in service (no 503 `worker_unavailable` from a
/// late probe), so every answer is the limit store's.
pub const PATIENT_WORKER_CHECKS: &str = "health_check:\n  interval: 1s\n  timeout: 5s\n  failures: 10\n  successes: 1\ntimeouts:\n  connect: 5s\n  read: 30s\n  write: 30s\n";

/// One decision of the proxy, as a client sees it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub status: u16,
    /// `RateLimit-Remaining` (admitted responses carry the tightest bucket's).
    pub remaining: Option<u32>,
    /// `error` of a JSON body the proxy wrote (429, 503).
    pub error: String,
}

/// Sends `rb` (a limited route) and reduces the answer to a [`Hit`].
pub async fn hit(rb: reqwest::RequestBuilder) -> Hit {
    let r = rb.send().await.expect("every request is answered");
    let status = r.status().as_u16();
    let remaining = hdr(&r, "ratelimit-remaining").and_then(|v| v.parse().ok());
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    Hit {
        status,
        remaining,
        error: body["error"].as_str().unwrap_or_default().to_string(),
    }
}

/// Whether `h` was admitted and forwarded (the worker answers 404 for the probe session).
pub fn admitted(h: &Hit) -> bool {
    h.status == 404
}

/// The decisions of one bucket that nobody else uses and that never refills during the
/// test (`rate` ≪ 1/test time): each admitted request takes exactly one token, so its
/// `RateLimit-Remaining` must be the previous one minus 1, and once empty it stays empty.
/// A store failure (503, fail closed) may have taken a token in Redis without an answer
/// (the check timed out after Redis ran it), and an admitted request whose worker was out
/// (503 `worker_unavailable`) took one: the next remaining is then only lower.
/// A decision that belongs to another bucket or client breaks the sequence.
#[derive(Debug)]
pub struct Bucket {
    pub name: &'static str,
    pub burst: u32,
    /// Remaining after the last admitted request (`burst` before the first).
    pub last: u32,
    /// A store failure since the last admitted request.
    pub gap: bool,
    pub exhausted: bool,
    pub admitted: u32,
    pub failed: u32,
    pub refused: u32,
    /// Admitted without a decision (store failure, fail open): allowed only when set.
    pub fail_open: bool,
    pub failed_open: u32,
    /// Admitted, then `503 worker_unavailable` (not a limiter decision).
    pub unavailable: u32,
}

impl Bucket {
    pub fn new(name: &'static str, burst: u32) -> Bucket {
        Bucket {
            name,
            burst,
            last: burst,
            gap: false,
            exhausted: false,
            admitted: 0,
            failed: 0,
            refused: 0,
            fail_open: false,
            failed_open: 0,
            unavailable: 0,
        }
    }

    /// A bucket seen through fail-open proxies too (admitted without `RateLimit-*`).
    pub fn with_fail_open(mut self) -> Bucket {
        self.fail_open = true;
        self
    }

    /// Checks `h` against the bucket's history (panics on a decision that is not its own).
    pub fn observe(&mut self, h: &Hit) {
        let n = self.name;
        match h.status {
            503 if h.error == "worker_unavailable" => {
                // Admitted (the limiter runs before routing, so a token was taken), then
                // the worker was out (ejected on a loaded CI machine): no decision to read.
                self.gap = true;
                self.unavailable += 1;
            }
            503 => {
                assert_eq!(h.error, "rate_limit_unavailable", "{n}: {h:?}");
                self.gap = true;
                self.failed += 1;
            }
            429 => {
                assert_eq!(h.error, "rate_limited", "{n}: {h:?}");
                assert!(
                    self.last == 0 || self.gap,
                    "{n}: refused with {} tokens left: {h:?} ({self:?})",
                    self.last
                );
                self.exhausted = true;
                self.refused += 1;
            }
            _ => {
                assert!(admitted(h), "{n}: unexpected answer {h:?}");
                if h.remaining.is_none() && self.fail_open {
                    // Admitted by a fail-open proxy without asking Redis (or Redis ran it
                    // and the reply came too late): no token information.
                    self.gap = true;
                    self.failed_open += 1;
                    return;
                }
                assert!(!self.exhausted, "{n}: admitted after it was empty: {h:?}");
                let r = h
                    .remaining
                    .unwrap_or_else(|| panic!("{n}: admitted without RateLimit-Remaining"));
                assert!(r < self.burst, "{n}: remaining {r} >= burst {}", self.burst);
                if self.gap {
                    assert!(r < self.last, "{n}: remaining {r} after {}", self.last);
                } else {
                    assert_eq!(r + 1, self.last, "{n}: remaining {r} after {}", self.last);
                }
                self.last = r;
                self.gap = false;
                self.admitted += 1;
            }
        }
    }
}

/// Waits until the proxy at `base` admits a request on the `session` route with a decision
/// from the store (a `RateLimit-Remaining` header): connected, logged in, script loaded.
/// Each attempt comes from a new client IP (`X-Forwarded-For`, 192.0.2.0/24, the proxy must
/// trust the loopback peer), so no tracked bucket is touched.
pub async fn wait_store_answers(c: &reqwest::Client, base: &str) {
    let mut n = 0u32;
    let ok = hotplex_e2e::eventually(super::proxy::WAIT, || {
        n += 1;
        let rb = c
            .get(format!("{base}/sessions/warm-up"))
            .header("x-forwarded-for", format!("192.0.2.{}", n % 250 + 1));
        async move {
            let h = hit(rb).await;
            admitted(&h) && h.remaining.is_some()
        }
    })
    .await;
    assert!(ok, "{base}: the store never answered");
}
