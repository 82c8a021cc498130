//! The built-in demo agent (`hotplex-worker demo-agent`): deterministic, no network.
//!
//! It speaks the worker's JSON-lines protocol (see [`crate::agent`]) on stdin/stdout and
//! keeps per-session state (turn counter and the conversation so far). For each prompt it
//! emits `thinking` → `tool_use` → `tool_result` → `answer` → `result`.
//!
//! Special prompts, for tests. `fail` and `sleep <ms>` always work (harmless: a turn is
//! bounded by the execution timeout anyway); `crash`, `garbage`, `spawn` and `history`
//! only with `--test-hooks` (the worker passes it with `agent.demo_test_hooks: true`;
//! otherwise they are ordinary prompts):
//! - `crash`: exits abruptly (status 3) without finishing the turn;
//! - `garbage`: prints a line that is not JSON;
//! - `fail`: reports an agent `error` for the turn (the agent stays usable);
//! - `sleep <ms>`: waits that long after `thinking`, then finishes normally;
//! - `spawn`: starts a grandchild `sleep 600` (its pid is in the answer) to prove that
//!   closing the session kills the whole process group;
//! - `history`: answers with every prompt of the conversation so far.

use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::{json, Value};

/// The agent's state for one session.
#[derive(Debug, Default)]
pub struct DemoAgent {
    /// Whether the test prompts are enabled.
    pub hooks: bool,
    turn: u64,
    history: Vec<String>,
    /// Grandchildren started by `spawn` (kept so they are not reaped by us).
    children: Vec<std::process::Child>,
}

/// What the agent does after a prompt.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Write these lines, sleeping the given time after the first.
    Lines(Vec<Value>, Duration),
    /// Write a raw non-JSON line.
    Garbage,
    /// Exit at once with this status.
    Exit(i32),
}

impl DemoAgent {
    /// Computes the reply to one prompt.
    pub fn respond(&mut self, prompt: &str) -> Action {
        let hook = |name: &str| self.hooks && prompt.trim() == name;
        if hook("crash") {
            return Action::Exit(3);
        }
        if hook("garbage") {
            return Action::Garbage;
        }
        let hooks = self.hooks;
        self.turn += 1;
        self.history.push(prompt.to_string());
        let n = self.turn;
        let trimmed = prompt.trim();
        let mut delay = Duration::ZERO;
        if let Some(ms) = trimmed.strip_prefix("sleep ") {
            delay = Duration::from_millis(ms.trim().parse().unwrap_or(0));
        }
        let thinking = json!({"type":"thinking","text":format!("Thinking about turn {n}")});
        if trimmed == "fail" {
            return Action::Lines(
                vec![
                    thinking,
                    json!({"type":"error","message":format!("demo agent failure on turn {n}")}),
                ],
                delay,
            );
        }
        let tool_id = format!("tool-{n}");
        let mut output = json!(prompt);
        let mut answer = format!("Turn {n}: you said: {prompt}");
        if hooks && trimmed == "spawn" {
            match std::process::Command::new("sleep")
                .arg("600")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
            {
                Ok(c) => {
                    output = json!({"grandchild_pid": c.id()});
                    answer = format!("Turn {n}: spawned grandchild {}", c.id());
                    self.children.push(c);
                }
                Err(e) => answer = format!("Turn {n}: spawn failed: {e}"),
            }
        } else if hooks && trimmed == "history" {
            answer = format!("Turn {n}: history: {}", self.history.join(" | "));
        }
        Action::Lines(
            vec![
                thinking,
                json!({"type":"tool_use","id":tool_id,"tool":"echo","input":{"text":prompt}}),
                json!({"type":"tool_result","id":tool_id,"output":output}),
                json!({"type":"answer","text":answer}),
                json!({"type":"result","turn":n,"stop_reason":"end_turn"}),
            ],
            delay,
        )
    }
}

/// Runs the demo agent on stdin/stdout until stdin closes. Returns the exit status.
pub fn run(test_hooks: bool) -> i32 {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut agent = DemoAgent {
        hooks: test_hooks,
        ..DemoAgent::default()
    };
    if writeln!(out, "{}", json!({"type":"ready","agent":"hotplex-demo"})).is_err()
        || out.flush().is_err()
    {
        return 1;
    }
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return 1 };
        if line.trim().is_empty() {
            continue;
        }
        let prompt = match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("type").and_then(Value::as_str) == Some("user") => v
                .get("prompt")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => {
                let e =
                    json!({"type":"error","message":"expected {\"type\":\"user\",\"prompt\":...}"});
                if writeln!(out, "{e}").and_then(|_| out.flush()).is_err() {
                    return 1;
                }
                continue;
            }
        };
        let ok = match agent.respond(&prompt) {
            Action::Exit(code) => std::process::exit(code),
            Action::Garbage => writeln!(out, "this is not json <<<").and_then(|_| out.flush()),
            Action::Lines(lines, delay) => (|| {
                for (i, l) in lines.iter().enumerate() {
                    writeln!(out, "{l}")?;
                    out.flush()?;
                    if i == 0 && !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                }
                Ok(())
            })(),
        };
        if ok.is_err() {
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(a: &Action) -> Vec<String> {
        match a {
            Action::Lines(l, _) => l
                .iter()
                .map(|v| v["type"].as_str().unwrap_or_default().to_string())
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn turn_sequence_and_state() {
        let mut a = DemoAgent {
            hooks: true,
            ..DemoAgent::default()
        };
        let r1 = a.respond("hello");
        assert_eq!(
            kinds(&r1),
            ["thinking", "tool_use", "tool_result", "answer", "result"]
        );
        let Action::Lines(l, _) = a.respond("again") else {
            panic!("lines expected")
        };
        assert_eq!(l[3]["text"], "Turn 2: you said: again");
        assert_eq!(l[4]["turn"], 2);
        let Action::Lines(l, _) = a.respond("history") else {
            panic!("lines expected")
        };
        assert_eq!(l[3]["text"], "Turn 3: history: hello | again | history");
    }

    #[test]
    fn special_prompts() {
        let mut off = DemoAgent::default();
        for p in ["crash", "garbage", "spawn", "history"] {
            let Action::Lines(l, d) = off.respond(p) else {
                panic!("{p}: an ordinary prompt without hooks")
            };
            assert_eq!(l.len(), 5, "{p}");
            assert!(d.is_zero(), "{p}");
            assert!(
                l[3]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("you said")),
                "{p}"
            );
        }
        let mut a = DemoAgent {
            hooks: true,
            ..DemoAgent::default()
        };
        assert_eq!(a.respond("crash"), Action::Exit(3));
        assert_eq!(a.respond("garbage"), Action::Garbage);
        assert_eq!(kinds(&a.respond("fail")), ["thinking", "error"]);
        let Action::Lines(_, d) = a.respond("sleep 25") else {
            panic!("lines expected")
        };
        assert_eq!(d, Duration::from_millis(25));
    }
}
