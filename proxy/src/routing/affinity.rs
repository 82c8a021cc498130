//! Signed, stateless affinity: session ids and cookies that name their worker.
//!
//! - Session id minted for a new session: `<worker-id>.<random>.<mac>`, where `random` is
//!   16 base62 characters and `mac` the first 16 characters of
//!   `base64url(HMAC-SHA256(secret, "<worker-id>.<random>"))`.
//! - Affinity cookie: `<worker-id>.<mac>` with `mac` over `"<worker-id>"`. (Worker ids never
//!   contain `.`, so the two signed messages can not be confused.)
//!
//! The first configured secret signs; every secret verifies (rotation: add the new secret
//! first, keep the old one until its ids are gone). Anything that looks routable but does
//! not verify is a *foreign* key and is hashed like any client-chosen id: it is never
//! trusted to pick a worker. Nothing is stored: proxies sharing only the config agree,
//! restarts and reloads keep every session where it is.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use hotplex_common::session_id::random_base62;
use hotplex_common::SessionId;

use crate::config::runtime::valid_worker_id;

/// Random characters in a minted id.
pub const RANDOM_LEN: usize = 16;
/// MAC characters kept (96 bits).
pub const MAC_LEN: usize = 16;

/// What a verified token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A proxy-minted session id.
    Session,
    /// An affinity cookie.
    Cookie,
}

/// A verified token: the worker it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned<'a> {
    pub worker: &'a str,
    pub kind: TokenKind,
}

/// Signs and verifies tokens. Each secret's HMAC key schedule is computed once (`keyed`),
/// so a verification costs two SHA-256 blocks and no allocation. Cookie values depend only
/// on the signing secret and the worker id, so each is computed once and cached.
pub struct Signer {
    secrets: Vec<Vec<u8>>,
    keyed: Vec<Hmac<Sha256>>,
    /// Affinity-cookie value by worker id (at most [`COOKIE_CACHE_MAX`] entries).
    cookies: RwLock<HashMap<String, Arc<str>>>,
}

/// Cached cookie values; past this (worker churn through DNS discovery) the cache restarts.
pub const COOKIE_CACHE_MAX: usize = 1024;

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} secrets)", self.secrets.len())
    }
}

/// The HMAC of `secret` before any message (HMAC accepts keys of any length).
fn keyed(secret: &[u8]) -> Option<Hmac<Sha256>> {
    Hmac::<Sha256>::new_from_slice(secret).ok()
}

/// The first [`MAC_LEN`] characters of `base64url(HMAC-SHA256(key, msg))`: the base64 of
/// the first 12 MAC bytes (12 bytes are exactly 16 characters), encoded on the stack.
fn mac(key: Option<&Hmac<Sha256>>, msg: &[u8]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    let Some(key) = key else {
        return out;
    };
    let mut m = key.clone();
    m.update(msg);
    let full = m.finalize().into_bytes();
    // 12 bytes always encode to 16 characters without padding.
    let _ = URL_SAFE_NO_PAD.encode_slice(&full[..MAC_LEN / 4 * 3], &mut out);
    out
}

fn mac_str(key: Option<&Hmac<Sha256>>, msg: &[u8]) -> String {
    String::from_utf8_lossy(&mac(key, msg)).into_owned()
}

impl Signer {
    /// `secrets` must be non-empty (guaranteed by config validation).
    pub fn new(secrets: Vec<Vec<u8>>) -> Signer {
        let keyed = secrets.iter().filter_map(|s| keyed(s)).collect();
        Signer {
            secrets,
            keyed,
            cookies: RwLock::new(HashMap::new()),
        }
    }

    fn signing(&self) -> Option<&Hmac<Sha256>> {
        self.keyed.first()
    }

    /// Mints a new pinned session id for `worker`.
    pub fn mint_session(&self, worker: &str) -> SessionId {
        let msg = format!("{worker}.{}", random_base62(RANDOM_LEN));
        let m = mac_str(self.signing(), msg.as_bytes());
        // Only id-alphabet characters: [a-z0-9-], base62, base64url.
        SessionId::parse(&format!("{msg}.{m}")).unwrap_or_else(|_| SessionId::generate(worker))
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
        let v: Arc<str> = format!("{worker}.{}", mac_str(self.signing(), worker.as_bytes())).into();
        let mut cache = self.cookies.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= COOKIE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(worker.to_string(), v.clone());
        v
    }

