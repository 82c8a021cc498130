//! What the edge tells a worker, and what it never passes on from a client.
//!
//! On every forwarded request ([`to_worker`]):
//! - `X-Hotplex-Tenant`: the authenticated tenant (API-key name or JWT tenant claim);
//!   absent for the anonymous tenant;
//! - `X-Hotplex-Worker`: the proxy-side id of the worker the request was routed to;
//! - `X-Hotplex-Session`: the session id the request was routed for (minted for a create
//!   or a keyless WebSocket, otherwise the key found in the request); absent otherwise;
//! - `X-Hotplex-Proxy-Auth`: the shared worker key (`worker_auth.key`), when configured.
//!
//! A client's values of these four headers are always removed first, and so are its
//! credentials (`X-API-Key`, `Authorization`, the `hotplex-api-<key>` WebSocket
//! subprotocol): the edge checked them; the worker gets the tenant instead.

use std::net::IpAddr;

use hotplex_common::headers as h;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::{ErrorType, OrErr};

use crate::config::RuntimeConfig;
use crate::routing::Route;

/// Headers a client may never set on a forwarded request.
pub static STRIPPED: [&HeaderName; 6] = [
    &h::name::X_HOTPLEX_TENANT,
    &h::name::X_HOTPLEX_PROXY_AUTH,
    &h::name::X_HOTPLEX_WORKER,
    &h::name::X_HOTPLEX_SESSION,
    &h::name::X_API_KEY,
    &http::header::AUTHORIZATION,
];

/// A header value from text the edge holds (a tenant, an id, a key).
pub fn value(text: &str) -> pingora::Result<HeaderValue> {
    HeaderValue::from_str(text).or_err(ErrorType::InvalidHTTPHeader, "invalid header value")
}

/// Rewrites a forwarded request's trust headers (see the module docs).
pub fn to_worker(
    headers: &mut HeaderMap,
    route: Option<&Route>,
    tenant: Option<&str>,
    cfg: &RuntimeConfig,
) -> pingora::Result<()> {
    for name in STRIPPED {
        headers.remove(name);
    }
    strip_key_protocol(headers)?;
    if let Some(t) = tenant {
        headers.insert(&h::name::X_HOTPLEX_TENANT, value(t)?);
    }
    if let Some(route) = route {
        headers.insert(
            &h::name::X_HOTPLEX_WORKER,
            value(route.worker.spec.id.as_str())?,
        );
        if let Some(id) = route.minted.as_ref().or(route.key.as_ref()) {
            headers.insert(&h::name::X_HOTPLEX_SESSION, value(id.as_str())?);
        }
    }
    if let Some(k) = &cfg.worker_key {
        headers.insert(&h::name::X_HOTPLEX_PROXY_AUTH, k.clone());
    }
    Ok(())
}

/// Rewrites a request to an `http` pool upstream (see [`crate::routes`]): the HotPlex
/// trust headers are removed (an `http` service never gets the tenant, the session or the
/// worker key); with `credentials` (the route's `auth: required`) the client's credentials
/// the edge checked are removed too, as for a worker. An `auth: off` route passes them on
/// (the service may run its own authentication).
pub fn to_service(headers: &mut HeaderMap, credentials: bool) -> pingora::Result<()> {
    for name in STRIPPED {
        let credential = *name == h::X_API_KEY || *name == http::header::AUTHORIZATION;
        if credentials || !credential {
            headers.remove(name);
        }
    }
    if credentials {
        strip_key_protocol(headers)?;
    }
    Ok(())
}

/// Appends the client's address to `X-Forwarded-For` and a `for=...;proto=...` element to
/// `Forwarded` (RFC 7239), after what earlier proxies wrote.
pub fn forwarded(headers: &mut HeaderMap, ip: IpAddr, scheme: &str) -> pingora::Result<()> {
    // The address is formatted once, both values concatenated (no `format!`: this runs for
    // every request).
    let ip_s = crate::security::ip_text(ip);
    let xff = match earlier(headers, &h::name::X_FORWARDED_FOR) {
        Some(prev) => [prev, ", ", &ip_s].concat(),
        None => ip_s.clone(),
    };
    let fwd = if ip.is_ipv6() {
        ["for=\"[", &ip_s, "]\";proto=", scheme].concat()
    } else {
        ["for=", &ip_s, ";proto=", scheme].concat()
    };
    let fwd = match earlier(headers, &h::name::FORWARDED) {
        Some(prev) => [prev, ", ", &fwd].concat(),
        None => fwd,
    };
    headers.insert(&h::name::X_FORWARDED_FOR, value(&xff)?);
    headers.insert(&h::name::FORWARDED, value(&fwd)?);
    Ok(())
}

/// An earlier proxy's non-blank value of `name`.
fn earlier<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let v = headers.get(name)?.to_str().ok()?;
    (!v.trim().is_empty()).then_some(v)
}

