//! Routing-key extraction: the first hit, in the configured order, of
//! - path `/sessions/{id}` or `/sessions/{id}/...`,
//! - query parameter `session_id`,
//! - header `X-Hotplex-Session`,
//! - cookie `hotplex_affinity`.
//!
//! A hit is validated with [`SessionId`]: bad bytes or an over-long value is an error
//! (answered 400 `invalid_session_id`), never silently skipped. Values are not
//! percent-decoded: the id alphabet is URL-safe, so `%` is simply an invalid byte.

use hotplex_common::headers::{AFFINITY_COOKIE, SESSION_QUERY_PARAM};
use hotplex_common::{SessionId, SessionIdError};

use crate::config::KeySource;

/// The parts of a request that can carry a key.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyInput<'a> {
    /// Raw path (no query).
    pub path: &'a [u8],
    /// Raw query string (no `?`).
    pub query: Option<&'a [u8]>,
    /// `X-Hotplex-Session` header value, first occurrence.
    pub header: Option<&'a [u8]>,
    /// Every `Cookie` header value.
    pub cookies: &'a [&'a [u8]],
}

/// A found key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundKey {
    pub source: KeySource,
    pub key: SessionId,
}

/// A present but invalid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    pub source: KeySource,
    pub error: SessionIdError,
}

/// Finds the routing key. `Ok(None)`: no key (a new session).
pub fn extract(order: &[KeySource], input: &KeyInput<'_>) -> Result<Option<FoundKey>, InvalidKey> {
    for &source in order {
        let raw = match source {
            KeySource::Path => from_path(input.path),
            KeySource::Query => input.query.and_then(from_query),
            KeySource::Header => input.header,
            KeySource::Cookie => input.cookies.iter().find_map(|c| from_cookie(c)),
        };
        if let Some(raw) = raw {
            return match SessionId::parse_bytes(raw) {
                Ok(key) => Ok(Some(FoundKey { source, key })),
                Err(error) => Err(InvalidKey { source, error }),
            };
        }
    }
    Ok(None)
}

/// `/sessions/{id}` or `/sessions/{id}/...` → `{id}` (non-empty).
pub fn from_path(path: &[u8]) -> Option<&[u8]> {
    let rest = path.strip_prefix(b"/sessions/")?;
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty()).then_some(id)
}

/// `session_id=` value of a query string (first occurrence, non-empty).
pub fn from_query(query: &[u8]) -> Option<&[u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (k == SESSION_QUERY_PARAM.as_bytes() && !v.is_empty()).then_some(v)
    })
}

/// `hotplex_affinity=` value of one `Cookie` header (non-empty).
pub fn from_cookie(header: &[u8]) -> Option<&[u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim(pair);
        let i = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (trim(&pair[..i]), trim(&pair[i + 1..]));
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        (k == AFFINITY_COOKIE.as_bytes() && !v.is_empty()).then_some(v)
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeySource::*;

    const ALL: &[KeySource] = &[Path, Query, Header, Cookie];

    fn key(order: &[KeySource], i: &KeyInput<'_>) -> Option<(KeySource, String)> {
        extract(order, i)
            .expect("valid")
            .map(|f| (f.source, f.key.into_string()))
    }

    #[test]
    fn path_forms() {
        assert_eq!(from_path(b"/sessions/abc"), Some(&b"abc"[..]));
        assert_eq!(from_path(b"/sessions/abc/messages"), Some(&b"abc"[..]));
        assert_eq!(from_path(b"/sessions"), None);
        assert_eq!(from_path(b"/sessions/"), None);
        assert_eq!(from_path(b"/ws/v1/agent"), None);
        assert_eq!(from_path(b"/sessionsx/abc"), None);
    }

    #[test]
    fn query_and_cookie_forms() {
        assert_eq!(from_query(b"a=1&session_id=s1&x"), Some(&b"s1"[..]));
        assert_eq!(from_query(b"session_id="), None);
        assert_eq!(from_query(b"session_idx=1"), None);
        assert_eq!(
            from_cookie(b"a=b; hotplex_affinity=w1.xyz ;c=d"),
            Some(&b"w1.xyz"[..])
        );
        assert_eq!(from_cookie(b"hotplex_affinity=\"q\""), Some(&b"q"[..]));
        assert_eq!(from_cookie(b"other=1"), None);
    }

    #[test]
    fn order_decides() {
        let cookies: [&[u8]; 1] = [b"hotplex_affinity=c1"];
        let i = KeyInput {
            path: b"/sessions/p1/messages",
            query: Some(b"session_id=q1"),
            header: Some(b"h1"),
            cookies: &cookies,
        };
        assert_eq!(key(ALL, &i), Some((Path, "p1".into())));
        assert_eq!(key(&[Query, Path], &i), Some((Query, "q1".into())));
        assert_eq!(key(&[Header, Path], &i), Some((Header, "h1".into())));
        assert_eq!(key(&[Cookie, Header], &i), Some((Cookie, "c1".into())));
        let none = KeyInput {
            path: b"/sessions",
            ..Default::default()
        };
        assert_eq!(key(ALL, &none), None);
        // A source not listed is ignored.
        assert_eq!(
            key(
                &[Cookie],
                &KeyInput {
                    header: Some(b"h"),
                    ..none
                }
            ),
            None
        );
    }

    #[test]
    fn invalid_keys_are_errors() {
        let i = KeyInput {
            path: b"/sessions/a%2Fb",
            ..Default::default()
        };
        let e = extract(ALL, &i).expect_err("bad byte");
        assert_eq!(e.source, Path);
        assert!(matches!(e.error, SessionIdError::BadByte(1)));
        let long = "x".repeat(200);
        let i = KeyInput {
            header: Some(long.as_bytes()),
            ..Default::default()
        };
        assert_eq!(
            extract(ALL, &i).expect_err("long").error,
            SessionIdError::TooLong
        );
        let i = KeyInput {
            header: Some(b"\xff\x00"),
            ..Default::default()
        };
        assert!(extract(ALL, &i).is_err());
    }
}
