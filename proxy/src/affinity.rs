//! Signed, stateless affinity: session ids and cookies that name their worker.
//!
//! - Session id minted for a new session (version 2, the shape is
//!   [`hotplex_common::SignedShape`]): `<worker-id>.<random>.v2-<kid>[-<expiry>].<mac>`,
//!   where `random` is 16 base62 characters, `kid` names the signing secret (6 hex
//!   characters of `SHA-256("hotplex-kid" || secret)`), `expiry` is the optional absolute
//!   end of life in unix seconds (hex; `routing.session_lifetime`), and `mac` is
//!   `base64url(HMAC-SHA256(secret, "<tenant>\n<worker-id>.<random>.<tag>"))`, 128 bits.
//!   The MAC covers the tenant (API-key name or JWT tenant claim; empty when anonymous):
//!   the same id presented by another tenant does not verify.
//! - Affinity cookie: `<worker-id>.<mac>` with a 16-character `mac` over `"<worker-id>"`.
//!   It is a placement hint for keyless requests, not a session: it opens nothing.
//!
//! The first configured secret signs; every secret verifies, chosen by the id's key id
//! (rotation: add the new secret first, keep the old one until its ids are gone; removing a
//! secret revokes every id it signed). An id of the signed shape that does not verify
//! (other tenant, forged, expired, unknown key id) is refused with the same 404 as an
//! unknown session. Nothing is stored: proxies sharing only the config agree, restarts and
//! reloads keep every session where it is.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use hotplex_common::session_id::{
    random_base62, signed_shape, valid_worker_id, SIGNED_KID_LEN, SIGNED_MAC_LEN,
    SIGNED_RANDOM_LEN, SIGNED_VERSION,
};
use hotplex_common::SessionId;

/// Random characters in a minted id.
pub const RANDOM_LEN: usize = SIGNED_RANDOM_LEN;
/// MAC characters of a cookie (96 bits).
pub const MAC_LEN: usize = 16;
/// MAC bytes of a session id (128 bits; [`SIGNED_MAC_LEN`] base64url characters).
const SESSION_MAC_BYTES: usize = 16;

/// A verified affinity cookie: the worker it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned<'a> {
    pub worker: &'a str,
}

/// Why a signed-shaped session id was refused (all answered alike: 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No configured secret has the id's key id (rotated out, or never ours).
    UnknownKey,
    /// The MAC does not match: another tenant's id, or a forgery.
    BadMac,
    /// Past its absolute lifetime.
    Expired,
}

impl Refused {
    /// Label for logs and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::UnknownKey => "unknown_key",
            Refused::BadMac => "bad_mac",
            Refused::Expired => "expired",
        }
    }
}

/// One secret: its key id and its HMAC key schedule (computed once).
struct Key {
    kid: String,
    keyed: Hmac<Sha256>,
}

/// Signs and verifies tokens. A verification costs two SHA-256 blocks per message block
/// and no allocation. Cookie values depend only on the signing secret and the worker id,
/// so each is computed once and cached.
pub struct Signer {
    keys: Vec<Key>,
    /// Absolute lifetime of minted session ids (`None`: no expiry).
    lifetime: Option<Duration>,
    /// Affinity-cookie value by worker id (at most [`COOKIE_CACHE_MAX`] entries).
    cookies: RwLock<HashMap<String, Arc<str>>>,
}

/// Cached cookie values; past this (worker churn through DNS discovery) the cache restarts.
pub const COOKIE_CACHE_MAX: usize = 1024;

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} secrets)", self.keys.len())
    }
}

/// The key id of a secret: 6 hex characters of `SHA-256("hotplex-kid" || secret)`.
pub fn key_id(secret: &[u8]) -> String {
    let d = Sha256::new()
        .chain_update(b"hotplex-kid")
        .chain_update(secret)
        .finalize();
    hex::encode(&d[..SIGNED_KID_LEN / 2])
}