    fn verify_mac(&self, msg: &[u8], given: &[u8]) -> bool {
        given.len() == MAC_LEN
            && self
                .keyed
                .iter()
                .any(|k| bool::from(mac(Some(k), msg).as_slice().ct_eq(given)))
    }

    /// Verifies a key: `Some` only for a token signed with one of our secrets.
    pub fn verify<'a>(&self, key: &'a str) -> Option<Pinned<'a>> {
        let mut parts = key.split('.');
        let (a, b, c, rest) = (parts.next()?, parts.next()?, parts.next(), parts.next());
        if rest.is_some() || !valid_worker_id(a) {
            return None;
        }
        match c {
            Some(m) => {
                if b.len() != RANDOM_LEN || !b.bytes().all(|x| x.is_ascii_alphanumeric()) {
                    return None;
                }
                let msg_len = a.len() + 1 + b.len();
                self.verify_mac(&key.as_bytes()[..msg_len], m.as_bytes())
                    .then_some(Pinned {
                        worker: a,
                        kind: TokenKind::Session,
                    })
            }
            None => self
                .verify_mac(a.as_bytes(), b.as_bytes())
                .then_some(Pinned {
                    worker: a,
                    kind: TokenKind::Cookie,
                }),
        }
    }
}

/// The `Set-Cookie` value for an affinity cookie.
pub fn set_cookie_header(value: &str) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
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
    fn minted_ids_verify_and_name_the_worker() {
        let s = signer(&["0123456789abcdef-secret"]);
        let id = s.mint_session("w-2");
        let parts: Vec<&str> = id.as_str().split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].len(), RANDOM_LEN);
        assert_eq!(parts[2].len(), MAC_LEN);
        let p = s.verify(id.as_str()).expect("verifies");
        assert_eq!(p.worker, "w-2");
        assert_eq!(p.kind, TokenKind::Session);
        assert_ne!(s.mint_session("w-2"), id);
    }

    #[test]
    fn macs_are_stable_across_releases() {
        // Pinned value (computed independently: `printf %s w1 | openssl dgst -sha256 -hmac
        // 0123456789abcdef-secret -binary | base64 | tr '+/' '-_' | cut -c1-16`): ids and
        // cookies minted by any release must keep verifying.
        let s = signer(&["0123456789abcdef-secret"]);
        assert_eq!(&*s.cookie_value("w1"), "w1.4ooCnc-MdHaatyqH");
        // Cached: the same value again.
        assert_eq!(&*s.cookie_value("w1"), "w1.4ooCnc-MdHaatyqH");
        assert!(s.verify("w1.4ooCnc-MdHaatyqH").is_some());
        assert!(s.verify("w1.4ooCnc-MdHaatyqh").is_none());
    }

    #[test]
    fn cookies_verify() {
        let s = signer(&["0123456789abcdef-secret"]);
        let c = s.cookie_value("w1");
        assert_eq!(
            s.verify(&c),
            Some(Pinned {
                worker: "w1",
                kind: TokenKind::Cookie
            })
        );
        assert!(set_cookie_header(&c).contains("HttpOnly"));
    }

    #[test]
    fn forgeries_and_foreign_keys_are_rejected() {
        let s = signer(&["0123456789abcdef-secret"]);
        let id = s.mint_session("w1");
        let mut parts: Vec<String> = id.as_str().split('.').map(String::from).collect();
        // Re-target to another worker with the same mac.
        parts[0] = "w2".into();
        assert_eq!(s.verify(&parts.join(".")), None);
        // Other secret.
        let other = signer(&["another-secret-0123456"]);
        assert_eq!(s.verify(other.mint_session("w1").as_str()), None);
        assert_eq!(s.verify(&other.cookie_value("w1")), None);
        // Worker-minted and client-chosen ids.
        for k in [
            "w1.AAAAAAAAAAAAAAAAAAAAAA",
            "my-session",
            "w1.x.y",
            "W1.aaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbb",
            "a.b.c.d",
            "",
        ] {
            assert_eq!(s.verify(k), None, "{k}");
        }
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = signer(&["old-secret-0123456789"]);
        let rotated = signer(&["new-secret-0123456789", "old-secret-0123456789"]);
        let old_id = old.mint_session("w3");
        assert!(rotated.verify(old_id.as_str()).is_some());
        let new_id = rotated.mint_session("w3");
        assert!(old.verify(new_id.as_str()).is_none());
        let dropped = signer(&["new-secret-0123456789"]);
        assert!(dropped.verify(old_id.as_str()).is_none());
        assert!(dropped.verify(new_id.as_str()).is_some());
    }
}
