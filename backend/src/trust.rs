//! The trusted proxy: who is calling, and in which tenant.
//!
//! A request is *from the proxy* when `proxy_keys` is empty (dev mode: the worker listens
//! on loopback only) or when it carries `X-Hotplex-Proxy-Auth` equal to one of the keys.
//! Only such a request may name a tenant (`X-Hotplex-Tenant`), the session it was routed
//! for (`X-Hotplex-Session`) and the proxy-side worker id (`X-Hotplex-Worker`). Any other
//! request is *direct*: it needs an API key (`api_keys`), runs in the anonymous tenant,
//! and is refused with 401 `untrusted_proxy_header` if it carries a proxy header (a forged
//! tenant is never silently ignored).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use hotplex_common::headers::{
    X_HOTPLEX_PROXY_AUTH, X_HOTPLEX_SESSION, X_HOTPLEX_TENANT, X_HOTPLEX_WORKER,
};
use hotplex_common::SessionId;

use crate::auth;
use crate::config::{Secret, WorkerConfig};
use crate::error::ApiError;

/// Longest accepted tenant name, bytes.
pub const MAX_TENANT_BYTES: usize = 256;

/// The headers only the trusted proxy may send.
pub const PROXY_HEADERS: [&str; 4] = [
    X_HOTPLEX_TENANT,
    X_HOTPLEX_SESSION,
    X_HOTPLEX_WORKER,
    X_HOTPLEX_PROXY_AUTH,
];

/// Who sent a request (a request extension, set by the main listener's middleware).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The tenant whose sessions the request may see; `None`: anonymous.
    pub tenant: Option<String>,
    /// The request is the trusted proxy's (or the worker runs in dev mode).
    pub trusted: bool,
    /// `X-Hotplex-Session` from the proxy, raw (validated where it is used).
    pub routed_session: Option<HeaderValue>,
    /// `X-Hotplex-Worker` from the proxy: the proxy-side id of this worker.
    pub routed_worker: Option<String>,
}

impl Caller {
    /// The tenant as a borrowed option.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The connection was routed by the proxy (it named the routed session or worker):
    /// the WebSocket frame rules of [`crate::ws`] apply.
    pub fn routed(&self) -> bool {
        self.trusted && (self.routed_session.is_some() || self.routed_worker.is_some())
    }

    /// The routed session id, validated (400 `invalid_session_id` when malformed).
    pub fn routed_session_id(&self) -> Result<Option<SessionId>, ApiError> {
        match &self.routed_session {
            None => Ok(None),
            Some(v) => SessionId::parse_bytes(v.as_bytes())
                .map(Some)
                .map_err(|e| ApiError::bad_request("invalid_session_id", e.to_string())),
        }
    }
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Refused {
    /// A direct request carried a proxy-only header.
    UntrustedHeader(ApiError),
    /// Authentication failed (no or bad API key, bad tenant header).
    Other(ApiError),
}

/// Constant-time membership of a presented secret.
pub fn matches_any(keys: &[Secret], presented: &[u8]) -> bool {
    keys.iter().fold(false, |hit, k| {
        hit | auth::constant_time_eq(k.expose().as_bytes(), presented)
    })
}

/// Classifies a request of the main listener (health paths are not classified).
pub fn classify(cfg: &WorkerConfig, headers: &HeaderMap) -> Result<Caller, Refused> {
    let proxy_auth = headers.get(X_HOTPLEX_PROXY_AUTH);
    let trusted = cfg.proxy_keys.is_empty()
        || proxy_auth.is_some_and(|v| matches_any(&cfg.proxy_keys, v.as_bytes()));
    if !trusted {
        if PROXY_HEADERS.iter().any(|h| headers.contains_key(*h)) {
            return Err(Refused::UntrustedHeader(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "untrusted_proxy_header",
                "proxy headers (x-hotplex-tenant, -session, -worker, -proxy-auth) are only \
                 accepted from the trusted proxy",
            )));
        }
        if cfg.api_keys.is_empty() {
            return Err(Refused::Other(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this worker only serves its trusted proxy (no api_keys configured)",
            )));
        }
        auth::check(&cfg.api_keys, headers).map_err(Refused::Other)?;
        return Ok(Caller::default());
    }
    if cfg.proxy_keys.is_empty() {
        // Dev mode: the API keys guard the worker as before.
        auth::check(&cfg.api_keys, headers).map_err(Refused::Other)?;
    }
    let tenant = match headers.get(X_HOTPLEX_TENANT) {
        None => None,
        Some(v) => Some(parse_tenant(v).map_err(Refused::Other)?),
    };
    let routed_worker = headers
        .get(X_HOTPLEX_WORKER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Caller {
        tenant,
        trusted: true,
        routed_session: headers.get(X_HOTPLEX_SESSION).cloned(),
        routed_worker,
    })
}

