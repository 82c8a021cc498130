//! One session: its agent process, its state, and the running of a turn.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hotplex_common::SessionId;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch, OwnedMutexGuard, OwnedSemaphorePermit};

use hotplex_common::telemetry::{self, SPAN_TARGET};
use tracing::Instrument;

use crate::agent::{AgentError, AgentLine, AgentProcess};
use crate::metrics::{CloseReason, ErrorReason, TurnOutcome};
use crate::pool::Pool;
use crate::quota::{QuotaRefusal, TenantSlot};

/// One event of a turn: a server frame without its `request_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEvent {
    /// `thinking`, `tool_use`, `tool_result`, `answer`, `error`, `completed`, `stopped`.
    pub event: &'static str,
    /// The payload; always carries `session_id`.
    pub data: Value,
}

impl TurnEvent {
    /// Whether this event ends the turn's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self.event, "completed" | "error" | "stopped")
    }

    /// The wire frame `{"request_id":N,"event":"...","data":{...}}`.
    pub fn frame(&self, request_id: u64) -> Value {
        json!({"request_id": request_id, "event": self.event, "data": self.data})
    }
}

/// What a session is keyed by in the pool: its owner (the tenant the trusted proxy named
/// at create; `None`: anonymous) and its id. Two tenants may own the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub tenant: Option<String>,
    pub id: SessionId,
}

impl SessionKey {
    pub fn new(tenant: Option<&str>, id: SessionId) -> Self {
        SessionKey {
            tenant: tenant.map(str::to_string),
            id,
        }
    }
}

/// A session and its agent process.
pub struct Session {
    pub id: SessionId,
    /// The owner (see [`SessionKey`]).
    pub tenant: Option<String>,
    created_at: SystemTime,
    last_active: Mutex<(Instant, SystemTime)>,
    turns: AtomicU64,
    running: AtomicBool,
    closing: AtomicBool,
    started: AtomicBool,
    /// pid (= process-group id) of the current agent, 0 when none.
    pid: AtomicU32,
    stop_tx: watch::Sender<u64>,
    pub(crate) agent: Arc<tokio::sync::Mutex<Option<AgentProcess>>>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The session's place in its tenant's quota (released with the pool slot).
    tenant_slot: Mutex<Option<TenantSlot>>,
}

/// A JSON snapshot of a session (`GET /sessions/{id}`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Session {
    pub(crate) fn new(key: SessionKey, permit: OwnedSemaphorePermit, slot: TenantSlot) -> Self {
        let now = (Instant::now(), SystemTime::now());
        Session {
            id: key.id,
            tenant: key.tenant,
            created_at: now.1,
            last_active: Mutex::new(now),
            turns: AtomicU64::new(0),
            running: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            started: AtomicBool::new(false),
            pid: AtomicU32::new(0),
            stop_tx: watch::channel(0).0,
            agent: Arc::new(tokio::sync::Mutex::new(None)),
            permit: Mutex::new(Some(permit)),
            tenant_slot: Mutex::new(Some(slot)),
        }
    }

    pub(crate) fn mark_started(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Release);
        self.started.store(true, Ordering::Release);
    }

    /// pid of the session's agent process (also its process-group id).
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Acquire)).filter(|p| *p != 0)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// `starting`, `idle`, `running` or `closing`.
    pub fn status(&self) -> &'static str {
        if self.closing.load(Ordering::Acquire) {
            "closing"
        } else if !self.started.load(Ordering::Acquire) {
            "starting"
        } else if self.is_running() {
            "running"
        } else {
            "idle"
        }
    }

    pub fn idle_for(&self) -> Duration {
        self.last_active
            .lock()
            .map(|g| g.0.elapsed())
            .unwrap_or_default()
    }

    fn touch(&self) {
        if let Ok(mut g) = self.last_active.lock() {
            *g = (Instant::now(), SystemTime::now());
        }
    }

    /// The pool key.
    pub fn key(&self) -> SessionKey {
        SessionKey {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
        }
    }

    /// The state as JSON, with the owner (admin views only).
    pub fn admin_snapshot(&self, node_id: &str) -> Value {
        let mut v = self.snapshot(node_id);
        v["tenant"] = Value::from(self.tenant.clone());
        v
    }

    /// The state as JSON (`GET /sessions/{id}`).
    pub fn snapshot(&self, node_id: &str) -> Value {
        let last = self
            .last_active
            .lock()
            .map(|g| g.1)
            .unwrap_or(self.created_at);
        json!({
            "id": self.id,
            "session_id": self.id,
            "node_id": node_id,
            "created_at": rfc3339(self.created_at),
            "last_active": rfc3339(last),
            "turns": self.turns.load(Ordering::Relaxed),
            "status": self.status(),
            "pid": self.pid(),
        })
    }

    /// Interrupts the running turn, if any. Returns whether one was running.
    pub fn request_stop(&self) -> bool {
        let running = self.is_running();
        self.stop_tx.send_modify(|g| *g += 1);
        running
    }

    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.stop_tx.send_modify(|g| *g += 1);
    }

    pub(crate) fn release_slot(&self) {
        if let Ok(mut p) = self.permit.lock() {
            p.take();
        }
        if let Ok(mut s) = self.tenant_slot.lock() {
            s.take();
        }
    }
}

