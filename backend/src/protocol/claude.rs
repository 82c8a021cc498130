//! `claude-stream-json`: Claude Code's `claude -p --input-format stream-json
//! --output-format stream-json --verbose` (checked against the real CLI, 2.1.328).
//!
//! - worker → CLI: one `{"type":"user","message":{"role":"user","content":"..."}}` per
//!   turn; `{"type":"control_request","request_id":..,"request":{"subtype":"initialize"}}`
//!   at startup (its `control_response` is the ready signal: the CLI prints nothing
//!   before its first input) and `{"subtype":"interrupt"}` to stop a turn (the CLI
//!   answers, then ends the turn with a `result`, and stays usable).
//! - CLI → worker, per turn: `system` (`init` carries the CLI's `session_id`; other
//!   subtypes are progress), `assistant` messages whose content blocks are `thinking`,
//!   `text` or `tool_use`, `user` messages carrying `tool_result` blocks, and one
//!   `result` (`subtype` `success`, or an error subtype / `is_error`), with `usage`,
//!   `total_cost_usd` (cumulative over the process) and `model_usage_since_last_result`.
//!
//! Mapping: `thinking` → thinking `{text}`, `text` → answer `{text}`, `tool_use` →
//! tool_use `{id, tool, name, input}`, `tool_result` → tool_result `{id, tool_use_id,
//! output, is_error}`, success → result `{usage, cost_usd, num_turns, stop_reason,
//! agent_duration_ms, agent_session_id}`, an error result → error `{message}`.
//! A restarted CLI resumes its conversation with `--resume <session_id>`.

use serde_json::{json, Map, Value};

use super::{AgentLine, Protocol};

/// The `request_id` of the startup `initialize` request.
const INIT_REQUEST_ID: &str = "hotplex-init";

/// The adapter: remembers the CLI's session id and its cumulative cost.
#[derive(Debug, Default)]
pub struct Claude {
    session_id: Option<String>,
    total_cost_usd: f64,
    interrupts: u64,
}

