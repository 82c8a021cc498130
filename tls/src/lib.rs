//! TLS for the HotPlex edge proxy.
//!
//! # Why OpenSSL and not rustls
//!
//! Pingora 0.9 supports one TLS backend per build. Its rustls backend is still labelled
//! experimental in 0.9.1, while the OpenSSL backend is the one Cloudflare runs and gives us
//! what an edge needs: an **async `certificate_callback`** ([`pingora::listeners::TlsAccept`])
//! called mid-handshake, where we pick the certificate by SNI from a store that can be
//! swapped at any time; mature protocol/cipher controls (minimum version, TLS 1.2 cipher
//! list, TLS 1.3 suites, groups, session cache/ticket policy); and ALPN (`h2`, `http/1.1`).
//!
//! # Pieces
//!
//! - [`config`]: serde file types ([`TlsFile`], [`UpstreamTlsFile`]) and validated runtime
//!   types ([`TlsConfig`], [`UpstreamTls`]); errors name the key path.
//! - [`store`]: [`CertStore`], every cert/key pair checked (key matches, not expired) and
//!   indexed by exact and `*.wildcard` names, plus a default certificate.
//! - [`hsts`]: `Strict-Transport-Security` header value ([`Hsts::header_value`]).
//! - [`upstream`]: optional TLS to workers ([`UpstreamTls`], CA loading for `HttpPeer`).
//! - [`sni`]: [`SniResolver`], the `TlsAccept` implementation.
//! - [`settings`]: [`build_tls_settings`], hardened pingora `TlsSettings`.
//! - [`devcert`]: self-signed `localhost` certificate when none is configured (loud WARN).
//! - [`watch`]: [`watch_store`], debounced file watching that triggers reloads.
//!
//! # Reload model
//!
//! The store holds an immutable `CertSet` in an [`arc_swap::ArcSwap`]. Each handshake
//! loads the current set once and installs the chosen certificate on that connection only.
//! [`CertStore::reload`] builds a complete new set from the files; only if *every* pair
//! loads and checks out is it swapped in (atomically). Otherwise the error (file, reason)
//! is logged and counted and the old set keeps serving. New handshakes see the new set;
//! open connections are never touched. Reloads are triggered by the watcher (file changes,
//! including rename/symlink swaps by editors and Kubernetes), or by the proxy (SIGHUP,
//! admin endpoint, config reload via [`CertStore::reload_with`]).
//!
//! # Wiring (proxy side)
//!
//! ```ignore
//! let tls = file.tls.validate()?;                       // TlsFile -> TlsConfig (key-path errors)
//! let store = hotplex_tls::CertStore::from_config(&tls)?; // dev cert if none configured
//! let settings = hotplex_tls::build_tls_settings(&tls, store.clone())?;
//! let mut svc = pingora::proxy::http_proxy_service(&server.configuration, proxy);
//! svc.add_tls_with_settings(&tls.listen.to_string(), None, settings);
//! if let Some(p) = svc.app_logic_mut() { p.h2_options = Some(tls.h2_options()); }
//! let _watcher = tls.watch.then(|| hotplex_tls::watch_store(store.clone(), tls.watch_debounce,
//!     move |r| metrics.tls_reload(r.is_ok()))).transpose()?; // keep alive for the process
//! // SIGHUP/admin: store.reload(); config reload: store.reload_with(&new_tls);
//! // metrics: store.stats(), store.current().summary() (per-cert not_after_unix)
//! ```

pub mod config;
pub mod devcert;
pub mod hsts;
mod load;
pub mod settings;
pub mod sni;
pub mod store;
pub mod upstream;
pub mod watch;

#[cfg(test)]
mod testutil;

pub use config::{ConfigError, Hsts, MinVersion, TlsConfig, TlsFile, UpstreamTls, UpstreamTlsFile};
pub use hsts::https_redirect_location;
pub use settings::{build_tls_settings, harden, SettingsError};
pub use sni::SniResolver;
pub use store::{CertStore, ReloadReport, ReloadStats, StoreError, StoreSummary};
pub use watch::{watch_paths, watch_store, CertWatcher, WatchError};