/// Why a turn could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnRefused {
    /// Another turn of this session is running.
    Busy,
    /// The session is closing.
    Closed,
    /// The tenant's turn rate (or the quota store) refused it.
    Quota(QuotaRefusal),
}

/// A turn holding the session's agent; run it with [`Turn::run`].
pub struct Turn {
    session: Arc<Session>,
    pool: Arc<Pool>,
    guard: OwnedMutexGuard<Option<AgentProcess>>,
}

impl Turn {
    /// Takes the session's agent for one turn.
    pub fn begin(pool: &Arc<Pool>, session: &Arc<Session>) -> Result<Turn, TurnRefused> {
        let guard = session
            .agent
            .clone()
            .try_lock_owned()
            .map_err(|_| TurnRefused::Busy)?;
        if guard.is_none() || session.closing.load(Ordering::Acquire) {
            return Err(TurnRefused::Closed);
        }
        Ok(Turn {
            session: session.clone(),
            pool: pool.clone(),
            guard,
        })
    }

    /// Runs the turn, sending its events to `tx` (send failures, e.g. a client that
    /// went away, do not stop the turn). The last event is terminal.
    ///
    /// The turn runs in a `session.turn` span created here, a child of the caller's
    /// current span (the request or WebSocket connection), with one `tool.use` child per
    /// tool the agent uses.
    pub fn run(
        self,
        prompt: String,
        tx: mpsc::Sender<TurnEvent>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "session.turn",
            session.id = %self.session.id.as_str(),
            node.id = %self.pool.config().node_id,
            turn.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        self.run_in_span(prompt, tx).instrument(span)
    }

    async fn run_in_span(mut self, prompt: String, tx: mpsc::Sender<TurnEvent>) {
        let s = self.session.clone();
        let pool = self.pool.clone();
        let m = pool.metrics();
        let sid = s.id.as_str().to_string();
        let mut stop_rx = s.stop_tx.subscribe();
        stop_rx.mark_unchanged();
        s.running.store(true, Ordering::Release);
        pool.turn_started();
        s.touch();
        let n = s.turns.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + pool.config().execution_timeout;
        // Open `tool.use` spans (tool_use seen, tool_result not yet), by tool-use id.
        let mut tools: Vec<(Option<String>, tracing::Span)> = Vec::new();

        let event = |event: &'static str, mut data: Map<String, Value>| {
            data.insert("session_id".into(), Value::from(sid.as_str()));
            TurnEvent {
                event,
                data: Value::Object(data),
            }
        };
        let err = |code: &str, message: String| {
            let mut d = Map::new();
            d.insert("error".into(), Value::from(code));
            d.insert("message".into(), Value::from(message));
            d
        };

