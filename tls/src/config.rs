//! Configuration in two layers: serde file types (what operators write, unknown keys
//! refused) and validated runtime types (what the rest of the crate consumes).
//!
//! Validation reports the key path of the offending value (`tls.certificates[1].key`)
//! and the reason, so a bad config fails at startup/reload with an actionable message.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use pingora::tls::ssl::{SslContextBuilder, SslMethod, SslVersion};
use serde::Deserialize;

pub use crate::hsts::{
    Hsts, HstsFile, Seconds, DEFAULT_HSTS_MAX_AGE_SECS, HSTS_PRELOAD_MIN_MAX_AGE_SECS,
};
pub use crate::upstream::{UpstreamTls, UpstreamTlsFile, DEFAULT_UPSTREAM_VERIFY};

/// Default TLS listen address (`tls.listen`): unprivileged port so non-root containers work.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default minimum protocol version (`tls.min_version`). TLS 1.0/1.1 are never accepted.
pub const DEFAULT_MIN_VERSION: &str = "1.2";
/// Default TLS 1.2 cipher list (`tls.ciphers`): ECDHE (forward secrecy) + AEAD only.
/// No CBC, RC4, 3DES, static RSA or DHE.
pub const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
/// Default TLS 1.3 ciphersuites (`tls.ciphersuites`): all AEAD, all forward secret.
pub const DEFAULT_CIPHERSUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/// TLS 1.3 ciphersuites accepted in `tls.ciphersuites` (CCM_8 is refused: 64-bit tag).
pub const ALLOWED_CIPHERSUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
];
/// Default for `tls.h2`: offer HTTP/2 via ALPN (h2, then http/1.1).
pub const DEFAULT_H2: bool = true;
/// Default for `tls.h2_max_concurrent_streams` (streams per connection; pingora's default).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default for `tls.max_header_list_size` (bytes of decoded HTTP/2 headers; pingora's default).
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Default for `tls.session_tickets`: off. OpenSSL never rotates its ticket key inside a
/// process, so stateless tickets would weaken forward secrecy; with tickets off, TLS 1.2
/// resumes by session id and TLS 1.3 gets stateful tickets from the server cache.
pub const DEFAULT_SESSION_TICKETS: bool = false;
/// Default for `tls.session_cache_size` (sessions kept in the server cache; 0 disables it).
pub const DEFAULT_SESSION_CACHE_SIZE: u32 = 20_480;
/// Default for `tls.watch`: reload certificates when their files change.
pub const DEFAULT_WATCH: bool = true;
/// Default for `tls.watch_debounce_ms` (milliseconds of quiet before a reload runs).
pub const DEFAULT_WATCH_DEBOUNCE_MS: u64 = 500;

/// A configuration error: the key path of the offending value and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// Key path, e.g. `tls.certificates[1].key`.
    pub path: String,
    /// Human-readable reason.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_min_version() -> String {
    DEFAULT_MIN_VERSION.to_string()
}
pub(crate) fn default_true() -> bool {
    true
}
fn default_h2_streams() -> u32 {
    DEFAULT_H2_MAX_CONCURRENT_STREAMS
}
fn default_header_list() -> u32 {
    DEFAULT_MAX_HEADER_LIST_SIZE
}
fn default_cache_size() -> u32 {
    DEFAULT_SESSION_CACHE_SIZE
}
fn default_debounce() -> u64 {
    DEFAULT_WATCH_DEBOUNCE_MS
}

