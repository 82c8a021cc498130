//! The active health check: `GET <health_check.path>` on each worker, parsed.
//!
//! - 200 `{"status":"ready","sessions_active":N,"max_sessions":M}`: healthy, placeable;
//! - 503 with status `draining` or `full`: alive (existing sessions keep being proxied) but
//!   not placeable;
//! - anything else, a timeout or a connect error: a failed check. pingora flips the health
//!   after `failures` failed / `successes` good checks in a row.
//!
//! A good check also ends a passive ejection early. The probe goes through hyper's HTTP/1
//! client connection (`Connection: close`; the head, the body and the time bounded), over
//! the same TCP or TLS stream as requests to the worker.
//!
//! With `worker_auth.key` every probe carries a fresh challenge and the answer must prove
//! the worker's identity ([`super::identity`]); over `upstream_tls` the certificate must
//! name the worker. A failed identity check holds the worker out at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::{Error, ErrorType};

use super::discovery::WorkerId;
use super::identity::{check_answer, Failure, ProofCheck};
use super::{ReadyReport, Registry};
use crate::metrics::ProxyMetrics;
pub use crate::tls::{FetchError, TlsName};

/// Largest probe answer body read: a bigger one fails the probe (a hostile worker cannot
/// make the proxy buffer more).
pub const MAX_PROBE_BYTES: usize = 64 * 1024;
/// Largest probe answer head (hyper's read buffer; its minimum is 8 KiB).
pub const MAX_PROBE_HEAD_BYTES: usize = 16 * 1024;

/// The `/health/ready` check.
pub struct ReadyCheck {
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
}

impl ReadyCheck {
    pub fn new(registry: Arc<Registry>, metrics: Arc<ProxyMetrics>) -> Box<ReadyCheck> {
        let cfg = registry.config();
        let remote =
            cfg.discovery.is_some() || cfg.workers.iter().any(|w| !w.address.ip().is_loopback());
        if remote && cfg.worker_key.is_none() && cfg.upstream_tls.is_none() {
            tracing::warn!(
                "neither worker_auth.key nor upstream_tls: worker identity is not authenticated (a worker is whoever answers at its address as its node id)"
            );
        }
        if cfg.worker_key.is_some() && cfg.worker_address_translation {
            tracing::warn!(
                "worker_auth.allow_address_translation: identity proofs are not checked against the address dialled: an impostor that receives a probe and can reach the real worker can relay its proof"
            );
        }
        Box::new(ReadyCheck { registry, metrics })
    }
}

fn worker_id(b: &Backend) -> String {
    b.ext
        .get::<WorkerId>()
        .map(|w| w.0.clone())
        .unwrap_or_else(|| b.addr.to_string())
}

