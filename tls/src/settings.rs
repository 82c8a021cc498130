//! Hardened pingora [`TlsSettings`] for the TLS listener: minimum protocol version,
//! ECDHE+AEAD ciphers, TLS 1.3 suites, curves, session resumption policy, ALPN, and the
//! SNI callback reading the live [`CertStore`].

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::protocols::ALPN;
use pingora::tls::ssl::{SslAcceptorBuilder, SslOptions, SslSessionCacheMode};

use crate::config::TlsConfig;
use crate::sni::SniResolver;
use crate::store::CertStore;

/// Key exchange groups offered, in preference order.
pub const DEFAULT_GROUPS: &str = "X25519:P-256:P-384";
/// Session id context for the server session cache.
const SESSION_ID_CONTEXT: &[u8] = b"hotplex-edge";

/// The TLS settings could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS settings: {what}: {reason}")]
pub struct SettingsError {
    /// Which setting.
    pub what: &'static str,
    /// OpenSSL/pingora message.
    pub reason: String,
}

fn err(what: &'static str) -> impl FnOnce(pingora::tls::error::ErrorStack) -> SettingsError {
    move |e| SettingsError {
        what,
        reason: e.to_string(),
    }
}

/// Build the listener's settings: pingora's acceptor with [`SniResolver`] as the
/// certificate callback, hardened by [`harden`], ALPN `h2,http/1.1` (via `enable_h2`)
/// when `cfg.h2`, else `http/1.1` only. Pass the result to
/// `service.add_tls_with_settings(addr, None, settings)`.
pub fn build_tls_settings(
    cfg: &TlsConfig,
    store: Arc<CertStore>,
) -> Result<TlsSettings, SettingsError> {
    let mut settings =
        TlsSettings::with_callbacks(Box::new(SniResolver::new(store))).map_err(|e| {
            SettingsError {
                what: "acceptor",
                reason: e.to_string(),
            }
        })?;
    harden(&mut settings, cfg)?;
    if cfg.h2 {
        settings.enable_h2();
    } else {
        settings.set_alpn(ALPN::H1);
    }
    Ok(settings)
}

/// Apply the protocol, cipher and session settings of `cfg` to an acceptor builder
/// (what [`build_tls_settings`] does to pingora's builder).
pub fn harden(b: &mut SslAcceptorBuilder, cfg: &TlsConfig) -> Result<(), SettingsError> {
    b.set_min_proto_version(Some(cfg.min_version.ssl_version()))
        .map_err(err("min_version"))?;
    b.set_max_proto_version(None).map_err(err("max_version"))?;
    // Belt and braces: never negotiate below TLS 1.2 whatever the min version says.
    let mut opts = SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::NO_TLSV1
        | SslOptions::NO_TLSV1_1
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_RENEGOTIATION
        | SslOptions::CIPHER_SERVER_PREFERENCE;
    if !cfg.session_tickets {
        opts |= SslOptions::NO_TICKET;
    }
    b.set_options(opts);
    if cfg.session_tickets {
        b.clear_options(SslOptions::NO_TICKET);
    }
    b.set_cipher_list(&cfg.ciphers).map_err(err("ciphers"))?;
    b.set_ciphersuites(&cfg.ciphersuites)
        .map_err(err("ciphersuites"))?;
    b.set_groups_list(DEFAULT_GROUPS).map_err(err("groups"))?;
    if cfg.session_cache_size == 0 {
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
    } else {
        b.set_session_cache_mode(SslSessionCacheMode::SERVER);
        b.set_session_cache_size(i32::try_from(cfg.session_cache_size).unwrap_or(i32::MAX));
        b.set_session_id_context(SESSION_ID_CONTEXT)
            .map_err(err("session_id_context"))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
