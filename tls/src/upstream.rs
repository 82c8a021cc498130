//! Optional TLS from the proxy to workers: the `upstream_tls` section.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{default_true, normalize_server_name, ConfigError};

/// Default for `upstream_tls.verify`: verify worker certificates.
pub const DEFAULT_UPSTREAM_VERIFY: bool = true;
/// Default for `upstream_tls.server_name`: each worker's certificate names its node id.
pub const DEFAULT_UPSTREAM_SERVER_NAME: &str = "{id}";
/// Placeholder of `upstream_tls.server_name` replaced by the worker id.
pub const SERVER_NAME_ID: &str = "{id}";
/// Default for `upstream_tls.trust_system_roots`: only `ca_file` is trusted.
pub const DEFAULT_UPSTREAM_TRUST_SYSTEM_ROOTS: bool = false;
/// A worker id used to check a `server_name` pattern (worker ids are `[a-z0-9-]`, 1-63).
const SAMPLE_ID: &str = "w1";

/// The `upstream_tls:` section: optional TLS from the proxy to workers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// Connect to workers over TLS. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// PEM bundle of the private CA(s) that sign worker certificates. Required when
    /// `enabled` and `verify`, unless `trust_system_roots: true`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Without `ca_file`, trust the system roots for worker certificates: any public CA
    /// could then vouch for a "worker". With `ca_file` only `ca_file` is trusted and this is
    /// not allowed. Default [`DEFAULT_UPSTREAM_TRUST_SYSTEM_ROOTS`].
    #[serde(default)]
    pub trust_system_roots: bool,
    /// The name each worker's certificate must carry (and the SNI sent), `{id}` replaced by
    /// the worker id: a certificate then proves which worker answers. Default
    /// [`DEFAULT_UPSTREAM_SERVER_NAME`]. Not with `sni`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Verify the worker certificate chain and name. Default [`DEFAULT_UPSTREAM_VERIFY`].
    #[serde(default = "default_true")]
    pub verify: bool,
    /// One name for every worker (SNI and verified name): a shared certificate, which
    /// proves membership of the worker fleet but not which worker answers. Not with
    /// `server_name`. Default: none (`server_name` applies).
    #[serde(default)]
    pub sni: Option<String>,
}

/// Validated upstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// TLS to workers on/off.
    pub enabled: bool,
    /// CA bundle path (`None` only with `trust_system_roots` or without `verify`).
    pub ca_file: Option<PathBuf>,
    /// The system roots are trusted (explicit opt-in, only without `ca_file`).
    pub trust_system_roots: bool,
    /// Verify chain and name.
    pub verify: bool,
    /// One shared name for every worker (overrides `server_name`).
    pub sni: Option<String>,
    /// Per-worker name pattern (contains `{id}` once), lower-case.
    pub server_name: String,
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
        if sni.is_some() && self.server_name.is_some() {
            return Err(ConfigError::new(
                format!("{prefix}.sni"),
                "set either sni (one shared name) or server_name (one name per worker)",
            ));
        }
        let pattern = self
            .server_name
            .as_deref()
            .unwrap_or(DEFAULT_UPSTREAM_SERVER_NAME)
            .trim()
            .to_ascii_lowercase();
        if pattern.matches(SERVER_NAME_ID).count() != 1 {
            return Err(ConfigError::new(
                format!("{prefix}.server_name"),
                format!("{pattern:?} must contain {SERVER_NAME_ID} exactly once (the worker id)"),
            ));
        }
        normalize_server_name(&pattern.replace(SERVER_NAME_ID, SAMPLE_ID), false).map_err(|r| {
            ConfigError::new(
                format!("{prefix}.server_name"),
                format!("{pattern:?} does not give a server name: {r}"),
            )
        })?;
        if self.enabled && self.verify && self.ca_file.is_none() && !self.trust_system_roots {
            return Err(ConfigError::new(
                format!("{prefix}.ca_file"),
                "required: the private CA that signs the worker certificates (or set \
                 trust_system_roots: true to let any public CA vouch for a worker)",
            ));
        }
        if self.trust_system_roots && self.ca_file.is_some() {
            return Err(ConfigError::new(
                format!("{prefix}.trust_system_roots"),
                "not with ca_file (only ca_file is trusted when it is set): remove one",
            ));
        }
        if self.enabled && self.verify && self.trust_system_roots {
            tracing::warn!(
                "{prefix}.trust_system_roots is true: any certificate from a public CA naming a worker is accepted"
            );
        }
        if self.enabled && !self.verify {
            tracing::warn!(
                "{prefix}.verify is false: worker certificates are NOT verified (testing only)"
            );
        }
        Ok(UpstreamTls {
            enabled: self.enabled,
            ca_file: self.ca_file.clone(),
            trust_system_roots: self.trust_system_roots,
            verify: self.verify,
            sni,
            server_name: pattern,
        })
    }
}

impl UpstreamTls {
    /// The name worker `id` must prove (SNI and certificate name): `sni` when set, else
    /// `server_name` with `{id}` replaced.
    pub fn name_for(&self, id: &str) -> String {
        match &self.sni {
            Some(s) => s.clone(),
            None => self.server_name.replace(SERVER_NAME_ID, id),
        }
    }

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
