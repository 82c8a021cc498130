//! Harness for the end-to-end tests: real processes on loopback ports.
//!
//! - [`free_port`]: an ephemeral port picked by binding `127.0.0.1:0` (and released: only
//!   where bind-then-pass is not possible);
//! - [`ChildGuard`]: a spawned child process that is killed (and reaped) on drop, with
//!   [`ChildGuard::assert_alive`] (`try_wait`) and [`ChildGuard::assert_serving`];
//! - [`wait_until_http_ok`]: polls a URL until it answers 2xx;
//! - [`sse`]: a real Server-Sent-Events reader over a streaming reqwest response.
//!
//! Spawning the binaries themselves happens in `tests/tests/e2e/support/`, because
//! `CARGO_BIN_EXE_*` is only visible to integration tests.

pub mod sse;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Picks a free TCP port on 127.0.0.1 (bind to port 0, read it, release it): another process
/// can take it before it is used. Only for what cannot bind port 0 itself and report it:
/// an address nobody listens on (a dead worker), `redis-server --port`, and the hand-written
/// proxy configs that still name their listeners. Workers and proxies the support module
/// spawns bind `127.0.0.1:0` and report the port (`--addr-file`); in-process servers bind
/// `127.0.0.1:0` directly.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A child process killed with SIGKILL and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed; stdout/stderr inherited unless
    /// `HOTPLEX_E2E_QUIET` is set.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        if std::env::var_os("HOTPLEX_E2E_QUIET").is_some() {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        Self::spawn_with_output(name, cmd)
    }

    /// Spawns `cmd` with stdin closed and its stdout/stderr as the caller set them
    /// (e.g. stderr into a log file the test reads), whatever `HOTPLEX_E2E_QUIET` says.
    pub fn spawn_with_output(name: &str, cmd: &mut Command) -> ChildGuard {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {name}: {e}"));
        ChildGuard {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a signal (e.g. `libc::SIGTERM`, `libc::SIGSTOP`) to the child.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the child to exit by itself, up to `timeout`; returns its exit status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Panics unless the child is still running: `try_wait` reaps it if it exited, so a
    /// crashed child fails here whether or not it was a zombie (its `/proc/<pid>` entry
    /// exists until it is reaped, which is why an existence check cannot fail).
    pub fn assert_alive(&mut self) {
        let name = self.name.clone();
        let Some(c) = self.child.as_mut() else {
            panic!("{name} was already reaped");
        };
        match c.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                self.child = None;
                panic!("{name} exited: {status}");
            }
            Err(e) => panic!("{name}: wait failed: {e}"),
        }
    }

    /// [`Self::assert_alive`], then `url` must answer 2xx within 5 s: the process is not only
    /// running but serving.
    pub async fn assert_serving(&mut self, url: &str) {
        self.assert_alive();
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} does not answer {url}: {e}", self.name));
        assert!(
            r.status().is_success(),
            "{} answers {url} with {}",
            self.name,
            r.status()
        );
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` with GET until it answers 2xx or `timeout` passes; panics on timeout.
pub async fn wait_until_http_ok(url: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(resp) = client
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
        {
            if resp.status().is_success() {
                return;
            }
        }
        if Instant::now() >= deadline {
            panic!("{url} did not answer 2xx within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `cond` every 25 ms until it is true or `timeout` passes. Returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sum of the samples of `name` whose label set contains every `labels` pair, in a
/// Prometheus text exposition. `labels` are `key="value"` fragments.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|p| rest.contains(p)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        // Several series match when `labels` names only some of them (and every known
        // label value exists from start, at 0): their sum, as PromQL's `sum` would.
        .reduce(|a, b| a + b)
}

/// Spawn helper: `Command` for a binary with arguments.
pub fn command(bin: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_matches_name_and_labels() {
        let text = "# HELP x y\nhotplex_sessions_total{component=\"worker\"} 3\n\
                    hotplex_sessions_errors{component=\"worker\",reason=\"crash\"} 2\n\
                    hotplex_sessions_active 5\n";
        assert_eq!(metric_value(text, "hotplex_sessions_total", &[]), Some(3.0));
        assert_eq!(
            metric_value(text, "hotplex_sessions_errors", &["reason=\"crash\""]),
            Some(2.0)
        );
        assert_eq!(
            metric_value(text, "hotplex_sessions_active", &[]),
            Some(5.0)
        );
        assert_eq!(metric_value(text, "hotplex_sessions", &[]), None);
        assert_eq!(
            metric_value(text, "hotplex_sessions_errors", &["reason=\"idle\""]),
            None
        );
        // Several matching series (a zero-initialised one among them): their sum.
        let text = "x{source=\"none\",outcome=\"gone\"} 0\nx{source=\"path\",outcome=\"gone\"} 4\n\
                    x{source=\"path\",outcome=\"pinned\"} 9\n";
        assert_eq!(metric_value(text, "x", &["outcome=\"gone\""]), Some(4.0));
        assert_eq!(metric_value(text, "x", &["source=\"path\""]), Some(13.0));
    }

    #[test]
    fn assert_alive_fails_for_an_exited_child() {
        let mut g = ChildGuard::spawn("true", &mut command("true", &[]));
        // Once `true` exits it is a zombie (its /proc entry exists) until try_wait reaps it.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..200 {
                g.assert_alive();
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
        assert!(r.is_err(), "an exited child passed assert_alive");
    }

    #[test]
    fn child_guard_kills_on_drop() {
        let mut g = ChildGuard::spawn("sleep", &mut command("sleep", &["30"]));
        assert!(g.is_running());
        let pid = g.pid();
        drop(g);
        // Reaped: no /proc entry left (or a different process reused the pid, which is unlikely).
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|c| !c.starts_with("sleep"))
                    .unwrap_or(true)
        );
    }
}
