//! JWT validation at the edge (`auth.jwt`): bearer tokens signed by an identity provider
//! with ES256 / ES384 (EC P-256 / P-384) or RS256 / RS384 / RS512 / PS256 / PS384 / PS512
//! (RSA) keys, verified against the public keys of `auth.jwt.keys_file` (PEM).
//!
//! A token is accepted when its signature verifies with one of those keys, its `alg` is in
//! `auth.jwt.algorithms` (never `none` nor an HMAC algorithm), `iss` equals `auth.jwt.issuer`,
//! `aud` contains one of `auth.jwt.audience`, `exp` is in the future and `nbf` (when present)
//! in the past, both give or take `auth.jwt.leeway`. `exp`, `iss` and `aud` are required; a
//! time claim of the wrong JSON type is refused (jsonwebtoken >= 10.3, CVE-2026-25537).
//!
//! The tenant (limits, logs, metrics) is the string (or number) claim named by
//! `auth.jwt.tenant_claim` (default `sub`); `auth.jwt.routes_claim`, when set, restricts the
//! token to the listed route labels like `auth.keys[].routes` (403 for others).
//!
//! The file is read when the config is loaded, so a reload (`SIGHUP`, `POST /admin/reload`)
//! picks up a rotated key file.

use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::config::runtime::jwt::Verified;
pub use crate::config::runtime::jwt::{JwtIdentity, JwtSettings};
use crate::config::runtime::route_label::{HttpRouteName, RouteName};

/// Longest token looked at, bytes (longer: `jwt_malformed`).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest tenant claim value, bytes.
pub const MAX_TENANT_BYTES: usize = 128;
/// Verified tokens remembered (by SHA-256) so a client's repeated token costs one signature
/// check; `exp`/`nbf` are still checked on every use. Emptied when full and on every config
/// (re)load (new settings, new cache).
pub const VERIFIED_CACHE_ENTRIES: usize = 10_000;

/// Why a token was refused; [`JwtError::reason`] is the `reason` label of
/// `hotplex_proxy_auth_failures_total` and of the 401 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts, bad JSON, oversized, or a claim of the wrong type.
    Malformed,
    /// `alg` missing, `none`, or not in `auth.jwt.algorithms`.
    Algorithm,
    /// No configured key verifies the signature.
    Signature,
    /// `exp` in the past (beyond the leeway).
    Expired,
    /// `nbf` in the future (beyond the leeway).
    NotYetValid,
    /// `iss` differs from `auth.jwt.issuer`.
    Issuer,
    /// `aud` does not contain an accepted audience.
    Audience,
    /// `exp`, `iss` or `aud` absent.
    MissingClaim,
    /// The tenant claim is absent or not a usable name.
    Tenant,
}

impl JwtError {
    /// Metric / body reason.
    pub fn reason(self) -> &'static str {
        match self {
            JwtError::Malformed => "jwt_malformed",
            JwtError::Algorithm => "jwt_algorithm",
            JwtError::Signature => "jwt_signature",
            JwtError::Expired => "jwt_expired",
            JwtError::NotYetValid => "jwt_not_yet_valid",
            JwtError::Issuer => "jwt_issuer",
            JwtError::Audience => "jwt_audience",
            JwtError::MissingClaim => "jwt_missing_claim",
            JwtError::Tenant => "jwt_tenant",
        }
    }
}

/// Whether a bearer credential has the shape of a JWS compact token (3 base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for p in token.split('.') {
        parts += 1;
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3 && !token.starts_with('.')
}

fn header_alg(token: &str) -> Result<String, JwtError> {
    let head = token.split('.').next().ok_or(JwtError::Malformed)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)?;
    v.get("alg")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(JwtError::Algorithm)
}

fn map_error(e: &jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature => JwtError::Signature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidAudience => JwtError::Audience,
        ErrorKind::MissingRequiredClaim(_) => JwtError::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::Algorithm,
        _ => JwtError::Malformed,
    }
}

fn tenant_of(v: Option<&Value>) -> Result<String, JwtError> {
    let t = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(JwtError::Tenant),
    };
    let ok = !t.is_empty()
        && t.len() <= MAX_TENANT_BYTES
        && t.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(t)
    } else {
        Err(JwtError::Tenant)
    }
}

/// The route labels a routes claim names; anything else is dropped (the token then does
/// not grant it).
fn routes_of(v: Option<&Value>, http_routes: &[HttpRouteName]) -> Vec<RouteName> {
    let known = |s: &str| RouteName::resolve(s, http_routes);
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter_map(known)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().filter_map(known).collect(),
        _ => Vec::new(),
    }
}

