//! One agent child process, spoken to through its protocol adapter ([`crate::protocol`]).
//!
//! The child runs in its own process group (`process_group(0)`), so closing it kills the
//! whole group (grandchildren included) with `killpg(SIGKILL)`, then, with a per-session
//! uid, every process of that uid (those that left the group with `setsid` too; see
//! [`crate::sandbox`]), then reaps the child. It inherits only the allowlisted worker
//! variables; with `agent.limits` it is started through this executable's `agent-exec`
//! launcher, which sets the rlimits and execs it (same pid). Its stderr is a pipe of its
//! own, logged capped and escaped ([`crate::agent_stderr`]). Output lines are read with
//! a hard cap: at most `max_line_bytes` of a line is ever buffered. In a bubblewrap
//! sandbox ([`crate::bwrap`]) the child is the outer bwrap, started by the sandbox's
//! spawner thread, and closing kills the sandbox's PID namespace.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::AgentConfig;
pub use crate::protocol::AgentLine;
use crate::protocol::{adapter, Protocol};
use crate::sandbox::{Sandbox, SessionSandbox};

/// The default longest line accepted from an agent, bytes.
pub const MAX_LINE_BYTES: usize = crate::agent_config::DEFAULT_MAX_LINE_BYTES;

/// How long a closed agent's stderr may still be read before the reader is stopped.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// How long a closed agent's sandbox may take to die (its namespace's processes exit).
const NAMESPACE_GRACE: Duration = Duration::from_secs(5);

/// What went wrong with an agent process.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start agent {program:?}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("agent did not become ready within {0:?}")]
    StartupTimeout(Duration),
    #[error("agent exited ({0})")]
    Exited(String),
    #[error("agent wrote a line that is not a JSON object: {0}")]
    Garbage(String),
    #[error("agent i/o error: {0}")]
    Io(String),
}

/// A running agent process.
pub struct AgentProcess {
    child: Child,
    pgid: Option<Pid>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    proto: Box<dyn Protocol>,
    /// Decoded turn lines not yet returned.
    pending: VecDeque<AgentLine>,
    max_line: usize,
    sandbox: Arc<SessionSandbox>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    closed: bool,
}

/// The argv actually executed: the command plus protocol arguments, behind the
/// `agent-exec` launcher when limits are configured.
pub fn effective_argv(cfg: &AgentConfig, extra: Vec<String>) -> Vec<String> {
    let mut argv: Vec<String> = cfg.command.iter().cloned().chain(extra).collect();
    if !cfg.limits.is_empty() {
        let mut l = vec![crate::agent_config::current_exe(), "agent-exec".to_string()];
        l.extend(cfg.limits.launcher_args());
        l.push("--".to_string());
        l.extend(argv);
        argv = l;
    }
    argv
}