/// `base64url(HMAC-SHA256(key, parts...))`, truncated to `N` bytes of MAC, on the stack.
fn mac<const N: usize>(key: &Hmac<Sha256>, parts: &[&[u8]], out: &mut [u8]) -> usize {
    let mut m = key.clone();
    for p in parts {
        m.update(p);
    }
    let full = m.finalize().into_bytes();
    URL_SAFE_NO_PAD
        .encode_slice(&full[..N], out)
        .unwrap_or_default()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Signer {
    /// `secrets` must be non-empty (guaranteed by config validation).
    pub fn new(secrets: Vec<Vec<u8>>) -> Signer {
        Signer::with_lifetime(secrets, None)
    }

    /// A signer whose minted ids expire `lifetime` after minting.
    pub fn with_lifetime(secrets: Vec<Vec<u8>>, lifetime: Option<Duration>) -> Signer {
        let keys = secrets
            .iter()
            .filter_map(|s| {
                Some(Key {
                    kid: key_id(s),
                    keyed: Hmac::<Sha256>::new_from_slice(s).ok()?,
                })
            })
            .collect();
        Signer {
            keys,
            lifetime,
            cookies: RwLock::new(HashMap::new()),
        }
    }

    fn signing(&self) -> Option<&Key> {
        self.keys.first()
    }

    /// Mints a new session id for `worker`, owned by `tenant` (`""`: anonymous).
    pub fn mint_session(&self, worker: &str, tenant: &str) -> SessionId {
        let Some(key) = self.signing() else {
            return SessionId::generate(worker);
        };
        let mut signed = [
            worker,
            ".",
            &random_base62(RANDOM_LEN),
            ".",
            SIGNED_VERSION,
            "-",
        ]
        .concat();
        signed.push_str(&key.kid);
        if let Some(life) = self.lifetime {
            signed.push('-');
            signed.push_str(&format!("{:x}", now_secs().saturating_add(life.as_secs())));
        }
        let mut m = [0u8; SIGNED_MAC_LEN + 2];
        let n = mac::<SESSION_MAC_BYTES>(
            &key.keyed,
            &[tenant.as_bytes(), b"\n", signed.as_bytes()],
            &mut m,
        );
        signed.push('.');
        signed.push_str(std::str::from_utf8(&m[..n]).unwrap_or_default());
        // Only id-alphabet characters: [a-z0-9-], base62, hex, base64url.
        SessionId::parse(&signed).unwrap_or_else(|_| SessionId::generate(worker))
    }

    /// Verifies a signed-shaped session id for `tenant`: `Ok(worker)` only for an id this
    /// deployment minted for that tenant, still within its lifetime. `None`: `id` is not of
    /// the signed shape (a client-chosen id).
    pub fn verify_session<'a>(
        &self,
        id: &'a str,
        tenant: &str,
    ) -> Option<Result<&'a str, Refused>> {
        let shape = signed_shape(id)?;
        let Some(key) = self.keys.iter().find(|k| k.kid == shape.kid) else {
            return Some(Err(Refused::UnknownKey));
        };
        let mut m = [0u8; SIGNED_MAC_LEN + 2];
        let n = mac::<SESSION_MAC_BYTES>(
            &key.keyed,
            &[tenant.as_bytes(), b"\n", shape.signed.as_bytes()],
            &mut m,
        );
        if !bool::from(m[..n].ct_eq(shape.mac.as_bytes())) {
            return Some(Err(Refused::BadMac));
        }
        if shape.expires.is_some_and(|e| e <= now_secs()) {
            return Some(Err(Refused::Expired));
        }
        Some(Ok(shape.worker))
    }

    /// The affinity-cookie value for `worker` (cached: an HMAC only on first use).
    pub fn cookie_value(&self, worker: &str) -> Arc<str> {
        let cached = self
            .cookies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
            .cloned();
        if let Some(v) = cached {
            return v;
        }
        let mut m = [0u8; MAC_LEN + 4];
        let n = self.signing().map_or(0, |k| {
            mac::<{ MAC_LEN / 4 * 3 }>(&k.keyed, &[worker.as_bytes()], &mut m)
        });
        let v: Arc<str> = [
            worker,
            ".",
            std::str::from_utf8(&m[..n]).unwrap_or_default(),
        ]
        .concat()
        .into();
        let mut cache = self.cookies.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= COOKIE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(worker.to_string(), v.clone());
        v
    }

    /// Verifies an affinity cookie: `Some` only for a cookie signed with one of our secrets.
    pub fn verify_cookie<'a>(&self, value: &'a str) -> Option<Pinned<'a>> {
        let (worker, given) = value.split_once('.')?;
        if !valid_worker_id(worker) || given.len() != MAC_LEN {
            return None;
        }
        self.keys
            .iter()
            .any(|k| {
                let mut m = [0u8; MAC_LEN + 4];
                let n = mac::<{ MAC_LEN / 4 * 3 }>(&k.keyed, &[worker.as_bytes()], &mut m);
                bool::from(m[..n].ct_eq(given.as_bytes()))
            })
            .then_some(Pinned { worker })
    }
}

