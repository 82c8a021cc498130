//! The edge's own answers: ONE catalogue ([`EdgeError`]) and ONE writer ([`write`]).
//!
//! Every answer the proxy writes itself (never pingora's default HTML body) is a variant
//! here, with its status, its stable `error` code, the `reason` label it adds to
//! `hotplex_proxy_rejections_total`, its extra headers and its JSON body
//! (`{"error": code, ...fields}`). A route's `error_pages` (see
//! [`crate::policy::error_pages`]) replace the body (not the status or the headers) for the
//! statuses they name. The same table, for operators, is `docs/errors.md`; a unit test
//! keeps the two tables and the catalogue in step.
//!
//! | status | error | reason | headers | when |
//! |---|---|---|---|---|
//! | 400 | `invalid_session_id` | `bad_request` | | the routing key has bytes outside `[A-Za-z0-9._~-]` or is over 128 bytes |
//! | 404 | `session_not_found` | `session_not_found` | | a signed session id that does not verify for the caller's tenant (another tenant's, forged, expired, rotated out): byte for byte the worker's answer for an unknown id |
//! | 410 | `session_worker_gone` | `worker_gone` | | a signed session id names a worker no longer in the config |
//! | 503 | `worker_unavailable` | `worker_unavailable` | `Retry-After` (the ejection left, at least 1 s) | the session's worker is down, ejected or refuses connections |
//! | 503 | `no_capacity` | `no_capacity` | `Retry-After: 2` | a new session and no worker has room (or none is up) |
//! | 404 | `not_found` | `undeclared_route` | | outside the declared public surface ([`crate::surface`]): worker internals, unknown paths and methods |
//! | 404 | `no_route` | `no_route` | | `routes:` configured and no route matches host, path and method |
//! | 503 | `no_healthy_upstream` | `no_healthy_upstream` | `Retry-After: 1` | an `http` pool has no upstream left (health down, ejected, all tried) |
//! | 400 | `malformed_head` | `malformed_head` | | a raw HTTP/1 head other parsers would frame differently ([`crate::hostile`]) |
//! | 414 | `uri_too_long` | `bad_request` | | request target over `proxy::MAX_URI_BYTES` (8 KiB), answered before routing |
//! | 431 | `headers_too_large` | `bad_request` | | header names + values over `proxy::MAX_HEADER_BYTES` (32 KiB) |
//! | 403 | `ip_denied` | `ip_denied` | | the route's `allow`/`deny` rules refuse the client IP ([`crate::policy::ip`]) |
//! | 401 | `unauthorized` | `auth` | `WWW-Authenticate` | auth on, no key, an unknown key, or a bearer JWT refused (`reason` `jwt_*`) |
//! | 403 | `forbidden` | `auth` | | the key or token may not use this route (`auth.keys[].routes`, the JWT routes claim) |
//! | 429 | `too_many_auth_failures` | `auth_rate_limit` | `Retry-After` | the client IP failed authentication `limits.auth_failures` times: refused before any key or signature work |
//! | 413 | `payload_too_large` | `too_large` | | `Content-Length` over `limits.max_body_bytes` (or the route's), or a buffered body over its cap ([`crate::body`]) |
//! | 408 | `body_timeout` | `body_timeout` | | a request body (buffered or streamed) did not arrive whole within `limits.body_read_timeout` |
//! | 400 | `bad_request` | `bad_request` | | the request body could not be read |
//! | 429 | `rate_limited` | `rate_limit` | `Retry-After`, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` | a token bucket (`per_ip`, `per_key`, `route`, `new_sessions`) is empty |
//! | 503 | `rate_limit_unavailable` | `rate_limit_store` | `Retry-After: 1` | the shared rate-limit store is unreachable and `fail_open` is off |
//! | 429 | `too_many_websockets` | `rate_limit` | `Retry-After: 1` | `limits.max_websockets_per_key` reached |
//! | 503 | `too_many_connections` | `too_many_connections` | `Retry-After: 1` | over `limits.max_connections(_per_ip)`, written raw before HTTP parsing, always with `Connection: close` (HTTP/1 only; counted in `hotplex_proxy_connections_refused_total`, not as a rejection) |
//! | 400 | `bad_request` | `bad_request` | | pingora refused the request (a downstream protocol error) |
//! | 413 | `payload_too_large` | `payload_too_large` | | a streamed body crossed `max_body_bytes` on the way |
//! | 502 | `bad_gateway` | `bad_gateway` | | the upstream broke the exchange |
//! | 504 | `upstream_timeout` | `upstream_timeout` | | the upstream did not answer in `timeouts.read` |
//! | 500 | `internal` | `internal` | | the proxy failed (a bug) |
//! | other | `error` | `error` | | any other status pingora ends a request with |
//! | 200 | - | - | | `GET /health/live` on a public listener: `{"status":"live"}`, not an error |
//! | 301, 302, 307, 308 | - | - | `Location` | a route's `redirect`: `{"redirect":"<location>"}`, not an error |
//!
//! Every answer also carries `Content-Type`, `Content-Length` and `X-Request-Id`;
//! `Connection: close` is added when the connection will not be reused (a malformed or
//! oversized head, a body error, every answer of `fail_to_proxy`) or a request body is
//! still unread.