impl AgentProcess {
    /// Spawns a fresh agent for a session (with a new uid and session dir when the
    /// sandbox has them) and, if configured, waits for its ready signal.
    pub async fn spawn(
        cfg: &AgentConfig,
        sandbox: &Arc<Sandbox>,
        session_id: &str,
        startup_timeout: Duration,
    ) -> Result<Self, AgentError> {
        // Off the runtime threads: taking a uid scans /proc (a sandboxed session is three
        // processes), and the directory is made on disk.
        let (sbx, id) = (sandbox.clone(), session_id.to_string());
        let sb = tokio::task::spawn_blocking(move || sbx.session(&id))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| AgentError::Spawn {
                program: cfg.command.first().cloned().unwrap_or_default(),
                reason: format!("session sandbox: {e}"),
            })?;
        if sandbox.sweeps_at_start() && sb.uid().is_some() {
            // Leftovers of the uid the worker cannot see (hidepid): killed before use. A
            // uid that stays unclean is quarantined when `sb` is dropped.
            let s = sb.clone();
            if !tokio::task::spawn_blocking(move || s.sweep())
                .await
                .unwrap_or(false)
            {
                return Err(AgentError::Spawn {
                    program: cfg.command.first().cloned().unwrap_or_default(),
                    reason: "session sandbox: processes of the session's uid survived the sweep"
                        .into(),
                });
            }
        }
        Self::spawn_with(cfg, session_id, startup_timeout, sb, None).await
    }

    /// Replaces `old` (closed first) by a new process of the same session: same session
    /// dir, resuming the agent's own conversation when its protocol can.
    pub async fn restart(
        old: Option<AgentProcess>,
        cfg: &AgentConfig,
        sandbox: &Arc<Sandbox>,
        session_id: &str,
        startup_timeout: Duration,
    ) -> Result<Self, AgentError> {
        let Some(mut old) = old else {
            return Self::spawn(cfg, sandbox, session_id, startup_timeout).await;
        };
        old.close().await;
        let dir = old.sandbox.clone();
        let resume = old.proto.resume_token();
        drop(old);
        Self::spawn_with(cfg, session_id, startup_timeout, dir, resume).await
    }

    async fn spawn_with(
        cfg: &AgentConfig,
        session_id: &str,
        startup_timeout: Duration,
        sandbox: Arc<SessionSandbox>,
        resume: Option<String>,
    ) -> Result<Self, AgentError> {
        let mut proto = adapter(cfg.protocol);
        let argv = sandbox
            .wrap(effective_argv(cfg, proto.extra_args(resume.as_deref())))
            .map_err(|reason| AgentError::Spawn {
                program: cfg.command.first().cloned().unwrap_or_default(),
                reason,
            })?;
        let program = argv.first().cloned().unwrap_or_default();
        let mut cmd = Command::new(&program);
        let spawner = sandbox.spawner();
        if spawner.is_none() {
            cmd.args(argv.iter().skip(1));
        }
        cmd.env_clear();
        for name in &cfg.env_allowlist {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(d) = &cfg.cwd {
            cmd.current_dir(d);
        }
        sandbox.apply(&mut cmd);
        cmd.envs(&cfg.env)
            .env("HOTPLEX_SESSION_ID", session_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // With a uid switch std cannot use posix_spawn and forks the worker: off the
        // runtime threads, so a burst of session starts does not stall the event loop.
        let spawned = match spawner {
            Some(s) => s.spawn(cmd, argv.iter().skip(1).cloned().collect()).await,
            None => tokio::task::spawn_blocking(move || cmd.spawn())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
        };
        let mut child = spawned.map_err(|e| AgentError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stderr_task = child.stderr.take().map(|e| {
            crate::agent_stderr::spawn(e, session_id.to_string(), sandbox.stderr_budget())
        });
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(AgentError::Spawn {
                program,
                reason: "no stdio pipes".into(),
            });
        };
        let startup = proto.startup_lines();
        let mut agent = AgentProcess {
            child,
            pgid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            proto,
            pending: VecDeque::new(),
            max_line: cfg.max_line_bytes,
            sandbox,
            stderr_task,
            closed: false,
        };
        let ready = tokio::time::timeout(startup_timeout, async {
            for l in &startup {
                agent.write_line(l).await?;
            }
            if cfg.wait_ready {
                loop {
                    let line = agent.read_raw().await?;
                    if agent.proto.is_ready(&line) {
                        break;
                    }
                }
            }
            Ok(())
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(agent),
            Ok(Err(e)) => {
                agent.close().await;
                Err(e)
            }
            Err(_) => {
                agent.close().await;
                Err(AgentError::StartupTimeout(startup_timeout))
            }
        }
    }

    /// The child's pid (also its process-group id); in a bubblewrap sandbox, the outer
    /// `bwrap`'s.
    pub fn pid(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw() as u32)
    }

    /// The session's own working directory, if any.
    pub fn session_dir(&self) -> Option<&Path> {
        self.sandbox.dir()
    }

    /// The session's own uid, when agents run as per-session users.
    pub fn uid(&self) -> Option<u32> {
        self.sandbox.uid()
    }

    /// Whether a new process can resume this agent's conversation.
    pub fn can_resume(&self) -> bool {
        self.proto.resume_token().is_some()
    }

    async fn write_line(&mut self, v: &Value) -> Result<(), AgentError> {
        let mut line = serde_json::to_vec(v).map_err(|e| AgentError::Io(e.to_string()))?;
        line.push(b'\n');
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| AgentError::Exited("stdin closed".into()))?;
        let res = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
        .await;
        res.map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => AgentError::Exited("broken pipe".into()),
            _ => AgentError::Io(e.to_string()),
        })
    }

    /// Sends one prompt.
    pub async fn send_prompt(&mut self, session_id: &str, prompt: &str) -> Result<(), AgentError> {
        self.pending.clear();
        let line = self.proto.prompt_line(session_id, prompt);
        self.write_line(&line).await
    }

    /// Asks the agent to end the running turn and waits (at most `grace`) until it did.
    /// Returns whether the agent is usable for the next turn; `false` when its protocol
    /// has no interrupt or it did not finish in time (the caller restarts it).
    pub async fn interrupt(&mut self, grace: Duration) -> bool {
        let Some(line) = self.proto.interrupt_line() else {
            return false;
        };
        let done = tokio::time::timeout(grace, async {
            self.write_line(&line).await?;
            loop {
                if matches!(self.next_line().await?.kind.as_str(), "result" | "error") {
                    return Ok::<(), AgentError>(());
                }
            }
        })
        .await;
        self.pending.clear();
        matches!(done, Ok(Ok(())))
    }

    /// The next turn line (`thinking`, `tool_use`, `tool_result`, `answer`, `result`,
    /// `error`). EOF means the agent exited.
    pub async fn next_line(&mut self) -> Result<AgentLine, AgentError> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Ok(l);
            }
            let raw = self.read_raw().await?;
            self.pending.extend(self.proto.decode(raw));
        }
    }

    /// Reads the next non-empty raw line (bounded by `max_line`).
    async fn read_raw(&mut self) -> Result<AgentLine, AgentError> {
        loop {
            let mut buf = Vec::new();
            let got = read_line_capped(&mut self.stdout, &mut buf, self.max_line).await?;
            if !got {
                let status = match self.child.try_wait() {
                    Ok(Some(s)) => s.to_string(),
                    _ => "stdout closed".to_string(),
                };
                return Err(AgentError::Exited(status));
            }
            let text = String::from_utf8_lossy(&buf);
            if text.trim().is_empty() {
                continue;
            }
            return parse_line_max(&text, self.max_line);
        }
    }

    /// Kills the whole process group and every process of the session's uid, and reaps
    /// the child. Idempotent.
    pub async fn close(&mut self) {
        if self.closed {
            return;
        }
        // In a bubblewrap sandbox: SIGKILL to its PID namespace's init kills the whole
        // namespace (setsid escapees included); the outer bwrap, left alive, reaps the
        // init once the namespace is empty and exits (no orphaned zombie), and is killed
        // only if it does not within the grace.
        let init = self
            .pid()
            .filter(|_| self.sandbox.sandboxed())
            .and_then(crate::bwrap::namespace_init);
        self.stdin = None;
        match init {
            Some(i) => {
                crate::bwrap::kill_namespace(i);
                if tokio::time::timeout(NAMESPACE_GRACE, self.child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(init = i, "sandbox still alive at agent close; killed");
                    self.kill_group();
                }
            }
            None => self.kill_group(),
        }
        if let Err(e) = self.child.wait().await {
            tracing::warn!(error = %e, "waiting for agent failed");
        }
        if let Some(i) = init {
            let gone = tokio::task::spawn_blocking(move || {
                crate::bwrap::wait_namespace_gone(i, NAMESPACE_GRACE)
            })
            .await;
            if !matches!(gone, Ok(true)) {
                tracing::warn!(init = i, "sandbox namespace still alive at agent close");
            }
        }
        if self.sandbox.uid().is_some() {
            // Whatever left the process group (setsid) dies with the uid.
            let sb = self.sandbox.clone();
            let swept = tokio::task::spawn_blocking(move || sb.sweep()).await;
            if !matches!(swept, Ok(true)) {
                tracing::warn!(uid = ?self.sandbox.uid(), "uid sweep incomplete at agent close");
            }
        }
        if let Some(mut t) = self.stderr_task.take() {
            // Its last lines (a crash report) are still logged; a writer that escaped the
            // kill (no per-session uid) does not keep the reader alive. Not awaited here.
            tokio::spawn(async move {
                if tokio::time::timeout(STDERR_GRACE, &mut t).await.is_err() {
                    t.abort();
                }
            });
        }
        self.closed = true;
    }

    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::warn!(error = %e, pgid = pgid.as_raw(), "killpg failed"),
            }
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // Normal paths call `close()`; this is the safety net (the child itself is
        // killed by `kill_on_drop` and reaped by tokio's orphan queue).
        if !self.closed {
            self.kill_group();
        }
        if let Some(t) = self.stderr_task.take() {
            t.abort();
        }
    }
}

