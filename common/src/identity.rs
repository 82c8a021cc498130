//! Worker identity proof: how a worker shows the proxy that it holds the shared worker
//! secret and is the node it claims to be, on plain HTTP.
//!
//! Every health (and discovery identity) probe of a proxy with `worker_auth.key` carries a
//! fresh random challenge in [`X_HOTPLEX_CHALLENGE`]. A worker with `proxy_keys` answers
//! with [`X_HOTPLEX_IDENTITY`]: one hex HMAC-SHA256 per configured key (comma-separated, so
//! key rotation works), keyed by the key, over
//! `"hotplex-identity-v1" 0x00 challenge 0x00 node_id 0x00 body` where `body` is the exact
//! response body (the reported state: status, sessions, capacity). The proxy recomputes it
//! with its key and the node id it expects at that address: a fake without the secret, a
//! replayed answer (new challenge every probe) or an altered body fails.
//!
//! The proof never carries the key itself; probes never carry `X-Hotplex-Proxy-Auth`.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Request header of a health probe: the proxy's fresh challenge (hex).
pub const X_HOTPLEX_CHALLENGE: &str = "x-hotplex-challenge";
/// Response header of a worker's health answer: its proof(s) (hex, comma-separated).
pub const X_HOTPLEX_IDENTITY: &str = "x-hotplex-identity";
/// Bytes of randomness in a challenge (hex-encoded on the wire: twice as many characters).
pub const CHALLENGE_BYTES: usize = 32;
/// Shortest challenge a worker answers (hex characters).
pub const MIN_CHALLENGE_LEN: usize = 32;
/// Longest challenge a worker answers (hex characters).
pub const MAX_CHALLENGE_LEN: usize = 128;
/// Most proofs a worker sends (one per key) and a proxy reads.
pub const MAX_PROOFS: usize = 8;
/// Domain separation of the MAC input.
const CONTEXT: &[u8] = b"hotplex-identity-v1";

/// A fresh random challenge (hex).
pub fn new_challenge() -> String {
    let mut b = [0u8; CHALLENGE_BYTES];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A challenge a worker accepts: lower- or upper-case hex, 32-128 characters.
pub fn valid_challenge(c: &str) -> bool {
    (MIN_CHALLENGE_LEN..=MAX_CHALLENGE_LEN).contains(&c.len())
        && c.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mac(key: &[u8], challenge: &str, node_id: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in [CONTEXT, challenge.as_bytes(), node_id.as_bytes()] {
        m.update(part);
        m.update(&[0]);
    }
    m.update(body);
    m
}

/// The proof of one key (hex).
pub fn proof(key: &[u8], challenge: &str, node_id: &str, body: &[u8]) -> String {
    hex::encode(mac(key, challenge, node_id, body).finalize().into_bytes())
}

/// The [`X_HOTPLEX_IDENTITY`] value for `keys` (at most [`MAX_PROOFS`] used).
pub fn proofs<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
    challenge: &str,
    node_id: &str,
    body: &[u8],
) -> String {
    keys.into_iter()
        .take(MAX_PROOFS)
        .map(|k| proof(k, challenge, node_id, body))
        .collect::<Vec<_>>()
        .join(",")
}

/// True when one of the proofs in `header` (an [`X_HOTPLEX_IDENTITY`] value) was made with
/// `key` for this challenge, node id and body. Constant time per proof.
pub fn verify(key: &[u8], challenge: &str, node_id: &str, body: &[u8], header: &str) -> bool {
    header
        .split(',')
        .take(MAX_PROOFS)
        .filter_map(|p| hex::decode(p.trim()).ok())
        .any(|p| mac(key, challenge, node_id, body).verify_slice(&p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_key_challenge_node_and_body() {
        let c = new_challenge();
        assert!(valid_challenge(&c));
        assert_ne!(c, new_challenge(), "fresh every time");
        let body = br#"{"status":"ready","node_id":"w1","sessions_active":0}"#;
        let h = proofs(
            [&b"old-key-0123456789"[..], b"new-key-0123456789"],
            &c,
            "w1",
            body,
        );
        assert!(
            verify(b"new-key-0123456789", &c, "w1", body, &h),
            "rotation"
        );
        assert!(verify(b"old-key-0123456789", &c, "w1", body, &h));
        assert!(!verify(b"other-key-012345678", &c, "w1", body, &h), "key");
        assert!(
            !verify(b"new-key-0123456789", &c, "w2", body, &h),
            "node id"
        );
        let other = new_challenge();
        assert!(
            !verify(b"new-key-0123456789", &other, "w1", body, &h),
            "replay"
        );
        let altered = br#"{"status":"ready","node_id":"w1","sessions_active":9}"#;
        assert!(
            !verify(b"new-key-0123456789", &c, "w1", altered, &h),
            "body"
        );
        assert!(!verify(b"new-key-0123456789", &c, "w1", body, ""));
        assert!(!verify(b"new-key-0123456789", &c, "w1", body, "zz,!!"));
        // Pinned: an independent implementation must agree (python3 -c 'import hmac,
        // hashlib; print(hmac.new(b"k", b"hotplex-identity-v1\0c\0n\0b", hashlib.sha256)
        // .hexdigest())').
        assert_eq!(
            proof(b"k", "c", "n", b"b"),
            "e93c944bc457460d1079b184dff46a8f5bc6665ec86523741896ebbbbcf0a542"
        );
    }

    #[test]
    fn challenges_are_bounded_hex() {
        assert!(!valid_challenge("short"));
        assert!(!valid_challenge(&"g".repeat(64)));
        assert!(!valid_challenge(&"a".repeat(MAX_CHALLENGE_LEN + 1)));
        assert!(valid_challenge(&"A".repeat(MIN_CHALLENGE_LEN)));
    }
}