        // How the turn ended, with its terminal event. The terminal event is sent only
        // after the agent was cleaned up (restarted or closed) and the session released,
        // so a client that saw it can start the next turn at once.
        let (end, terminal) = match self.guard.as_mut() {
            None => (
                End::Crashed,
                event("error", err("agent_crashed", "agent is gone".into())),
            ),
            Some(agent) => match agent.send_prompt(&sid, &prompt).await {
                Err(e) => (
                    End::Crashed,
                    event("error", err("agent_crashed", e.to_string())),
                ),
                Ok(()) => loop {
                    tokio::select! {
                        biased;
                        _ = stop_rx.changed() => {
                            let mut d = Map::new();
                            let closing = s.closing.load(Ordering::Acquire);
                            d.insert("reason".into(),
                                Value::from(if closing { "session_closed" } else { "stop" }));
                            break (End::Stopped, event("stopped", d));
                        }
                        _ = tokio::time::sleep_until(deadline) => {
                            let msg = format!("turn exceeded the execution timeout of {:?}",
                                pool.config().execution_timeout);
                            break (End::Timeout, event("error", err("execution_timeout", msg)));
                        }
                        line = agent.next_line() => match line {
                            Ok(AgentLine { kind, mut fields }) => match kind.as_str() {
                                "thinking" | "tool_result" | "answer" => {
                                    if kind == "tool_result" {
                                        end_tool_span(&mut tools, &fields);
                                    }
                                    let _ = tx.send(event(event_name(&kind), fields)).await;
                                }
                                "tool_use" => {
                                    let tool = fields.get("tool").or_else(|| fields.get("name"))
                                        .and_then(Value::as_str).unwrap_or("unknown");
                                    m.tool_invoked(tool);
                                    tools.push(tool_span(&sid, &pool.config().node_id, tool, &fields));
                                    let _ = tx.send(event("tool_use", fields)).await;
                                }
                                "result" => {
                                    m.turn_usage(s.tenant.as_deref(), &fields);
                                    fields.insert("turn".into(), Value::from(n));
                                    fields.insert("duration_ms".into(),
                                        Value::from(started.elapsed().as_millis() as u64));
                                    break (End::Completed, event("completed", fields));
                                }
                                "error" => {
                                    let msg = fields.get("message").and_then(Value::as_str)
                                        .unwrap_or("agent reported an error").to_string();
                                    break (End::AgentError, event("error", err("agent_error", msg)));
                                }
                                other => tracing::debug!(session = %sid, kind = other, "ignored agent line"),
                            },
                            Err(AgentError::Garbage(g)) => {
                                let msg = format!("agent wrote invalid output: {g}");
                                break (End::Garbage, event("error", err("agent_protocol_error", msg)));
                            }
                            Err(e) => {
                                break (End::Crashed, event("error", err("agent_crashed", e.to_string())));
                            }
                        }
                    }
                },
            },
        };

