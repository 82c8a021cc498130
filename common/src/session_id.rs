//! The session-id format.
//!
//! A session id is 1 to [`MAX_LEN`] bytes of `[A-Za-z0-9._~-]` (URL-safe, unreserved
//! characters only), so it can appear unescaped in a path segment, a query value, a
//! header and a cookie. Anything else, including control bytes and invalid UTF-8, is
//! rejected before routing.
//!
//! Ids minted by a worker look like `<node-id>.<22 random base62 chars>`. Ids minted by
//! the proxy are *signed* ids (see [`SignedShape`]):
//! `<worker-id>.<16 random base62>.v2-<key id>[-<expiry>].<22-char MAC>`, whose MAC also
//! covers the owning tenant. Proxy and worker both recognise that shape with
//! [`signed_shape`]: an id of that shape is never a client-chosen id.

use std::fmt;

use rand::Rng;

/// Longest accepted session id, in bytes.
pub const MAX_LEN: usize = 128;
/// Number of random base62 characters in a minted id (~131 bits).
pub const RANDOM_LEN: usize = 22;

/// Random base62 characters of a signed id.
pub const SIGNED_RANDOM_LEN: usize = 16;
/// MAC characters of a signed id (base64url of 16 bytes: 128 bits).
pub const SIGNED_MAC_LEN: usize = 22;
/// The version tag that starts the third part of a signed id.
pub const SIGNED_VERSION: &str = "v2";
/// Hex characters of a signed id's key id.
pub const SIGNED_KID_LEN: usize = 6;

/// Stable worker ids: 1 to 63 bytes of `[a-z0-9-]` (no `.`, so a signed id splits cleanly).
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The parts of an id shaped like a proxy-signed session id:
/// `<worker>.<random>.v2-<kid>[-<expiry>].<mac>`. The shape says nothing about the MAC
/// (only the proxy holds the secrets), but it tells a worker which worker the id names and
/// that the id is no client-chosen one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedShape<'a> {
    /// The worker id (proxy-side) the id pins.
    pub worker: &'a str,
    /// [`SIGNED_RANDOM_LEN`] base62 characters.
    pub random: &'a str,
    /// [`SIGNED_KID_LEN`] lower-case hex characters naming the signing secret.
    pub kid: &'a str,
    /// Absolute expiry, unix seconds (`None`: no lifetime).
    pub expires: Option<u64>,
    /// The signed part: `<worker>.<random>.<tag>` (what the MAC covers, with the tenant).
    pub signed: &'a str,
    /// [`SIGNED_MAC_LEN`] base64url characters.
    pub mac: &'a str,
}

/// `Some` when `id` has the shape of a proxy-signed id (see [`SignedShape`]).
pub fn signed_shape(id: &str) -> Option<SignedShape<'_>> {
    let mut parts = id.split('.');
    let (worker, random, tag, mac) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_worker_id(worker) {
        return None;
    }
    if random.len() != SIGNED_RANDOM_LEN || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if mac.len() != SIGNED_MAC_LEN
        || !mac
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let mut t = tag.split('-');
    if t.next()? != SIGNED_VERSION {
        return None;
    }
    let kid = t.next()?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if kid.len() != SIGNED_KID_LEN || !hex(kid) {
        return None;
    }
    let expires = match t.next() {
        None => None,
        Some(e) if hex(e) && e.len() <= 16 => Some(u64::from_str_radix(e, 16).ok()?),
        Some(_) => return None,
    };
    if t.next().is_some() {
        return None;
    }
    Some(SignedShape {
        worker,
        random,
        kid,
        expires,
        signed: &id[..id.len() - mac.len() - 1],
        mac,
    })
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a valid session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    #[error("session id is empty")]
    Empty,
    #[error("session id is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("session id contains a byte outside [A-Za-z0-9._~-] at offset {0}")]
    BadByte(usize),
}

