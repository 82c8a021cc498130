//! Validation of `auth.jwt` (file layer [`super::file::jwt::JwtFile`] -> runtime
//! [`super::runtime::jwt::JwtSettings`]): reads the keys file, so a reload picks up a rotated
//! key file.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};

use super::file::jwt::{JwtFile, MAX_JWT_LEEWAY, SUPPORTED_ALGORITHMS};
use super::runtime::jwt::{JwtKey, JwtSettings};
use super::runtime::route_label::HttpRouteName;
use super::ConfigError;

/// Splits a PEM file into its blocks (text from `-----BEGIN` to the matching `-----END ...-----`).
pub(crate) fn pem_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let from = &rest[start..];
        let Some(end) = from.find("-----END ") else {
            break;
        };
        let after = &from[end + 9..];
        let Some(close) = after.find("-----") else {
            break;
        };
        let len = end + 9 + close + 5;
        out.push(&from[..len]);
        rest = &from[len..];
    }
    out
}

/// Validates `auth.jwt` and reads its keys file.
/// `http_routes`: the names of the config's routes to `http` pools (see
/// [`JwtSettings::http_routes`]).
pub fn settings(
    file: &str,
    j: &JwtFile,
    http_routes: &[HttpRouteName],
) -> Result<JwtSettings, ConfigError> {
    let err = |k: &str, r: String| ConfigError::new(file, format!("auth.jwt.{k}"), r);
    if j.issuer.trim().is_empty() {
        return Err(err("issuer", "must not be empty".into()));
    }
    let audience = j.audience.to_vec();
    if audience.is_empty() || audience.iter().any(|a| a.trim().is_empty()) {
        return Err(err(
            "audience",
            "must name at least one non-empty audience".into(),
        ));
    }
    if j.leeway > MAX_JWT_LEEWAY {
        return Err(err(
            "leeway",
            format!("must be at most {}s", MAX_JWT_LEEWAY.as_secs()),
        ));
    }
    if j.tenant_claim.trim().is_empty() {
        return Err(err("tenant_claim", "must not be empty".into()));
    }
    if j.routes_claim.as_ref().is_some_and(|c| c.trim().is_empty()) {
        return Err(err(
            "routes_claim",
            "must not be empty (omit it instead)".into(),
        ));
    }
    let mut algorithms = Vec::new();
    for (i, a) in j.algorithms.iter().enumerate() {
        if !SUPPORTED_ALGORITHMS.contains(&a.as_str()) {
            return Err(err(
                &format!("algorithms[{i}]"),
                format!(
                    "{a:?} is not supported (expected one of {})",
                    SUPPORTED_ALGORITHMS.join(", ")
                ),
            ));
        }
        let alg = Algorithm::from_str(a)
            .map_err(|_| err(&format!("algorithms[{i}]"), format!("{a:?} is unknown")))?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if algorithms.is_empty() {
        return Err(err("algorithms", "must list at least one algorithm".into()));
    }
    let text = std::fs::read_to_string(&j.keys_file).map_err(|e| {
        err(
            "keys_file",
            format!("cannot read {}: {e}", j.keys_file.display()),
        )
    })?;
    let mut keys = Vec::new();
    for (i, block) in pem_blocks(&text).into_iter().enumerate() {
        let label = format!("keys_file[{i}]");
        let (key, algs): (DecodingKey, Vec<Algorithm>) =
            if let Ok(k) = DecodingKey::from_ec_pem(block.as_bytes()) {
                let alg = match k.kind() {
                    DecodingKeyKind::SecretOrDer(p) if p.len() == 65 => Algorithm::ES256,
                    DecodingKeyKind::SecretOrDer(p) if p.len() == 97 => Algorithm::ES384,
                    _ => {
                        return Err(err(
                            "keys_file",
                            format!("PEM block {i}: EC key is neither P-256 nor P-384"),
                        ))
                    }
                };
                (k, vec![alg])
            } else if let Ok(k) = DecodingKey::from_rsa_pem(block.as_bytes()) {
                let rsa = algorithms
                    .iter()
                    .copied()
                    .filter(|a| a.family() == AlgorithmFamily::Rsa)
                    .collect();
                (k, rsa)
            } else {
                return Err(err(
                    "keys_file",
                    format!(
                        "PEM block {i} of {} is not an EC (P-256/P-384) or RSA public key",
                        j.keys_file.display()
                    ),
                ));
            };
        let algs: Vec<Algorithm> = algs
            .into_iter()
            .filter(|a| algorithms.contains(a))
            .collect();
        let Some(first) = algs.first().copied() else {
            // A key for an algorithm not accepted: kept out (checked below that every
            // accepted algorithm has a key).
            continue;
        };
        let mut validation = Validation::new(first);
        validation.algorithms = algs.clone();
        validation.leeway = j.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[j.issuer.as_str()]);
        validation.set_audience(&audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        keys.push(JwtKey {
            label,
            algorithms: algs,
            key,
            validation,
        });
    }
    if keys.is_empty() {
        return Err(err(
            "keys_file",
            format!(
                "{} holds no PEM public key for {}",
                j.keys_file.display(),
                j.algorithms.join(", ")
            ),
        ));
    }
    for (i, a) in algorithms.iter().enumerate() {
        if !keys.iter().any(|k| k.algorithms.contains(a)) {
            return Err(err(
                &format!("algorithms[{i}]"),
                format!("no key in {} can verify {a:?}", j.keys_file.display()),
            ));
        }
    }
    Ok(JwtSettings {
        issuer: j.issuer.clone(),
        audience,
        keys,
        algorithms,
        leeway: j.leeway,
        tenant_claim: j.tenant_claim.clone(),
        routes_claim: j.routes_claim.clone(),
        http_routes: http_routes.to_vec(),
        verified: Arc::default(),
    })
}