use std::time::Duration;

use bytes::Bytes;
use hotplex_common::headers as h;
use serde_json::{json, Value};

use crate::limits::Decision;

mod write;

pub use write::{content, head, raw_http1, write};

/// Seconds in `Retry-After` of a `no_capacity` answer.
pub const NO_CAPACITY_RETRY_AFTER_SECS: u64 = 2;
/// Default seconds in `Retry-After` of a `worker_unavailable` answer.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;
/// Seconds in `Retry-After` of a `no_healthy_upstream` answer.
pub const NO_UPSTREAM_RETRY_AFTER_SECS: u64 = 1;
/// Seconds in `Retry-After` of a `rate_limit_unavailable` answer.
pub const STORE_RETRY_AFTER_SECS: u64 = 1;
/// Seconds in `Retry-After` of a `too_many_websockets` answer.
pub const WEBSOCKETS_RETRY_AFTER_SECS: u64 = 1;
/// Seconds in `Retry-After` of a `too_many_connections` answer.
pub const CONNECTIONS_RETRY_AFTER_SECS: u64 = 1;

/// `RateLimit-Limit` header.
pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
/// `RateLimit-Remaining` header.
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
/// `RateLimit-Reset` header.
pub const RATELIMIT_RESET: &str = "ratelimit-reset";
/// The three `RateLimit-*` names in [`ratelimit_values`]' order, parsed once (they go on
/// every proxied answer).
pub static RATELIMIT_NAMES: [http::HeaderName; 3] = [
    http::HeaderName::from_static(RATELIMIT_LIMIT),
    http::HeaderName::from_static(RATELIMIT_REMAINING),
    http::HeaderName::from_static(RATELIMIT_RESET),
];

/// `WWW-Authenticate` of a refused API key (or none).
const KEY_CHALLENGE: &str = "Bearer realm=\"hotplex\"";
/// `message` of a refused API key (or none).
const KEY_MESSAGE: &str = "a valid API key is required (X-API-Key, Authorization: Bearer, or WebSocket subprotocol hotplex-api-<key>)";
/// `message` of a refused JWT.
const JWT_MESSAGE: &str = "the bearer token (JWT) was refused";

