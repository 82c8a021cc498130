use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::limits::Decision;

/// Position of a variant: a new variant does not compile until it has a sample below.
fn variant_index(e: &EdgeError) -> usize {
    use EdgeError as E;
    match e {
        E::InvalidSessionId { .. } => 0,
        E::SessionNotFound { .. } => 1,
        E::SessionWorkerGone { .. } => 2,
        E::WorkerUnavailable { .. } => 3,
        E::NoCapacity => 4,
        E::Undeclared => 5,
        E::NoRoute => 6,
        E::NoHealthyUpstream { .. } => 7,
        E::MalformedHead => 8,
        E::UriTooLong => 9,
        E::HeadersTooLarge => 10,
        E::IpDenied => 11,
        E::Unauthorized { .. } => 12,
        E::Forbidden { .. } => 13,
        E::TooManyAuthFailures { .. } => 14,
        E::PayloadTooLarge { .. } => 15,
        E::BodyTimeout { .. } => 16,
        E::BodyUnreadable => 17,
        E::RateLimited { .. } => 18,
        E::RateLimitUnavailable { .. } => 19,
        E::TooManyWebsockets { .. } => 20,
        E::TooManyConnections { .. } => 21,
        E::BadRequest => 22,
        E::StreamedTooLarge => 23,
        E::BadGateway => 24,
        E::UpstreamTimeout => 25,
        E::Internal => 26,
        E::Status(_) => 27,
        E::Live => 28,
        E::Redirect { .. } => 29,
    }
}
const VARIANTS: usize = 30;

fn refused() -> Decision {
    Decision {
        allowed: false,
        limit: 10,
        remaining: 0,
        reset_secs: 2,
        retry_after_secs: 1,
    }
}

