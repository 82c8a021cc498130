//! Worker identity proof: how a worker shows the proxy that it holds the shared worker
//! secret and is the node it claims to be, at the address the proxy dialled.
//!
//! Every health (and discovery identity) probe of a proxy with `worker_auth.key` carries a
//! fresh random challenge in [`X_HOTPLEX_CHALLENGE`]. A worker with `proxy_keys` answers
//! with [`X_HOTPLEX_IDENTITY_ADDRESS`], the local address of the connection the probe came
//! in on (the address the client dialled, as the worker sees it, [`canonical`]), and
//! [`X_HOTPLEX_IDENTITY`]: one `v2=<hex>` HMAC-SHA256 per configured key (comma-separated,
//! so key rotation works), keyed by the key, over
//! `"hotplex-identity-v2" 0x00 challenge 0x00 node_id 0x00 address 0x00 body` where
//! `address` is the exact [`X_HOTPLEX_IDENTITY_ADDRESS`] value and `body` the exact
//! response body (the reported state: status, sessions, capacity). The proxy recomputes it
//! with its key and the node id it expects at that address, and checks that the address is
//! the one it dialled: a fake without the secret, a replayed answer (new challenge every
//! probe), an altered body, and an impostor relaying the challenge to the real worker (its
//! answer names the real worker's address) all fail.
//!
//! Format versions: v1 (`"hotplex-identity-v1"`, bare hex proofs, no address) is refused
//! as such by this proxy ([`outdated`]), never verified as if it bound the address. For
//! rolling upgrades (workers first) a worker appends v1 proofs after its v2 ones
//! ([`proofs`]): a proxy older than this format verifies those, this one ignores them.
//!
//! The proof never carries the key itself; probes never carry `X-Hotplex-Proxy-Auth`.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Request header of a health probe: the proxy's fresh challenge (hex).
pub const X_HOTPLEX_CHALLENGE: &str = "x-hotplex-challenge";
/// Response header of a worker's health answer: its proof(s) (`v2=<hex>`, comma-separated).
pub const X_HOTPLEX_IDENTITY: &str = "x-hotplex-identity";
/// Response header of a worker's health answer: the local address (`ip:port`) of the
/// connection the probe arrived on, bound by the proof.
pub const X_HOTPLEX_IDENTITY_ADDRESS: &str = "x-hotplex-identity-address";
/// Bytes of randomness in a challenge (hex-encoded on the wire: twice as many characters).
pub const CHALLENGE_BYTES: usize = 32;
/// Shortest challenge a worker answers (hex characters).
pub const MIN_CHALLENGE_LEN: usize = 32;
/// Longest challenge a worker answers (hex characters).
pub const MAX_CHALLENGE_LEN: usize = 128;
/// Most proofs a worker sends (one per key) and a proxy reads.
pub const MAX_PROOFS: usize = 8;
/// The proof format of this version (the prefix of each proof on the wire).
pub const PROOF_VERSION: &str = "v2";
/// Domain separation of the MAC input (names the format version).
const CONTEXT: &[u8] = b"hotplex-identity-v2";
/// The v1 format's (challenge, node id, body; no address), still sent for older proxies.
const CONTEXT_V1: &[u8] = b"hotplex-identity-v1";
/// Length of a v1 proof (bare hex HMAC-SHA256, no version prefix).
const V1_PROOF_LEN: usize = 64;

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

/// The form both sides compare an address in: an IPv4-mapped IPv6 address (a dual-stack
/// listener's view of an IPv4 client) as the IPv4 address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn mac(key: &[u8], challenge: &str, node_id: &str, address: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in [
        CONTEXT,
        challenge.as_bytes(),
        node_id.as_bytes(),
        address.as_bytes(),
    ] {
        m.update(part);
        m.update(&[0]);
    }
    m.update(body);
    m
}

/// The proof of one key (`v2=<hex>`); `address` is the [`X_HOTPLEX_IDENTITY_ADDRESS`] value.
pub fn proof(key: &[u8], challenge: &str, node_id: &str, address: &str, body: &[u8]) -> String {
    let tag = mac(key, challenge, node_id, address, body).finalize();
    format!("{PROOF_VERSION}={}", hex::encode(tag.into_bytes()))
}

/// The v1 proof of one key (bare hex, no address): only for proxies older than v2.
fn proof_v1(key: &[u8], challenge: &str, node_id: &str, body: &[u8]) -> String {
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in [CONTEXT_V1, challenge.as_bytes(), node_id.as_bytes()] {
        m.update(part);
        m.update(&[0]);
    }
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The [`X_HOTPLEX_IDENTITY`] value for `keys` (at most [`MAX_PROOFS`] used): the v2 proofs
/// first (all a current proxy reads), then the v1 proofs for proxies older than v2 (which
/// skip the v2 entries they cannot decode).
pub fn proofs<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
    challenge: &str,
    node_id: &str,
    address: &str,
    body: &[u8],
) -> String {
    let keys: Vec<&[u8]> = keys.into_iter().take(MAX_PROOFS).collect();
    let v2 = keys
        .iter()
        .map(|k| proof(k, challenge, node_id, address, body));
    let v1 = keys.iter().map(|k| proof_v1(k, challenge, node_id, body));
    v2.chain(v1).collect::<Vec<_>>().join(",")
}

/// The current-format proofs of a header, decoded.
fn current_proofs(header: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    header.split(',').take(MAX_PROOFS).filter_map(|p| {
        let (v, tag) = p.trim().split_once('=')?;
        (v == PROOF_VERSION).then(|| hex::decode(tag).ok())?
    })
}

