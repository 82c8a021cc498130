//! `GET /ws/v1/agent`: the HotPlex v0 WebSocket protocol.
//!
//! Client frames: `{"type":"execute"|"stop"|"stats"|"version","request_id":N,
//! "session_id":"...","prompt":"..."}`. Server frames: `{"request_id":N,"event":"<type>",
//! "data":{...}}`. `stop` interrupts the running turn of the session (or of the
//! connection's last session); the turn ends with `stopped` and the stop frame itself is
//! answered with `stopped` carrying `interrupted`. Every frame acts in the caller's tenant
//! only: another tenant's session is `session_not_found`, like an unknown id.
//!
//! Which session an `execute` opens ([`place`]): an existing session of the tenant is
//! used. A connection routed by the proxy (it named the routed session or this worker)
//! creates only its routed session: an id-less `execute` uses (and on first use creates)
//! the routed session; a signed id of another worker gets `session_elsewhere`, a
//! client-chosen id other than the routed one gets `session_not_routed`, both with a
//! `reconnect` hint (`/ws/v1/agent?session_id=<id>`, which the proxy routes to the right
//! worker). A direct connection (standalone worker) creates an unknown client-chosen id
//! and mints one for an id-less `execute`, as before.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use hotplex_common::headers::{SESSION_QUERY_PARAM, WS_AGENT_PATH, WS_PROTOCOL};
use hotplex_common::session_id::signed_shape;
use hotplex_common::SessionId;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::{find, AppState};
use crate::error::ApiError;
use crate::metrics::Refusal;
use crate::pool::PoolError;
use crate::session::{Session, TurnEvent, TurnRefused};
use crate::sse::EVENT_BUFFER;
use crate::trust::Caller;

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

/// How a connection was routed: the context of every frame on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The caller's tenant (`None`: anonymous).
    pub tenant: Option<String>,
    /// The trusted proxy routed the connection (frames may create the routed session only).
    pub via_proxy: bool,
    /// The session the proxy routed the connection by (or minted for a keyless one).
    pub key: Option<SessionId>,
    /// The proxy-side id of this worker.
    pub worker: Option<String>,
}

/// Which session an `execute` frame opens (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The session of this id in the caller's tenant, created if needed.
    Open(SessionId),
    /// A fresh minted id (direct connections only).
    Mint,
    /// A signed id of another worker (its proxy-side id).
    Elsewhere(String),
    /// A client-chosen id that is not the connection's routing key.
    NotRouted,
    /// A signed id that this worker does not hold and was not routed here.
    NotFound,
}

/// Decides where an `execute` for `requested` goes; `exists` says whether the caller's
/// tenant has a session of that id here; `node_id` stands in for the proxy-side worker id
/// on direct connections.
pub fn place(
    route: &Route,
    requested: Option<SessionId>,
    exists: impl Fn(&SessionId) -> bool,
    node_id: &str,
) -> Placement {
    let Some(s) = requested else {
        return match &route.key {
            Some(k) => Placement::Open(k.clone()),
            None => Placement::Mint,
        };
    };
    if exists(&s) {
        return Placement::Open(s);
    }
    let routed_here = route.key.as_ref() == Some(&s);
    if let Some(shape) = signed_shape(s.as_str()) {
        let here = if route.via_proxy {
            route.worker.as_deref()
        } else {
            Some(node_id)
        };
        if here.is_some_and(|w| w != shape.worker) {
            return Placement::Elsewhere(shape.worker.to_string());
        }
        return if routed_here {
            Placement::Open(s)
        } else {
            Placement::NotFound
        };
    }
    if !route.via_proxy || routed_here {
        Placement::Open(s)
    } else {
        Placement::NotRouted
    }
}

/// The path a client reconnects to so the proxy routes it to the session's worker.
pub fn reconnect_hint(id: &str) -> String {
    format!("{WS_AGENT_PATH}?{SESSION_QUERY_PARAM}={id}")
}

