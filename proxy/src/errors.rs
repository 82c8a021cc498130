//! The JSON error answers the proxy writes itself (never pingora's default HTML body).
//!
//! | status | `error` | when |
//! |---|---|---|
//! | 404 | `not_found` | outside the declared public surface ([`crate::surface`]): worker internals, unknown paths and methods |
//! | 404 | `session_not_found` | a signed session id that does not verify for the caller's tenant (another tenant's, forged, expired, rotated out): the worker's own answer for an unknown id |
//! | 400 | `invalid_session_id` | the routing key has bytes outside `[A-Za-z0-9._~-]` or is over 128 bytes |
//! | 414 | `uri_too_long` | request target over `proxy::MAX_URI_BYTES` (8 KiB), answered before routing |
//! | 431 | `headers_too_large` | header names + values over `proxy::MAX_HEADER_BYTES` (32 KiB) |
//! | 410 | `session_worker_gone` | a signed session id names a worker no longer in the config |
//! | 503 | `worker_unavailable` (+ `Retry-After`) | the session's worker is down, ejected or refuses connections |
//! | 503 | `no_capacity` (+ `Retry-After`) | a new session and no worker has room (or none is up) |
//! | 408 | `body_timeout` | a request body did not arrive whole within `limits.body_read_timeout` ([`crate::body`]) |
//! | 413 | `payload_too_large` | a body over `limits.max_body_bytes`, or a buffered body (no `Content-Length`, or `POST /sessions`) over 64 KiB |
//! | 502 | `bad_gateway` | the worker broke the exchange |
//! | 504 | `upstream_timeout` | the worker did not answer in `timeouts.read` |

use serde_json::{json, Value};

use crate::routing::RouteError;

/// Seconds in `Retry-After` of a `no_capacity` answer.
pub const NO_CAPACITY_RETRY_AFTER_SECS: u64 = 2;
/// Default seconds in `Retry-After` of a `worker_unavailable` answer.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// A proxy-generated error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorAnswer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
    /// `reason` label of `hotplex_proxy_rejections_total`.
    pub reason: &'static str,
}

/// The answer for a routing failure.
pub fn route_error(e: &RouteError) -> ErrorAnswer {
    match e {
        RouteError::Invalid { source, error } => ErrorAnswer {
            status: 400,
            body: json!({"error": "invalid_session_id", "source": source.as_str(), "message": error.to_string()}),
            retry_after: None,
            reason: "bad_request",
        },
        RouteError::Gone {
            session, worker, ..
        } => ErrorAnswer {
            status: 410,
            body: json!({"error": "session_worker_gone", "session_id": session, "worker": worker}),
            retry_after: None,
            reason: "worker_gone",
        },
        RouteError::Unavailable {
            session, worker, ..
        } => worker_unavailable(session.as_deref(), worker),
        RouteError::NotFound { session, .. } => ErrorAnswer {
            status: 404,
            // Byte for byte the worker's answer for an unknown id (no oracle).
            body: json!({"error": "session_not_found", "message": format!("no session {session} on this worker"), "session_id": session}),
            retry_after: None,
            reason: "session_not_found",
        },
        RouteError::NoCapacity => ErrorAnswer {
            status: 503,
            body: json!({"error": "no_capacity", "message": "no worker has room for a new session"}),
            retry_after: Some(NO_CAPACITY_RETRY_AFTER_SECS),
            reason: "no_capacity",
        },
    }
}

/// 503 `worker_unavailable`.
pub fn worker_unavailable(session: Option<&str>, worker: &str) -> ErrorAnswer {
    ErrorAnswer {
        status: 503,
        body: json!({"error": "worker_unavailable", "session_id": session, "worker": worker}),
        retry_after: Some(UNAVAILABLE_RETRY_AFTER_SECS),
        reason: "worker_unavailable",
    }
}

/// 404 for a request outside the declared public surface (the worker's `not_found`).
pub fn undeclared() -> ErrorAnswer {
    ErrorAnswer {
        status: 404,
        body: json!({"error": "not_found", "message": "no such route"}),
        retry_after: None,
        reason: "undeclared_route",
    }
}

/// The proxy's own `GET /health/live` on a public listener (not a rejection).
pub fn proxy_live() -> ErrorAnswer {
    ErrorAnswer {
        status: 200,
        body: json!({"status": "live"}),
        retry_after: None,
        reason: "",
    }
}

/// Any other status.
pub fn generic(status: u16) -> ErrorAnswer {
    let error = match status {
        400 => "bad_request",
        413 => "payload_too_large",
        502 => "bad_gateway",
        504 => "upstream_timeout",
        500 => "internal",
        _ => "error",
    };
    ErrorAnswer {
        status,
        body: json!({"error": error}),
        retry_after: None,
        reason: error,
    }
}
