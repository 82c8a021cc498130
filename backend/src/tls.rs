//! The worker's own TLS listener (`tls:` in the worker config): the worker presents its
//! certificate itself (e.g. one naming its node id, under the fleet's private CA, which the
//! proxy's `upstream_tls` verifies), no terminator in front of it.
//!
//! When `tls` is set, the listen address serves TLS only (TLS 1.2 and 1.3, ALPN
//! `http/1.1`: HTTP, SSE and the WebSocket upgrade); plain HTTP is not served there. The
//! admin listener (`admin.listen`), when configured, stays plain HTTP (keep it on
//! loopback). The key file is subject to the readable-secret checks
//! (`security.refuse_readable_secrets`). Certificates are read at start: restart the worker
//! to rotate them.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

/// ALPN protocols offered: HTTP/1.1 only (the proxy speaks HTTP/1.1 to workers, and
/// WebSocket upgrades need it).
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// `tls:` section of the worker config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFileConfig {
    /// PEM certificate chain (leaf first). Required.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf. Required; must not be
    /// readable by group or others (a warning, or refused with
    /// `security.refuse_readable_secrets: true`).
    pub key_file: PathBuf,
}

/// The validated `tls:` section: the files and the server config built from them.
#[derive(Clone)]
pub struct WorkerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for WorkerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl WorkerTls {
    /// Reads and checks the files; `Err((key, reason))` names the config key at fault.
    pub fn load(f: TlsFileConfig) -> Result<WorkerTls, (&'static str, String)> {
        let cert_err = |e: String| ("tls.cert_file", format!("{}: {e}", f.cert_file.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.cert_file)
            .map_err(|e| cert_err(format!("cannot read: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(cert_err("no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&f.key_file).map_err(|e| {
            (
                "tls.key_file",
                format!("{}: no readable PEM private key: {e}", f.key_file.display()),
            )
        })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("tls", format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                (
                    "tls.key_file",
                    format!("the key does not fit the certificate: {e}"),
                )
            })?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(WorkerTls {
            cert_file: f.cert_file,
            key_file: f.key_file,
            server: Arc::new(server),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed P-256 certificate for "w1" and its key, and a second key (openssl).
    const CERT: &str = include_str!("../testdata/worker-w1.crt");
    const KEY: &str = include_str!("../testdata/worker-w1.key");
    const OTHER_KEY: &str = include_str!("../testdata/worker-other.key");

    fn files(cert: &str, key: &str) -> (tempfile::TempDir, TlsFileConfig) {
        let d = tempfile::tempdir().expect("tempdir");
        let (c, k) = (d.path().join("c.pem"), d.path().join("k.pem"));
        std::fs::write(&c, cert).expect("write");
        std::fs::write(&k, key).expect("write");
        (
            d,
            TlsFileConfig {
                cert_file: c,
                key_file: k,
            },
        )
    }

    #[test]
    fn loads_a_matching_pair_and_names_the_key_at_fault() {
        let (_d, f) = files(CERT, KEY);
        let t = WorkerTls::load(f).expect("valid pair");
        assert_eq!(t.server.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(!format!("{t:?}").contains("PRIVATE"), "no key in Debug");
        let reason = |cert: &str, key: &str| {
            let (_d, f) = files(cert, key);
            WorkerTls::load(f).expect_err("refused")
        };
        assert_eq!(reason("", KEY).0, "tls.cert_file");
        assert_eq!(reason("garbage", KEY).0, "tls.cert_file");
        assert_eq!(reason(CERT, "").0, "tls.key_file");
        let (key, why) = reason(CERT, OTHER_KEY);
        assert_eq!(key, "tls.key_file");
        assert!(why.contains("does not fit"), "{why}");
        let missing = TlsFileConfig {
            cert_file: "/nonexistent/c.pem".into(),
            key_file: "/nonexistent/k.pem".into(),
        };
        let (key, why) = WorkerTls::load(missing).expect_err("missing");
        assert_eq!(key, "tls.cert_file");
        assert!(why.contains("/nonexistent/c.pem"), "{why}");
    }
}