/// Reads one line (without its `\n`) into `buf`, never holding more than `cap` bytes of
/// it: a longer line is an error as soon as the cap is passed. `Ok(false)`: EOF before
/// any byte of a new line.
pub async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> Result<bool, AgentError> {
    loop {
        let avail = r
            .fill_buf()
            .await
            .map_err(|e| AgentError::Garbage(format!("unreadable output: {e}")))?;
        if avail.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, end) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if buf.len() + take > cap {
            return Err(AgentError::Garbage(format!(
                "line exceeds the limit of {cap} bytes"
            )));
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take + usize::from(end));
        if end {
            return Ok(true);
        }
    }
}

/// Parses one raw line of at most [`MAX_LINE_BYTES`] (see [`parse_line_max`]).
pub fn parse_line(line: &str) -> Result<AgentLine, AgentError> {
    parse_line_max(line, MAX_LINE_BYTES)
}

/// Parses one raw line; anything but a JSON object with a string `type` is garbage.
pub fn parse_line_max(line: &str, max: usize) -> Result<AgentLine, AgentError> {
    if line.len() > max {
        return Err(AgentError::Garbage(format!(
            "line of {} bytes exceeds the limit",
            line.len()
        )));
    }
    let garbage = || AgentError::Garbage(truncate(line, 120));
    let value: Value = serde_json::from_str(line).map_err(|_| garbage())?;
    let Value::Object(mut fields) = value else {
        return Err(garbage());
    };
    let kind = match fields.remove("type") {
        Some(Value::String(s)) => s,
        _ => return Err(garbage()),
    };
    Ok(AgentLine { kind, fields })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_with_type() {
        let l = parse_line(r#"{"type":"answer","text":"hi"}"#).expect("valid");
        assert_eq!(l.kind, "answer");
        assert_eq!(l.fields.get("text"), Some(&Value::from("hi")));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "not json",
            "[1,2]",
            r#"{"text":"no type"}"#,
            r#"{"type":3}"#,
        ] {
            assert!(
                matches!(parse_line(bad), Err(AgentError::Garbage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "h...");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[tokio::test]
    async fn capped_reader_stops_at_the_cap() {
        let data = format!("{}\nshort\n{}", "x".repeat(100), "y".repeat(5));
        let mut r = BufReader::with_capacity(16, data.as_bytes());
        let mut buf = Vec::new();
        assert!(read_line_capped(&mut r, &mut buf, 50).await.is_err());
        assert!(buf.len() <= 50, "never more than the cap buffered");
        let mut r = BufReader::with_capacity(16, "short\nlast".as_bytes());
        let mut buf = Vec::new();
        assert!(read_line_capped(&mut r, &mut buf, 50).await.expect("line"));
        assert_eq!(buf, b"short");
        buf.clear();
        assert!(read_line_capped(&mut r, &mut buf, 50).await.expect("last"));
        assert_eq!(buf, b"last");
        buf.clear();
        assert!(!read_line_capped(&mut r, &mut buf, 50).await.expect("eof"));
    }

    #[tokio::test]
    async fn shell_agent_round_trip_and_group_kill() {
        // A tiny agent in sh: ready, then answer + result per input line.
        let script = r#"echo '{"type":"ready"}'; while read -r l; do echo '{"type":"answer","text":"ok"}'; echo '{"type":"result"}'; done"#;
        let cfg = AgentConfig::command(vec!["sh".into(), "-c".into(), script.into()]);
        let mut a = AgentProcess::spawn(
            &cfg,
            &Arc::new(Sandbox::worker_user(&cfg)),
            "s1",
            Duration::from_secs(5),
        )
        .await
        .expect("spawn");
        a.send_prompt("s1", "hello").await.expect("send");
        assert_eq!(a.next_line().await.expect("line").kind, "answer");
        assert_eq!(a.next_line().await.expect("line").kind, "result");
        assert!(
            !a.interrupt(Duration::from_millis(10)).await,
            "no interrupt"
        );
        let pid = a.pid().expect("pid");
        a.close().await;
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn env_allowlist_and_session_dir() {
        std::env::set_var("HOTPLEX_TEST_WORKER_SECRET", "s3cret");
        let root = tempfile::tempdir().expect("tempdir");
        let script = r#"echo "{\"type\":\"ready\",\"secret\":\"${HOTPLEX_TEST_WORKER_SECRET:-none}\",\"path\":\"${PATH:+set}\",\"cwd\":\"$(pwd)\"}"; cat >/dev/null"#;
        let mut cfg = AgentConfig::command(vec!["sh".into(), "-c".into(), script.into()]);
        cfg.session_dirs = Some(root.path().to_path_buf());
        cfg.wait_ready = false;
        let mut a = AgentProcess::spawn(
            &cfg,
            &Arc::new(Sandbox::worker_user(&cfg)),
            "s-dir",
            Duration::from_secs(5),
        )
        .await
        .expect("spawn");
        let l = a.read_raw().await.expect("line");
        assert_eq!(
            l.fields["secret"], "none",
            "worker variables are not inherited"
        );
        assert_eq!(l.fields["path"], "set", "allowlisted ones are");
        let dir = a.session_dir().expect("dir").to_path_buf();
        assert_eq!(l.fields["cwd"], Value::from(dir.to_string_lossy().as_ref()));
        let a = AgentProcess::restart(
            Some(a),
            &cfg,
            &Arc::new(Sandbox::worker_user(&cfg)),
            "s-dir",
            Duration::from_secs(5),
        )
        .await
        .expect("restart");
        assert_eq!(a.session_dir(), Some(dir.as_path()), "kept across restarts");
        drop(a);
        assert!(!dir.exists(), "removed with the last process");
    }

    #[tokio::test]
    async fn unanswered_interrupt_means_restart_with_resume() {
        // A stand-in for the CLI: answers `initialize` (then reports its argv), starts a
        // turn (its session id) and never ends it, ignoring the interrupt.
        let script = r#"while read -r l; do case "$l" in
            *initialize*) echo '{"type":"control_response","response":{"request_id":"hotplex-init"}}'
                          printf '{"type":"system","subtype":"argv","argv":"%s"}\n' "$*" ;;
            *'"type":"user"'*) echo '{"type":"system","subtype":"init","session_id":"cli-1"}' ;;
            esac; done"#;
        let mut cfg =
            AgentConfig::command(vec!["sh".into(), "-c".into(), script.into(), "sh".into()]);
        cfg.protocol = crate::agent_config::AgentProtocol::ClaudeStreamJson;
        let t = Duration::from_secs(5);
        let mut a = AgentProcess::spawn(&cfg, &Arc::new(Sandbox::worker_user(&cfg)), "s", t)
            .await
            .expect("spawn");
        assert_eq!(a.read_raw().await.expect("argv").fields["argv"], "");
        a.send_prompt("s", "hi").await.expect("send");
        let pending = tokio::time::timeout(Duration::from_millis(300), a.next_line()).await;
        assert!(pending.is_err(), "no turn line yet");
        assert!(a.can_resume(), "the CLI's session id was seen");
        assert!(!a.interrupt(Duration::from_millis(200)).await, "unanswered");
        let mut b =
            AgentProcess::restart(Some(a), &cfg, &Arc::new(Sandbox::worker_user(&cfg)), "s", t)
                .await
                .expect("restart");
        assert_eq!(
            b.read_raw().await.expect("argv").fields["argv"],
            "--resume cli-1"
        );
        b.close().await;
    }

    #[tokio::test]
    async fn startup_timeout_and_spawn_failure() {
        let cfg = AgentConfig::command(vec!["sleep".into(), "10".into()]);
        let r = AgentProcess::spawn(
            &cfg,
            &Arc::new(Sandbox::worker_user(&cfg)),
            "s",
            Duration::from_millis(100),
        )
        .await;
        assert!(matches!(r, Err(AgentError::StartupTimeout(_))));
        let cfg = AgentConfig::command(vec!["/nonexistent/agent".into()]);
        let r = AgentProcess::spawn(
            &cfg,
            &Arc::new(Sandbox::worker_user(&cfg)),
            "s",
            Duration::from_millis(100),
        )
        .await;
        assert!(matches!(r, Err(AgentError::Spawn { .. })));
    }
}