/// The `Set-Cookie` value for an affinity cookie; `Secure` when served over TLS.
pub fn set_cookie_header(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax{secure}",
        hotplex_common::headers::AFFINITY_COOKIE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(s: &[&str]) -> Signer {
        Signer::new(s.iter().map(|x| x.as_bytes().to_vec()).collect())
    }

    #[test]
    fn minted_ids_verify_for_their_tenant_only() {
        let s = signer(&["0123456789abcdef-secret"]);
        let id = s.mint_session("w-2", "tenant-a");
        let shape = signed_shape(id.as_str()).expect("signed shape");
        assert_eq!(shape.worker, "w-2");
        assert_eq!(shape.random.len(), RANDOM_LEN);
        assert_eq!(shape.mac.len(), SIGNED_MAC_LEN);
        assert_eq!(shape.kid, key_id(b"0123456789abcdef-secret"));
        assert_eq!(shape.expires, None);
        assert_eq!(s.verify_session(id.as_str(), "tenant-a"), Some(Ok("w-2")));
        assert_eq!(
            s.verify_session(id.as_str(), "tenant-b"),
            Some(Err(Refused::BadMac))
        );
        assert_eq!(
            s.verify_session(id.as_str(), ""),
            Some(Err(Refused::BadMac))
        );
        assert_ne!(s.mint_session("w-2", "tenant-a"), id);
        // Anonymous ids verify only anonymously.
        let anon = s.mint_session("w1", "");
        assert_eq!(s.verify_session(anon.as_str(), ""), Some(Ok("w1")));
        assert_eq!(
            s.verify_session(anon.as_str(), "tenant-a"),
            Some(Err(Refused::BadMac))
        );
        // Client-chosen ids are not of the signed shape.
        assert_eq!(s.verify_session("demo-1", "tenant-a"), None);
    }

    #[test]
    fn session_ids_are_stable_across_releases() {
        // Minted independently by benches/scenario1.sh (openssl: kid = 6 hex of
        // sha256("hotplex-kid" || secret), mac = base64url of the first 16 bytes of
        // HMAC-SHA256(secret, "bench\n" + signed part)): ids minted by any release verify.
        let s = signer(&["bench-affinity-secret-0123456789"]);
        let id = "w2.179075b002a946ac.v2-108fac.22mOllQvjjI0e6lZotb73w";
        assert_eq!(s.verify_session(id, "bench"), Some(Ok("w2")));
        assert_eq!(s.verify_session(id, "other"), Some(Err(Refused::BadMac)));
    }

    #[test]
    fn retargeting_or_editing_any_part_breaks_the_mac() {
        let s = signer(&["0123456789abcdef-secret"]);
        let id = s.mint_session("w1", "t");
        let parts: Vec<&str> = id.as_str().split('.').collect();
        let edited = [
            format!("w2.{}.{}.{}", parts[1], parts[2], parts[3]),
            format!("w1.{}X.{}.{}", &parts[1][1..], parts[2], parts[3]),
            format!("w1.{}.{}-ffffffff.{}", parts[1], parts[2], parts[3]),
        ];
        for e in &edited {
            assert_eq!(s.verify_session(e, "t"), Some(Err(Refused::BadMac)), "{e}");
        }
    }

    #[test]
    fn lifetimes_expire() {
        let secrets = vec![b"0123456789abcdef-secret".to_vec()];
        let s = Signer::with_lifetime(secrets.clone(), Some(Duration::from_secs(3600)));
        let id = s.mint_session("w1", "t");
        let shape = signed_shape(id.as_str()).expect("shape");
        let exp = shape.expires.expect("an expiry");
        assert!(exp > now_secs() + 3500 && exp <= now_secs() + 3600);
        assert_eq!(s.verify_session(id.as_str(), "t"), Some(Ok("w1")));
        // An id whose lifetime is over (minted by a signer with a zero lifetime).
        let dead = Signer::with_lifetime(secrets, Some(Duration::ZERO)).mint_session("w1", "t");
        assert_eq!(
            s.verify_session(dead.as_str(), "t"),
            Some(Err(Refused::Expired))
        );
    }

    #[test]
    fn cookie_macs_are_stable_across_releases() {
        // Pinned value (computed independently: `printf %s w1 | openssl dgst -sha256 -hmac
        // 0123456789abcdef-secret -binary | base64 | tr '+/' '-_' | cut -c1-16`): cookies
        // set by any release must keep verifying.
        let s = signer(&["0123456789abcdef-secret"]);
        assert_eq!(&*s.cookie_value("w1"), "w1.4ooCnc-MdHaatyqH");
        // Cached: the same value again.
        assert_eq!(&*s.cookie_value("w1"), "w1.4ooCnc-MdHaatyqH");
        assert_eq!(
            s.verify_cookie("w1.4ooCnc-MdHaatyqH"),
            Some(Pinned { worker: "w1" })
        );
        assert!(s.verify_cookie("w1.4ooCnc-MdHaatyqh").is_none());
        assert!(set_cookie_header("v", false).contains("HttpOnly"));
        assert!(!set_cookie_header("v", false).contains("Secure"));
        assert!(set_cookie_header("v", true).ends_with("; Secure"));
    }

    #[test]
    fn forgeries_and_foreign_keys_are_rejected() {
        let s = signer(&["0123456789abcdef-secret"]);
        let other = signer(&["another-secret-0123456"]);
        assert_eq!(
            s.verify_session(other.mint_session("w1", "t").as_str(), "t"),
            Some(Err(Refused::UnknownKey))
        );
        assert_eq!(s.verify_cookie(&other.cookie_value("w1")), None);
        for k in [
            "w1.AAAAAAAAAAAAAAAAAAAAAA",
            "my-session",
            "w1.x.y",
            "W1.aaaaaaaaaaaaaaaa",
            "a.b.c.d",
            "",
        ] {
            assert_eq!(s.verify_cookie(k), None, "{k}");
            assert_eq!(s.verify_session(k, "t"), None, "{k}");
        }
    }

    #[test]
    fn rotation_first_signs_all_verify_removal_revokes() {
        let old = signer(&["old-secret-0123456789"]);
        let rotated = signer(&["new-secret-0123456789", "old-secret-0123456789"]);
        let old_id = old.mint_session("w3", "t");
        assert_eq!(rotated.verify_session(old_id.as_str(), "t"), Some(Ok("w3")));
        let new_id = rotated.mint_session("w3", "t");
        assert!(old.verify_session(new_id.as_str(), "t") != Some(Ok("w3")));
        let dropped = signer(&["new-secret-0123456789"]);
        assert_eq!(
            dropped.verify_session(old_id.as_str(), "t"),
            Some(Err(Refused::UnknownKey))
        );
        assert_eq!(dropped.verify_session(new_id.as_str(), "t"), Some(Ok("w3")));
    }
}