/// One sample per variant (two for `unauthorized`: API key and JWT) with its status,
/// code, reason, header names and exact body bytes.
#[allow(clippy::type_complexity)]
fn catalogue() -> Vec<(
    EdgeError,
    u16,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
    &'static str,
)> {
    use EdgeError as E;
    vec![
        (
            E::InvalidSessionId {
                source: "path",
                message: "session id is empty".into(),
            },
            400,
            Some("invalid_session_id"),
            Some("bad_request"),
            &[],
            r#"{"error":"invalid_session_id","message":"session id is empty","source":"path"}"#,
        ),
        (
            E::SessionNotFound {
                session: "w1.abc".into(),
            },
            404,
            Some("session_not_found"),
            Some("session_not_found"),
            &[],
            // The worker's `ApiError::session_not_found` (backend/src/error.rs), byte for byte.
            r#"{"error":"session_not_found","message":"no session w1.abc on this worker","session_id":"w1.abc"}"#,
        ),
        (
            E::SessionWorkerGone {
                session: "w9.x".into(),
                worker: "w9".into(),
            },
            410,
            Some("session_worker_gone"),
            Some("worker_gone"),
            &[],
            r#"{"error":"session_worker_gone","session_id":"w9.x","worker":"w9"}"#,
        ),
        (
            E::WorkerUnavailable {
                session: None,
                worker: "w1".into(),
                retry_after: 3,
            },
            503,
            Some("worker_unavailable"),
            Some("worker_unavailable"),
            &["retry-after"],
            r#"{"error":"worker_unavailable","session_id":null,"worker":"w1"}"#,
        ),
        (
            E::NoCapacity,
            503,
            Some("no_capacity"),
            Some("no_capacity"),
            &["retry-after"],
            r#"{"error":"no_capacity","message":"no worker has room for a new session"}"#,
        ),
        (
            E::Undeclared,
            404,
            Some("not_found"),
            Some("undeclared_route"),
            &[],
            r#"{"error":"not_found","message":"no such route"}"#,
        ),
        (
            E::NoRoute,
            404,
            Some("no_route"),
            Some("no_route"),
            &[],
            r#"{"error":"no_route","message":"no route matches this host, path and method"}"#,
        ),
        (
            E::NoHealthyUpstream { pool: "ui".into() },
            503,
            Some("no_healthy_upstream"),
            Some("no_healthy_upstream"),
            &["retry-after"],
            r#"{"error":"no_healthy_upstream","pool":"ui"}"#,
        ),
        (
            E::MalformedHead,
            400,
            Some("malformed_head"),
            Some("malformed_head"),
            &[],
            r#"{"error":"malformed_head"}"#,
        ),
        (
            E::UriTooLong,
            414,
            Some("uri_too_long"),
            Some("bad_request"),
            &[],
            r#"{"error":"uri_too_long"}"#,
        ),
        (
            E::HeadersTooLarge,
            431,
            Some("headers_too_large"),
            Some("bad_request"),
            &[],
            r#"{"error":"headers_too_large"}"#,
        ),
        (
            E::IpDenied,
            403,
            Some("ip_denied"),
            Some("ip_denied"),
            &[],
            r#"{"error":"ip_denied","message":"this route is not available from your address"}"#,
        ),
        (
            E::Unauthorized {
                reason: "missing_key",
            },
            401,
            Some("unauthorized"),
            Some("auth"),
            &["www-authenticate"],
            r#"{"error":"unauthorized","message":"a valid API key is required (X-API-Key, Authorization: Bearer, or WebSocket subprotocol hotplex-api-<key>)","reason":"missing_key"}"#,
        ),
        (
            E::Unauthorized {
                reason: "jwt_expired",
            },
            401,
            Some("unauthorized"),
            Some("auth"),
            &["www-authenticate"],
            r#"{"error":"unauthorized","message":"the bearer token (JWT) was refused","reason":"jwt_expired"}"#,
        ),
        (
            E::Forbidden {
                reason: "forbidden_route",
                route: "ui".into(),
            },
            403,
            Some("forbidden"),
            Some("auth"),
            &[],
            r#"{"error":"forbidden","reason":"forbidden_route","route":"ui"}"#,
        ),
        (
            E::TooManyAuthFailures { retry_after: 30 },
            429,
            Some("too_many_auth_failures"),
            Some("auth_rate_limit"),
            &["retry-after"],
            r#"{"error":"too_many_auth_failures","retry_after":30}"#,
        ),
        (
            E::PayloadTooLarge {
                max_body_bytes: 1024,
            },
            413,
            Some("payload_too_large"),
            Some("too_large"),
            &[],
            r#"{"error":"payload_too_large","max_body_bytes":1024}"#,
        ),
        (
            E::BodyTimeout {
                timeout: Duration::from_secs(2),
            },
            408,
            Some("body_timeout"),
            Some("body_timeout"),
            &[],
            r#"{"error":"body_timeout","message":"the request body did not arrive within 2s"}"#,
        ),
        (
            E::BodyUnreadable,
            400,
            Some("bad_request"),
            Some("bad_request"),
            &[],
            r#"{"error":"bad_request","message":"the request body could not be read"}"#,
        ),
        (
            E::RateLimited {
                limit: "per_key",
                decision: refused(),
            },
            429,
            Some("rate_limited"),
            Some("rate_limit"),
            &[
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "retry-after",
            ],
            r#"{"error":"rate_limited","limit":"per_key","retry_after":1}"#,
        ),
        (
            E::RateLimitUnavailable { limit: "per_ip" },
            503,
            Some("rate_limit_unavailable"),
            Some("rate_limit_store"),
            &["retry-after"],
            r#"{"error":"rate_limit_unavailable","limit":"per_ip"}"#,
        ),
        (
            E::TooManyWebsockets { max: 2 },
            429,
            Some("too_many_websockets"),
            Some("rate_limit"),
            &["retry-after"],
            r#"{"error":"too_many_websockets","max":2}"#,
        ),
        (
            E::TooManyConnections {
                limit: "max_connections_per_ip",
                max: 5,
            },
            503,
            Some("too_many_connections"),
            Some("too_many_connections"),
            &["retry-after"],
            r#"{"error":"too_many_connections","limit":"max_connections_per_ip","max":5}"#,
        ),
        (
            E::BadRequest,
            400,
            Some("bad_request"),
            Some("bad_request"),
            &[],
            r#"{"error":"bad_request"}"#,
        ),
        (
            E::StreamedTooLarge,
            413,
            Some("payload_too_large"),
            Some("payload_too_large"),
            &[],
            r#"{"error":"payload_too_large"}"#,
        ),
        (
            E::BadGateway,
            502,
            Some("bad_gateway"),
            Some("bad_gateway"),
            &[],
            r#"{"error":"bad_gateway"}"#,
        ),
        (
            E::UpstreamTimeout,
            504,
            Some("upstream_timeout"),
            Some("upstream_timeout"),
            &[],
            r#"{"error":"upstream_timeout"}"#,
        ),
        (
            E::Internal,
            500,
            Some("internal"),
            Some("internal"),
            &[],
            r#"{"error":"internal"}"#,
        ),
        (
            E::Status(408),
            408,
            Some("error"),
            Some("error"),
            &[],
            r#"{"error":"error"}"#,
        ),
        (E::Live, 200, None, None, &[], r#"{"status":"live"}"#),
        (
            E::Redirect {
                status: 308,
                location: "https://new.example/a?b=1".into(),
            },
            308,
            None,
            None,
            &["location"],
            r#"{"redirect":"https://new.example/a?b=1"}"#,
        ),
    ]
}

#[test]
fn every_variant_has_a_sample() {
    let seen: BTreeSet<usize> = catalogue().iter().map(|c| variant_index(&c.0)).collect();
    assert_eq!(seen, (0..VARIANTS).collect::<BTreeSet<_>>());
}

#[test]
fn status_code_reason_headers_and_body_per_variant() {
    for (e, status, code, reason, headers, body) in catalogue() {
        assert_eq!(e.status(), status, "{e:?}");
        assert_eq!(e.code(), code, "{e:?}");
        assert_eq!(e.reason(), reason, "{e:?}");
        let names: Vec<&str> = e.headers().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, headers, "{e:?}");
        assert_eq!(
            std::str::from_utf8(&e.body_bytes()).expect("utf-8"),
            body,
            "{e:?}"
        );
        if let Some(code) = code {
            assert_eq!(e.body()["error"], code, "{e:?}: the body names its code");
        }
    }
}

