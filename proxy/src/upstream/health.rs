//! The active health check: `GET <health_check.path>` on each worker, parsed.
//!
//! - 200 `{"status":"ready","sessions_active":N,"max_sessions":M}`: healthy, placeable;
//! - 503 with status `draining` or `full`: alive (existing sessions keep being proxied) but
//!   not placeable;
//! - anything else, a timeout or a connect error: a failed check. pingora flips the health
//!   after `failures` failed / `successes` good checks in a row.
//!
//! A good check also ends a passive ejection early. The probe is a minimal HTTP/1.1 client
//! (`Connection: close`, bounded read) so the proxy needs no second HTTP stack.
//!
//! With `worker_auth.key` every probe carries a fresh challenge and the answer must prove
//! the worker's identity ([`super::identity`]); over `upstream_tls` the certificate must
//! name the worker. A failed identity check holds the worker out at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::discovery::WorkerId;
use super::identity::{check_answer, Failure, ProofCheck};
use super::{ReadyReport, Registry};
use crate::metrics::ProxyMetrics;
pub use crate::tls::TlsName;

/// Largest probe response read.
const MAX_PROBE_BYTES: usize = 64 * 1024;

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

/// Why a probe got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The worker's TLS certificate was refused (chain or name).
    Certificate(String),
    /// Connect, I/O, timeout, oversized answer.
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Certificate(e) | FetchError::Other(e) => f.write_str(e),
        }
    }
}

impl From<String> for FetchError {
    fn from(e: String) -> FetchError {
        FetchError::Other(e)
    }
}

/// GET `path` (`Connection: close`, bounded read); the raw response. Over TLS when `tls`
/// is given (with the name the certificate must carry); with `challenge`, the identity
/// challenge header.
pub async fn fetch(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    tls: Option<(&crate::tls::WorkerTls, TlsName<'_>)>,
    challenge: Option<&str>,
) -> Result<Vec<u8>, FetchError> {
    let fut = async {
        let mut s = crate::tls::connect_worker(addr, tls).await?;
        let challenge = challenge
            .map(|c| format!("{}: {c}\r\n", hotplex_common::identity::X_HOTPLEX_CHALLENGE))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hotplex-proxy-health\r\nAccept: application/json\r\n{challenge}Connection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_PROBE_BYTES {
                return Err(FetchError::Other("response too large".to_string()));
            }
            if response_complete(&buf) {
                break;
            }
        }
        Ok(buf)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| FetchError::Other(format!("timed out after {timeout:?}")))?
}

fn split_head(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&buf[..i], &buf[i + 4..]))
}

/// The value of header `name` in a response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// True once a `Content-Length` body is complete (else read to EOF).
fn response_complete(buf: &[u8]) -> bool {
    let Some((head, body)) = split_head(buf) else {
        return false;
    };
    let head = String::from_utf8_lossy(head);
    header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = body.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&body[..i]);
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_str, 16) else {
            break;
        };
        body = &body[i + 2..];
        if size == 0 || body.len() < size {
            out.extend_from_slice(&body[..size.min(body.len())]);
            break;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Parses a raw HTTP response into a readiness report.
pub fn parse_response(buf: &[u8]) -> Result<ReadyReport, String> {
    let (status, json) = parse_json(buf)?;
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

/// Parses a raw HTTP response with a JSON body: (status, body).
pub fn parse_json(buf: &[u8]) -> Result<(u16, serde_json::Value), String> {
    let (status, _, body) = split_response(buf)?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("status {status}: bad JSON body: {e}"))?;
    Ok((status, json))
}

/// Splits a raw HTTP response: (status, head, body bytes as sent by the worker).
pub fn split_response(buf: &[u8]) -> Result<(u16, String, Vec<u8>), String> {
    let (head, body) = split_head(buf).ok_or("incomplete response head")?;
    let head = String::from_utf8_lossy(head);
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let body = if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)
    } else {
        match header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            Some(n) => body[..n.min(body.len())].to_vec(),
            None => body.to_vec(),
        }
    };
    Ok((status, head.into_owned(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_draining_full_and_errors() {
        let body = r#"{"status":"ready","node_id":"w1","sessions_active":3,"max_sessions":9}"#;
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = parse_response(ok.as_bytes()).expect("ok");
        assert_eq!(r.sessions_active, 3);
        assert_eq!(r.max_sessions, Some(9));
        assert!(!r.draining && !r.full);
        let (a, b) = (r#"{"status":"draining","ses"#, r#"sions_active":1,"x":1}"#);
        let dr = format!(
            "HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let r = parse_response(dr.as_bytes()).expect("draining is alive");
        assert!(r.draining);
        assert_eq!(r.sessions_active, 1);
        let full =
            b"HTTP/1.1 503 X\r\n\r\n{\"status\":\"full\",\"sessions_active\":5,\"max_sessions\":5}";
        assert!(parse_response(full).expect("full is alive").full);
        assert!(parse_response(b"HTTP/1.1 500 X\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.1 503 X\r\n\r\n{\"status\":\"x\"}").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
