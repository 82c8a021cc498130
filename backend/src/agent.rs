//! One agent child process and its JSON-lines protocol.
//!
//! Line protocol (one JSON object per line):
//! - worker → agent (stdin): `{"type":"user","session_id":"...","prompt":"..."}`
//! - agent → worker (stdout): `{"type":"ready"}` (or `system`) once at startup, then per
//!   turn any number of `thinking`, `tool_use`, `tool_result`, `answer` objects, ended by
//!   exactly one `result` (turn done) or `error` (turn failed, agent still usable).
//!
//! The child runs in its own process group (`process_group(0)`), so closing it kills the
//! whole group (grandchildren included) with `killpg(SIGKILL)`, then reaps the child.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::AgentConfig;

/// The longest line accepted from an agent, bytes.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

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

/// One message read from the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLine {
    /// The `type` field.
    pub kind: String,
    /// All other fields.
    pub fields: Map<String, Value>,
}

/// A running agent process.
pub struct AgentProcess {
    child: Child,
    pgid: Option<Pid>,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    closed: bool,
}

impl AgentProcess {
    /// Spawns the agent and, if configured, waits for its ready line.
    pub async fn spawn(
        cfg: &AgentConfig,
        session_id: &str,
        startup_timeout: Duration,
    ) -> Result<Self, AgentError> {
        let program = cfg.command.first().cloned().unwrap_or_default();
        let mut cmd = Command::new(&program);
        cmd.args(cfg.command.iter().skip(1))
            .envs(&cfg.env)
            .env("HOTPLEX_SESSION_ID", session_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &cfg.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| AgentError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(AgentError::Spawn {
                program,
                reason: "no stdio pipes".into(),
            });
        };
        let mut agent = AgentProcess {
            child,
            pgid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            closed: false,
        };
        if cfg.wait_ready {
            let ready = tokio::time::timeout(startup_timeout, async {
                loop {
                    let line = agent.next_line().await?;
                    if line.kind == "ready" || line.kind == "system" {
                        return Ok(());
                    }
                }
            })
            .await;
            match ready {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    agent.close().await;
                    return Err(e);
                }
                Err(_) => {
                    agent.close().await;
                    return Err(AgentError::StartupTimeout(startup_timeout));
                }
            }
        }
        Ok(agent)
    }

    /// The child's pid (also its process-group id).
    pub fn pid(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw() as u32)
    }

    /// Sends one prompt line.
    pub async fn send_prompt(&mut self, session_id: &str, prompt: &str) -> Result<(), AgentError> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "type": "user",
            "session_id": session_id,
            "prompt": prompt,
        }))
        .map_err(|e| AgentError::Io(e.to_string()))?;
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

    /// Reads the next non-empty line. EOF means the agent exited.
    pub async fn next_line(&mut self) -> Result<AgentLine, AgentError> {
        loop {
            let line = match self.stdout.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    let status = match self.child.try_wait() {
                        Ok(Some(s)) => s.to_string(),
                        _ => "stdout closed".to_string(),
                    };
                    return Err(AgentError::Exited(status));
                }
                Err(e) => return Err(AgentError::Garbage(format!("unreadable output: {e}"))),
            };
            if line.trim().is_empty() {
                continue;
            }
            return parse_line(&line);
        }
    }

    /// Kills the whole process group and reaps the child. Idempotent.
    pub async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.kill_group();
        self.stdin = None;
        if let Err(e) = self.child.wait().await {
            tracing::warn!(error = %e, "waiting for agent failed");
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
    }
}

/// Parses one agent line; anything but a JSON object with a string `type` is garbage.
pub fn parse_line(line: &str) -> Result<AgentLine, AgentError> {
    if line.len() > MAX_LINE_BYTES {
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
    async fn shell_agent_round_trip_and_group_kill() {
        // A tiny agent in sh: ready, then answer + result per input line.
        let script = r#"echo '{"type":"ready"}'; while read -r l; do echo '{"type":"answer","text":"ok"}'; echo '{"type":"result"}'; done"#;
        let cfg = AgentConfig::command(vec!["sh".into(), "-c".into(), script.into()]);
        let mut a = AgentProcess::spawn(&cfg, "s1", Duration::from_secs(5))
            .await
            .expect("spawn");
        a.send_prompt("s1", "hello").await.expect("send");
        assert_eq!(a.next_line().await.expect("line").kind, "answer");
        assert_eq!(a.next_line().await.expect("line").kind, "result");
        let pid = a.pid().expect("pid");
        a.close().await;
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn startup_timeout_and_spawn_failure() {
        let cfg = AgentConfig::command(vec!["sleep".into(), "10".into()]);
        let r = AgentProcess::spawn(&cfg, "s", Duration::from_millis(100)).await;
        assert!(matches!(r, Err(AgentError::StartupTimeout(_))));
        let cfg = AgentConfig::command(vec!["/nonexistent/agent".into()]);
        let r = AgentProcess::spawn(&cfg, "s", Duration::from_millis(100)).await;
        assert!(matches!(r, Err(AgentError::Spawn { .. })));
    }
}
