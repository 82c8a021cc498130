//! `GET /ws/v1/agent`: the HotPlex v0 WebSocket protocol.
//!
//! Client frames: `{"type":"execute"|"stop"|"stats"|"version","request_id":N,
//! "session_id":"...","prompt":"..."}`. Server frames: `{"request_id":N,"event":"<type>",
//! "data":{...}}`. `execute` with an unknown `session_id` creates that session; without
//! one it mints an id (reported as `data.session_id` in every event). `stop` interrupts the
//! running turn of the session (or of the connection's last session); the turn ends with
//! `stopped` and the stop frame itself is answered with `stopped` carrying `interrupted`.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use hotplex_common::headers::WS_PROTOCOL;
use hotplex_common::SessionId;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::AppState;
use crate::error::ApiError;
use crate::pool::PoolError;
use crate::session::{Session, Turn, TurnEvent, TurnRefused};
use crate::sse::EVENT_BUFFER;

/// Outbound frames buffered per connection.
const OUTBOUND_BUFFER: usize = 256;

/// A client frame.
#[derive(Debug, Deserialize)]
pub struct ClientFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub request_id: u64,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
}

pub async fn upgrade(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let limit = st.cfg.max_body_bytes;
    // The connection (and the turns it starts) stay in the upgrade request's span.
    let span = tracing::Span::current();
    ws.protocols([WS_PROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| tracing::Instrument::instrument(connection(st, socket), span))
}

fn error_frame(request_id: u64, code: &str, message: &str, session_id: Option<&str>) -> Value {
    let mut data = json!({"error": code, "message": message});
    if let Some(s) = session_id {
        data["session_id"] = Value::from(s);
    }
    json!({"request_id": request_id, "event": "error", "data": data})
}

async fn connection(st: AppState, socket: WebSocket) {
    st.metrics.websockets_active.inc();
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(OUTBOUND_BUFFER);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut shutdown = st.shutdown.clone();
    let mut last_session: Option<Arc<Session>> = None;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(Ok(msg)) = msg else { break };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                st.metrics.bad_request("ws_frame");
                let f = error_frame(0, "bad_frame", "binary frames are not supported", None);
                let _ = out_tx.send(f).await;
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let frame: ClientFrame = match serde_json::from_str(text.as_str()) {
            Ok(f) => f,
            Err(e) => {
                st.metrics.bad_request("ws_frame");
                let rid = serde_json::from_str::<Value>(text.as_str())
                    .ok()
                    .and_then(|v| v.get("request_id").and_then(Value::as_u64))
                    .unwrap_or(0);
                let msg = format!("malformed frame: {e}");
                let _ = out_tx.send(error_frame(rid, "bad_frame", &msg, None)).await;
                continue;
            }
        };
        handle_frame(&st, frame, &out_tx, &mut last_session).await;
    }
    drop(out_tx);
    // Running turns keep their own sender; the writer ends once they finish.
    let _ = writer.await;
    st.metrics.websockets_active.dec();
}

async fn handle_frame(
    st: &AppState,
    frame: ClientFrame,
    out: &mpsc::Sender<Value>,
    last: &mut Option<Arc<Session>>,
) {
    let rid = frame.request_id;
    let sid = match frame.session_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match SessionId::parse(raw) {
            Ok(id) => Some(id),
            Err(e) => {
                st.metrics.bad_request("session_id");
                let _ = out
                    .send(error_frame(
                        rid,
                        "invalid_session_id",
                        &e.to_string(),
                        Some(raw),
                    ))
                    .await;
                return;
            }
        },
    };
    match frame.kind.as_str() {
        "execute" => {
            let Some(prompt) = frame.prompt else {
                st.metrics.bad_request("ws_frame");
                let _ = out
                    .send(error_frame(
                        rid,
                        "bad_frame",
                        "execute needs a prompt",
                        None,
                    ))
                    .await;
                return;
            };
            let created = match sid {
                Some(id) => st.pool.get_or_create(id).await,
                None => st.pool.create(None).await,
            };
            let session = match created {
                Ok(s) => s,
                Err(e) => {
                    let e = pool_error(st, e);
                    let _ = out.send(error_frame(rid, e.code, &e.message, None)).await;
                    return;
                }
            };
            *last = Some(session.clone());
            let turn = match Turn::begin(&st.pool, &session) {
                Ok(t) => t,
                Err(r) => {
                    let (code, msg) = match r {
                        TurnRefused::Busy => ("session_busy", "a turn is already running"),
                        TurnRefused::Closed => ("session_not_found", "the session was closed"),
                    };
                    let _ = out
                        .send(error_frame(rid, code, msg, Some(session.id.as_str())))
                        .await;
                    return;
                }
            };
            let (tx, mut rx) = mpsc::channel::<TurnEvent>(EVENT_BUFFER);
            tokio::spawn(turn.run(prompt, tx));
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    let terminal = ev.is_terminal();
                    if out.send(ev.frame(rid)).await.is_err() || terminal {
                        break;
                    }
                }
            });
        }
        "stop" => {
            let session = match sid {
                Some(id) => st.pool.get(&id),
                None => last.clone(),
            };
            match session {
                Some(s) => {
                    let interrupted = s.request_stop();
                    let data = json!({"session_id": s.id, "interrupted": interrupted});
                    let _ = out
                        .send(json!({"request_id": rid, "event": "stopped", "data": data}))
                        .await;
                }
                None => {
                    let raw = frame.session_id.unwrap_or_default();
                    let e = ApiError::session_not_found(&raw);
                    let _ = out
                        .send(error_frame(rid, e.code, &e.message, Some(&raw)))
                        .await;
                }
            }
        }
        "stats" => {
            let _ = out
                .send(json!({"request_id": rid, "event": "stats", "data": st.pool.stats()}))
                .await;
        }
        "version" => {
            let data = json!({
                "name": env!("CARGO_PKG_NAME"),
                "version": env!("CARGO_PKG_VERSION"),
                "protocol": "hotplex-v0",
                "node_id": st.cfg.node_id,
            });
            let _ = out
                .send(json!({"request_id": rid, "event": "version", "data": data}))
                .await;
        }
        other => {
            st.metrics.bad_request("ws_frame");
            let msg = format!("unknown frame type {other:?}");
            let _ = out.send(error_frame(rid, "unknown_type", &msg, None)).await;
        }
    }
}

fn pool_error(st: &AppState, e: PoolError) -> ApiError {
    ApiError::from_pool(e, st.cfg.retry_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_with_defaults() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"stats"}"#).expect("valid");
        assert_eq!(f.kind, "stats");
        assert_eq!(f.request_id, 0);
        assert!(serde_json::from_str::<ClientFrame>(r#"{"request_id":1}"#).is_err());
        let e = error_frame(3, "bad_frame", "m", Some("s"));
        assert_eq!(e["data"]["session_id"], "s");
        assert_eq!(e["event"], "error");
    }
}
