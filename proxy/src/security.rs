//! Edge security: API-key authentication, rate limits, concurrency and body-size limits.
//!
//! Called from `request_filter` ([`Security::admit`]) before routing, with the live config
//! (so `auth:` and `limits:` are hot-reloadable). A refusal is an [`EdgeError`] of the
//! catalogue ([`crate::errors`]: `unauthorized`, `forbidden`, `payload_too_large`,
//! `rate_limited`, `rate_limit_unavailable`, `too_many_websockets`,
//! `too_many_auth_failures`), written by the one writer.
//!
//! The key is read from `X-API-Key`, `Authorization: Bearer <key>` or the WebSocket
//! subprotocol `hotplex-api-<key>`; only its SHA-256 is compared (constant time), and it is
//! never logged. A bearer token that is no API key is validated as a JWT when `auth.jwt`
//! is configured; its tenant claim then names the tenant. The client IP is the peer address, or, when the peer is in
//! `limits.trusted_proxies`, the right-most untrusted `X-Forwarded-For` entry.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hotplex_common::headers as h;
use pingora::proxy::Session;
use subtle::ConstantTimeEq;

use crate::audit::{self, Actor};
use crate::config::security::{hash_key, Cidr, LimitSettings, RateFile, StoreSettings};
use crate::config::RuntimeConfig;
use crate::errors::{ratelimit_values, EdgeError, RATELIMIT_NAMES};
pub use crate::errors::{RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET};
use crate::limit_store::{RedisStore, StoreError};
use crate::limits::{Buckets, CounterGuard, Counters, Decision};
use crate::metrics::{ProxyMetrics, AUTH_RATE_LIMITED};

/// Tracked keys per shard of the audit-folding buckets.
const DEFAULT_FOLDED_AUDIT_KEYS: usize = 10_000;

/// Security state shared by all requests (bucket state survives reloads).
#[derive(Default)]
pub struct Security {
    buckets: Buckets,
    /// Failed authentications per client IP (`limits.auth_failures`), always per process.
    auth_failures: Buckets,
    /// At most one audit line a minute per IP for refused-before-auth attempts.
    audit_fold: Buckets,
    websockets: Arc<Counters>,
    store: RedisStore,
    /// (config hash, limits as text) last seen, to audit limit changes.
    seen: Mutex<(String, String)>,
}

/// Per-request security state (in the proxy CTX).
#[derive(Default)]
pub struct ReqState {
    /// API-key name (tenant), when a valid key was presented.
    pub tenant: Option<String>,
    /// Client IP (after trusted-proxy resolution).
    pub client_ip: Option<IpAddr>,
    /// Tightest bucket decision, for the `RateLimit-*` response headers.
    pub ratelimit: Option<Decision>,
    /// The route's `auth` (see [`crate::routes`]): `off`, no authentication; `optional`,
    /// only when credentials are presented.
    pub auth: crate::config::runtime::routes::AuthMode,
    _ws: Option<CounterGuard>,
}

impl ReqState {
    /// Tenant name or `-`.
    pub fn tenant_label(&self) -> &str {
        self.tenant.as_deref().unwrap_or("-")
    }
}

