//! JSON error answers: `{"error":"<code>","message":"..."}` (plus context fields).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hotplex_common::headers::RETRY_AFTER;
use serde_json::{Map, Value};

use crate::pool::PoolError;
use crate::quota::{QuotaCode, QuotaRefusal};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn session_not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {id} on this worker"),
        )
        .with("session_id", id)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Maps a pool error; `retry_after` is used for 503s.
    pub fn from_pool(e: PoolError, retry_after: u64) -> Self {
        let msg = e.to_string();
        match e {
            PoolError::Full(max) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pool_full", msg)
                    .with("max_sessions", max)
                    .retry(retry_after)
            }
            PoolError::Draining => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", msg).retry(retry_after)
            }
            PoolError::Exists(id) => {
                ApiError::new(StatusCode::CONFLICT, "session_exists", msg).with("session_id", id)
            }
            PoolError::StartFailed(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "agent_start_failed", msg)
            }
            PoolError::Quota(r) => ApiError::from_quota(&r),
        }
    }

    /// A quota refusal: 429 (503 when the store is down and `on_error: closed`) with
    /// `Retry-After` and `retry_after` in the body.
    pub fn from_quota(r: &QuotaRefusal) -> Self {
        let status = match r.code {
            QuotaCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        };
        let mut e = ApiError::new(status, r.code.as_str(), r.message())
            .with("retry_after", r.retry_after_secs)
            .retry(r.retry_after_secs);
        if r.limit > 0 {
            e = e.with("limit", r.limit);
        }
        e
    }

    pub fn retry(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::from(self.code));
        m.insert("message".into(), Value::from(self.message.as_str()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_full_is_503_with_retry_after() {
        let r = ApiError::from_pool(PoolError::Full(3), 7).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
    }

    #[test]
    fn quota_refusal_is_429_with_retry_after_and_code() {
        let r = QuotaRefusal {
            code: QuotaCode::TurnRate,
            retry_after_secs: 2,
            limit: 60,
        };
        let e = ApiError::from_quota(&r);
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["error"], "tenant_turn_rate");
        assert_eq!(e.body()["retry_after"], 2);
        let resp = e.into_response();
        assert_eq!(
            resp.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn body_has_code_message_and_context() {
        let e = ApiError::session_not_found("abc");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let b = e.body();
        assert_eq!(b["error"], "session_not_found");
        assert_eq!(b["session_id"], "abc");
        assert!(b["message"].as_str().is_some_and(|m| m.contains("abc")));
    }
}
