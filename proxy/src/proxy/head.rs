//! Checks of a request head before routing: its size, its request id, and the kind of an
//! upstream error (metrics and traces).

use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use crate::errors::EdgeError;

/// Largest request target forwarded (bytes); longer: 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest total of header names + values forwarded (bytes); larger: 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// 414 / 431 for a request head too large to forward.
pub(super) fn oversized_head(req: &RequestHeader) -> Option<EdgeError> {
    if req.raw_path().len() > MAX_URI_BYTES {
        Some(EdgeError::UriTooLong)
    } else if req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum::<usize>()
        > MAX_HEADER_BYTES
    {
        Some(EdgeError::HeadersTooLarge)
    } else {
        None
    }
}

/// The request's id: the client's `X-Request-Id` when valid, else a fresh v4 UUID.
pub(super) fn request_id(req: &RequestHeader) -> String {
    req.headers
        .get(&hotplex_common::headers::name::X_REQUEST_ID)
        .map(|v| v.as_bytes())
        .filter(|v| valid_request_id(v))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
        // A v4 UUID from the thread-local RNG (`Uuid::new_v4` makes a getrandom syscall
        // per request).
        .unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            id.hyphenated().encode_lower(&mut buf).to_owned()
        })
}

pub(super) fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

pub(super) fn error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => "timeout",
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::ConnectProxyFailure
        | ErrorType::SocketError => "connect",
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => "io",
        _ => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(valid_request_id(b"abc-123"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(&[b'a'; 129]));
    }
}
