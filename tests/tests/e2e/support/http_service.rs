//! A small real HTTP service (axum on hyper, `127.0.0.1:0`) for the `http` pool tests:
//! every answer names the service, so a test sees which upstream served a request.
//!
//! - `GET /healthz`: 200, or 503 while [`HttpService::set_healthy`]`(false)`;
//! - `.../slow/...`: held until [`HttpService::release`] (a request in flight);
//! - anything else: 200 JSON `{"name","method","path","host"}`.
//!
//! Every request other than `/healthz` is logged ([`HttpService::seen`]).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The health path of the test service.
pub const HEALTH_PATH: &str = "/healthz";

/// One request seen: method, path, headers.
type Seen = (String, String, Vec<(String, String)>);

struct Shared {
    name: String,
    healthy: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    release: tokio::sync::Notify,
}

/// A running service (stopped on drop).
pub struct HttpService {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for HttpService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == HEALTH_PATH {
        let status = if s.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (status, s.name.clone()).into_response();
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let method = req.method().to_string();
    if let Ok(mut v) = s.seen.lock() {
        v.push((method.clone(), path.clone(), headers));
    }
    if path.contains("/slow/") {
        s.release.notified().await;
    }
    axum::Json(serde_json::json!({
        "name": s.name, "method": method, "path": path, "host": host,
    }))
    .into_response()
}

/// Starts a service named `name` on a free loopback port.
pub async fn start(name: &str) -> HttpService {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind http service");
    serve(name, listener)
}

/// Starts it again on `addr` (after [`HttpService::stop`]).
pub async fn start_at(name: &str, addr: SocketAddr) -> HttpService {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind http service");
    serve(name, listener)
}

fn serve(name: &str, listener: tokio::net::TcpListener) -> HttpService {
    let addr = listener.local_addr().expect("addr");
    let shared = Arc::new(Shared {
        name: name.to_string(),
        healthy: AtomicBool::new(true),
        seen: Mutex::new(Vec::new()),
        release: tokio::sync::Notify::new(),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    HttpService {
        name: name.to_string(),
        addr,
        shared,
        task,
        shutdown: Some(tx),
    }
}

impl HttpService {
    /// `/healthz` answers 200 (true) or 503 (false).
    pub fn set_healthy(&self, on: bool) {
        self.shared.healthy.store(on, Ordering::SeqCst);
    }

    /// Lets every held `/slow/` request answer.
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }

    /// `(method, path)` of every request seen (not `/healthz`).
    pub fn seen(&self) -> Vec<(String, String)> {
        self.shared
            .seen
            .lock()
            .map(|v| v.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect())
            .unwrap_or_default()
    }

    /// The headers of the `i`-th request seen.
    pub fn headers_of(&self, i: usize) -> Vec<(String, String)> {
        self.shared
            .seen
            .lock()
            .ok()
            .and_then(|v| v.get(i).map(|(_, _, h)| h.clone()))
            .unwrap_or_default()
    }

    /// Stops: no new connections (refused), idle keep-alive connections closed, the
    /// address free again. Returns it.
    pub async fn stop(mut self) -> SocketAddr {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = &mut self.task;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        self.addr
    }
}