fn parse_tenant(v: &HeaderValue) -> Result<String, ApiError> {
    let bad =
        |why: &str| ApiError::bad_request("invalid_tenant", format!("x-hotplex-tenant {why}"));
    let s = v.to_str().map_err(|_| bad("is not visible ASCII"))?;
    if s.is_empty() || s.len() > MAX_TENANT_BYTES {
        return Err(bad("must be 1 to 256 bytes"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(proxy: &[&str], api: &[&str]) -> WorkerConfig {
        WorkerConfig {
            proxy_keys: proxy.iter().map(|k| Secret::new(*k)).collect(),
            api_keys: api.iter().map(|k| k.to_string()).collect(),
            ..WorkerConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn code(r: Result<Caller, Refused>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(Refused::UntrustedHeader(e) | Refused::Other(e)) => e.code,
        }
    }

    #[test]
    fn dev_mode_trusts_headers() {
        let c = classify(&cfg(&[], &[]), &headers(&[("x-hotplex-tenant", "t1")])).expect("ok");
        assert_eq!(c.tenant(), Some("t1"));
        assert!(c.trusted && !c.routed());
        let c = classify(&cfg(&[], &[]), &headers(&[("x-hotplex-session", "demo-1")])).expect("ok");
        assert!(c.routed());
        assert_eq!(
            c.routed_session_id()
                .expect("valid")
                .map(SessionId::into_string),
            Some("demo-1".into())
        );
        // API keys still apply in dev mode.
        assert_eq!(
            code(classify(&cfg(&[], &["k"]), &HeaderMap::new())),
            "unauthorized"
        );
    }

    #[test]
    fn proxy_keys_decide_trust() {
        let c = cfg(&["pk1", "pk2"], &["api"]);
        let ok = classify(
            &c,
            &headers(&[
                ("x-hotplex-proxy-auth", "pk2"),
                ("x-hotplex-tenant", "acme"),
            ]),
        )
        .expect("trusted");
        assert_eq!(ok.tenant(), Some("acme"));
        // A forged tenant without (or with a wrong) proxy key is refused, even with an API key.
        for h in [
            headers(&[("x-hotplex-tenant", "acme"), ("x-api-key", "api")]),
            headers(&[("x-hotplex-proxy-auth", "nope"), ("x-api-key", "api")]),
            headers(&[("x-hotplex-session", "s"), ("x-api-key", "api")]),
            headers(&[("x-hotplex-worker", "w1"), ("x-api-key", "api")]),
        ] {
            assert_eq!(code(classify(&c, &h)), "untrusted_proxy_header", "{h:?}");
        }
        // Direct with an API key: anonymous; without: 401.
        let d = classify(&c, &headers(&[("x-api-key", "api")])).expect("direct");
        assert_eq!(d, Caller::default());
        assert_eq!(code(classify(&c, &HeaderMap::new())), "unauthorized");
        // No API keys: direct requests are never allowed.
        assert_eq!(
            code(classify(&cfg(&["pk"], &[]), &HeaderMap::new())),
            "unauthorized"
        );
        // The proxy's requests need no API key.
        assert_eq!(
            code(classify(&c, &headers(&[("x-hotplex-proxy-auth", "pk1")]))),
            "ok"
        );
    }

    #[test]
    fn tenant_is_validated() {
        let long: &'static str = Box::leak("t".repeat(MAX_TENANT_BYTES + 1).into_boxed_str());
        assert_eq!(
            code(classify(
                &cfg(&[], &[]),
                &headers(&[("x-hotplex-tenant", long)])
            )),
            "invalid_tenant"
        );
        assert!(matches_any(&[Secret::new("a"), Secret::new("b")], b"b"));
        assert!(!matches_any(&[Secret::new("a")], b"ab"));
    }
}
