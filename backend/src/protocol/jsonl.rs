//! `hotplex-jsonl`: the worker's own line protocol (the demo agent speaks it).
//!
//! - worker → agent: `{"type":"user","session_id":"...","prompt":"..."}`
//! - agent → worker: `{"type":"ready"}` (or `system`) once at startup, then per turn any
//!   number of `thinking`, `tool_use`, `tool_result`, `answer`, ended by exactly one
//!   `result` (turn done) or `error` (turn failed, agent still usable).
//!
//! Output lines already are turn lines: decoding passes them through. No interrupt, no
//! resume: a stopped turn restarts the agent.

use serde_json::{json, Value};

use super::{AgentLine, Protocol};

/// The adapter (stateless).
pub struct Jsonl;

impl Protocol for Jsonl {
    fn extra_args(&self, _resume: Option<&str>) -> Vec<String> {
        Vec::new()
    }

    fn startup_lines(&mut self) -> Vec<Value> {
        Vec::new()
    }

    fn is_ready(&mut self, line: &AgentLine) -> bool {
        line.kind == "ready" || line.kind == "system"
    }

    fn prompt_line(&self, session_id: &str, prompt: &str) -> Value {
        json!({"type": "user", "session_id": session_id, "prompt": prompt})
    }

    fn interrupt_line(&mut self) -> Option<Value> {
        None
    }

    fn decode(&mut self, line: AgentLine) -> Vec<AgentLine> {
        vec![line]
    }

    fn resume_token(&self) -> Option<String> {
        None
    }
}