#[test]
fn header_values() {
    let get = |e: &EdgeError| e.headers();
    assert_eq!(
        get(&EdgeError::RateLimited {
            limit: "per_key",
            decision: refused()
        }),
        vec![
            (RATELIMIT_LIMIT, "10".to_string()),
            (RATELIMIT_REMAINING, "0".to_string()),
            (RATELIMIT_RESET, "2".to_string()),
            (h::RETRY_AFTER, "1".to_string()),
        ]
    );
    assert_eq!(
        get(&EdgeError::NoCapacity),
        vec![(h::RETRY_AFTER, NO_CAPACITY_RETRY_AFTER_SECS.to_string())]
    );
    assert_eq!(
        get(&EdgeError::WorkerUnavailable {
            session: Some("s".into()),
            worker: "w".into(),
            retry_after: 7
        }),
        vec![(h::RETRY_AFTER, "7".to_string())]
    );
    assert_eq!(
        get(&EdgeError::Unauthorized {
            reason: "invalid_key"
        }),
        vec![("www-authenticate", "Bearer realm=\"hotplex\"".to_string())]
    );
    assert_eq!(
        get(&EdgeError::Unauthorized {
            reason: "jwt_signature"
        }),
        vec![(
            "www-authenticate",
            "Bearer realm=\"hotplex\", error=\"invalid_token\", error_description=\"jwt_signature\""
                .to_string()
        )]
    );
}

#[test]
fn pingora_statuses_map_to_the_catalogue() {
    assert_eq!(EdgeError::from_status(400), EdgeError::BadRequest);
    assert_eq!(EdgeError::from_status(413), EdgeError::StreamedTooLarge);
    assert_eq!(EdgeError::from_status(500), EdgeError::Internal);
    assert_eq!(EdgeError::from_status(502), EdgeError::BadGateway);
    assert_eq!(EdgeError::from_status(504), EdgeError::UpstreamTimeout);
    assert_eq!(EdgeError::from_status(503), EdgeError::Status(503));
    assert_eq!(EdgeError::from_status(503).code(), Some("error"));
}

#[test]
fn a_location_that_cannot_be_a_header_is_an_internal_error() {
    assert_eq!(
        EdgeError::redirect(301, "https://a.example/\n".into()),
        EdgeError::Internal
    );
    assert_eq!(
        EdgeError::redirect(301, "https://a.example/x".into()).status(),
        301
    );
}

