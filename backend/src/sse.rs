//! `POST /sessions/{id}/messages`: runs one turn and streams its events as SSE.
//!
//! Each event is `event: <type>` + `data: <the WebSocket server frame as JSON>`; the
//! stream ends after the terminal event (`completed`, `error` or `stopped`).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{self, Stream};
use tokio::sync::mpsc;

use crate::api::{lookup, read_json, AppState, MessageBody};
use crate::error::ApiError;
use crate::session::{TurnEvent, TurnRefused};
use crate::trust::Caller;

/// Channel depth between a turn and its client.
pub const EVENT_BUFFER: usize = 64;

pub async fn post_message(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let session = match lookup(&st, &caller, &id) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let msg: MessageBody = match read_json(&st, body).await {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let turn = match st.pool.begin_turn(&session).await {
        Ok(t) => t,
        Err(TurnRefused::Busy) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "session_busy",
                "a turn is already running in this session",
            )
            .with("session_id", id)
            .into_response()
        }
        Err(TurnRefused::Closed) => return ApiError::session_not_found(&id).into_response(),
        Err(TurnRefused::Quota(r)) => {
            return ApiError::from_quota(&r)
                .with("session_id", id)
                .into_response()
        }
    };
    let request_id = msg.request_id.unwrap_or_else(|| st.pool.next_request_id());
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    // The turn runs on its own: a client that goes away does not leave the agent mid-turn.
    tokio::spawn(turn.run(msg.prompt, tx));
    Sse::new(event_stream(rx, request_id))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// SSE events of a turn, ending after the terminal one.
pub fn event_stream(
    rx: mpsc::Receiver<TurnEvent>,
    request_id: u64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        let ev = rx.recv().await?;
        let sse = Event::default()
            .event(ev.event)
            .data(ev.frame(request_id).to_string());
        Some((Ok(sse), (rx, ev.is_terminal())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use serde_json::json;

    #[tokio::test]
    async fn stream_stops_after_terminal_event() {
        let (tx, rx) = mpsc::channel(8);
        for event in ["answer", "completed", "answer"] {
            tx.send(TurnEvent {
                event,
                data: json!({"session_id":"s"}),
            })
            .await
            .expect("send");
        }
        let items: Vec<_> = event_stream(rx, 1).collect().await;
        assert_eq!(items.len(), 2);
    }
}
