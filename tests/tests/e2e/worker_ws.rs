//! The HotPlex v0 WebSocket protocol end to end (in-process worker, real agent processes,
//! real WebSocket client).

use crate::support::worker::*;
use futures_util::SinkExt;
use hotplex_common::names;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn execute_mints_or_creates_sessions_and_keeps_them_hot() {
    let w = start(test_config()).await;
    let mut ws = ws_connect(&w.ws_url).await;

    // No session id: one is minted and reported in every event's data.
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"prompt":"first"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 1).await;
    assert_eq!(
        events_of(&frames),
        ["thinking", "tool_use", "tool_result", "answer", "completed"]
    );
    let sid = frames[0]["data"]["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    assert!(sid.starts_with("test-node."), "{sid}");
    assert!(frames
        .iter()
        .all(|f| f["data"]["session_id"] == sid.as_str()));
    assert_eq!(frames[3]["data"]["text"], "Turn 1: you said: first");
    assert_eq!(frames[4]["data"]["turn"], 1);

    // Same session: turn 2 on the same hot agent.
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":2,"session_id":sid,"prompt":"second"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 2).await;
    assert_eq!(frames[3]["data"]["text"], "Turn 2: you said: second");

    // Unknown (valid) id: that session is created.
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":3,"session_id":"client-chosen-1","prompt":"x"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 3).await;
    assert_eq!(
        events_of(&frames).last().map(String::as_str),
        Some("completed")
    );
    let r = client()
        .get(format!("{}/sessions/client-chosen-1", w.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);

    // stats and version.
    ws_send(&mut ws, json!({"type":"stats","request_id":4})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["request_id"], 4);
    assert_eq!(f["event"], "stats");
    assert_eq!(f["data"]["sessions_active"], 2);
    assert_eq!(f["data"]["max_sessions"], 50);
    ws_send(&mut ws, json!({"type":"version","request_id":5})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "version");
    assert_eq!(f["data"]["version"], env!("CARGO_PKG_VERSION"));
    w.stop().await;
}

#[tokio::test]
async fn stop_interrupts_a_running_turn() {
    let w = start(test_config()).await;
    let mut ws = ws_connect(&w.ws_url).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"session_id":"stop-me","prompt":"sleep 20000"}),
    )
    .await;
    // Wait until the turn is under way.
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "thinking");
    let started = std::time::Instant::now();
    ws_send(
        &mut ws,
        json!({"type":"stop","request_id":2,"session_id":"stop-me"}),
    )
    .await;
    let (turn, others) = ws_turn(&mut ws, 1).await;
    assert_eq!(events_of(&turn), ["stopped"]);
    assert_eq!(turn[0]["data"]["reason"], "stop");
    assert!(started.elapsed().as_secs() < 10, "stop was prompt");
    let ack = if others.is_empty() {
        ws_recv(&mut ws).await
    } else {
        others[0].clone()
    };
    assert_eq!(ack["request_id"], 2);
    assert_eq!(ack["event"], "stopped");
    assert_eq!(ack["data"]["interrupted"], true);

    // The session survives (with a fresh agent) and serves the next turn.
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":3,"session_id":"stop-me","prompt":"again"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 3).await;
    assert_eq!(
        events_of(&frames).last().map(String::as_str),
        Some("completed")
    );

    // Stop without session id targets the connection's last session; nothing runs now.
    ws_send(&mut ws, json!({"type":"stop","request_id":4})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "stopped");
    assert_eq!(f["data"]["interrupted"], false);
    w.stop().await;
}

#[tokio::test]
async fn one_turn_at_a_time_per_session() {
    let w = start(test_config()).await;
    let mut ws = ws_connect(&w.ws_url).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"session_id":"busy-1","prompt":"sleep 600"}),
    )
    .await;
    assert_eq!(ws_recv(&mut ws).await["event"], "thinking");
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":2,"session_id":"busy-1","prompt":"x"}),
    )
    .await;
    let (second, _) = ws_turn(&mut ws, 2).await;
    assert_eq!(second[0]["data"]["error"], "session_busy");
    let (first, _) = ws_turn(&mut ws, 1).await;
    assert_eq!(
        events_of(&first).last().map(String::as_str),
        Some("completed")
    );
    w.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_error_events_and_the_connection_survives() {
    let w = start(test_config()).await;
    let mut ws = ws_connect(&w.ws_url).await;

    ws.send(Message::text("{not json")).await.expect("send");
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "error");
    assert_eq!(f["data"]["error"], "bad_frame");

    ws.send(Message::text(r#"{"request_id":9}"#))
        .await
        .expect("send");
    let f = ws_recv(&mut ws).await;
    assert_eq!(
        (f["request_id"].as_u64(), f["data"]["error"].as_str()),
        (Some(9), Some("bad_frame"))
    );

    ws_send(&mut ws, json!({"type":"dance","request_id":10})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "unknown_type");

    ws_send(&mut ws, json!({"type":"execute","request_id":11})).await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "bad_frame");

    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":12,"session_id":"no spaces/allowed","prompt":"x"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "invalid_session_id");

    ws_send(
        &mut ws,
        json!({"type":"stop","request_id":13,"session_id":"unknown-1"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "session_not_found");

    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["data"]["error"], "bad_frame");

    // Still serving.
    ws_send(&mut ws, json!({"type":"version","request_id":14})).await;
    assert_eq!(ws_recv(&mut ws).await["event"], "version");
    let m = metric_at(
        &client(),
        &w.base,
        names::worker::BAD_REQUESTS,
        &["kind=\"ws_frame\""],
    )
    .await;
    assert_eq!(m, 5.0);
    w.stop().await;
}
