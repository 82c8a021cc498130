//! The one writer of the edge's own answers ([`write`]), and the raw HTTP/1 form of an
//! answer written before any HTTP parsing ([`raw_http1`], the connection guard's).

use bytes::Bytes;
use hotplex_common::headers as h;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::EdgeError;
use crate::policy::error_pages::ErrorPages;

/// `Content-Type` of the catalogue's JSON bodies.
pub const JSON: &str = "application/json";

/// The response head of `e` for a body of `len` bytes of `content_type`: the status,
/// `Content-Type`, `Content-Length`, `X-Request-Id`, then the answer's own headers.
/// `None` when the status is not a valid HTTP status.
pub fn head(
    e: &EdgeError,
    content_type: HeaderValue,
    len: usize,
    request_id: &str,
) -> Option<ResponseHeader> {
    let extra = e.headers();
    let mut resp = ResponseHeader::build(e.status(), Some(3 + extra.len())).ok()?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)
        .ok()?;
    resp.insert_header(http::header::CONTENT_LENGTH, len.to_string())
        .ok()?;
    // A request id is checked (visible ASCII) or minted: cannot fail.
    let _ = resp.insert_header(h::X_REQUEST_ID, request_id);
    for (n, v) in extra {
        if let Err(err) = resp.insert_header(n, v) {
            tracing::debug!(error = %err, header = n, "answer header left out");
        }
    }
    Some(resp)
}

/// Writes `e`: the route's page for its status from `pages` if there is one (same status
/// and headers, the page's body and `Content-Type`), else the JSON body. `close`: the
/// connection will not be reused (say `Connection: close` rather than let a client reuse
/// it); a request body still unread closes it too. Nothing is written if the response
/// head already was.
pub async fn write(
    session: &mut Session,
    e: &EdgeError,
    request_id: &str,
    pages: Option<&ErrorPages>,
    close: bool,
) {
    if session.response_written().is_some() {
        return;
    }
    let (content_type, body) = content(e, pages);
    let Some(resp) = head(e, content_type, body.len(), request_id) else {
        return;
    };
    if close || !session.is_body_empty() {
        session.set_keepalive(None);
    }
    if let Err(err) = session.write_response_header(Box::new(resp), false).await {
        tracing::debug!(error = %err, status = e.status(), "failed to write answer head");
        return;
    }
    if let Err(err) = session.write_response_body(Some(body), true).await {
        tracing::debug!(error = %err, status = e.status(), "failed to write answer body");
    }
}

/// The body of `e` and its `Content-Type`: the route's page for its status, else JSON.
pub fn content(e: &EdgeError, pages: Option<&ErrorPages>) -> (HeaderValue, Bytes) {
    match pages.and_then(|p| p.get(e.status())) {
        Some(page) => (page.content_type.clone(), page.body.clone()),
        None => (HeaderValue::from_static(JSON), e.body_bytes()),
    }
}

/// The whole HTTP/1.1 answer as bytes (head, `Connection: close`, JSON body), for a
/// connection refused before pingora parses anything.
pub fn raw_http1(e: &EdgeError) -> Vec<u8> {
    let body = e.body_bytes();
    let status = e.status();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {JSON}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in e.headers() {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(&v);
        head.push_str("\r\n");
    }
    head.push_str("connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}