fn obj(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The token counters of a `usage` object kept in `completed` (bounded set).
const USAGE_KEYS: [&str; 4] = [
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
];

impl Claude {
    fn note_session(&mut self, fields: &Map<String, Value>) {
        if let Some(id) = fields.get("session_id").and_then(Value::as_str) {
            if !id.is_empty() {
                self.session_id = Some(id.to_string());
            }
        }
    }

    fn content_blocks(fields: &Map<String, Value>) -> Vec<Value> {
        match fields.get("message").and_then(|m| m.get("content")) {
            Some(Value::Array(blocks)) => blocks.clone(),
            _ => Vec::new(),
        }
    }

    fn assistant(fields: &Map<String, Value>) -> Vec<AgentLine> {
        let mut out = Vec::new();
        for b in Self::content_blocks(fields) {
            let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default();
            match b.get("type").and_then(Value::as_str) {
                Some("thinking") => out.push(AgentLine::new(
                    "thinking",
                    obj([("text", Value::from(text("thinking")))]),
                )),
                Some("text") => out.push(AgentLine::new(
                    "answer",
                    obj([("text", Value::from(text("text")))]),
                )),
                Some("tool_use") => out.push(AgentLine::new(
                    "tool_use",
                    obj([
                        ("id", Value::from(text("id"))),
                        ("tool", Value::from(text("name"))),
                        ("name", Value::from(text("name"))),
                        ("input", b.get("input").cloned().unwrap_or(Value::Null)),
                    ]),
                )),
                _ => {}
            }
        }
        out
    }

    fn user(fields: &Map<String, Value>) -> Vec<AgentLine> {
        Self::content_blocks(fields)
            .into_iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| {
                let id = b.get("tool_use_id").cloned().unwrap_or(Value::Null);
                AgentLine::new(
                    "tool_result",
                    obj([
                        ("id", id.clone()),
                        ("tool_use_id", id),
                        ("output", b.get("content").cloned().unwrap_or(Value::Null)),
                        (
                            "is_error",
                            Value::from(b.get("is_error").and_then(Value::as_bool) == Some(true)),
                        ),
                    ]),
                )
            })
            .collect()
    }

    fn result(&mut self, f: &Map<String, Value>) -> AgentLine {
        let total = f.get("total_cost_usd").and_then(Value::as_f64);
        // This turn's cost: the per-model costs since the last result, else the growth
        // of the cumulative total.
        let cost = match f.get("model_usage_since_last_result") {
            Some(Value::Object(models)) => models
                .values()
                .filter_map(|m| m.get("costUSD").and_then(Value::as_f64))
                .sum(),
            _ => total
                .map(|t| (t - self.total_cost_usd).max(0.0))
                .unwrap_or(0.0),
        };
        if let Some(t) = total {
            self.total_cost_usd = t;
        }
        let subtype = f
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let is_error = f.get("is_error").and_then(Value::as_bool) == Some(true);
        if subtype != "success" || is_error {
            let detail = f
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
                .and_then(Value::as_str)
                .or_else(|| f.get("result").and_then(Value::as_str))
                .unwrap_or("");
            let mut message = format!("claude result {subtype}");
            if !detail.is_empty() {
                message.push_str(": ");
                message.extend(detail.chars().take(500));
            }
            return AgentLine::new("error", obj([("message", Value::from(message))]));
        }
        let usage: Map<String, Value> = USAGE_KEYS
            .iter()
            .map(|k| {
                let n = f
                    .get("usage")
                    .and_then(|u| u.get(*k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                (k.to_string(), Value::from(n))
            })
            .collect();
        let pick = |k: &str| f.get(k).cloned().unwrap_or(Value::Null);
        AgentLine::new(
            "result",
            obj([
                ("usage", Value::Object(usage)),
                ("cost_usd", Value::from(cost)),
                ("num_turns", pick("num_turns")),
                ("stop_reason", pick("stop_reason")),
                ("agent_duration_ms", pick("duration_ms")),
                ("agent_session_id", Value::from(self.session_id.clone())),
            ]),
        )
    }
}

impl Protocol for Claude {
    fn extra_args(&self, resume: Option<&str>) -> Vec<String> {
        match resume {
            Some(id) => vec!["--resume".to_string(), id.to_string()],
            None => Vec::new(),
        }
    }

    fn startup_lines(&mut self) -> Vec<Value> {
        vec![json!({
            "type": "control_request",
            "request_id": INIT_REQUEST_ID,
            "request": {"subtype": "initialize"},
        })]
    }

    fn is_ready(&mut self, line: &AgentLine) -> bool {
        self.note_session(&line.fields);
        line.kind == "control_response"
            && line
                .fields
                .get("response")
                .and_then(|r| r.get("request_id"))
                .and_then(Value::as_str)
                == Some(INIT_REQUEST_ID)
    }

    fn prompt_line(&self, _session_id: &str, prompt: &str) -> Value {
        json!({"type": "user", "message": {"role": "user", "content": prompt}})
    }

    fn interrupt_line(&mut self) -> Option<Value> {
        self.interrupts += 1;
        Some(json!({
            "type": "control_request",
            "request_id": format!("hotplex-interrupt-{}", self.interrupts),
            "request": {"subtype": "interrupt"},
        }))
    }

    fn decode(&mut self, line: AgentLine) -> Vec<AgentLine> {
        self.note_session(&line.fields);
        match line.kind.as_str() {
            "assistant" => Self::assistant(&line.fields),
            "user" => Self::user(&line.fields),
            "result" => vec![self.result(&line.fields)],
            // system (init, progress), control_response, stream_event, ...: not turn lines.
            _ => Vec::new(),
        }
    }

    fn resume_token(&self) -> Option<String> {
        self.session_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::parse_line_max;

    /// Output of the real CLI (2.1.328) for one turn with a Bash tool call, captured
    /// against a fake Messages API (long lines trimmed of fields the adapter ignores).
    const TURN: &str = include_str!("testdata/claude_turn.jsonl");
    /// The real CLI's answer to an `initialize` request and an interrupted turn.
    const INTERRUPTED: &str = include_str!("testdata/claude_interrupt.jsonl");

    fn decode_all(c: &mut Claude, text: &str) -> Vec<AgentLine> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .flat_map(|l| c.decode(parse_line_max(l, usize::MAX).expect("json line")))
            .collect()
    }

    #[test]
    fn maps_a_real_turn() {
        let mut c = Claude::default();
        let out = decode_all(&mut c, TURN);
        let kinds: Vec<&str> = out.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["thinking", "tool_use", "tool_result", "answer", "result"]
        );
        assert_eq!(out[0].fields["text"], "I should run echo");
        assert_eq!(out[1].fields["tool"], "Bash");
        assert_eq!(out[1].fields["input"]["command"], "echo hello");
        assert_eq!(out[2].fields["tool_use_id"], out[1].fields["id"]);
        assert_eq!(out[2].fields["output"], "hello");
        assert_eq!(out[3].fields["text"], "The answer is done.");
        let r = &out[4].fields;
        assert_eq!(r["usage"]["input_tokens"], 24);
        assert_eq!(r["usage"]["output_tokens"], 27);
        assert!(r["cost_usd"].as_f64().is_some_and(|c| c > 0.0));
        let sid = c.resume_token().expect("session id");
        assert_eq!(r["agent_session_id"], Value::from(sid.as_str()));
        assert_eq!(c.extra_args(Some(&sid)), ["--resume", sid.as_str()]);
    }

    #[test]
    fn ready_and_interrupt() {
        let mut c = Claude::default();
        let init = &c.startup_lines()[0];
        assert_eq!(init["request"]["subtype"], "initialize");
        let lines: Vec<AgentLine> = INTERRUPTED
            .lines()
            .map(|l| parse_line_max(l, usize::MAX).expect("json"))
            .collect();
        assert!(
            c.is_ready(&lines[0]),
            "the initialize answer is the ready signal"
        );
        assert!(!c.is_ready(&lines[1]));
        assert_eq!(
            c.interrupt_line().expect("interrupt")["request"]["subtype"],
            "interrupt"
        );
        let out: Vec<AgentLine> = lines
            .into_iter()
            .skip(1)
            .flat_map(|l| c.decode(l))
            .collect();
        assert_eq!(
            out.last().map(|l| l.kind.as_str()),
            Some("error"),
            "{out:?}"
        );
    }

    #[test]
    fn error_results_and_cost_deltas() {
        let mut c = Claude::default();
        let e = c.decode(AgentLine::new(
            "result",
            obj([
                ("subtype", Value::from("error_max_turns")),
                ("is_error", Value::from(true)),
                ("total_cost_usd", Value::from(0.5)),
            ]),
        ));
        assert_eq!(e[0].kind, "error");
        assert_eq!(e[0].fields["message"], "claude result error_max_turns");
        let ok = c.decode(AgentLine::new(
            "result",
            obj([
                ("subtype", Value::from("success")),
                ("total_cost_usd", Value::from(0.75)),
            ]),
        ));
        assert_eq!(ok[0].kind, "result");
        assert_eq!(ok[0].fields["cost_usd"], 0.25);
        assert!(c.decode(AgentLine::new("system", Map::new())).is_empty());
    }
}
