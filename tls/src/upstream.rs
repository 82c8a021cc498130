//! Optional TLS from the proxy to workers: the `upstream_tls` section.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{default_true, normalize_server_name, ConfigError};

/// Default for `upstream_tls.verify`: verify worker certificates.
pub const DEFAULT_UPSTREAM_VERIFY: bool = true;

/// The `upstream_tls:` section: optional TLS from the proxy to workers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// Connect to workers over TLS. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// PEM bundle of CAs trusted for worker certificates. Default: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the worker certificate chain and name. Default [`DEFAULT_UPSTREAM_VERIFY`].
    #[serde(default = "default_true")]
    pub verify: bool,
    /// SNI / verified name sent to workers. Default: the worker's host.
    #[serde(default)]
    pub sni: Option<String>,
}

/// Validated upstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// TLS to workers on/off.
    pub enabled: bool,
    /// CA bundle path; `None` = system roots.
    pub ca_file: Option<PathBuf>,
    /// Verify chain and name.
    pub verify: bool,
    /// SNI override.
    pub sni: Option<String>,
}

impl UpstreamTlsFile {
    /// Validate with key paths under `upstream_tls`.
    pub fn validate(&self) -> Result<UpstreamTls, ConfigError> {
        self.validate_at("upstream_tls")
    }

    /// Validate with key paths under `prefix`.
    pub fn validate_at(&self, prefix: &str) -> Result<UpstreamTls, ConfigError> {
        if let Some(ca) = &self.ca_file {
            if self.enabled && !ca.is_file() {
                return Err(ConfigError::new(
                    format!("{prefix}.ca_file"),
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        let sni = match &self.sni {
            None => None,
            Some(s) => Some(
                normalize_server_name(s, false)
                    .map_err(|r| ConfigError::new(format!("{prefix}.sni"), r))?,
            ),
        };
        if self.enabled && !self.verify {
            tracing::warn!(
                "{prefix}.verify is false: worker certificates are NOT verified (testing only)"
            );
        }
        Ok(UpstreamTls {
            enabled: self.enabled,
            ca_file: self.ca_file.clone(),
            verify: self.verify,
            sni,
        })
    }
}

impl UpstreamTls {
    /// Load `ca_file` as pingora's CA type (`HttpPeer.options.ca`). `Ok(None)` when unset.
    pub fn load_ca(
        &self,
    ) -> Result<Option<std::sync::Arc<Box<[pingora::tls::x509::X509]>>>, ConfigError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let err = |r: String| {
            ConfigError::new("upstream_tls.ca_file", format!("{}: {r}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs =
            pingora::tls::x509::X509::stack_from_pem(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificates found".into()));
        }
        Ok(Some(std::sync::Arc::new(certs.into_boxed_slice())))
    }
}