        // Tools without a result end with the turn.
        drop(tools);
        let closing = s.closing.load(Ordering::Acquire);
        let mut close_session = false;
        let outcome = match end {
            End::Completed => TurnOutcome::Completed,
            End::Stopped => TurnOutcome::Stopped,
            End::AgentError => {
                m.session_error(ErrorReason::Agent);
                TurnOutcome::Error
            }
            End::Timeout => {
                m.session_error(ErrorReason::Timeout);
                TurnOutcome::Timeout
            }
            End::Garbage => {
                m.session_error(ErrorReason::Garbage);
                TurnOutcome::Error
            }
            End::Crashed => {
                m.session_error(ErrorReason::Crashed);
                // An agent whose conversation a new process can resume is restarted;
                // otherwise the session ends with it.
                close_session = !self.guard.as_ref().is_some_and(|a| a.can_resume());
                TurnOutcome::Error
            }
        };
        // A stopped turn: the agent ends it itself when its protocol can interrupt.
        let mut keep = false;
        if matches!(end, End::Stopped) && !closing {
            if let Some(a) = self.guard.as_mut() {
                keep = a.interrupt(INTERRUPT_GRACE).await;
            }
        }
        // After an interrupted turn the agent's state is unknown: replace it.
        if !keep
            && matches!(
                end,
                End::Stopped | End::Timeout | End::Garbage | End::Crashed
            )
        {
            let old = self.guard.take();
            s.pid.store(0, Ordering::Release);
            if close_session || closing {
                if let Some(mut a) = old {
                    a.close().await;
                }
            } else {
                let cfg = pool.config();
                match AgentProcess::restart(
                    old,
                    &cfg.agent,
                    pool.sandbox(),
                    &sid,
                    cfg.startup_timeout,
                )
                .await
                {
                    Ok(a) => {
                        s.pid.store(a.pid().unwrap_or(0), Ordering::Release);
                        *self.guard = Some(a);
                    }
                    Err(e) => {
                        tracing::warn!(session = %sid, error = %e, "agent restart failed");
                        m.session_error(ErrorReason::StartFailed);
                        close_session = true;
                    }
                }
            }
        }
        m.turn_finished(outcome, started.elapsed().as_secs_f64());
        let span = tracing::Span::current();
        span.record("turn.outcome", outcome_label(&end));
        tracing::info!(
            turn = n,
            outcome = outcome_label(&end),
            duration_ms = started.elapsed().as_millis() as u64,
            "turn finished"
        );
        if !matches!(end, End::Completed | End::Stopped) {
            telemetry::set_error(&span, outcome_label(&end));
        }
        s.touch();
        s.running.store(false, Ordering::Release);
        drop(self.guard);
        pool.turn_finished();
        if close_session {
            pool.close(&s.key(), CloseReason::Crashed).await;
        }
        let _ = tx.send(terminal).await;
    }
}

/// How long a stopped turn's agent may take to end the turn itself (protocols with an
/// interrupt) before it is restarted instead.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// The id a tool use / tool result carries (`id` or `tool_use_id`).
fn tool_use_id(fields: &Map<String, Value>) -> Option<String> {
    fields
        .get("id")
        .or_else(|| fields.get("tool_use_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A `tool.use` span, child of the current (turn) span.
fn tool_span(
    sid: &str,
    node: &str,
    tool: &str,
    fields: &Map<String, Value>,
) -> (Option<String>, tracing::Span) {
    let id = tool_use_id(fields);
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "tool.use",
        otel.name = %format!("tool {tool}"),
        tool.name = %tool,
        tool.id = id.as_deref().unwrap_or(""),
        session.id = %sid,
        node.id = %node,
    );
    (id, span)
}

/// Ends the `tool.use` span a tool result answers (by id; else the oldest open one).
fn end_tool_span(tools: &mut Vec<(Option<String>, tracing::Span)>, fields: &Map<String, Value>) {
    let id = tool_use_id(fields);
    let pos = tools
        .iter()
        .position(|(t, _)| id.is_some() && *t == id)
        .or(if tools.is_empty() { None } else { Some(0) });
    if let Some(p) = pos {
        drop(tools.remove(p));
    }
}

fn outcome_label(end: &End) -> &'static str {
    match end {
        End::Completed => "completed",
        End::AgentError => "agent_error",
        End::Stopped => "stopped",
        End::Timeout => "timeout",
        End::Garbage => "garbage",
        End::Crashed => "crashed",
    }
}

/// How a turn ended.
enum End {
    Completed,
    AgentError,
    Stopped,
    Timeout,
    Garbage,
    Crashed,
}

fn event_name(kind: &str) -> &'static str {
    match kind {
        "thinking" => "thinking",
        "tool_use" => "tool_use",
        "tool_result" => "tool_result",
        "answer" => "answer",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_terminal_events() {
        let e = TurnEvent {
            event: "completed",
            data: json!({"session_id":"s"}),
        };
        assert!(e.is_terminal());
        assert_eq!(
            e.frame(7),
            json!({"request_id":7,"event":"completed","data":{"session_id":"s"}})
        );
        assert!(!TurnEvent {
            event: "answer",
            data: json!({})
        }
        .is_terminal());
    }
}
