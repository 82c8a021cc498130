//! Development certificate: self-signed, generated in memory at startup when no
//! certificate is configured. Never for production (loud WARN on every generation).

use crate::store::StoreError;

/// Names in the development certificate's subjectAltName.
pub const DEV_CERT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A generated self-signed certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct DevCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for DevCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCert(<self-signed localhost>)")
    }
}

/// Generate the development certificate (ECDSA P-256, self-signed, for
/// [`DEV_CERT_NAMES`]) and log a WARN saying production configs must name real files.
pub fn generate() -> Result<DevCert, StoreError> {
    let names: Vec<String> = DEV_CERT_NAMES.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| StoreError::DevCert(e.to_string()))?;
    tracing::warn!(
        "TLS: no certificate configured (tls.certificates is empty): serving a SELF-SIGNED \
         DEVELOPMENT certificate for localhost, 127.0.0.1, ::1. Browsers will not trust it. \
         Production configs MUST list real certificate and key files in tls.certificates."
    );
    Ok(DevCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    })
}

impl DevCert {
    /// Write `cert.pem` and `key.pem` (mode 0600 on Unix) into `dir`, e.g. so a developer
    /// can add the certificate to a local trust store. Returns (cert path, key path).
    pub fn write_to(
        &self,
        dir: &std::path::Path,
    ) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&key)?, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::tls::x509::X509;

    #[test]
    fn dev_cert_covers_localhost_and_loopback_ips() {
        let d = generate().expect("generates");
        let cert = X509::from_pem(d.cert_pem.as_bytes()).expect("pem");
        let sans = cert.subject_alt_names().expect("sans");
        let dns: Vec<_> = sans
            .iter()
            .filter_map(|s| s.dnsname().map(str::to_string))
            .collect();
        let ips: Vec<_> = sans
            .iter()
            .filter_map(|s| s.ipaddress().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(dns, ["localhost"]);
        assert!(ips.contains(&vec![127, 0, 0, 1]));
        assert!(ips.iter().any(|ip| ip.len() == 16));
        let dir = tempfile::tempdir().expect("tmp");
        let (c, k) = d.write_to(dir.path()).expect("write");
        assert!(c.is_file() && k.is_file());
    }
}
