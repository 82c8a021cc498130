//! SNI certificate selection: pingora's async `certificate_callback` picks the
//! certificate for each new handshake from the store's *current* set, so a reload applies
//! to the next handshake while established connections keep their certificate.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::ssl::NameType;

use crate::store::{CertStore, LoadedCert};

/// [`TlsAccept`] implementation serving certificates from a [`CertStore`] by SNI.
#[derive(Debug, Clone)]
pub struct SniResolver {
    store: Arc<CertStore>,
}

impl SniResolver {
    /// Resolver over `store`.
    pub fn new(store: Arc<CertStore>) -> Self {
        Self { store }
    }

    /// The store it reads.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }
}

/// Install `cert` (leaf, chain, key) on one connection.
pub fn apply_cert(
    ssl: &mut TlsRef,
    cert: &LoadedCert,
) -> Result<(), pingora::tls::error::ErrorStack> {
    ext::ssl_use_certificate(ssl, &cert.leaf)?;
    for c in &cert.chain {
        ext::ssl_add_chain_cert(ssl, c)?;
    }
    ext::ssl_use_private_key(ssl, &cert.key)
}

#[async_trait]
impl TlsAccept for SniResolver {
    async fn certificate_callback(&self, ssl: &mut TlsRef) -> () {
        let set = self.store.current();
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        let cert = set.select(sni.as_deref());
        tracing::trace!(sni = ?sni, cert = %cert.label, "TLS certificate selected");
        if let Err(e) = apply_cert(ssl, cert) {
            // The handshake then fails for lack of a certificate; nothing else to do here.
            tracing::error!(sni = ?sni, cert = %cert.label, "TLS: cannot install certificate: {e}");
        }
    }
}
