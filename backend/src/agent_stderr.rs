//! An agent's stderr: its own pipe (never the worker's stderr, which carries the
//! worker's log), read line by line. Each line is capped at `agent.stderr_line_bytes`
//! (the rest dropped, `truncated=true`), a session at `agent.stderr_session_bytes` (then
//! one notice, the rest drained unlogged), and logged as one field of a worker log line
//! tagged with the session id, escaped with [`escape_json_str`] first, so what an agent
//! prints can never become a log line of its own (a forged `"target":"audit"` line
//! stays a quoted string inside the `stderr` field).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hotplex_common::logging::escape_json_str;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;
use tokio::task::JoinHandle;

/// The log target of agent stderr lines.
pub const STDERR_TARGET: &str = "hotplex_worker::agent_stderr";

/// A session's stderr allowance.
#[derive(Debug)]
pub struct StderrBudget {
    line_cap: usize,
    left: AtomicUsize,
    exhausted: AtomicBool,
}

impl StderrBudget {
    pub fn new(line_cap: usize, session_cap: usize) -> Self {
        StderrBudget {
            line_cap,
            left: AtomicUsize::new(session_cap),
            exhausted: AtomicBool::new(false),
        }
    }
}

/// What [`pump`] reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Emit<'a> {
    /// A line (at most the line cap; lossily decoded later).
    Line { bytes: &'a [u8], truncated: bool },
    /// The session's allowance is used up (reported once).
    LimitReached,
}

/// Reads `r` to EOF, reporting capped lines within the budget.
pub async fn pump<R, F>(mut r: R, budget: &StderrBudget, mut emit: F)
where
    R: AsyncBufRead + Unpin,
    F: FnMut(Emit<'_>),
{
    let mut line = Vec::new();
    let mut truncated = false;
    loop {
        let avail = match r.fill_buf().await {
            Ok(a) if !a.is_empty() => a,
            _ => break,
        };
        let (take, end) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        let keep = take.min(budget.line_cap.saturating_sub(line.len()));
        line.extend_from_slice(&avail[..keep]);
        truncated |= take > keep;
        r.consume(take + usize::from(end));
        if end {
            flush(&mut line, &mut truncated, budget, &mut emit);
        }
    }
    flush(&mut line, &mut truncated, budget, &mut emit);
}

fn flush<F: FnMut(Emit<'_>)>(
    line: &mut Vec<u8>,
    truncated: &mut bool,
    budget: &StderrBudget,
    emit: &mut F,
) {
    if line.is_empty() && !*truncated {
        return;
    }
    let cost = line.len().max(1);
    let fits = budget
        .left
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(cost))
        .is_ok();
    if fits {
        emit(Emit::Line {
            bytes: line,
            truncated: *truncated,
        });
    } else if !budget.exhausted.swap(true, Ordering::AcqRel) {
        emit(Emit::LimitReached);
    }
    line.clear();
    *truncated = false;
}

/// `s` as a JSON string literal (quotes included), C1 controls and bidi overrides
/// escaped too.
pub fn escaped(bytes: &[u8]) -> String {
    let mut b = Vec::with_capacity(bytes.len() + 2);
    escape_json_str(&mut b, &String::from_utf8_lossy(bytes));
    String::from_utf8_lossy(&b).into_owned()
}

/// Logs `stderr` of the agent of `session` until it closes (or the task is aborted).
pub fn spawn(stderr: ChildStderr, session: String, budget: Arc<StderrBudget>) -> JoinHandle<()> {
    tokio::spawn(async move {
        pump(BufReader::new(stderr), &budget, |e| match e {
            Emit::Line { bytes, truncated } => tracing::info!(
                target: STDERR_TARGET,
                session = %session,
                truncated,
                stderr = %escaped(bytes),
                "agent stderr"
            ),
            Emit::LimitReached => tracing::warn!(
                target: STDERR_TARGET,
                session = %session,
                "agent stderr over agent.stderr_session_bytes; the rest is not logged"
            ),
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &[u8], line: usize, session: usize) -> Vec<(String, bool)> {
        let budget = StderrBudget::new(line, session);
        let mut out = Vec::new();
        // A small buffer: lines arrive in several pieces.
        let r = BufReader::with_capacity(7, input);
        pump(r, &budget, |e| match e {
            Emit::Line { bytes, truncated } => {
                out.push((String::from_utf8_lossy(bytes).into_owned(), truncated))
            }
            Emit::LimitReached => out.push(("<limit>".into(), false)),
        })
        .await;
        out
    }

    #[tokio::test]
    async fn lines_are_capped_and_the_session_too() {
        let got = run(b"short\n\n0123456789abcdef\nlast", 10, 1000).await;
        assert_eq!(
            got,
            [
                ("short".to_string(), false),
                ("0123456789".to_string(), true),
                ("last".to_string(), false)
            ]
        );
        let got = run(b"aaaa\nbbbb\ncccc\ndddd\n", 10, 9).await;
        assert_eq!(
            got,
            [
                ("aaaa".to_string(), false),
                ("bbbb".to_string(), false),
                ("<limit>".to_string(), false)
            ],
            "one notice, then silence"
        );
    }

    #[test]
    fn escaping_keeps_a_forged_line_inside_a_string() {
        let forged = br#"{"target":"audit","msg":"x"}"#;
        let e = escaped(forged);
        assert_eq!(e, r#""{\"target\":\"audit\",\"msg\":\"x\"}""#);
        assert_eq!(
            escaped("a\u{202e}b\u{9b}\u{1b}".as_bytes()),
            r#""a\u202eb\u009b\u001b""#
        );
    }
}