#[async_trait]
impl HealthCheck for ReadyCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let id = worker_id(target);
        let cfg = self.registry.config();
        let Some(addr) = target.addr.as_inet().copied() else {
            return Error::e_explain(ErrorType::InternalError, "not an inet address");
        };
        let mark = self.registry.workers().get(&id).map(|w| w.probe_mark());
        let key = cfg.worker_key.as_ref().map(|v| v.as_bytes());
        let challenge = key.map(|_| hotplex_common::identity::new_challenge());
        let tls = cfg.upstream_tls.as_ref();
        let raw = fetch(
            addr,
            &cfg.health.path,
            cfg.health.timeout,
            tls.map(|t| (t, TlsName::Worker(&id))),
            challenge.as_deref(),
        )
        .await;
        let checked = match raw {
            Err(FetchError::Certificate(e)) => Err(Failure::new("certificate", e)),
            Err(FetchError::Other(e)) => {
                tracing::debug!(worker = %id, error = %e, "health check failed");
                return Error::e_explain(ErrorType::ConnectError, e);
            }
            Ok(raw) => match (key, challenge.as_deref()) {
                (Some(k), Some(c)) => {
                    let pc = ProofCheck {
                        key: k,
                        allow_address_translation: cfg.worker_address_translation,
                    };
                    check_answer(&raw, pc, c, &id, addr).map(|()| raw)
                }
                _ => Ok(raw),
            },
        };
        let raw = match checked {
            Ok(raw) => raw,
            Err(f) => {
                let first = self
                    .registry
                    .workers()
                    .get(&id)
                    .is_none_or(|w| w.identity_failed());
                super::identity::record(&id, addr, &f, first);
                self.metrics.refresh_worker_gauges(&self.registry);
                return Error::e_explain(ErrorType::ConnectError, f.to_string());
            }
        };
        let proven = key.is_some() || tls.is_some_and(|t| t.cfg.verify);
        if proven {
            if let Some(w) = self.registry.workers().get(&id) {
                if w.identity_proven() {
                    tracing::info!(worker = %id, address = %addr, "worker identity verified");
                    self.metrics.refresh_worker_gauges(&self.registry);
                }
            }
        }
        match parse_response(&raw) {
            Ok(report) => {
                if let Some(w) = self.registry.workers().get(&id) {
                    match mark {
                        Some(m) => w.observe_ready_since(report, m),
                        None => w.observe_ready(report),
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::debug!(worker = %id, error = %e, "health check failed");
                Error::e_explain(ErrorType::ConnectError, e)
            }
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let id = worker_id(target);
        if let Some(w) = self.registry.workers().get(&id) {
            w.set_healthy(healthy);
        }
        self.metrics.refresh_worker_gauges(&self.registry);
        if healthy {
            tracing::info!(worker = %id, "worker is healthy");
        } else {
            tracing::warn!(worker = %id, "worker is unhealthy");
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("worker {} ({})", worker_id(target), target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        let cfg = self.registry.config();
        if success {
            cfg.health.successes
        } else {
            cfg.health.failures
        }
    }
}

/// A probe's answer as hyper read it: the status, the headers and the body (de-chunked,
/// at most [`MAX_PROBE_BYTES`]), exactly the bytes an identity proof covers.
#[derive(Debug, Clone)]
pub struct ProbeAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ProbeAnswer {
    /// The first value of header `name` (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Aborts the connection task when the probe ends, whatever the worker does after its
/// answer (a worker that ignores `Connection: close` keeps no task alive).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GET `path` through hyper's HTTP/1 client (`Connection: close`), the whole exchange
/// bounded by `timeout`, the head by [`MAX_PROBE_HEAD_BYTES`] and the body by
/// [`MAX_PROBE_BYTES`]. Over TLS when `tls` is given (with the name the certificate must
/// carry); with `challenge`, the identity challenge header.
pub async fn fetch(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    tls: Option<(&crate::tls::WorkerTls, TlsName<'_>)>,
    challenge: Option<&str>,
) -> Result<ProbeAnswer, FetchError> {
    let fut = async {
        let io = crate::tls::connect_worker(addr, tls).await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_PROBE_HEAD_BYTES)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "health probe connection");
            }
        }));
        let mut req = http::Request::get(path)
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "hotplex-proxy-health")
            .header(header::ACCEPT, "application/json")
            .header(header::CONNECTION, "close");
        if let Some(c) = challenge {
            req = req.header(hotplex_common::identity::X_HOTPLEX_CHALLENGE, c);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| format!("request {path:?}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("response: {e}"))?;
        let (parts, body) = resp.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_PROBE_BYTES as u64) {
            return Err(FetchError::Other(format!(
                "response too large (content-length over {MAX_PROBE_BYTES} bytes)"
            )));
        }
        let body = Limited::new(body, MAX_PROBE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    format!("response too large (body over {MAX_PROBE_BYTES} bytes)")
                } else {
                    format!("body: {e}")
                }
            })?
            .to_bytes();
        Ok(ProbeAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| FetchError::Other(format!("timed out after {timeout:?}")))?
}

/// Parses a probe answer into a readiness report.
pub fn parse_response(a: &ProbeAnswer) -> Result<ReadyReport, String> {
    let (status, json) = parse_json(a)?;
    let state = json.get("status").and_then(|v| v.as_str()).unwrap_or("");
    let report = ReadyReport {
        sessions_active: json
            .get("sessions_active")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        max_sessions: json.get("max_sessions").and_then(|v| v.as_u64()),
        draining: state == "draining",
        full: state == "full",
    };
    match status {
        200 => Ok(report),
        503 if report.draining || report.full => Ok(report),
        other => Err(format!("status {other} ({state:?})")),
    }
}

