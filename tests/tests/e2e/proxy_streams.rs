//! Proxy e2e: WebSocket (real tokio-tungstenite client, several turns) and SSE streamed
//! through the proxy without buffering.

use hotplex_common::names;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use hotplex_e2e::metric_value;
use hotplex_e2e::sse::Reader;
use serde_json::json;

/// Plain requests time out after 1 s; streams use `stream_idle`. The quiet periods below
/// (1.5 s) would cut the streams if the plain timeouts applied to them.
const SHORT_PLAIN_TIMEOUTS: &str =
    "timeouts:\n  connect: 500ms\n  read: 1s\n  write: 1s\n  stream_idle: 1h\n";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, cookie: Option<&str>) -> (Ws, http_parts::Head) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (ws, resp, _) = ws_connect_checked(url, &headers).await;
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let head = http_parts::Head {
        status: resp.status().as_u16(),
        worker: h("x-hotplex-worker"),
        node: h("x-hotplex-node"),
        set_cookie: h("set-cookie"),
    };
    (ws, head)
}

mod http_parts {
    #[derive(Debug)]
    pub struct Head {
        pub status: u16,
        pub worker: Option<String>,
        pub node: Option<String>,
        pub set_cookie: Option<String>,
    }
}

/// Reads a turn's SSE stream to its end: when its first event (`thinking`) came and when
/// the stream ended (both since `start`), and the event names in order.
pub(crate) async fn timed_turn(
    r: reqwest::Response,
    start: Instant,
) -> (Duration, Duration, Vec<String>) {
    let mut reader = Reader::new(r);
    let first = reader.next().await.expect("first event");
    let first_at = start.elapsed();
    assert_eq!(first.event, "thinking");
    let mut names = vec![first.event.clone()];
    while let Some(ev) = reader.next().await {
        names.push(ev.event.clone());
    }
    (first_at, start.elapsed(), names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_the_proxy() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), SHORT_PLAIN_TIMEOUTS)).await;
    let c = client();
    let ws_url = format!("ws://{}/ws/v1/agent", p.listen);

    // Keyless connection: placed, 101 carries the worker and the affinity cookie.
    let (mut ws, head) = ws_connect(&ws_url, None).await;
    assert_eq!(head.status, 101);
    let worker = head.worker.clone().expect("x-hotplex-worker on the 101");
    assert_eq!(head.node.as_deref(), Some(worker.as_str()));
    let cookie = head.set_cookie.expect("affinity cookie on the 101");
    let pair = cookie.split(';').next().expect("pair").to_string();

    let active = metric_value(&metrics(&c, &p).await, names::proxy::WEBSOCKETS_ACTIVE, &[]);
    assert_eq!(active, Some(1.0));

    // Id-less executes run the connection's session: the id the proxy minted for this
    // keyless connection (a client-chosen id must be routed: `?session_id=`, below).
    let mut sid = String::new();
    for turn in 1..=3u64 {
        let frames = ws_execute(&mut ws, turn, "", &format!("hello {turn}"))
            .await
            .expect("ws turn");
        let this = frames.last().expect("frames")["data"]["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            hotplex_common::signed_shape(&this).is_some(),
            "minted: {this}"
        );
        assert!(sid.is_empty() || sid == this, "one session per connection");
        sid = this;
        let last = frames.last().expect("frames");
        assert_eq!(last["event"], "completed", "{frames:?}");
        let answer = frames
            .iter()
            .find(|f| f["event"] == "answer")
            .expect("answer");
        let text = answer["data"]["text"].as_str().unwrap_or("");
        assert!(text.contains(&format!("Turn {turn}")), "{text}");
    }
    // Quiet for longer than the plain read timeout (1 s), then another turn.
    // allow-sleep: the tunnel must stay quiet past the plain read timeout (the timer is under test)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames = ws_execute(&mut ws, 4, &sid, "still there")
        .await
        .expect("ws turn");
    assert_eq!(frames.last().expect("f")["event"], "completed");
    ws.close(None).await.ok();
    drop(ws);

    // The session lives on the worker the connection was placed on.
    let r = send(c.get(format!(
        "{}/sessions/{sid}",
        workers.iter().find(|w| w.id == worker).expect("w").base()
    )))
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    // A reconnect carrying the cookie sticks to that worker and continues the session.
    for _ in 0..3 {
        let (mut ws, head) = ws_connect(&ws_url, Some(&pair)).await;
        assert_eq!(
            head.worker.as_deref(),
            Some(worker.as_str()),
            "cookie reconnect"
        );
        let frames = ws_execute(&mut ws, 9, &sid, "again")
            .await
            .expect("ws turn");
        assert_eq!(frames.last().expect("f")["event"], "completed");
        ws.close(None).await.ok();
    }

    // ?session_id= routes a connection by hashing; always the same worker.
    let url = format!("{ws_url}?session_id=ws-hashed-7");
    let (mut ws, head) = ws_connect(&url, None).await;
    let hashed = head.worker.expect("worker");
    assert!(head.set_cookie.is_none(), "keyed: no cookie");
    let frames = ws_execute(&mut ws, 1, "ws-hashed-7", "hi")
        .await
        .expect("ws turn");
    assert_eq!(frames.last().expect("f")["event"], "completed");
    drop(ws);
    let (_ws, head) = ws_connect(&url, None).await;
    assert_eq!(head.worker.as_deref(), Some(hashed.as_str()));

    assert!(
        hotplex_e2e::eventually(WAIT, || async {
            metric_value(&metrics(&c, &p).await, names::proxy::WEBSOCKETS_ACTIVE, &[]) == Some(1.0)
        })
        .await,
        "closed connections leave the gauge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_is_streamed_unbuffered() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), SHORT_PLAIN_TIMEOUTS)).await;
    let c = client();
    let (id, node) = create(&c, &p.base()).await;

    let start = Instant::now();
    let r = c
        .post(format!("{}/sessions/{id}/messages", p.base()))
        .json(&json!({"prompt": "sleep 1500"}))
        .send()
        .await
        .expect("POST messages");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-hotplex-node")
            .and_then(|v| v.to_str().ok()),
        Some(node.as_str())
    );
    let (first_at, total, names) = timed_turn(r, start).await;
    println!("SSE: first event after {first_at:?}, stream ended after {total:?}: {names:?}");
    assert!(
        first_at < Duration::from_millis(1000),
        "first event buffered: {first_at:?}"
    );
    assert!(total >= Duration::from_millis(1500));
    assert_eq!(names.last().map(String::as_str), Some("completed"));
    // A second turn on the same session through the proxy.
    let r = c
        .post(format!("{}/sessions/{id}/messages", p.base()))
        .json(&json!({"prompt": "history"}))
        .send()
        .await
        .expect("second turn");
    let evs = Reader::new(r).collect().await;
    assert!(
        evs.iter()
            .any(|e| e.event == "answer" && e.data.contains("sleep 1500")),
        "{evs:?}"
    );
}