/// A validated session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Validates raw bytes (from a path, query, header or cookie) as a session id.
    pub fn parse_bytes(raw: &[u8]) -> Result<Self, SessionIdError> {
        validate(raw)?;
        // All bytes are ASCII after validation: one UTF-8 check and one copy (a collect of
        // chars would grow the string byte by byte on the request path).
        let s = std::str::from_utf8(raw).map_err(|e| SessionIdError::BadByte(e.valid_up_to()))?;
        Ok(SessionId(s.to_owned()))
    }

    /// Validates a string as a session id.
    pub fn parse(raw: &str) -> Result<Self, SessionIdError> {
        Self::parse_bytes(raw.as_bytes())
    }

    /// Mints a fresh id `<prefix>.<random>`; `prefix` is sanitised to the id alphabet.
    pub fn generate(prefix: &str) -> Self {
        let mut s: String = prefix
            .chars()
            .filter(|c| is_id_byte(*c as u32))
            .take(MAX_LEN - RANDOM_LEN - 1)
            .collect();
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str(&random_base62(RANDOM_LEN));
        SessionId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `len` random characters from the base62 alphabet (thread-local CSPRNG).
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

fn is_id_byte(b: u32) -> bool {
    matches!(b, 0x30..=0x39 | 0x41..=0x5a | 0x61..=0x7a) || matches!(b, 0x2d | 0x2e | 0x5f | 0x7e)
}

/// Checks the format without allocating.
pub fn validate(raw: &[u8]) -> Result<(), SessionIdError> {
    if raw.is_empty() {
        return Err(SessionIdError::Empty);
    }
    if raw.len() > MAX_LEN {
        return Err(SessionIdError::TooLong);
    }
    match raw.iter().position(|&b| !is_id_byte(b as u32)) {
        Some(i) => Err(SessionIdError::BadByte(i)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet() {
        assert!(SessionId::parse("w1.AbC-09_~x").is_ok());
        assert_eq!(
            SessionId::parse("a").map(|s| s.into_string()),
            Ok("a".into())
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(SessionId::parse(""), Err(SessionIdError::Empty));
        assert_eq!(
            SessionId::parse(&"a".repeat(129)),
            Err(SessionIdError::TooLong)
        );
        assert_eq!(SessionId::parse("ab/c"), Err(SessionIdError::BadByte(2)));
        assert_eq!(SessionId::parse("a b"), Err(SessionIdError::BadByte(1)));
        assert_eq!(
            SessionId::parse_bytes(b"ok\x00"),
            Err(SessionIdError::BadByte(2))
        );
        assert_eq!(
            SessionId::parse_bytes(b"\xff\xfe"),
            Err(SessionIdError::BadByte(0))
        );
        assert_eq!(
            SessionId::parse("sess\u{e9}"),
            Err(SessionIdError::BadByte(4))
        );
    }

    #[test]
    fn signed_shapes() {
        let id = "w-1.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_";
        let s = signed_shape(id).expect("shape");
        assert_eq!(s.worker, "w-1");
        assert_eq!(s.random, "AbCdEfGh01234567");
        assert_eq!(s.kid, "0a1b2c");
        assert_eq!(s.expires, None);
        assert_eq!(s.signed, "w-1.AbCdEfGh01234567.v2-0a1b2c");
        assert_eq!(s.mac, "ABCDEFGHIJKLMNOPQRSTU_");
        let e = signed_shape("w1.AbCdEfGh01234567.v2-0a1b2c-ff.ABCDEFGHIJKLMNOPQRSTU_")
            .expect("with expiry");
        assert_eq!(e.expires, Some(255));
        for bad in [
            "demo-1",
            "w1.AbCdEfGh01234567.4ooCnc-MdHaatyqH",
            "w1.AbCdEfGh01234567.v1-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_",
            "W1.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_",
            "w1.AbCdEfGh0123456.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_",
            "w1.AbCdEfGh01234567.v2-0A1b2c.ABCDEFGHIJKLMNOPQRSTU_",
            "w1.AbCdEfGh01234567.v2-0a1b2c-.ABCDEFGHIJKLMNOPQRSTU_",
            "w1.AbCdEfGh01234567.v2-0a1b2c-1-2.ABCDEFGHIJKLMNOPQRSTU_",
            "w1.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU",
            "w1.AbCdEfGh01234567.v2-0a1b2c.ABCDEFGHIJKLMNOPQRSTU_.x",
        ] {
            assert_eq!(signed_shape(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_unique() {
        let a = SessionId::generate("node-1");
        let b = SessionId::generate("node-1");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("node-1."));
        assert_eq!(a.as_str().len(), "node-1.".len() + RANDOM_LEN);
        assert!(validate(a.as_str().as_bytes()).is_ok());
        // Characters outside the alphabet are dropped from the prefix.
        let c = SessionId::generate("my host/1");
        assert!(c.as_str().starts_with("myhost1."));
        assert_eq!(SessionId::generate("").as_str().len(), RANDOM_LEN);
    }
}