/// A probe answer with a JSON body: (status, body).
pub fn parse_json(a: &ProbeAnswer) -> Result<(u16, serde_json::Value), String> {
    let json: serde_json::Value = serde_json::from_slice(&a.body)
        .map_err(|e| format!("status {}: bad JSON body: {e}", a.status))?;
    Ok((a.status, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What a test worker does on one connection after reading the request head.
    enum Reply {
        /// Writes these pieces (flushing between them), then closes.
        Pieces(Vec<Vec<u8>>),
        /// Writes this, then keeps the connection open.
        KeepOpen(Vec<u8>),
        /// Writes this head, then body bytes without end.
        Endless(Vec<u8>),
        /// Writes nothing and keeps the connection open.
        Silent,
    }

    /// A real TCP server on 127.0.0.1:0 answering one connection per reply, in order;
    /// the request heads it read are kept.
    async fn worker(replies: Vec<Reply>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let heads = seen.clone();
        tokio::spawn(async move {
            for reply in replies {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    heads
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    match reply {
                        Reply::Pieces(pieces) => {
                            for p in pieces {
                                if s.write_all(&p).await.is_err() || s.flush().await.is_err() {
                                    return;
                                }
                                tokio::task::yield_now().await;
                            }
                        }
                        Reply::KeepOpen(b) => {
                            let _ = s.write_all(&b).await;
                            let _ = s.read(&mut chunk).await;
                        }
                        Reply::Endless(head) => {
                            let _ = s.write_all(&head).await;
                            let block = vec![b'x'; 16 * 1024];
                            while s.write_all(&block).await.is_ok() {}
                        }
                        Reply::Silent => {
                            let _ = s.read(&mut chunk).await;
                        }
                    }
                });
            }
        });
        (at, seen)
    }

    fn one(b: &str) -> Reply {
        Reply::Pieces(vec![b.as_bytes().to_vec()])
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn content_length_answer_with_the_request_it_got() {
        let body = r#"{"status":"ready","node_id":"w1","sessions_active":3,"max_sessions":9}"#;
        let (at, seen) = worker(vec![one(&format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-hotplex-identity: p1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))])
        .await;
        let a = fetch(at, "/health/ready", T, None, Some("c-123"))
            .await
            .expect("answer");
        assert_eq!(a.status, 200);
        assert_eq!(a.header("X-Hotplex-Identity"), Some("p1"));
        assert_eq!(&a.body[..], body.as_bytes());
        let r = parse_response(&a).expect("ready");
        assert_eq!((r.sessions_active, r.max_sessions), (3, Some(9)));
        assert!(!r.draining && !r.full);
        let head = seen.lock().expect("lock")[0].to_ascii_lowercase();
        assert!(head.starts_with("get /health/ready http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {at}\r\n")), "{head}");
        assert!(head.contains("x-hotplex-challenge: c-123\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_answers() {
        let (a, b) = (r#"{"status":"draining","ses"#, r#"sions_active":1,"x":1}"#);
        let chunked = Reply::Pieces(vec![
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
            format!("{:x};ext=1\r\n{a}\r\n", a.len()).into_bytes(),
            format!("{:x}\r\n{b}\r\n", b.len()).into_bytes(),
            b"0\r\n\r\n".to_vec(),
        ]);
        let full = one(
            "HTTP/1.1 503 X\r\n\r\n{\"status\":\"full\",\"sessions_active\":5,\"max_sessions\":5}",
        );
        let (at, _) = worker(vec![chunked, full]).await;
        let r = fetch(at, "/health/ready", T, None, None)
            .await
            .expect("chunked");
        assert_eq!(&r.body[..], format!("{a}{b}").as_bytes(), "de-chunked");
        let rep = parse_response(&r).expect("draining is alive");
        assert!(rep.draining);
        assert_eq!(rep.sessions_active, 1);
        let r = fetch(at, "/health/ready", T, None, None)
            .await
            .expect("to EOF");
        assert!(parse_response(&r).expect("full is alive").full);
    }

    #[tokio::test]
    async fn an_answer_is_complete_at_its_length_while_the_worker_keeps_the_connection() {
        let (at, _) = worker(vec![Reply::KeepOpen(
            b"HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\n{\"status\":\"ready\"}".to_vec(),
        )])
        .await;
        let started = std::time::Instant::now();
        let a = fetch(at, "/health/ready", T, None, None)
            .await
            .expect("answer");
        assert!(parse_response(&a).is_ok());
        assert!(
            started.elapsed() < T,
            "did not wait for the worker to close"
        );
    }

    #[tokio::test]
    async fn oversized_answers_fail_the_probe() {
        let big = MAX_PROBE_BYTES + 1;
        let declared = one(&format!("HTTP/1.1 200 OK\r\ncontent-length: {big}\r\n\r\n"));
        let chunked = {
            let mut p = vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()];
            for _ in 0..(big / 4096 + 1) {
                p.push(format!("1000\r\n{}\r\n", "y".repeat(4096)).into_bytes());
            }
            p.push(b"0\r\n\r\n".to_vec());
            Reply::Pieces(p)
        };
        let endless = Reply::Endless(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec());
        let head = one(&format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
            "h".repeat(MAX_PROBE_HEAD_BYTES)
        ));
        let (at, _) = worker(vec![declared, chunked, endless, head]).await;
        for what in ["declared", "chunked", "endless"] {
            let e = fetch(at, "/health/ready", T, None, None)
                .await
                .expect_err(what)
                .to_string();
            assert!(e.contains("too large"), "{what}: {e}");
        }
        let e = fetch(at, "/health/ready", T, None, None)
            .await
            .expect_err("head");
        assert!(!e.to_string().contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn garbage_truncated_and_silent_answers_fail_the_probe() {
        let (at, _) = worker(vec![
            one("garbage\r\n\r\n"),
            one("HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"status\""),
            one("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nnot json"),
            one("HTTP/1.1 500 X\r\ncontent-length: 2\r\n\r\n{}"),
            one("HTTP/1.1 503 X\r\ncontent-length: 14\r\n\r\n{\"status\":\"x\"}"),
            Reply::Silent,
        ])
        .await;
        assert!(fetch(at, "/", T, None, None).await.is_err(), "garbage");
        assert!(fetch(at, "/", T, None, None).await.is_err(), "truncated");
        for what in ["not json", "500", "503 without a known state"] {
            let a = fetch(at, "/", T, None, None).await.expect(what);
            assert!(parse_response(&a).is_err(), "{what}");
        }
        let e = fetch(at, "/", Duration::from_millis(300), None, None)
            .await
            .expect_err("silent");
        assert!(e.to_string().contains("timed out"), "{e}");
        // Nothing listens here any more: a connect error, no panic.
        let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let free = gone.local_addr().expect("addr");
        drop(gone);
        assert!(fetch(free, "/", T, None, None).await.is_err());
    }
}
