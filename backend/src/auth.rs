//! API-key authentication: `X-API-Key: <key>` or, for WebSocket clients that cannot set
//! headers, `Sec-WebSocket-Protocol: hotplex, hotplex-api-<key>`. No keys configured
//! means the worker is open.

use axum::http::{header, HeaderMap, StatusCode};
use hotplex_common::headers::{api_key_from_ws_protocols, X_API_KEY};

use crate::error::ApiError;

/// Paths served without a key (probes). `/metrics` is part of the admin surface (see
/// [`crate::admin`]).
pub fn is_public_path(path: &str) -> bool {
    matches!(path, "/health/live" | "/health/ready")
}

/// The key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get(X_API_KEY).and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(api_key_from_ws_protocols)
}

/// Checks a request against the configured keys.
pub fn check(keys: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    match presented_key(headers) {
        Some(k)
            if keys
                .iter()
                .any(|good| constant_time_eq(good.as_bytes(), k.as_bytes())) =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key (X-API-Key header or Sec-WebSocket-Protocol hotplex-api-<key>)",
        )),
    }
}

/// Compares without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn keys() -> Vec<String> {
        vec!["k1".into(), "k2".into()]
    }

    #[test]
    fn open_without_keys() {
        assert!(check(&[], &HeaderMap::new()).is_ok());
    }

    #[test]
    fn header_and_subprotocol_keys() {
        let mut h = HeaderMap::new();
        assert!(check(&keys(), &h).is_err());
        h.insert(X_API_KEY, HeaderValue::from_static("k2"));
        assert!(check(&keys(), &h).is_ok());
        h.insert(X_API_KEY, HeaderValue::from_static("nope"));
        assert_eq!(
            check(&keys(), &h).map_err(|e| e.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("hotplex, hotplex-api-k1"),
        );
        assert!(check(&keys(), &h).is_ok());
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
