//! Every worker metric exists in a live `/metrics` and moves with the events it counts.

use std::time::Duration;

use crate::support::worker::*;
use hotplex_common::names::{shared, worker};
use hotplex_e2e::{eventually, metric_value};
use serde_json::json;

#[tokio::test]
async fn every_metric_is_exported_and_moves_with_real_events() {
    let w = start(hotplex_worker::WorkerConfig {
        max_sessions: 2,
        ..test_config()
    })
    .await;
    let c = client();
    let base = w.base.clone();
    // The request histogram has series once a request was answered.
    let r = c
        .get(format!("{base}/health/live"))
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 200);
    let text = metrics_at(&c, &base).await;
    for name in hotplex_common::names::WORKER_EXPORTED {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("component=\"worker\""));
    let m =
        |text: &str, name: &str, labels: &[&str]| metric_value(text, name, labels).unwrap_or(0.0);
    assert_eq!(m(&text, worker::SESSIONS_MAX, &[]), 2.0);
    assert_eq!(m(&text, worker::DRAINING, &[]), 0.0);

    // Sessions, a turn, tools, turn duration, request histogram.
    let id = create_session(&c, &base).await;
    let events = sse_turn(&c, &base, &id, "count me").await;
    assert_eq!(
        event_names(&events).last().map(String::as_str),
        Some("completed")
    );
    let text = metrics_at(&c, &base).await;
    assert_eq!(m(&text, shared::SESSIONS_ACTIVE, &[]), 1.0);
    assert_eq!(m(&text, shared::SESSIONS_TOTAL, &[]), 1.0);
    assert_eq!(m(&text, shared::TOOLS_INVOKED, &["tool=\"echo\""]), 1.0);
    assert_eq!(
        m(&text, worker::TURNS_TOTAL, &["outcome=\"completed\""]),
        1.0
    );
    assert_eq!(
        m(
            &text,
            &format!("{}_count", worker::TURN_DURATION_SECONDS),
            &[]
        ),
        1.0
    );
    let req_count = format!("{}_count", shared::REQUEST_DURATION_SECONDS);
    assert_eq!(
        m(
            &text,
            &req_count,
            &["route=\"/sessions\"", "method=\"POST\"", "status=\"201\""]
        ),
        1.0
    );
    assert_eq!(
        m(
            &text,
            &req_count,
            &["route=\"/sessions/{id}/messages\"", "status=\"200\""]
        ),
        1.0
    );

    // Errors by reason; bad requests by kind.
    sse_turn(&c, &base, &id, "garbage").await;
    let r = c
        .post(format!("{base}/sessions/{id}/messages"))
        .body("nope")
        .send()
        .await
        .expect("bad body");
    assert_eq!(r.status(), 400);
    let text = metrics_at(&c, &base).await;
    assert_eq!(
        m(&text, shared::SESSIONS_ERRORS, &["reason=\"garbage\""]),
        1.0
    );
    assert_eq!(m(&text, worker::TURNS_TOTAL, &["outcome=\"error\""]), 1.0);
    assert_eq!(m(&text, worker::BAD_REQUESTS, &["kind=\"json\""]), 1.0);

    // WebSocket gauge and a stopped turn.
    let mut ws = ws_connect(&w.ws_url).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"session_id":id,"prompt":"sleep 20000"}),
    )
    .await;
    assert_eq!(ws_recv(&mut ws).await["event"], "thinking");
    assert_eq!(
        metric_at(&c, &base, worker::WEBSOCKETS_ACTIVE, &[]).await,
        1.0
    );
    ws_send(
        &mut ws,
        json!({"type":"stop","request_id":2,"session_id":id}),
    )
    .await;
    ws_turn(&mut ws, 1).await;
    assert_eq!(
        metric_at(&c, &base, worker::TURNS_TOTAL, &["outcome=\"stopped\""]).await,
        1.0
    );
    drop(ws);
    let cc = c.clone();
    let b = base.clone();
    assert!(
        eventually(Duration::from_secs(5), move || {
            let (c, b) = (cc.clone(), b.clone());
            async move { metric_at(&c, &b, worker::WEBSOCKETS_ACTIVE, &[]).await == 0.0 }
        })
        .await,
        "websocket gauge back to 0"
    );

    // Pool rejections; closed sessions; draining.
    create_session(&c, &base).await;
    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("full");
    assert_eq!(r.status(), 503);
    let r = c
        .delete(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = c
        .post(format!("{base}/admin/drain"))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 202);
    let text = metrics_at(&c, &base).await;
    assert_eq!(m(&text, worker::POOL_REJECTIONS, &[]), 1.0);
    assert_eq!(
        m(&text, worker::SESSIONS_CLOSED, &["reason=\"deleted\""]),
        1.0
    );
    assert_eq!(m(&text, shared::SESSIONS_ACTIVE, &[]), 1.0);
    assert_eq!(m(&text, shared::SESSIONS_TOTAL, &[]), 2.0);
    assert_eq!(m(&text, worker::DRAINING, &[]), 1.0);
    w.stop().await;
}