/// The `tls:` section of the proxy config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// TLS listen address, `IP:port`. Default [`DEFAULT_LISTEN`].
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Certificate/key pairs. Empty (default): a self-signed development certificate
    /// for `localhost`, `127.0.0.1`, `::1` is generated in memory (loud WARN).
    #[serde(default)]
    pub certificates: Vec<CertFile>,
    /// Server name (one of some certificate's `server_names`) whose certificate is served
    /// when SNI is absent or matches nothing. Default: the first certificate.
    #[serde(default)]
    pub default_certificate: Option<String>,
    /// Minimum TLS version, `"1.2"` or `"1.3"`. Default [`DEFAULT_MIN_VERSION`].
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// TLS 1.2 cipher list (OpenSSL syntax, explicit ECDHE AEAD names only).
    /// Default [`DEFAULT_CIPHERS`].
    #[serde(default)]
    pub ciphers: Option<String>,
    /// TLS 1.3 ciphersuites, `:`-separated, from [`ALLOWED_CIPHERSUITES`].
    /// Default [`DEFAULT_CIPHERSUITES`].
    #[serde(default)]
    pub ciphersuites: Option<String>,
    /// `Strict-Transport-Security` on TLS responses. Absent (default): no header.
    #[serde(default)]
    pub hsts: Option<HstsFile>,
    /// Listen address (`IP:port`) of a plain-HTTP listener answering every request with a
    /// 301 to `https://`. Absent (default): no redirect listener.
    #[serde(default)]
    pub redirect_http: Option<String>,
    /// Offer HTTP/2 via ALPN (`h2`, then `http/1.1`). Default [`DEFAULT_H2`].
    #[serde(default = "default_true")]
    pub h2: bool,
    /// HTTP/2 concurrent streams per connection (1..=10000). Default
    /// [`DEFAULT_H2_MAX_CONCURRENT_STREAMS`].
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 decoded header list limit in bytes (1024..=1 MiB). Default
    /// [`DEFAULT_MAX_HEADER_LIST_SIZE`].
    #[serde(default = "default_header_list")]
    pub max_header_list_size: u32,
    /// Issue stateless session tickets. Default [`DEFAULT_SESSION_TICKETS`] (off).
    #[serde(default)]
    pub session_tickets: bool,
    /// Server session cache size in sessions, 0 disables. Default [`DEFAULT_SESSION_CACHE_SIZE`].
    #[serde(default = "default_cache_size")]
    pub session_cache_size: u32,
    /// Reload certificates when their files change. Default [`DEFAULT_WATCH`].
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet period in milliseconds before a watched change triggers a reload (10..=60000).
    /// Default [`DEFAULT_WATCH_DEBOUNCE_MS`].
    #[serde(default = "default_debounce")]
    pub watch_debounce_ms: u64,
}

/// One certificate/key pair (`tls.certificates[i]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    /// SNI names served by this certificate: exact (`api.example.com`) or wildcard
    /// (`*.example.com`, one label), case-insensitive. Empty (default): the certificate's
    /// DNS subjectAltNames.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// PEM file: leaf certificate first, then any intermediates (chain). Relative paths are
    /// resolved against the process working directory.
    pub cert: PathBuf,
    /// PEM file: the private key matching the leaf certificate (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

/// Minimum protocol version. There is deliberately no variant below TLS 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// The OpenSSL version constant.
    pub fn ssl_version(self) -> SslVersion {
        match self {
            MinVersion::Tls12 => SslVersion::TLS1_2,
            MinVersion::Tls13 => SslVersion::TLS1_3,
        }
    }
}

/// Where one certificate/key pair comes from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// Key path for messages, e.g. `tls.certificates[1]`.
    pub label: String,
    /// Lower-case SNI names; empty means "use the certificate's DNS SANs".
    pub server_names: Vec<String>,
    /// Certificate chain PEM path.
    pub cert: PathBuf,
    /// Private key PEM path.
    pub key: PathBuf,
}

/// Validated downstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate sources; empty means development certificate.
    pub certificates: Vec<CertSource>,
    /// Index into `certificates` of the default certificate.
    pub default_certificate: usize,
    /// Minimum protocol version.
    pub min_version: MinVersion,
    /// TLS 1.2 cipher list.
    pub ciphers: String,
    /// TLS 1.3 ciphersuites.
    pub ciphersuites: String,
    /// HSTS, if enabled.
    pub hsts: Option<Hsts>,
    /// Plain-HTTP redirect listener address.
    pub redirect_http: Option<SocketAddr>,
    /// ALPN h2 + http/1.1 when true, http/1.1 only otherwise.
    pub h2: bool,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 header list limit, bytes.
    pub max_header_list_size: u32,
    /// Stateless session tickets.
    pub session_tickets: bool,
    /// Server session cache size (sessions).
    pub session_cache_size: u32,
    /// Watch certificate files.
    pub watch: bool,
    /// Debounce for the watcher.
    pub watch_debounce: Duration,
}

