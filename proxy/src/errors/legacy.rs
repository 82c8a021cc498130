//! The answers before the catalogue (migrated call site by call site).

use serde_json::{json, Value};

use crate::routing::RouteError;

use super::{NO_CAPACITY_RETRY_AFTER_SECS, UNAVAILABLE_RETRY_AFTER_SECS};

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