pub async fn upgrade(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> Response {
    let key = match caller.routed_session_id() {
        Ok(k) => k,
        Err(e) => {
            st.metrics.bad_request("session_id");
            return e.into_response();
        }
    };
    let route = Route {
        via_proxy: caller.routed(),
        tenant: caller.tenant,
        key,
        worker: caller.routed_worker,
    };
    let limit = st.cfg.max_body_bytes;
    // The connection (and the turns it starts) stay in the upgrade request's span.
    let span = tracing::Span::current();
    ws.protocols([WS_PROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tracing::Instrument::instrument(connection(st, route, socket), span)
        })
}

fn error_frame(request_id: u64, code: &str, message: &str, session_id: Option<&str>) -> Value {
    let mut data = json!({"error": code, "message": message});
    if let Some(s) = session_id {
        data["session_id"] = Value::from(s);
    }
    json!({"request_id": request_id, "event": "error", "data": data})
}

/// An `error` frame for an API error: its code, message and context fields, and
/// `retry_after` (seconds) when the error has one (quota refusals, pool full, draining).
fn api_error_frame(request_id: u64, e: &ApiError, session_id: Option<&str>) -> Value {
    let mut f = error_frame(request_id, e.code, &e.message, session_id);
    for (k, v) in &e.extra {
        if k != "error" && k != "message" {
            f["data"][k.as_str()] = v.clone();
        }
    }
    if let Some(secs) = e.retry_after {
        f["data"]["retry_after"] = Value::from(secs);
    }
    f
}

/// A refusal frame with a reconnect hint.
fn refusal_frame(
    request_id: u64,
    code: &str,
    message: &str,
    id: &str,
    worker: Option<&str>,
) -> Value {
    let mut f = error_frame(request_id, code, message, Some(id));
    f["data"]["reconnect"] = Value::from(reconnect_hint(id));
    if let Some(w) = worker {
        f["data"]["worker"] = Value::from(w);
    }
    f
}

async fn connection(st: AppState, route: Route, socket: WebSocket) {
    st.metrics.websockets_active.inc();
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(OUTBOUND_BUFFER);
    // A protocol error closes at once with its RFC 6455 code (kept open until the end of
    // this function otherwise, so the writer drains the running turns' frames).
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<CloseFrame>();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = out_rx.recv() => {
                    let Some(frame) = frame else { break };
                    let text = Message::Text(frame.to_string().into());
                    if sink.send(text).await.is_err() {
                        break;
                    }
                }
                close = &mut close_rx => {
                    if let Ok(c) = close {
                        let _ = sink.send(Message::Close(Some(c))).await;
                    }
                    break;
                }
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
        let msg = match msg {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // Too big, malformed or not UTF-8: say so with the RFC code (1009, 1002,
                // 1007) rather than a close without one (1005 at the client).
                if let Some(c) = close_frame(e) {
                    st.metrics.bad_request("ws_frame");
                    let _ = close_tx.send(c);
                    let _ = writer.await;
                    st.metrics.websockets_active.dec();
                    return;
                }
                break;
            }
        };
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
        handle_frame(&st, &route, frame, &out_tx, &mut last_session).await;
    }
    drop(out_tx);
    // Running turns keep their own sender; the writer ends once they finish.
    let _ = writer.await;
    drop(close_tx);
    st.metrics.websockets_active.dec();
}

