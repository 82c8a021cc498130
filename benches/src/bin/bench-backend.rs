//! `bench-backend`: the upstream of the SSE and WebSocket scenarios of
//! `benches/load_bench.sh`, on one or more loopback ports (one per proxy "worker").
//!
//! - `GET /health/ready`: `200 {"status":"ready","sessions_active":0,"max_sessions":N}`
//!   (what hotplex-proxy's health check expects), `GET /health/live`: `200 ok`;
//! - `GET /sse?interval_ms=I&events=N`: `text/event-stream`, one event `data: <unix ns>`
//!   every `I` ms (default 100), `N` events (default: until the client leaves);
//! - `GET /ws/v1/agent` (WebSocket): echoes text and binary messages;
//! - anything else: `200` with an 18-byte body.
//!
//! Single-threaded (the bench pins it to one core next to the load generator).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use futures_util::stream;

/// The body of every other path (18 bytes, like the reference nginx backend).
const BODY_18: &str = "hello from bench!\n";
/// Default event interval of `/sse`, milliseconds.
const DEFAULT_INTERVAL_MS: u64 = 100;

#[derive(Parser, Debug)]
#[command(about = "SSE/WebSocket backend for benches/load_bench.sh (loopback only)")]
struct Args {
    /// Listen address (repeatable), e.g. 127.0.0.1:18101.
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// `max_sessions` reported by /health/ready.
    #[arg(long, default_value_t = 1_000_000)]
    max_sessions: u64,
}

/// Parameters of `/sse` (parsed by hand: no serde dependency).
struct SseQuery {
    interval_ms: Option<u64>,
    events: Option<u64>,
}

impl SseQuery {
    fn from_raw(q: Option<&str>) -> SseQuery {
        let mut s = SseQuery {
            interval_ms: None,
            events: None,
        };
        for pair in q.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "interval_ms" => s.interval_ms = v.parse().ok(),
                "events" => s.events = v.parse().ok(),
                _ => {}
            }
        }
        s
    }
}

async fn sse(uri: axum::http::Uri) -> Response {
    let q = SseQuery::from_raw(uri.query());
    let interval = Duration::from_millis(q.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS).max(1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = q.events.unwrap_or(u64::MAX);
    let events = stream::unfold((tick, 0u64), move |(mut tick, n)| async move {
        if n >= limit {
            return None;
        }
        tick.tick().await;
        let ev = format!("data: {}\n\n", hotplex_bench::unix_nanos());
        Some((Ok::<Bytes, Infallible>(Bytes::from(ev)), (tick, n + 1)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /sessions/{id}`: the SSE stream with `?interval_ms=` (or `events=`), else the
/// 18-byte body.
async fn session_path(uri: axum::http::Uri) -> Response {
    if uri
        .query()
        .is_some_and(|q| q.contains("interval_ms=") || q.contains("events="))
    {
        sse(uri).await
    } else {
        BODY_18.into_response()
    }
}

async fn echo(mut ws: WebSocket) {
    while let Some(Ok(m)) = ws.recv().await {
        let reply = match m {
            Message::Text(_) | Message::Binary(_) => m,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

fn app(max_sessions: u64) -> Router {
    let ready =
        format!(r#"{{"status":"ready","sessions_active":0,"max_sessions":{max_sessions}}}"#);
    Router::new()
        .route(
            "/health/ready",
            get(move || {
                let body = ready.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route("/health/live", get(|| async { "ok" }))
        .route("/sse", get(sse))
        // The SSE stream on a declared route of the proxy's public surface too (GET of a
        // session path; hotplex-proxy forwards only the HotPlex API).
        .route("/sessions/{id}", get(session_path))
        .route(
            "/ws/v1/agent",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .fallback(|| async { BODY_18 })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let mut tasks = Vec::new();
    for addr in args.listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-backend: cannot bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        let router = app(args.max_sessions);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("bench-backend: {addr}: {e}");
            }
        }));
    }
    eprintln!("bench-backend: listening");
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_18_bytes_and_query_parses() {
        assert_eq!(BODY_18.len(), 18);
        let q = SseQuery::from_raw(Some("interval_ms=20&x=1&events=5"));
        assert_eq!((q.interval_ms, q.events), (Some(20), Some(5)));
        let q = SseQuery::from_raw(None);
        assert_eq!((q.interval_ms, q.events), (None, None));
    }
}