fn parse_addr(path: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError::new(path, format!("{v:?} is not an IP:port address")))
}

/// Validate and lower-case one SNI name (`wildcard` allows a leading `*.`).
pub(crate) fn normalize_server_name(name: &str, wildcard: bool) -> Result<String, String> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() {
        return Err("empty server name".into());
    }
    if n.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address; SNI never carries IPs (use default_certificate)"
        ));
    }
    let (rest, is_wild) = match n.strip_prefix("*.") {
        Some(r) if wildcard => (r, true),
        _ => (n.as_str(), false),
    };
    if is_wild && !rest.contains('.') {
        return Err(format!(
            "{name:?}: wildcard must cover a name with at least two labels (*.example.com)"
        ));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "{name:?} is not a valid host name{}",
                if wildcard {
                    " (wildcards only as a leading \"*.\")"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(n)
}

fn validate_ciphers(path: &str, list: &str) -> Result<(), ConfigError> {
    for tok in list.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        if tok.starts_with('!') || tok.starts_with('-') {
            continue;
        }
        let aead = tok.contains("GCM") || tok.contains("CHACHA20-POLY1305");
        if !tok.starts_with("ECDHE-") || !aead {
            return Err(ConfigError::new(
                path,
                format!(
                    "cipher {tok:?} refused: only explicit ECDHE (forward secrecy) AEAD \
                     (GCM/CHACHA20-POLY1305) names are allowed; no CBC/RC4/3DES/aliases"
                ),
            ));
        }
    }
    let mut b = SslContextBuilder::new(SslMethod::tls())
        .map_err(|e| ConfigError::new(path, format!("openssl: {e}")))?;
    b.set_cipher_list(list)
        .map_err(|e| ConfigError::new(path, format!("OpenSSL rejects the list: {e}")))
}

fn validate_ciphersuites(path: &str, list: &str) -> Result<(), ConfigError> {
    let mut n = 0;
    for tok in list.split(':').filter(|t| !t.is_empty()) {
        if !ALLOWED_CIPHERSUITES.contains(&tok) {
            return Err(ConfigError::new(
                path,
                format!("ciphersuite {tok:?} refused; allowed: {ALLOWED_CIPHERSUITES:?}"),
            ));
        }
        n += 1;
    }
    if n == 0 {
        return Err(ConfigError::new(path, "empty ciphersuite list"));
    }
    Ok(())
}

impl TlsFile {
    /// Validate with key paths under `tls`.
    pub fn validate(&self) -> Result<TlsConfig, ConfigError> {
        self.validate_at("tls")
    }

