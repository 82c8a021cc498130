//! A small real HTTP service (axum on hyper, `127.0.0.1:0`) for the `http` pool tests:
//! every answer names the service, so a test sees which upstream served a request.
//!
//! - `GET /healthz`: 200, or 503 while [`HttpService::set_healthy`]`(false)`;
//! - `.../slow/...`: held until [`HttpService::release`] (a request in flight);
//! - anything else: 200 JSON `{"name","method","path","host"}` (plus `"pad"`, that many
//!   `x`, with a `?pad=N` query, N up to 1 MiB: a body large enough to compress).
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
    let pad = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("pad=")))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n.min(1 << 20));
    let mut body = serde_json::json!({
        "name": s.name, "method": method, "path": path, "host": host,
    });
    if pad > 0 {
        body["pad"] = serde_json::Value::String("x".repeat(pad));
    }
    axum::Json(body).into_response()
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

/// A TLS service presenting `leaf` (one request per connection, `Connection: close`):
/// `GET /healthz` 200, anything else 200 JSON `{"name"}` counted in `requests`.
pub struct TlsService {
    pub addr: SocketAddr,
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`TlsService`] named `name` on a free loopback port.
pub async fn start_tls(name: &str, leaf: &super::tls::Leaf) -> TlsService {
    use openssl::pkey::PKey;
    use openssl::ssl::{SslAcceptor, SslMethod};
    use openssl::x509::X509;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_certificate(&X509::from_pem(leaf.cert_pem.as_bytes()).expect("cert"))
        .expect("set cert");
    b.set_private_key(&PKey::private_key_from_pem(leaf.key_pem.as_bytes()).expect("key"))
        .expect("set key");
    let acceptor = Arc::new(b.build());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TLS service");
    let addr = l.local_addr().expect("addr");
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (count, name) = (requests.clone(), name.to_string());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, count, name) = (acceptor.clone(), count.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                    return;
                };
                let Ok(mut s) = tokio_openssl::SslStream::new(ssl, tcp) else {
                    return;
                };
                if std::pin::Pin::new(&mut s).accept().await.is_err() {
                    return; // the client refused the certificate
                }
                let mut buf = vec![0u8; 16 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                let body = if buf.starts_with(b"GET /healthz ") {
                    name.clone()
                } else {
                    count.fetch_add(1, Ordering::SeqCst);
                    serde_json::json!({ "name": name }).to_string()
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    TlsService {
        addr,
        requests,
        task,
    }
}