/// The client IP: `peer`, or the right-most `X-Forwarded-For` entry that is not a trusted
/// proxy when `peer` itself is trusted.
pub fn client_ip(peer: IpAddr, xff: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(xff) = xff else {
        return peer;
    };
    let mut client = peer;
    for part in xff.rsplit(',') {
        let Ok(ip) = part.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The presented API key: `X-API-Key`, `Authorization: Bearer`, or the WebSocket subprotocol.
pub fn presented_key(req: &pingora::http::RequestHeader) -> Option<&str> {
    let hv = |n: &http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(k) = hv(&h::name::X_API_KEY)
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Some(k);
    }
    if let Some(k) = bearer_token(req) {
        return Some(k);
    }
    hv(&http::header::SEC_WEBSOCKET_PROTOCOL).and_then(h::api_key_from_ws_protocols)
}

/// The `Authorization: Bearer <token>` credential (API key or JWT).
pub fn bearer_token(req: &pingora::http::RequestHeader) -> Option<&str> {
    let a = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    if a.len() > 7 && a.is_char_boundary(7) && a[..7].eq_ignore_ascii_case("bearer ") {
        let k = a[7..].trim();
        if !k.is_empty() {
            return Some(k);
        }
    }
    None
}

pub use crate::policy::ip::ip_text;

impl Security {
    pub fn new() -> Security {
        Security::default()
    }

    fn audit_limit_changes(&self, cfg: &RuntimeConfig) {
        let Ok(mut seen) = self.seen.try_lock() else {
            return;
        };
        if seen.0 == cfg.hash {
            return;
        }
        let now = format!("{:?}", cfg.limits);
        if !seen.0.is_empty() && seen.1 != now {
            audit::record(
                Actor::named("config"),
                "limits.change",
                "success",
                &format!("config {}: limits now {now}", cfg.hash),
            );
        }
        *seen = (cfg.hash.clone(), now);
    }

    /// Gauge and a log line on a transition. `up` only after a real reply from Redis.
    fn store_state(
        &self,
        metrics: &ProxyMetrics,
        up: bool,
        err: Option<&StoreError>,
        s: &StoreSettings,
    ) {
        if i64::from(up) == metrics.ratelimit_store_up.get() {
            return;
        }
        metrics.ratelimit_store_up.set(i64::from(up));
        let store = s.display_url();
        if up {
            tracing::info!(%store, "rate-limit store is reachable again");
        } else {
            let mode = if s.fail_open {
                "open (admitting)"
            } else {
                "closed (503)"
            };
            let error = err.map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(%store, %error, "rate-limit store unreachable: failing {mode}");
        }
    }

    async fn bucket(
        &self,
        l: &LimitSettings,
        metrics: &ProxyMetrics,
        key: &str,
        r: &RateFile,
        which: &'static str,
        st: &mut ReqState,
    ) -> Result<(), EdgeError> {
        let d = match &l.store {
            None => self.buckets.check(key, r, l.max_tracked_keys),
            Some(s) => match self.store.check(s, key, r).await {
                Ok(d) => {
                    self.store_state(metrics, true, None, s);
                    d
                }
                Err(e) => {
                    self.store_state(metrics, false, Some(&e), s);
                    let outcome = if s.fail_open {
                        "fail_open"
                    } else {
                        "fail_closed"
                    };
                    metrics
                        .ratelimit_store_failures
                        .with_label_values(&[outcome])
                        .inc();
                    if s.fail_open {
                        return Ok(());
                    }
                    return Err(EdgeError::RateLimitUnavailable { limit: which });
                }
            },
        };
        if !d.allowed {
            return Err(EdgeError::RateLimited {
                limit: which,
                decision: d,
            });
        }
        if st.ratelimit.is_none_or(|o| d.remaining < o.remaining) {
            st.ratelimit = Some(d);
        }
        Ok(())
    }

    /// 429 for an IP over its failed-authentication budget (audited once a minute per IP).
    fn auth_limited(
        &self,
        metrics: &ProxyMetrics,
        ip: Option<IpAddr>,
        ip_s: &str,
        retry: u64,
    ) -> EdgeError {
        metrics
            .auth_failures
            .with_label_values(&[AUTH_RATE_LIMITED])
            .inc();
        let once_a_minute = RateFile {
            rate: 1.0 / 60.0,
            burst: 1,
        };
        let fold = ["authaudit|", ip_s].concat();
        if (self.audit_fold)
            .check(&fold, &once_a_minute, DEFAULT_FOLDED_AUDIT_KEYS)
            .allowed
        {
            audit::record(
                Actor { name: "-", ip },
                "auth",
                "limited",
                "too many failed authentications from this address: refused before any key \
                 check (further refusals of this address are not logged for a minute)",
            );
        }
        EdgeError::TooManyAuthFailures { retry_after: retry }
    }

    /// Authenticates and applies the limits. `Err`: the answer to write.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        session: &Session,
        cfg: &RuntimeConfig,
        metrics: &ProxyMetrics,
        route: &str,
        create: bool,
        websocket: bool,
        st: &mut ReqState,
    ) -> Result<(), EdgeError> {
        self.audit_limit_changes(cfg);
        let req = session.req_header();
        let l = &cfg.limits;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let ip = peer.map(|p| {
            let xff = req
                .headers
                .get(&h::name::X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok());
            client_ip(p, xff, &l.trusted_proxies)
        });
        st.client_ip = ip;

        // Authentication. An IP over its failed-authentication budget is refused before
        // any key hashing or signature check (auth on, or optional with credentials), or
        // treated as anonymous (auth off).
        let a = &cfg.auth;
        let path = req.uri.path();
        let public = a.public_paths.iter().any(|p| path.starts_with(p.as_str()));
        let ip_s = ip.map(ip_text).unwrap_or_default();
        let fail_key = ["authfail|", &ip_s].concat();
        let must_auth =
            a.enabled && !public && st.auth.must_authenticate(presented_key(req).is_some());
        let budget = self.auth_failures.peek(&fail_key, &l.auth_failures);
        if let Err(retry) = budget {
            if must_auth {
                return Err(self.auth_limited(metrics, ip, &ip_s, retry));
            }
        }
        let presented = budget.ok().and_then(|()| presented_key(req));
        let key = presented.and_then(|k| {
            let hsh = hash_key(k);
            a.keys.iter().find(|c| bool::from(c.hash.ct_eq(&hsh)))
        });
        // A bearer token that is not an API key: a JWT when `auth.jwt` is configured.
        let bearer = budget.ok().and_then(|()| bearer_token(req));
        let jwt = match (key, &a.jwt, bearer) {
            (None, Some(j), Some(t)) if crate::jwt::looks_like_jwt(t) => Some(j.verify(t)),
            _ => None,
        };
        let routes = match (key, &jwt) {
            (Some(k), _) => k.routes.as_deref(),
            (None, Some(Ok(id))) => id.routes.as_deref(),
            _ => None,
        };
        if let Some(k) = key {
            st.tenant = Some(k.name.clone());
        } else if let Some(Ok(id)) = &jwt {
            st.tenant = Some(id.tenant.clone());
        }
        if must_auth {
            let fail = match (key, &jwt) {
                (None, Some(Err(e))) => Some((e.reason(), 401)),
                (None, None) if presented.is_none() => Some(("missing_key", 401)),
                (None, None) => Some(("invalid_key", 401)),
                _ if routes.is_some_and(|r| !r.iter().any(|x| x == route)) => {
                    Some(("forbidden_route", 403))
                }
                _ => None,
            };
            if let Some((why, status)) = fail {
                metrics.auth_failures.with_label_values(&[why]).inc();
                if status == 401 {
                    // Spends the IP's failed-authentication budget.
                    let _ =
                        (self.auth_failures).check(&fail_key, &l.auth_failures, l.max_tracked_keys);
                }
                audit::record(
                    Actor {
                        name: st.tenant_label(),
                        ip,
                    },
                    "auth",
                    "denied",
                    &format!("{why}: {} {path}", req.method),
                );
                return Err(if status == 401 {
                    EdgeError::Unauthorized { reason: why }
                } else {
                    EdgeError::Forbidden {
                        reason: why,
                        route: route.to_string(),
                    }
                });
            }
        }

        // Body size.
        if l.max_body_bytes > 0 {
            let len = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if len.is_some_and(|n| n > l.max_body_bytes) {
                return Err(EdgeError::PayloadTooLarge {
                    max_body_bytes: l.max_body_bytes,
                });
            }
        }

        // Rate limits.
        // Bucket keys are concatenated, not formatted (this runs for every request).
        let ident = match &st.tenant {
            Some(t) => ["k:", t].concat(),
            None => ["ip:", &ip_s].concat(),
        };
        let m = metrics;
        let res: Result<(), EdgeError> = async {
            if let Some(r) = &l.per_ip {
                self.bucket(l, m, &["ip|", &ip_s].concat(), r, "per_ip", st)
                    .await?;
            }
            if let Some(r) = &l.per_key {
                self.bucket(l, m, &["key|", &ident].concat(), r, "per_key", st)
                    .await?;
            }
            if let Some(r) = l.routes.get(route) {
                let k = ["route|", route, "|", &ident].concat();
                self.bucket(l, m, &k, r, "route", st).await?;
            }
            if create {
                if let Some(n) = l.new_sessions_per_minute {
                    let r = RateFile {
                        rate: f64::from(n) / 60.0,
                        burst: n,
                    };
                    let k = ["new|", &ident].concat();
                    self.bucket(l, m, &k, &r, "new_sessions", st).await?;
                }
            }
            if websocket {
                if let Some(max) = l.max_websockets_per_key {
                    match self.websockets.acquire(&ident, max) {
                        Some(g) => st._ws = Some(g),
                        None => return Err(EdgeError::TooManyWebsockets { max }),
                    }
                }
            }
            Ok(())
        }
        .await;
        if res.as_ref().is_err_and(|r| r.status() == 429) {
            metrics
                .rate_limited
                .with_label_values(&[st.tenant_label(), route])
                .inc();
        }
        res
    }
}