/// True when one of the proofs in `header` (an [`X_HOTPLEX_IDENTITY`] value) is a current
/// proof made with `key` for this challenge, node id, address and body. Constant time per
/// proof.
pub fn verify(
    key: &[u8],
    challenge: &str,
    node_id: &str,
    address: &str,
    body: &[u8],
    header: &str,
) -> bool {
    current_proofs(header).any(|p| {
        mac(key, challenge, node_id, address, body)
            .verify_slice(&p)
            .is_ok()
    })
}

/// True when `header` carries no current-format proof but does carry v1 proofs (bare hex,
/// no address bound): a worker older than this format. Refuse it as such.
pub fn outdated(header: &str) -> bool {
    current_proofs(header).next().is_none()
        && header.split(',').take(MAX_PROOFS).any(|p| {
            let p = p.trim();
            p.len() == V1_PROOF_LEN && p.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "10.0.0.5:8080";

    #[test]
    fn proofs_bind_key_challenge_node_address_and_body() {
        let c = new_challenge();
        assert!(valid_challenge(&c));
        assert_ne!(c, new_challenge(), "fresh every time");
        let body = br#"{"status":"ready","node_id":"w1","sessions_active":0}"#;
        let (old_k, new_k) = (&b"old-key-0123456789"[..], &b"new-key-0123456789"[..]);
        let h = proofs([old_k, new_k], &c, "w1", ADDR, body);
        assert!(verify(new_k, &c, "w1", ADDR, body, &h), "rotation");
        assert!(verify(old_k, &c, "w1", ADDR, body, &h));
        assert!(
            !verify(b"other-key-012345678", &c, "w1", ADDR, body, &h),
            "key"
        );
        assert!(!verify(new_k, &c, "w2", ADDR, body, &h), "node id");
        let other = new_challenge();
        assert!(!verify(new_k, &other, "w1", ADDR, body, &h), "replay");
        let altered = br#"{"status":"ready","node_id":"w1","sessions_active":9}"#;
        assert!(!verify(new_k, &c, "w1", ADDR, altered, &h), "body");
        assert!(!verify(new_k, &c, "w1", "", body, &h), "no address");
        assert!(!verify(new_k, &c, "w1", body_addr(), body, &h), "address");
        assert!(!verify(new_k, &c, "w1", ADDR, body, ""));
        assert!(!verify(new_k, &c, "w1", ADDR, body, "zz,!!,v2=zz,v3=00"));
        // Pinned: an independent implementation must agree (python3 -c 'import hmac,
        // hashlib; print(hmac.new(b"k", b"hotplex-identity-v2\x00c\x00n\x00127.0.0.1:8080\x00b",
        // hashlib.sha256).hexdigest())').
        assert_eq!(
            proof(b"k", "c", "n", "127.0.0.1:8080", b"b"),
            "v2=f75b40d96094cb7547d262f5c28a9231a19847adf7ff2c775e635eda835b34ea"
        );
    }

    /// An address one port off: relayed answers name the real worker's address.
    fn body_addr() -> &'static str {
        "10.0.0.5:8081"
    }

    #[test]
    fn the_address_is_a_separate_field() {
        // Moving a byte between the address and the body changes the MAC (NUL-separated).
        let k = b"0123456789abcdef";
        let h = proof(k, "c", "n", "1.2.3.4:5", b"6");
        assert!(verify(k, "c", "n", "1.2.3.4:5", b"6", &h));
        assert!(!verify(k, "c", "n", "1.2.3.4:56", b"", &h));
        assert!(!verify(k, "c", "n", "1.2.3.4:", b"56", &h));
    }

    #[test]
    fn v1_proofs_are_recognised_not_verified() {
        // The pinned v1 proof of ("k", "c", "n", "b") as a v1 worker sends it.
        let v1 = "e93c944bc457460d1079b184dff46a8f5bc6665ec86523741896ebbbbcf0a542";
        assert_eq!(proof_v1(b"k", "c", "n", b"b"), v1);
        assert!(outdated(v1));
        assert!(outdated(&format!("{v1},{v1}")));
        assert!(!verify(b"k", "c", "n", "", b"b", v1), "never read as v2");
        let v2 = proof(b"k", "c", "n", ADDR, b"b");
        assert!(!outdated(&v2));
        assert!(
            !outdated(&format!("{v1},{v2}")),
            "a current proof is checked"
        );
        assert!(!outdated(""));
        assert!(!outdated("garbage"));
        // A current worker's header: v2 proofs first (a current proxy reads only those),
        // then v1 proofs an older proxy verifies as before (rolling upgrade, workers first).
        let h = proofs([&b"k"[..], b"k2"], "c", "n", ADDR, b"b");
        let parts: Vec<&str> = h.split(',').collect();
        assert_eq!(parts.len(), 4, "{h}");
        assert!(parts[..2].iter().all(|p| p.starts_with("v2=")), "{h}");
        assert_eq!(parts[2], v1, "what an older proxy verifies");
        assert!(!outdated(&h));
        assert!(verify(b"k2", "c", "n", ADDR, b"b", &h));
        assert!(
            !verify(b"k", "c", "n", "10.9.9.9:1", b"b", &h),
            "v1 never passes as v2"
        );
    }

    #[test]
    fn canonical_addresses() {
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:8080".parse().expect("addr");
        assert_eq!(canonical(mapped).to_string(), ADDR);
        let v6: SocketAddr = "[fd00::1]:8080".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn challenges_are_bounded_hex() {
        assert!(!valid_challenge("short"));
        assert!(!valid_challenge(&"g".repeat(64)));
        assert!(!valid_challenge(&"a".repeat(MAX_CHALLENGE_LEN + 1)));
        assert!(valid_challenge(&"A".repeat(MIN_CHALLENGE_LEN)));
    }
}
