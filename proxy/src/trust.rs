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

use hotplex_common::headers as h;
use http::HeaderName;
use pingora::http::RequestHeader;

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

/// Rewrites a forwarded request's trust headers (see the module docs).
pub fn to_worker(
    req: &mut RequestHeader,
    route: Option<&Route>,
    tenant: Option<&str>,
    cfg: &RuntimeConfig,
) -> pingora::Result<()> {
    for name in STRIPPED {
        req.remove_header(name);
    }
    strip_key_protocol(req)?;
    if let Some(t) = tenant {
        req.insert_header(h::X_HOTPLEX_TENANT, t)?;
    }
    if let Some(route) = route {
        req.insert_header(h::X_HOTPLEX_WORKER, route.worker.spec.id.as_str())?;
        if let Some(id) = route.minted.as_ref().or(route.key.as_ref()) {
            req.insert_header(h::X_HOTPLEX_SESSION, id.as_str())?;
        }
    }
    if let Some(k) = &cfg.worker_key {
        req.insert_header(h::X_HOTPLEX_PROXY_AUTH, k.clone())?;
    }
    Ok(())
}

/// Rewrites a request to an `http` pool upstream (see [`crate::routes`]): the HotPlex
/// trust headers are removed (an `http` service never gets the tenant, the session or the
/// worker key); with `credentials` (the route's `auth: required`) the client's credentials
/// the edge checked are removed too, as for a worker. An `auth: off` route passes them on
/// (the service may run its own authentication).
pub fn to_service(req: &mut RequestHeader, credentials: bool) -> pingora::Result<()> {
    for name in STRIPPED {
        let credential = *name == h::X_API_KEY || *name == http::header::AUTHORIZATION;
        if credentials || !credential {
            req.remove_header(name);
        }
    }
    if credentials {
        strip_key_protocol(req)?;
    }
    Ok(())
}

/// Removes `hotplex-api-<key>` entries from `Sec-WebSocket-Protocol` (the header goes
/// when nothing else is left).
fn strip_key_protocol(req: &mut RequestHeader) -> pingora::Result<()> {
    let Some(v) = req.headers.get(http::header::SEC_WEBSOCKET_PROTOCOL) else {
        return Ok(());
    };
    let Ok(text) = v.to_str() else {
        req.remove_header(&http::header::SEC_WEBSOCKET_PROTOCOL);
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
        req.remove_header(&http::header::SEC_WEBSOCKET_PROTOCOL);
    } else {
        req.insert_header(http::header::SEC_WEBSOCKET_PROTOCOL, kept.join(", "))?;
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

    #[test]
    fn client_trust_headers_and_credentials_never_pass() {
        let mut r = RequestHeader::build("GET", b"/ws/v1/agent", None).expect("req");
        for (n, v) in [
            (h::X_HOTPLEX_TENANT, "tenant-a"),
            (h::X_HOTPLEX_PROXY_AUTH, "guess"),
            (h::X_HOTPLEX_WORKER, "w9"),
            (h::X_HOTPLEX_SESSION, "demo-1"),
            (h::X_API_KEY, "k"),
            ("authorization", "Bearer k"),
            ("sec-websocket-protocol", "hotplex, hotplex-api-secret"),
        ] {
            r.insert_header(n, v).expect("header");
        }
        to_worker(&mut r, None, None, &cfg("")).expect("rewrite");
        for n in STRIPPED {
            assert!(r.headers.get(n).is_none(), "{n} passed");
        }
        assert_eq!(
            r.headers.get("sec-websocket-protocol").expect("kept"),
            "hotplex"
        );
        let mut r = RequestHeader::build("GET", b"/ws/v1/agent", None).expect("req");
        r.insert_header("sec-websocket-protocol", "hotplex-api-secret")
            .expect("header");
        r.insert_header(h::X_HOTPLEX_TENANT, "forged")
            .expect("header");
        let c = cfg("worker_auth:\n  key: 0123456789abcdef-worker-key\n");
        to_worker(&mut r, None, Some("tenant-b"), &c).expect("rewrite");
        assert!(r.headers.get("sec-websocket-protocol").is_none());
        assert_eq!(
            r.headers.get(h::X_HOTPLEX_TENANT).expect("tenant"),
            "tenant-b"
        );
        assert_eq!(
            r.headers.get(h::X_HOTPLEX_PROXY_AUTH).expect("key"),
            "0123456789abcdef-worker-key"
        );
    }
}
