//! Admin bearer tokens: `admin.tokens` (plain or `sha256:<64 hex>`) and `admin.token_file`
//! (one token per line, `#` comments). Only SHA-256 digests are kept in memory; requests are
//! checked in constant time ([`token_ok`]). Tokens are never logged.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::file::AdminFile;
use super::ConfigError;

/// Prefix of a hashed token.
pub const SHA256_PREFIX: &str = "sha256:";
/// Shortest accepted plain token, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

fn digest_of(file: &str, key: &str, t: &str) -> Result<[u8; 32], ConfigError> {
    let t = t.trim();
    if let Some(h) = t.strip_prefix(SHA256_PREFIX) {
        let bytes = hex::decode(h).map_err(|_| {
            ConfigError::new(file, key, "sha256: must be followed by 64 hex characters")
        })?;
        return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            ConfigError::new(file, key, "sha256: must be followed by 64 hex characters")
        });
    }
    if t.len() < MIN_TOKEN_LEN {
        return Err(ConfigError::new(
            file,
            key,
            format!("a token must be at least {MIN_TOKEN_LEN} bytes"),
        ));
    }
    Ok(Sha256::digest(t.as_bytes()).into())
}

/// Validates and digests the configured tokens. No token on a non-loopback listener is an
/// error (the admin API would be open to the network).
pub fn admin_tokens(
    file: &str,
    a: &AdminFile,
    listen: SocketAddr,
) -> Result<Vec<[u8; 32]>, ConfigError> {
    let mut out = Vec::new();
    for (i, t) in a.tokens.iter().enumerate() {
        out.push(digest_of(file, &format!("admin.tokens[{i}]"), t)?);
    }
    if let Some(path) = &a.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(file, "admin.token_file", format!("cannot read {path}: {e}"))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(digest_of(
                file,
                &format!("admin.token_file ({path} line {})", n + 1),
                line,
            )?);
        }
    }
    if out.is_empty() && !listen.ip().is_loopback() {
        return Err(ConfigError::new(
            file,
            "admin.tokens",
            "required when admin.listen is not a loopback address",
        ));
    }
    Ok(out)
}

/// The `sha256:<hex>` form of a plain token (to keep only hashes in config files).
pub fn hashed_entry(plain: &str) -> String {
    format!(
        "{SHA256_PREFIX}{}",
        hex::encode(Sha256::digest(plain.as_bytes()))
    )
}

/// True when `presented` (the bearer token) matches one of `digests`; every digest is
/// compared, in constant time.
pub fn token_ok(digests: &[[u8; 32]], presented: &[u8]) -> bool {
    let d: [u8; 32] = Sha256::digest(presented).into();
    let mut ok = subtle::Choice::from(0u8);
    for x in digests {
        ok |= x.ct_eq(&d);
    }
    ok.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(tokens: &[&str]) -> AdminFile {
        AdminFile {
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            ..AdminFile::default()
        }
    }

    #[test]
    fn plain_and_hashed_tokens_verify() {
        let lo: SocketAddr = "127.0.0.1:9900".parse().expect("addr");
        let hashed = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"second-token-0123456789"))
        );
        let d = admin_tokens("f", &admin(&["first-token-0123456789", &hashed]), lo).expect("ok");
        assert!(token_ok(&d, b"first-token-0123456789"));
        assert!(token_ok(&d, b"second-token-0123456789"));
        assert!(!token_ok(&d, b"nope"));
        assert_eq!(
            admin_tokens("f", &admin(&["short"]), lo)
                .expect_err("short")
                .key,
            "admin.tokens[0]"
        );
        let any: SocketAddr = "0.0.0.0:9900".parse().expect("addr");
        assert_eq!(
            admin_tokens("f", &admin(&[]), any).expect_err("open").key,
            "admin.tokens"
        );
        assert!(admin_tokens("f", &admin(&[]), lo)
            .expect("loopback")
            .is_empty());
    }
}