#[test]
fn the_head_carries_status_type_length_request_id_and_headers() {
    let e = EdgeError::TooManyAuthFailures { retry_after: 9 };
    let json = http::HeaderValue::from_static(write::JSON);
    let r = head(&e, json, 42, "rid-1").expect("head");
    assert_eq!(r.status.as_u16(), 429);
    let get = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(get("content-type").as_deref(), Some("application/json"));
    assert_eq!(get("content-length").as_deref(), Some("42"));
    assert_eq!(get("x-request-id").as_deref(), Some("rid-1"));
    assert_eq!(get("retry-after").as_deref(), Some("9"));
    // Not a status: no head (nothing written).
    let ct = http::HeaderValue::from_static(write::JSON);
    assert!(head(&EdgeError::Status(1000), ct, 0, "r").is_none());
}

#[test]
fn route_pages_replace_the_body_of_their_status_only() {
    use crate::config::file::routes::ErrorPageFile;
    use crate::config::route_options::error_pages as validate;
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        429,
        ErrorPageFile {
            content_type: None,
            file: None,
            body: Some("<h1>slow down</h1>".into()),
        },
    );
    let pages = validate("t.yaml", "routes[0].error_pages", &files).expect("pages");
    let limited = EdgeError::TooManyWebsockets { max: 1 };
    let (ct, body) = content(&limited, Some(&pages));
    assert_eq!(ct, "text/html; charset=utf-8");
    assert_eq!(&body[..], b"<h1>slow down</h1>");
    let (ct, body) = content(&EdgeError::IpDenied, Some(&pages));
    assert_eq!(ct, "application/json");
    assert_eq!(body, EdgeError::IpDenied.body_bytes());
    let (ct, _) = content(&limited, None);
    assert_eq!(ct, "application/json");
}

#[test]
fn raw_answer_before_http_parsing() {
    let e = EdgeError::TooManyConnections {
        limit: "max_connections",
        max: 3,
    };
    let body = r#"{"error":"too_many_connections","limit":"max_connections","max":3}"#;
    let want = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(String::from_utf8(raw_http1(&e)).expect("utf-8"), want);
}

#[test]
fn every_counted_reason_is_zero_initialised() {
    for (e, ..) in catalogue() {
        let Some(reason) = e.reason() else { continue };
        if matches!(e, EdgeError::TooManyConnections { .. }) {
            continue; // counted in hotplex_proxy_connections_refused_total
        }
        assert!(
            crate::metrics::REJECTION_REASONS.contains(&reason),
            "{reason} missing from metrics::REJECTION_REASONS"
        );
    }
}

/// One row of a table: (status cell, code, reason, header names).
type Row = (String, Option<String>, Option<String>, BTreeSet<String>);

fn rows(text: &str, prefix: &str) -> Vec<Row> {
    let unquote = |c: &str| {
        let c = c.trim().trim_matches('`').to_string();
        (c != "-").then_some(c)
    };
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| status"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 5, "five cells: {l}");
            let names = cells[3]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|h| {
                    h.split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .collect();
            (
                cells[0].to_string(),
                unquote(cells[1]),
                unquote(cells[2]),
                names,
            )
        })
        .collect()
}

fn matches(row: &Row, e: &EdgeError) -> bool {
    let status_ok = match e {
        EdgeError::Status(_) => row.0 == "other",
        _ => row.0.split(", ").any(|s| s == e.status().to_string()),
    };
    let names: BTreeSet<String> = e.headers().iter().map(|(n, _)| n.to_string()).collect();
    status_ok && row.1.as_deref() == e.code() && row.2.as_deref() == e.reason() && row.3 == names
}

fn check_table(name: &str, table: &[Row]) {
    let samples = catalogue();
    assert!(!table.is_empty(), "{name}: no table found");
    for (e, ..) in &samples {
        assert!(
            table.iter().any(|r| matches(r, e)),
            "{name}: no row for {e:?} (status {}, code {:?}, reason {:?}, headers {:?})",
            e.status(),
            e.code(),
            e.reason(),
            e.headers()
        );
    }
    for r in table {
        assert!(
            samples.iter().any(|(e, ..)| matches(r, e)),
            "{name}: row {r:?} is no variant of the catalogue"
        );
    }
}

#[test]
fn the_module_doc_table_is_the_catalogue() {
    check_table("errors/mod.rs", &rows(include_str!("mod.rs"), "//!"));
}
#[test]
fn docs_errors_md_is_the_catalogue() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md");
    let text = std::fs::read_to_string(path).expect("docs/errors.md");
    check_table("docs/errors.md", &rows(&text, ""));
}
