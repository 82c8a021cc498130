//! Loading and checking one certificate set from PEM files (or the dev certificate).

use std::path::Path;

use openssl::asn1::Asn1Time;
use pingora::tls::nid::Nid;
use pingora::tls::pkey::PKey;
use pingora::tls::x509::X509;
use sha2::{Digest, Sha256};

use crate::config::{normalize_server_name, CertSource};
use crate::devcert;
use crate::store::{CertSet, LoadedCert, StoreError, EXPIRY_WARN_DAYS};

pub(crate) fn load_dev(generation: u64) -> Result<CertSet, StoreError> {
    let dev = devcert::generate()?;
    let label = "tls (development certificate)".to_string();
    let names = vec!["localhost".to_string()];
    let c = load_pair(
        &label,
        &names,
        dev.cert_pem.as_bytes(),
        dev.key_pem.as_bytes(),
        Path::new("<memory>"),
    )?;
    Ok(CertSet::new(vec![c], 0, generation, true))
}

pub(crate) fn load_files(
    sources: &[CertSource],
    default: usize,
    generation: u64,
) -> Result<CertSet, StoreError> {
    let mut certs = Vec::with_capacity(sources.len());
    for s in sources {
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path).map_err(|e| StoreError::File {
                label: s.label.clone(),
                field,
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let cert_pem = read("cert", &s.cert)?;
        let key_pem = read("key", &s.key)?;
        certs.push(load_pair_files(s, &cert_pem, &key_pem)?);
    }
    if certs.is_empty() {
        return load_dev(generation);
    }
    let default = default.min(certs.len() - 1);
    Ok(CertSet::new(certs, default, generation, false))
}

fn load_pair_files(
    s: &CertSource,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<LoadedCert, StoreError> {
    // Key parse errors name the key file; everything else names the cert.
    if let Err(e) = PKey::private_key_from_pem(key_pem) {
        return Err(StoreError::File {
            label: s.label.clone(),
            field: "key",
            path: s.key.clone(),
            reason: format!("not a PEM private key: {e}"),
        });
    }
    load_pair(&s.label, &s.server_names, cert_pem, key_pem, &s.cert)
}

/// Parse and check one pair: chain parses, key parses and matches the leaf, not expired.
pub(crate) fn load_pair(
    label: &str,
    names: &[String],
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
) -> Result<LoadedCert, StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        label: label.to_string(),
        path: cert_path.to_path_buf(),
        reason,
    };
    let file_err = |field: &'static str, reason: String| StoreError::File {
        label: label.to_string(),
        field,
        path: cert_path.to_path_buf(),
        reason,
    };
    let mut stack = X509::stack_from_pem(cert_pem)
        .map_err(|e| file_err("cert", format!("not a PEM certificate chain: {e}")))?;
    if stack.is_empty() {
        return Err(file_err("cert", "no certificate found in PEM".into()));
    }
    let leaf = stack.remove(0);
    let key = PKey::private_key_from_pem(key_pem)
        .map_err(|e| invalid(format!("key is not a PEM private key: {e}")))?;
    let public = leaf
        .public_key()
        .map_err(|e| invalid(format!("cannot read the certificate's public key: {e}")))?;
    if !public.public_eq(&key) {
        return Err(invalid(
            "private key does not match the certificate's public key".into(),
        ));
    }
    for (i, w) in std::iter::once(&leaf)
        .chain(stack.iter())
        .zip(stack.iter())
        .enumerate()
    {
        let (child, issuer) = w;
        if issuer.issued(child) != pingora::tls::x509::X509VerifyResult::OK {
            tracing::warn!(
                "{label}: chain certificate {} did not issue certificate {i}",
                i + 1
            );
        }
    }
    let (not_after_unix, days_left) = expiry(&leaf).map_err(invalid)?;
    if let Ok(now) = Asn1Time::days_from_now(0) {
        if leaf.not_before() > now {
            tracing::warn!(
                "{label}: certificate not valid before {} (clock skew?); clients will reject it until then",
                leaf.not_before()
            );
        }
    }
    if days_left < 0 || not_after_unix <= now_unix() {
        return Err(invalid(format!(
            "certificate expired (notAfter {})",
            leaf.not_after()
        )));
    }
    if days_left < EXPIRY_WARN_DAYS {
        tracing::warn!(
            "{label}: certificate expires in {days_left} days (notAfter {})",
            leaf.not_after()
        );
    }
    let fingerprint = leaf
        .to_der()
        .map(|der| hex::encode(Sha256::digest(der)))
        .map_err(|e| invalid(e.to_string()))?;
    let cert_names = cert_dns_names(&leaf);
    let names = if names.is_empty() {
        cert_names
    } else {
        for n in names {
            if !cert_names.is_empty() && !covered(&cert_names, n) {
                tracing::warn!(
                    "{label}: server name {n:?} is not covered by the certificate (DNS names: {}); \
                     clients will reject it for that name",
                    cert_names.join(",")
                );
            }
        }
        names.to_vec()
    };
    if names.is_empty() {
        tracing::warn!(
            "{label}: no server_names and no DNS names in the certificate; served only as default"
        );
    }
    Ok(LoadedCert {
        label: label.to_string(),
        names,
        leaf,
        chain: stack,
        key,
        fingerprint,
        not_after_unix,
        days_left,
    })
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// (`notAfter` Unix seconds, whole days left) of a certificate.
fn expiry(cert: &X509) -> Result<(i64, i64), String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch.diff(cert.not_after()).map_err(|e| e.to_string())?;
    let not_after = i64::from(d.days) * 86_400 + i64::from(d.secs);
    Ok((not_after, (not_after - now_unix()).div_euclid(86_400)))
}

/// Whether a configured SNI name (exact or `*.x`) is covered by the certificate's names.
fn covered(cert_names: &[String], name: &str) -> bool {
    cert_names.iter().any(|c| {
        c == name
            || match (c.strip_prefix("*."), name.split_once('.')) {
                (Some(suffix), Some((first, rest))) => first != "*" && rest == suffix,
                _ => false,
            }
    })
}

/// DNS subjectAltNames (falling back to the CN), normalized.
fn cert_dns_names(cert: &X509) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in sans.iter() {
            if let Some(n) = san
                .dnsname()
                .and_then(|n| normalize_server_name(n, true).ok())
            {
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        for e in cert.subject_name().entries_by_nid(Nid::COMMONNAME) {
            if let Some(n) = e
                .data()
                .to_string()
                .ok()
                .and_then(|s| normalize_server_name(&s, true).ok())
            {
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn coverage() {
        let c = ["a.test".to_string(), "*.w.test".to_string()];
        assert!(super::covered(&c, "a.test"));
        assert!(super::covered(&c, "x.w.test"));
        assert!(super::covered(&c, "*.w.test"));
        assert!(!super::covered(&c, "w.test"));
        assert!(!super::covered(&c, "x.y.w.test"));
        assert!(!super::covered(&c, "*.a.test"));
    }
}