async fn handle_frame(
    st: &AppState,
    route: &Route,
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
            let tenant = route.tenant.as_deref();
            let raw = frame.session_id.clone().unwrap_or_default();
            let exists = |id: &SessionId| find(st, tenant, id).is_some();
            let created = match place(route, sid, exists, &st.cfg.node_id) {
                Placement::Open(id) => st.pool.get_or_create(tenant, id).await,
                Placement::Mint => st.pool.create(tenant, None).await,
                Placement::Elsewhere(worker) => {
                    st.metrics.refused(Refusal::SessionElsewhere);
                    let msg = format!(
                        "session {raw} lives on worker {worker}: reconnect with \
                         {SESSION_QUERY_PARAM}={raw} (the proxy routes it there)"
                    );
                    let f = refusal_frame(rid, "session_elsewhere", &msg, &raw, Some(&worker));
                    let _ = out.send(f).await;
                    return;
                }
                Placement::NotRouted => {
                    st.metrics.refused(Refusal::SessionNotRouted);
                    let msg = format!(
                        "this connection was not routed by session {raw}: reconnect with \
                         {SESSION_QUERY_PARAM}={raw} to use it"
                    );
                    let f = refusal_frame(rid, "session_not_routed", &msg, &raw, None);
                    let _ = out.send(f).await;
                    return;
                }
                Placement::NotFound => {
                    let e = ApiError::session_not_found(&raw);
                    let _ = out
                        .send(error_frame(rid, e.code, &e.message, Some(&raw)))
                        .await;
                    return;
                }
            };
            let session = match created {
                Ok(s) => s,
                Err(e) => {
                    let e = pool_error(st, e);
                    let raw = (!raw.is_empty()).then_some(raw.as_str());
                    let _ = out.send(api_error_frame(rid, &e, raw)).await;
                    return;
                }
            };
            *last = Some(session.clone());
            let turn = match st.pool.begin_turn(&session).await {
                Ok(t) => t,
                Err(r) => {
                    let (code, msg) = match r {
                        TurnRefused::Busy => ("session_busy", "a turn is already running"),
                        TurnRefused::Closed => ("session_not_found", "the session was closed"),
                        TurnRefused::Quota(q) => {
                            let e = ApiError::from_quota(&q);
                            let f = api_error_frame(rid, &e, Some(session.id.as_str()));
                            let _ = out.send(f).await;
                            return;
                        }
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
                Some(id) => find(st, route.tenant.as_deref(), &id),
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
            // Pool-level counts only, plus the caller's own tenant's count and, when the
            // frame names one of the tenant's sessions, its snapshot.
            let tenant = route.tenant.as_deref();
            let mut data = st.pool.stats();
            data["tenant_sessions"] = Value::from(st.pool.tenant_len(tenant));
            if let Some(id) = sid {
                match find(st, tenant, &id) {
                    Some(s) => data["session"] = s.snapshot(&st.cfg.node_id),
                    None => {
                        let e = ApiError::session_not_found(id.as_str());
                        let f = error_frame(rid, e.code, &e.message, Some(id.as_str()));
                        let _ = out.send(f).await;
                        return;
                    }
                }
            }
            let _ = out
                .send(json!({"request_id": rid, "event": "stats", "data": data}))
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

/// The close frame for a read error of the WebSocket protocol layer (RFC 6455 7.4.1):
/// 1009 for a message over the limit, 1002 for a protocol violation, 1007 for a text
/// message that is not UTF-8. `None`: the connection itself failed (nothing to say).
pub fn close_frame(e: axum::Error) -> Option<CloseFrame> {
    let inner = e.into_inner();
    let (code, reason) = match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => (1009, "message too big"),
        tungstenite::Error::Protocol(_) => (1002, "protocol error"),
        tungstenite::Error::Utf8(_) => (1007, "text message is not UTF-8"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

fn pool_error(st: &AppState, e: PoolError) -> ApiError {
    ApiError::from_pool(e, st.cfg.retry_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED_W1: &str = "w1.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_";
    const SIGNED_W2: &str = "w2.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_";

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).expect("id")
    }

    fn proxied(key: Option<&str>) -> Route {
        Route {
            tenant: Some("t".into()),
            via_proxy: true,
            key: key.map(id),
            worker: Some("w1".into()),
        }
    }

    #[test]
    fn frames_never_split_a_session() {
        let none = |_: &SessionId| false;
        let all = |_: &SessionId| true;
        let r = proxied(Some("demo-1"));
        // Id-less: the routed session.
        assert_eq!(place(&r, None, none, "n"), Placement::Open(id("demo-1")));
        assert_eq!(place(&proxied(None), None, none, "n"), Placement::Mint);
        // Client-chosen: only the routed key is created; an existing one is used.
        assert_eq!(
            place(&r, Some(id("demo-1")), none, "n"),
            Placement::Open(id("demo-1"))
        );
        assert_eq!(
            place(&r, Some(id("demo-2")), none, "n"),
            Placement::NotRouted
        );
        assert_eq!(
            place(&r, Some(id("demo-2")), all, "n"),
            Placement::Open(id("demo-2"))
        );
        // Signed: another worker's id is elsewhere; ours only when routed by it.
        assert_eq!(
            place(&r, Some(id(SIGNED_W2)), none, "n"),
            Placement::Elsewhere("w2".into())
        );
        assert_eq!(
            place(&r, Some(id(SIGNED_W1)), none, "n"),
            Placement::NotFound
        );
        let by_signed = proxied(Some(SIGNED_W1));
        assert_eq!(
            place(&by_signed, Some(id(SIGNED_W1)), none, "n"),
            Placement::Open(id(SIGNED_W1))
        );
        // Direct (standalone): client-chosen ids are created, ids minted; signed ids of
        // another node are elsewhere.
        let direct = Route::default();
        assert_eq!(place(&direct, None, none, "w1"), Placement::Mint);
        assert_eq!(
            place(&direct, Some(id("x")), none, "w1"),
            Placement::Open(id("x"))
        );
        assert_eq!(
            place(&direct, Some(id(SIGNED_W2)), none, "w1"),
            Placement::Elsewhere("w2".into())
        );
        assert_eq!(reconnect_hint("a"), "/ws/v1/agent?session_id=a");
        let f = refusal_frame(4, "session_elsewhere", "m", "a", Some("w2"));
        assert_eq!(f["data"]["worker"], "w2");
        assert_eq!(f["data"]["reconnect"], "/ws/v1/agent?session_id=a");
        assert_eq!(f["data"]["error"], "session_elsewhere");
    }

    #[test]
    fn protocol_errors_map_to_rfc_close_codes() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let code = |e: tungstenite::Error| close_frame(axum::Error::new(e)).map(|c| c.code);
        let big = CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        };
        assert_eq!(code(tungstenite::Error::Capacity(big)), Some(1009));
        let proto = ProtocolError::NonZeroReservedBits;
        assert_eq!(code(tungstenite::Error::Protocol(proto)), Some(1002));
        assert_eq!(code(tungstenite::Error::Utf8("bad".into())), Some(1007));
        assert_eq!(code(tungstenite::Error::ConnectionClosed), None);
    }

    #[test]
    fn frames_parse_with_defaults() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"stats"}"#).expect("valid");
        assert_eq!(f.kind, "stats");
        assert_eq!(f.request_id, 0);
        assert!(serde_json::from_str::<ClientFrame>(r#"{"request_id":1}"#).is_err());
        let q = crate::quota::QuotaRefusal {
            code: crate::quota::QuotaCode::SessionQuota,
            retry_after_secs: 5,
            limit: 2,
        };
        let f = api_error_frame(7, &ApiError::from_quota(&q), Some("s1"));
        assert_eq!(f["event"], "error");
        assert_eq!(f["data"]["error"], "tenant_session_quota");
        assert_eq!(f["data"]["retry_after"], 5);
        assert_eq!(f["data"]["limit"], 2);
        assert_eq!(f["data"]["session_id"], "s1");
        let e = error_frame(3, "bad_frame", "m", Some("s"));
        assert_eq!(e["data"]["session_id"], "s");
        assert_eq!(e["event"], "error");
    }
}