/// Adds the `RateLimit-*` headers of the tightest bucket to a proxied response.
pub fn on_response(headers: &mut http::HeaderMap, st: &ReqState) {
    if let Some(d) = &st.ratelimit {
        for (name, (n, v)) in RATELIMIT_NAMES.iter().zip(ratelimit_values(d)) {
            let v = http::HeaderValue::from(v);
            // The limit is the same on every response; the others change per request.
            let v = if n == RATELIMIT_LIMIT {
                v
            } else {
                unindexed(v)
            };
            headers.insert(name, v);
        }
    }
}

/// Marks a response header value that changes on every request (request id, tokens left)
/// as never to be indexed by HTTP/2 header compression (HPACK, RFC 7541 6.2.3).
///
/// Indexed, each such value would enter the connection's dynamic table, evict the entries
/// that do repeat (`x-hotplex-worker`, `content-type`) and lengthen the table walk of
/// every later header of the same name: callgrind showed the HPACK encoder at 11k
/// instructions per h2 response with them indexed. HTTP/1.1 ignores the flag.
pub fn unindexed(mut v: http::HeaderValue) -> http::HeaderValue {
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_ratelimit_values_are_not_hpack_indexed() {
        let st = ReqState {
            ratelimit: Some(Decision {
                allowed: true,
                limit: 100,
                remaining: 42,
                reset_secs: 7,
                retry_after_secs: 0,
            }),
            ..Default::default()
        };
        let mut resp = http::HeaderMap::new();
        on_response(&mut resp, &st);
        let get = |n: &str| resp.get(n).expect(n).clone();
        assert_eq!(get(RATELIMIT_LIMIT), "100");
        assert!(
            !get(RATELIMIT_LIMIT).is_sensitive(),
            "the limit repeats: indexable"
        );
        assert_eq!(get(RATELIMIT_REMAINING), "42");
        assert!(get(RATELIMIT_REMAINING).is_sensitive());
        assert_eq!(get(RATELIMIT_RESET), "7");
        assert!(get(RATELIMIT_RESET).is_sensitive());
    }

    #[test]
    fn client_ip_from_trusted_chain() {
        let trusted = vec![
            Cidr::parse("10.0.0.0/8").expect("cidr"),
            Cidr::parse("127.0.0.1").expect("cidr"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // Untrusted peer: XFF ignored.
        assert_eq!(
            client_ip(ip("1.2.3.4"), Some("9.9.9.9"), &trusted),
            ip("1.2.3.4")
        );
        // Trusted peer: right-most untrusted entry.
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                Some("6.6.6.6, 9.9.9.9, 10.1.1.1"),
                &trusted
            ),
            ip("9.9.9.9")
        );
        // Garbage stops the walk.
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("junk"), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn keys_are_read_from_three_places() {
        let mut r = pingora::http::RequestHeader::build("GET", b"/x", None).expect("req");
        assert_eq!(presented_key(&r), None);
        r.insert_header("sec-websocket-protocol", "hotplex, hotplex-api-ws1")
            .expect("h");
        assert_eq!(presented_key(&r), Some("ws1"));
        r.insert_header("authorization", "Bearer b1").expect("h");
        assert_eq!(presented_key(&r), Some("b1"));
        r.insert_header("x-api-key", "k1").expect("h");
        assert_eq!(presented_key(&r), Some("k1"));
    }
}
