//! Agent protocols as adapters: each turns the worker's prompts into the agent's input
//! lines and the agent's output lines into HotPlex v0 turn lines (`thinking`,
//! `tool_use`, `tool_result`, `answer`, then one `result` or `error`), which is all the
//! session code sees. One module per protocol.

pub mod claude;
pub mod jsonl;

use serde_json::{Map, Value};

use crate::agent_config::AgentProtocol;

/// One line read from the agent (raw), or one HotPlex v0 turn line (decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLine {
    /// The `type` field.
    pub kind: String,
    /// All other fields.
    pub fields: Map<String, Value>,
}

impl AgentLine {
    pub fn new(kind: &str, fields: Map<String, Value>) -> Self {
        AgentLine {
            kind: kind.to_string(),
            fields,
        }
    }
}

/// What a protocol adapter does; one instance per agent process.
pub trait Protocol: Send + Sync {
    /// argv appended to the configured command; `resume` is the agent's own session id of
    /// a previous process of this session (see [`Protocol::resume_token`]).
    fn extra_args(&self, resume: Option<&str>) -> Vec<String>;
    /// Lines written to the agent right after it started (e.g. a readiness request).
    fn startup_lines(&mut self) -> Vec<Value>;
    /// Whether this raw line is the agent's ready signal.
    fn is_ready(&mut self, line: &AgentLine) -> bool;
    /// The input line carrying one prompt.
    fn prompt_line(&self, session_id: &str, prompt: &str) -> Value;
    /// A line asking the agent to end the running turn while staying alive; `None`: the
    /// protocol has none (the worker restarts the agent instead).
    fn interrupt_line(&mut self) -> Option<Value>;
    /// The turn lines for one raw line (none, one or several).
    fn decode(&mut self, line: AgentLine) -> Vec<AgentLine>;
    /// The agent's own session id, to resume the conversation in a new process.
    fn resume_token(&self) -> Option<String>;
}

/// The adapter of `kind`.
pub fn adapter(kind: AgentProtocol) -> Box<dyn Protocol> {
    match kind {
        AgentProtocol::HotplexJsonl => Box::new(jsonl::Jsonl),
        AgentProtocol::ClaudeStreamJson => Box::new(claude::Claude::default()),
    }
}