/// Removes `hotplex-api-<key>` entries from `Sec-WebSocket-Protocol` (the header goes
/// when nothing else is left).
fn strip_key_protocol(headers: &mut HeaderMap) -> pingora::Result<()> {
    let Some(v) = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL) else {
        return Ok(());
    };
    let Ok(text) = v.to_str() else {
        headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
        return Ok(());
    };
    if !text.contains(h::WS_API_KEY_PROTOCOL_PREFIX) {
        return Ok(());
    }
    let kept: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(h::WS_API_KEY_PROTOCOL_PREFIX))
        .collect();
    if kept.is_empty() {
        headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
    } else {
        let v = value(&kept.join(", "))?;
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> RuntimeConfig {
        let y = format!("workers:\n  - id: w1\n    address: 127.0.0.1:9001\n{extra}");
        crate::config::parse("t", &y).expect("valid")
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            let n = HeaderName::from_bytes(n.as_bytes()).expect("name");
            m.append(n, HeaderValue::from_str(v).expect("value"));
        }
        m
    }

    #[test]
    fn client_trust_headers_and_credentials_never_pass() {
        let mut r = map(&[
            (h::X_HOTPLEX_TENANT, "tenant-a"),
            (h::X_HOTPLEX_PROXY_AUTH, "guess"),
            (h::X_HOTPLEX_WORKER, "w9"),
            (h::X_HOTPLEX_SESSION, "demo-1"),
            (h::X_HOTPLEX_SESSION, "demo-2"),
            (h::X_API_KEY, "k"),
            ("authorization", "Bearer k"),
            ("sec-websocket-protocol", "hotplex, hotplex-api-secret"),
        ]);
        to_worker(&mut r, None, None, &cfg("")).expect("rewrite");
        for n in STRIPPED {
            assert!(r.get(n).is_none(), "{n} passed");
        }
        assert_eq!(r.get("sec-websocket-protocol").expect("kept"), "hotplex");
        let mut r = map(&[
            ("sec-websocket-protocol", "hotplex-api-secret"),
            (h::X_HOTPLEX_TENANT, "forged"),
            (h::X_HOTPLEX_TENANT, "forged-2"),
        ]);
        let c = cfg("worker_auth:\n  key: 0123456789abcdef-worker-key\n");
        to_worker(&mut r, None, Some("tenant-b"), &c).expect("rewrite");
        assert!(r.get("sec-websocket-protocol").is_none());
        let tenants: Vec<_> = r.get_all(h::X_HOTPLEX_TENANT).iter().collect();
        assert_eq!(tenants, ["tenant-b"], "only the edge's tenant");
        assert_eq!(
            r.get(h::X_HOTPLEX_PROXY_AUTH).expect("key"),
            "0123456789abcdef-worker-key"
        );
    }

    #[test]
    fn an_http_service_gets_credentials_only_on_an_auth_off_route() {
        let pairs = [
            (h::X_HOTPLEX_TENANT, "forged"),
            (h::X_API_KEY, "k"),
            ("authorization", "Bearer k"),
            ("sec-websocket-protocol", "hotplex-api-secret"),
        ];
        let mut r = map(&pairs);
        to_service(&mut r, true).expect("rewrite");
        assert!(r.is_empty(), "left: {r:?}");
        let mut r = map(&pairs);
        to_service(&mut r, false).expect("rewrite");
        assert!(r.get(h::X_HOTPLEX_TENANT).is_none());
        assert_eq!(r.get(h::X_API_KEY).expect("key"), "k");
        assert_eq!(r.get("authorization").expect("auth"), "Bearer k");
    }

    #[test]
    fn forwarded_headers_append_the_client_after_earlier_proxies() {
        let mut r = map(&[]);
        forwarded(&mut r, "192.0.2.7".parse().expect("ip"), "https").expect("fwd");
        assert_eq!(r.get(h::X_FORWARDED_FOR).expect("xff"), "192.0.2.7");
        assert_eq!(
            r.get(h::FORWARDED).expect("fwd"),
            "for=192.0.2.7;proto=https"
        );
        let mut r = map(&[
            (h::X_FORWARDED_FOR, "198.51.100.1"),
            (h::FORWARDED, "for=198.51.100.1"),
        ]);
        forwarded(&mut r, "2001:db8::7".parse().expect("ip"), "http").expect("fwd");
        assert_eq!(
            r.get(h::X_FORWARDED_FOR).expect("xff"),
            "198.51.100.1, 2001:db8::7"
        );
        assert_eq!(
            r.get(h::FORWARDED).expect("fwd"),
            "for=198.51.100.1, for=\"[2001:db8::7]\";proto=http"
        );
        let mut r = map(&[(h::X_FORWARDED_FOR, "  ")]);
        forwarded(&mut r, "192.0.2.7".parse().expect("ip"), "http").expect("fwd");
        assert_eq!(r.get(h::X_FORWARDED_FOR).expect("xff"), "192.0.2.7");
    }
}