/// An answer the edge writes itself (see the module docs for the table).
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeError {
    /// 400 `invalid_session_id`: `source` is the key source, `message` why.
    InvalidSessionId {
        source: &'static str,
        message: String,
    },
    /// 404 `session_not_found`, the worker's own answer for an unknown id.
    SessionNotFound { session: String },
    /// 410 `session_worker_gone`.
    SessionWorkerGone { session: String, worker: String },
    /// 503 `worker_unavailable` + `Retry-After`.
    WorkerUnavailable {
        session: Option<String>,
        worker: String,
        retry_after: u64,
    },
    /// 503 `no_capacity` + `Retry-After`.
    NoCapacity,
    /// 404 `not_found`: outside the declared surface.
    Undeclared,
    /// 404 `no_route`: no route of the table matches.
    NoRoute,
    /// 503 `no_healthy_upstream` of an `http` pool.
    NoHealthyUpstream { pool: String },
    /// 400 `malformed_head`.
    MalformedHead,
    /// 414 `uri_too_long`.
    UriTooLong,
    /// 431 `headers_too_large`.
    HeadersTooLarge,
    /// 403 `ip_denied`.
    IpDenied,
    /// 401 `unauthorized`; `reason` is the auth-failure reason (`missing_key`,
    /// `invalid_key`, `jwt_*`).
    Unauthorized { reason: &'static str },
    /// 403 `forbidden` for `route`.
    Forbidden { reason: &'static str, route: String },
    /// 429 `too_many_auth_failures` + `Retry-After`.
    TooManyAuthFailures { retry_after: u64 },
    /// 413 `payload_too_large` with the limit.
    PayloadTooLarge { max_body_bytes: u64 },
    /// 408 `body_timeout`.
    BodyTimeout { timeout: Duration },
    /// 400 `bad_request`: the body could not be read.
    BodyUnreadable,
    /// 429 `rate_limited`: the bucket `limit` refused (`RateLimit-*` + `Retry-After`).
    RateLimited {
        limit: &'static str,
        decision: Decision,
    },
    /// 503 `rate_limit_unavailable`: the shared store is down (fail closed).
    RateLimitUnavailable { limit: &'static str },
    /// 429 `too_many_websockets`.
    TooManyWebsockets { max: u32 },
    /// 503 `too_many_connections` (raw, before HTTP parsing: [`raw_http1`]).
    TooManyConnections { limit: &'static str, max: u32 },
    /// 400 `bad_request` (a downstream error in pingora).
    BadRequest,
    /// 413 `payload_too_large`: a streamed body crossed the limit.
    StreamedTooLarge,
    /// 502 `bad_gateway`.
    BadGateway,
    /// 504 `upstream_timeout`.
    UpstreamTimeout,
    /// 500 `internal`.
    Internal,
    /// Any other status: `error`.
    Status(u16),
    /// 200 `{"status":"live"}`: the proxy's own liveness on a public listener.
    Live,
    /// A route's redirect (301, 302, 307, 308) to `location`.
    Redirect { status: u16, location: String },
}

impl EdgeError {
    /// The answer of a pingora `HTTPStatus(code)` error.
    pub fn from_status(code: u16) -> EdgeError {
        match code {
            400 => EdgeError::BadRequest,
            413 => EdgeError::StreamedTooLarge,
            500 => EdgeError::Internal,
            502 => EdgeError::BadGateway,
            504 => EdgeError::UpstreamTimeout,
            other => EdgeError::Status(other),
        }
    }

    /// A redirect; 500 `internal` if `location` cannot be a header value.
    pub fn redirect(status: u16, location: String) -> EdgeError {
        if http::HeaderValue::from_str(&location).is_err() {
            return EdgeError::Internal;
        }
        EdgeError::Redirect { status, location }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        use EdgeError as E;
        match self {
            E::InvalidSessionId { .. } | E::MalformedHead | E::BodyUnreadable | E::BadRequest => {
                400
            }
            E::Unauthorized { .. } => 401,
            E::Forbidden { .. } | E::IpDenied => 403,
            E::SessionNotFound { .. } | E::Undeclared | E::NoRoute => 404,
            E::BodyTimeout { .. } => 408,
            E::SessionWorkerGone { .. } => 410,
            E::PayloadTooLarge { .. } | E::StreamedTooLarge => 413,
            E::UriTooLong => 414,
            E::TooManyAuthFailures { .. } | E::RateLimited { .. } | E::TooManyWebsockets { .. } => {
                429
            }
            E::HeadersTooLarge => 431,
            E::Internal => 500,
            E::BadGateway => 502,
            E::WorkerUnavailable { .. }
            | E::NoCapacity
            | E::NoHealthyUpstream { .. }
            | E::RateLimitUnavailable { .. }
            | E::TooManyConnections { .. } => 503,
            E::UpstreamTimeout => 504,
            E::Status(s) => *s,
            E::Live => 200,
            E::Redirect { status, .. } => *status,
        }
    }

    /// The stable `error` code of the body (`None`: not an error answer).
    pub fn code(&self) -> Option<&'static str> {
        use EdgeError as E;
        Some(match self {
            E::InvalidSessionId { .. } => "invalid_session_id",
            E::SessionNotFound { .. } => "session_not_found",
            E::SessionWorkerGone { .. } => "session_worker_gone",
            E::WorkerUnavailable { .. } => "worker_unavailable",
            E::NoCapacity => "no_capacity",
            E::Undeclared => "not_found",
            E::NoRoute => "no_route",
            E::NoHealthyUpstream { .. } => "no_healthy_upstream",
            E::MalformedHead => "malformed_head",
            E::UriTooLong => "uri_too_long",
            E::HeadersTooLarge => "headers_too_large",
            E::IpDenied => "ip_denied",
            E::Unauthorized { .. } => "unauthorized",
            E::Forbidden { .. } => "forbidden",
            E::TooManyAuthFailures { .. } => "too_many_auth_failures",
            E::PayloadTooLarge { .. } | E::StreamedTooLarge => "payload_too_large",
            E::BodyTimeout { .. } => "body_timeout",
            E::BodyUnreadable | E::BadRequest => "bad_request",
            E::RateLimited { .. } => "rate_limited",
            E::RateLimitUnavailable { .. } => "rate_limit_unavailable",
            E::TooManyWebsockets { .. } => "too_many_websockets",
            E::TooManyConnections { .. } => "too_many_connections",
            E::BadGateway => "bad_gateway",
            E::UpstreamTimeout => "upstream_timeout",
            E::Internal => "internal",
            E::Status(_) => "error",
            E::Live | E::Redirect { .. } => return None,
        })
    }

    /// The `reason` label of `hotplex_proxy_rejections_total` (`None`: not counted).
    pub fn reason(&self) -> Option<&'static str> {
        use EdgeError as E;
        Some(match self {
            E::InvalidSessionId { .. } | E::UriTooLong | E::HeadersTooLarge => "bad_request",
            E::BodyUnreadable | E::BadRequest => "bad_request",
            E::SessionWorkerGone { .. } => "worker_gone",
            E::Undeclared => "undeclared_route",
            E::Unauthorized { .. } | E::Forbidden { .. } => "auth",
            E::TooManyAuthFailures { .. } => "auth_rate_limit",
            E::PayloadTooLarge { .. } => "too_large",
            E::RateLimited { .. } | E::TooManyWebsockets { .. } => "rate_limit",
            E::RateLimitUnavailable { .. } => "rate_limit_store",
            E::Live | E::Redirect { .. } => return None,
            // The others: the reason is the code.
            other => return other.code(),
        })
    }

    /// The extra response headers (besides `Content-Type`, `Content-Length`,
    /// `X-Request-Id`, and `Connection: close` when closing).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        use EdgeError as E;
        let retry = |secs: u64| vec![(h::RETRY_AFTER, secs.to_string())];
        match self {
            E::WorkerUnavailable { retry_after, .. } => retry(*retry_after),
            E::NoCapacity => retry(NO_CAPACITY_RETRY_AFTER_SECS),
            E::NoHealthyUpstream { .. } => retry(NO_UPSTREAM_RETRY_AFTER_SECS),
            E::TooManyAuthFailures { retry_after } => retry(*retry_after),
            E::RateLimitUnavailable { .. } => retry(STORE_RETRY_AFTER_SECS),
            E::TooManyWebsockets { .. } => retry(WEBSOCKETS_RETRY_AFTER_SECS),
            E::TooManyConnections { .. } => retry(CONNECTIONS_RETRY_AFTER_SECS),
            E::RateLimited { decision: d, .. } => {
                let mut v: Vec<(&'static str, String)> = ratelimit_values(d)
                    .iter()
                    .map(|&(n, x)| (n, x.to_string()))
                    .collect();
                v.push((h::RETRY_AFTER, d.retry_after_secs.to_string()));
                v
            }
            E::Unauthorized { reason } if reason.starts_with("jwt_") => vec![(
                "www-authenticate",
                format!("Bearer realm=\"hotplex\", error=\"invalid_token\", error_description=\"{reason}\""),
            )],
            E::Unauthorized { .. } => vec![("www-authenticate", KEY_CHALLENGE.to_string())],
            E::Redirect { location, .. } => vec![("location", location.clone())],
            _ => Vec::new(),
        }
    }

    /// The JSON body (`{"error": code, ...fields}`).
    pub fn body(&self) -> Value {
        use EdgeError as E;
        match self {
            E::InvalidSessionId { source, message } => {
                json!({"error": "invalid_session_id", "source": source, "message": message})
            }
            // Byte for byte the worker's answer for an unknown id (no oracle).
            E::SessionNotFound { session } => {
                json!({"error": "session_not_found", "message": format!("no session {session} on this worker"), "session_id": session})
            }
            E::SessionWorkerGone { session, worker } => {
                json!({"error": "session_worker_gone", "session_id": session, "worker": worker})
            }
            E::WorkerUnavailable {
                session, worker, ..
            } => json!({"error": "worker_unavailable", "session_id": session, "worker": worker}),
            E::NoCapacity => {
                json!({"error": "no_capacity", "message": "no worker has room for a new session"})
            }
            E::Undeclared => json!({"error": "not_found", "message": "no such route"}),
            E::NoRoute => {
                json!({"error": "no_route", "message": "no route matches this host, path and method"})
            }
            E::NoHealthyUpstream { pool } => json!({"error": "no_healthy_upstream", "pool": pool}),
            E::IpDenied => {
                json!({"error": "ip_denied", "message": "this route is not available from your address"})
            }
            E::Unauthorized { reason } => {
                let message = if reason.starts_with("jwt_") {
                    JWT_MESSAGE
                } else {
                    KEY_MESSAGE
                };
                json!({"error": "unauthorized", "reason": reason, "message": message})
            }
            E::Forbidden { reason, route } => {
                json!({"error": "forbidden", "reason": reason, "route": route})
            }
            E::TooManyAuthFailures { retry_after } => {
                json!({"error": "too_many_auth_failures", "retry_after": retry_after})
            }
            E::PayloadTooLarge { max_body_bytes } => {
                json!({"error": "payload_too_large", "max_body_bytes": max_body_bytes})
            }
            E::BodyTimeout { timeout } => {
                json!({"error": "body_timeout", "message": format!("the request body did not arrive within {timeout:?}")})
            }
            E::BodyUnreadable => {
                json!({"error": "bad_request", "message": "the request body could not be read"})
            }
            E::RateLimited { limit, decision } => {
                json!({"error": "rate_limited", "limit": limit, "retry_after": decision.retry_after_secs})
            }
            E::RateLimitUnavailable { limit } => {
                json!({"error": "rate_limit_unavailable", "limit": limit})
            }
            E::TooManyWebsockets { max } => json!({"error": "too_many_websockets", "max": max}),
            E::TooManyConnections { limit, max } => {
                json!({"error": "too_many_connections", "limit": limit, "max": max})
            }
            E::Live => json!({"status": "live"}),
            E::Redirect { location, .. } => json!({ "redirect": location }),
            // The rest: the code alone.
            other => json!({ "error": other.code().unwrap_or("error") }),
        }
    }

    /// The JSON body, serialized.
    pub fn body_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.body()).unwrap_or_default())
    }
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` of a decision.
pub fn ratelimit_values(d: &Decision) -> [(&'static str, u64); 3] {
    [
        (RATELIMIT_LIMIT, u64::from(d.limit)),
        (RATELIMIT_REMAINING, u64::from(d.remaining)),
        (RATELIMIT_RESET, d.reset_secs),
    ]
}

#[cfg(test)]
mod tests;