impl JwtSettings {
    /// Verifies `token` (signature first, then the claims).
    pub fn verify(&self, token: &str) -> Result<JwtIdentity, JwtError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Self::verify`]; `now` (Unix seconds) is used for tokens found in the cache.
    fn verify_at(&self, token: &str, now: u64) -> Result<JwtIdentity, JwtError> {
        if token.len() > MAX_TOKEN_BYTES || !looks_like_jwt(token) {
            return Err(JwtError::Malformed);
        }
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let hit = self
            .verified
            .lock()
            .map(|m| m.get(&digest).cloned())
            .unwrap_or(None);
        if let Some(v) = hit {
            // Same rules as jsonwebtoken's: expired when exp < now - leeway, immature
            // when nbf > now + leeway.
            let leeway = self.leeway.as_secs();
            if v.exp < now.saturating_sub(leeway) {
                return Err(JwtError::Expired);
            }
            if v.nbf.is_some_and(|nbf| nbf > now + leeway) {
                return Err(JwtError::NotYetValid);
            }
            return Ok(v.id);
        }
        let id = self.verify_signed(token)?;
        if let Some(exp) = id.1 {
            if let Ok(mut m) = self.verified.lock() {
                if m.len() >= VERIFIED_CACHE_ENTRIES {
                    m.clear();
                }
                m.insert(
                    digest,
                    Verified {
                        id: id.0.clone(),
                        exp,
                        nbf: id.2,
                    },
                );
            }
        }
        Ok(id.0)
    }

    /// Full verification: (identity, exp, nbf).
    fn verify_signed(
        &self,
        token: &str,
    ) -> Result<(JwtIdentity, Option<u64>, Option<u64>), JwtError> {
        let alg = header_alg(token)?;
        let alg = Algorithm::from_str(&alg)
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or(JwtError::Algorithm)?;
        for k in self.keys.iter().filter(|k| k.algorithms.contains(&alg)) {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
                token,
                &k.key,
                &k.validation,
            ) {
                Ok(data) => {
                    let tenant = tenant_of(data.claims.get(&self.tenant_claim))?;
                    let routes = self
                        .routes_claim
                        .as_ref()
                        .and_then(|c| data.claims.get(c))
                        .map(|v| routes_of(Some(v), &self.http_routes));
                    let exp = data.claims.get("exp").and_then(Value::as_u64);
                    let nbf = data.claims.get("nbf").and_then(Value::as_u64);
                    return Ok((JwtIdentity { tenant, routes }, exp, nbf));
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(map_error(&e)),
            }
        }
        Err(JwtError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use jsonwebtoken::AlgorithmFamily;

    use crate::config::file::jwt::{
        default_algorithms, JwtFile, OneOrMany, DEFAULT_JWT_LEEWAY, DEFAULT_TENANT_CLAIM,
    };
    use crate::config::jwt::{pem_blocks, settings};
    use crate::config::runtime::route_label::RouteLabel;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz.")); // alg none has an empty signature
        assert!(!looks_like_jwt("plain-api-key"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a+b.c.d"));
    }

    #[test]
    fn header_alg_and_none() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#));
        assert_eq!(header_alg(&none).as_deref(), Ok("none"));
        let bad = format!("{}.{}.", b64("not json"), b64("{}"));
        assert_eq!(header_alg(&bad), Err(JwtError::Malformed));
        let noalg = format!("{}.{}.", b64("{}"), b64("{}"));
        assert_eq!(header_alg(&noalg), Err(JwtError::Algorithm));
    }

    #[test]
    fn tenants_and_routes() {
        assert_eq!(tenant_of(Some(&Value::from("acme"))), Ok("acme".into()));
        assert_eq!(tenant_of(Some(&Value::from(42))), Ok("42".into()));
        assert_eq!(tenant_of(Some(&Value::from("a b"))), Err(JwtError::Tenant));
        assert_eq!(tenant_of(Some(&Value::from(""))), Err(JwtError::Tenant));
        assert_eq!(tenant_of(None), Err(JwtError::Tenant));
        let names = |v: Vec<RouteName>| -> Vec<String> {
            v.iter().map(|r| r.as_str().to_string()).collect()
        };
        let v = serde_json::json!(["messages", "nope", "session"]);
        assert_eq!(
            routes_of(Some(&v), &[]),
            [
                RouteName::Api(RouteLabel::Messages),
                RouteName::Api(RouteLabel::Session)
            ]
        );
        assert_eq!(
            names(routes_of(Some(&Value::from("websocket health")), &[])),
            ["websocket", "health"]
        );
        // The name of an http route is a label only when the config has that route.
        let v = serde_json::json!(["docs", "session", "ui"]);
        let docs = HttpRouteName::new("docs");
        assert_eq!(
            routes_of(Some(&v), std::slice::from_ref(&docs)),
            [RouteName::Http(docs), RouteName::Api(RouteLabel::Session)]
        );
        assert_eq!(names(routes_of(Some(&v), &[])), ["session"]);
    }

    #[test]
    fn pem_blocks_split() {
        let t = "junk\n-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n\
                 -----BEGIN RSA PUBLIC KEY-----\nBBB\n-----END RSA PUBLIC KEY-----\n";
        let b = pem_blocks(t);
        assert_eq!(b.len(), 2);
        assert!(b[0].ends_with("-----END PUBLIC KEY-----"));
        assert!(b[1].starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    }

    // Test-only key pairs (generated with openssl for these tests; never used elsewhere).
    const ES_PRIV: &str = include_str!("../testdata/jwt-test-es256-private.pem");
    const ES_PUB: &str = include_str!("../testdata/jwt-test-es256-public.pem");
    const RS_PRIV: &str = include_str!("../testdata/jwt-test-rs256-private.pem");
    const RS_PUB: &str = include_str!("../testdata/jwt-test-rs256-public.pem");

    fn jwt_file(dir: &std::path::Path, pem: &str) -> JwtFile {
        let keys = dir.join("keys.pem");
        std::fs::write(&keys, pem).expect("write keys");
        JwtFile {
            issuer: "https://idp".into(),
            audience: OneOrMany::Many(vec!["edge".into()]),
            keys_file: keys,
            leeway: Duration::from_secs(5),
            tenant_claim: "org".into(),
            routes_claim: Some("routes".into()),
            algorithms: default_algorithms(),
        }
    }

    fn sign(alg: Algorithm, pem: &str, claims: &Value) -> String {
        let key = match alg.family() {
            AlgorithmFamily::Ec => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .expect("encoding key");
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key).expect("sign")
    }

    #[test]
    fn verifies_both_families_and_refuses_bad_claims() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(
            "f",
            &jwt_file(dir.path(), &format!("{ES_PUB}{RS_PUB}")),
            &[],
        )
        .expect("ok");
        assert_eq!(s.keys.len(), 2);
        assert_eq!(s.keys[0].algorithms, vec![Algorithm::ES256]);
        assert_eq!(s.keys[1].algorithms, vec![Algorithm::RS256]);
        let now = jsonwebtoken::get_current_timestamp();
        let good = serde_json::json!({"iss": "https://idp", "aud": "edge", "exp": now + 60,
            "sub": "u1", "org": "acme", "routes": ["messages"]});
        let id = s
            .verify(&sign(Algorithm::ES256, ES_PRIV, &good))
            .expect("ES256");
        assert_eq!(id.tenant, "acme");
        assert_eq!(id.routes, Some(vec![RouteName::Api(RouteLabel::Messages)]));
        let id = s
            .verify(&sign(Algorithm::RS256, RS_PRIV, &good))
            .expect("RS256");
        assert_eq!(id.tenant, "acme");
        let bad = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            s.verify(&sign(Algorithm::ES256, ES_PRIV, &c))
        };
        assert_eq!(bad("exp", Value::from(now - 30)), Err(JwtError::Expired));
        assert!(
            bad("exp", Value::from(now - 2)).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            bad("nbf", Value::from(now + 60)),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            bad("nbf", Value::from("9999999999")),
            Err(JwtError::Malformed)
        );
        assert_eq!(bad("aud", Value::from("other")), Err(JwtError::Audience));
        assert_eq!(bad("iss", Value::from("https://x")), Err(JwtError::Issuer));
        assert_eq!(bad("org", Value::Null), Err(JwtError::Tenant));
        let mut no_aud = good.clone();
        if let Some(o) = no_aud.as_object_mut() {
            o.remove("aud");
        }
        assert_eq!(
            s.verify(&sign(Algorithm::ES256, ES_PRIV, &no_aud)),
            Err(JwtError::MissingClaim)
        );
        // An RSA-signed token relabelled ES256 and vice versa: signature failure.
        let rs = sign(Algorithm::RS256, RS_PRIV, &good);
        let es = sign(Algorithm::ES256, ES_PRIV, &good);
        let swap = |a: &str, b: &str| {
            let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
            format!("{}.{}.{}", pa[0], pa[1], pb[2])
        };
        assert_eq!(s.verify(&swap(&es, &rs)), Err(JwtError::Signature));
        assert_eq!(s.verify(&swap(&rs, &es)), Err(JwtError::Signature));
        // HS256 keyed with the public key (algorithm confusion).
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &good,
            &jsonwebtoken::EncodingKey::from_secret(RS_PUB.as_bytes()),
        )
        .expect("hs");
        assert_eq!(s.verify(&hs), Err(JwtError::Algorithm));
        assert_eq!(s.verify("not.a.jwt"), Err(JwtError::Malformed));
    }

    #[test]
    fn verified_tokens_are_cached_but_time_claims_rechecked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(
            "f",
            &jwt_file(dir.path(), &format!("{ES_PUB}{RS_PUB}")),
            &[],
        )
        .expect("ok");
        let now = jsonwebtoken::get_current_timestamp();
        let c = serde_json::json!({"iss": "https://idp", "aud": "edge", "exp": now + 60,
            "nbf": now - 10, "org": "acme"});
        let t = sign(Algorithm::ES256, ES_PRIV, &c);
        assert_eq!(s.verify_at(&t, now).expect("first").tenant, "acme");
        assert_eq!(s.verified.lock().expect("lock").len(), 1);
        // Cached: still re-checks exp / nbf against the clock (leeway 5 s).
        assert!(s.verify_at(&t, now + 64).is_ok());
        assert_eq!(s.verify_at(&t, now + 66), Err(JwtError::Expired));
        assert_eq!(s.verify_at(&t, now - 20), Err(JwtError::NotYetValid));
        // Failures are not cached; a tampered token misses the cache.
        let mut bad = t.clone();
        bad.push('A');
        assert!(s.verify(&bad).is_err());
        assert_eq!(s.verified.lock().expect("lock").len(), 1);
        // A reload builds new settings: an empty cache.
        let s2 = settings(
            "f",
            &jwt_file(dir.path(), &format!("{ES_PUB}{RS_PUB}")),
            &[],
        )
        .expect("ok");
        assert!(s2.verified.lock().expect("lock").is_empty());
    }

    #[test]
    fn private_keys_and_unmatched_algorithms_are_config_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = settings("f", &jwt_file(dir.path(), ES_PRIV), &[]).expect_err("private key");
        assert_eq!(e.key, "auth.jwt.keys_file");
        // ES256 and RS256 accepted but only an EC key: RS256 has no key.
        let e = settings("f", &jwt_file(dir.path(), ES_PUB), &[]).expect_err("no RSA key");
        assert_eq!(e.key, "auth.jwt.algorithms[1]");
        let mut j = jwt_file(dir.path(), ES_PUB);
        j.algorithms = vec!["ES256".into()];
        assert!(settings("f", &j, &[]).is_ok());
    }

    #[test]
    fn config_errors_name_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("k.pem");
        std::fs::write(&keys, "no pem here").expect("write");
        let mut j = JwtFile {
            issuer: "https://idp".into(),
            audience: OneOrMany::One("hotplex".into()),
            keys_file: keys.clone(),
            leeway: DEFAULT_JWT_LEEWAY,
            tenant_claim: DEFAULT_TENANT_CLAIM.into(),
            routes_claim: None,
            algorithms: default_algorithms(),
        };
        assert_eq!(
            settings("f", &j, &[]).expect_err("no keys").key,
            "auth.jwt.keys_file"
        );
        j.algorithms = vec!["HS256".into()];
        assert_eq!(
            settings("f", &j, &[]).expect_err("hmac").key,
            "auth.jwt.algorithms[0]"
        );
        j.algorithms = default_algorithms();
        j.leeway = Duration::from_secs(3600);
        assert_eq!(
            settings("f", &j, &[]).expect_err("leeway").key,
            "auth.jwt.leeway"
        );
        j.leeway = DEFAULT_JWT_LEEWAY;
        j.audience = OneOrMany::Many(vec![]);
        assert_eq!(
            settings("f", &j, &[]).expect_err("aud").key,
            "auth.jwt.audience"
        );
        j.audience = OneOrMany::One("hotplex".into());
        j.keys_file = dir.path().join("missing.pem");
        let e = settings("f", &j, &[]).expect_err("missing");
        assert_eq!(e.key, "auth.jwt.keys_file");
        assert!(e.reason.contains("cannot read"), "{}", e.reason);
    }
}
