//! Request bodies at the edge: read completely before anything reaches a worker.
//!
//! A body that fits pingora's replay buffer ([`BUFFERED_BODY_MAX`], 64 KiB) is read whole in
//! `request_filter`, before routing, within `limits.body_read_timeout`: a slow body never
//! creates a session, never reaches or holds a worker connection (like nginx's request
//! buffering). pingora replays the buffered bytes to the worker. This covers every body
//! without a `Content-Length` (HTTP/1.1 chunked, HTTP/2 without the header): one larger
//! than the buffer gets 413 as soon as it crosses it, and so does one crossing
//! `limits.max_body_bytes`.
//!
//! `limits.max_body_bytes` is at most the buffer unless the operator opts in with
//! `limits.allow_streamed_bodies: true` (checked when the config loads). Only then is a
//! body announced larger than the buffer (`Content-Length` over 64 KiB, within
//! `max_body_bytes`) streamed (pingora has no larger replay buffer), except on
//! `POST /sessions`, which never needs one: 413. A streamed body must arrive whole within
//! `limits.body_read_timeout` (each read, and in total: 408 after it), and its bytes are
//! counted ([`Counted`]), so no framing trick carries more than `max_body_bytes`.
//! WebSocket upgrades have no request body; SSE responses are never buffered.

use std::time::Duration;

use crate::errors::EdgeError;
use pingora::proxy::Session;

/// Largest body read whole at the edge (defined in config, which validates limits against it).
pub use crate::config::BUFFERED_BODY_MAX;

/// The announced `Content-Length`, if any.
pub fn announced(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads the request body whole when it can be replayed (see the module docs).
/// `Ok(true)`: buffered (or none); `Ok(false)`: left to stream (announced over the buffer).
pub async fn buffer(
    session: &mut Session,
    create: bool,
    max_body: u64,
    timeout: Duration,
) -> Result<bool, EdgeError> {
    if session.is_body_empty() {
        return Ok(true);
    }
    let cap = match max_body {
        0 => BUFFERED_BODY_MAX,
        n => n.min(BUFFERED_BODY_MAX),
    };
    if announced(session).is_some_and(|n| n > BUFFERED_BODY_MAX) {
        return if create {
            Err(EdgeError::PayloadTooLarge {
                max_body_bytes: cap,
            })
        } else {
            Ok(false)
        };
    }
    session.enable_retry_buffering();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut total: u64 = 0;
    loop {
        let chunk = tokio::time::timeout_at(deadline, session.read_request_body()).await;
        match chunk {
            Err(_) => return Err(EdgeError::BodyTimeout { timeout }),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "request body read failed");
                return Err(EdgeError::BodyUnreadable);
            }
            Ok(Ok(None)) => return Ok(true),
            Ok(Ok(Some(b))) => {
                total += b.len() as u64;
                if total > cap {
                    return Err(EdgeError::PayloadTooLarge {
                        max_body_bytes: cap,
                    });
                }
            }
        }
    }
}

/// Bytes of a streamed body, checked against `max_body_bytes` on every chunk, and the
/// time by which it must be complete.
#[derive(Debug, Default)]
pub struct Counted {
    bytes: u64,
    deadline: Option<std::time::Instant>,
    /// `limits.body_read_timeout` of a streamed body (for its 408 answer).
    timeout: Option<Duration>,
}

impl Counted {
    /// The body is streamed from now on: it must be complete within `timeout`.
    pub fn start_streaming(&mut self, timeout: Duration) {
        self.deadline = Some(std::time::Instant::now() + timeout);
        self.timeout = Some(timeout);
    }

    /// The answer to the 408 [`Counted::add`] ends a late streamed body with.
    pub fn late_answer(&self) -> Option<crate::errors::EdgeError> {
        (self.timeout).map(|timeout| crate::errors::EdgeError::BodyTimeout { timeout })
    }

    /// Whether the body is streamed (not read whole before routing).
    pub fn streaming(&self) -> bool {
        self.deadline.is_some()
    }

    /// Adds a chunk; `Err` once the total crosses `max_body` (0: no limit) or a streamed
    /// body is still arriving after its deadline.
    pub fn add(&mut self, chunk: usize, max_body: u64) -> pingora::Result<()> {
        self.bytes += chunk as u64;
        if max_body > 0 && self.bytes > max_body {
            return pingora::Error::e_explain(
                pingora::ErrorType::HTTPStatus(413),
                "request body over limits.max_body_bytes",
            );
        }
        if self.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return pingora::Error::e_explain(
                pingora::ErrorType::HTTPStatus(408),
                "streamed request body not complete within limits.body_read_timeout",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_bodies_are_counted() {
        let mut c = Counted::default();
        assert!(c.add(600, 1000).is_ok());
        assert!(c.add(400, 1000).is_ok());
        let e = c.add(1, 1000).expect_err("over");
        assert_eq!(e.etype(), &pingora::ErrorType::HTTPStatus(413));
        let mut c = Counted::default();
        assert!(c.add(usize::MAX / 2, 0).is_ok(), "0: no limit");
    }

    #[test]
    fn a_streamed_body_must_be_complete_by_its_deadline() {
        let mut c = Counted::default();
        assert!(!c.streaming());
        c.start_streaming(Duration::ZERO);
        assert!(c.streaming());
        std::thread::sleep(Duration::from_millis(2));
        let e = c.add(1, 1000).expect_err("late");
        assert_eq!(e.etype(), &pingora::ErrorType::HTTPStatus(408));
        let mut c = Counted::default();
        c.start_streaming(Duration::from_secs(60));
        assert!(c.add(10, 1000).is_ok(), "in time");
    }
}