    /// Validate with key paths under `prefix` (e.g. `"listeners[0].tls"`).
    pub fn validate_at(&self, prefix: &str) -> Result<TlsConfig, ConfigError> {
        let listen = parse_addr(&format!("{prefix}.listen"), &self.listen)?;
        let mut certificates = Vec::with_capacity(self.certificates.len());
        let mut seen: std::collections::HashMap<String, String> = Default::default();
        for (i, c) in self.certificates.iter().enumerate() {
            let label = format!("{prefix}.certificates[{i}]");
            for (field, p) in [("cert", &c.cert), ("key", &c.key)] {
                if p.as_os_str().is_empty() {
                    return Err(ConfigError::new(format!("{label}.{field}"), "empty path"));
                }
            }
            let mut names = Vec::with_capacity(c.server_names.len());
            for (j, n) in c.server_names.iter().enumerate() {
                let p = format!("{label}.server_names[{j}]");
                let n = normalize_server_name(n, true).map_err(|r| ConfigError::new(&p, r))?;
                if let Some(prev) = seen.insert(n.clone(), p.clone()) {
                    return Err(ConfigError::new(
                        p,
                        format!("{n:?} already listed at {prev}"),
                    ));
                }
                names.push(n);
            }
            certificates.push(CertSource {
                label,
                server_names: names,
                cert: c.cert.clone(),
                key: c.key.clone(),
            });
        }
        let default_certificate = match &self.default_certificate {
            None => 0,
            Some(name) => {
                let p = format!("{prefix}.default_certificate");
                let n = normalize_server_name(name, true).map_err(|r| ConfigError::new(&p, r))?;
                certificates
                    .iter()
                    .position(|c| c.server_names.contains(&n))
                    .ok_or_else(|| {
                        ConfigError::new(
                            p,
                            format!("{name:?} is not in any certificates[].server_names"),
                        )
                    })?
            }
        };
        let min_version = match self.min_version.trim() {
            "1.2" => MinVersion::Tls12,
            "1.3" => MinVersion::Tls13,
            "1.0" | "1.1" | "1" => {
                return Err(ConfigError::new(
                    format!("{prefix}.min_version"),
                    "TLS 1.0/1.1 are refused (deprecated, RFC 8996); use \"1.2\" or \"1.3\"",
                ))
            }
            other => {
                return Err(ConfigError::new(
                    format!("{prefix}.min_version"),
                    format!("{other:?}: expected \"1.2\" or \"1.3\""),
                ))
            }
        };
        let ciphers = self
            .ciphers
            .as_deref()
            .unwrap_or(DEFAULT_CIPHERS)
            .to_string();
        validate_ciphers(&format!("{prefix}.ciphers"), &ciphers)?;
        let ciphersuites = self
            .ciphersuites
            .as_deref()
            .unwrap_or(DEFAULT_CIPHERSUITES)
            .to_string();
        validate_ciphersuites(&format!("{prefix}.ciphersuites"), &ciphersuites)?;
        let hsts = match &self.hsts {
            None => None,
            Some(h) => Some(h.validate_at(&format!("{prefix}.hsts"))?),
        };
        let redirect_http = match &self.redirect_http {
            None => None,
            Some(a) => {
                let p = format!("{prefix}.redirect_http");
                let addr = parse_addr(&p, a)?;
                if addr == listen {
                    return Err(ConfigError::new(
                        p,
                        "must differ from the TLS listen address",
                    ));
                }
                Some(addr)
            }
        };
        if !(1..=10_000).contains(&self.h2_max_concurrent_streams) {
            return Err(ConfigError::new(
                format!("{prefix}.h2_max_concurrent_streams"),
                "must be in 1..=10000",
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_list_size) {
            return Err(ConfigError::new(
                format!("{prefix}.max_header_list_size"),
                "must be in 1024..=1048576 bytes",
            ));
        }
        if !(10..=60_000).contains(&self.watch_debounce_ms) {
            return Err(ConfigError::new(
                format!("{prefix}.watch_debounce_ms"),
                "must be in 10..=60000 ms",
            ));
        }
        Ok(TlsConfig {
            listen,
            certificates,
            default_certificate,
            min_version,
            ciphers,
            ciphersuites,
            hsts,
            redirect_http,
            h2: self.h2,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            max_header_list_size: self.max_header_list_size,
            session_tickets: self.session_tickets,
            session_cache_size: self.session_cache_size,
            watch: self.watch,
            watch_debounce: Duration::from_millis(self.watch_debounce_ms),
        })
    }
}

impl TlsConfig {
    /// Every certificate and key file, for [`crate::watch`].
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.certificates
            .iter()
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect()
    }

    /// Pingora HTTP/2 server options carrying this config's stream and header limits
    /// (set as the http app's `h2_options`).
    pub fn h2_options(&self) -> pingora::protocols::http::v2::server::H2Options {
        let mut o = pingora::protocols::http::v2::server::default_h2_options();
        o.max_concurrent_streams(self.h2_max_concurrent_streams);
        o.max_header_list_size(self.max_header_list_size);
        o
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
