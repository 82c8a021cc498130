//! Validation of `tls:` and `upstream_tls:` (file layer: [`hotplex_tls::TlsFile`],
//! [`hotplex_tls::UpstreamTlsFile`]; runtime: [`hotplex_tls::TlsConfig`],
//! [`super::runtime::tls::WorkerTls`]). The listeners and connectors live in [`crate::tls`].

use std::net::SocketAddr;

use hotplex_tls::TlsConfig;

use super::runtime::tls::WorkerTls;
use super::ConfigError;

/// Validates the `tls:` section; `taken` are the other listen addresses.
pub fn validate(
    file: &str,
    tls: Option<&hotplex_tls::TlsFile>,
    taken: &[SocketAddr],
) -> Result<Option<TlsConfig>, ConfigError> {
    let Some(t) = tls else {
        return Ok(None);
    };
    let c = t
        .validate()
        .map_err(|e| ConfigError::new(file, e.path, e.reason))?;
    if c.listen.port() != 0 && taken.contains(&c.listen) {
        return Err(ConfigError::new(
            file,
            "tls.listen",
            "must differ from listen and admin.listen",
        ));
    }
    if let Some(r) = c.redirect_http {
        if taken.contains(&r) {
            return Err(ConfigError::new(
                file,
                "tls.redirect_http",
                "must differ from listen and admin.listen",
            ));
        }
    }
    Ok(Some(c))
}

/// Validates `upstream_tls:`; `None` when absent or `enabled: false`.
pub fn validate_upstream(
    file: &str,
    u: Option<&hotplex_tls::UpstreamTlsFile>,
) -> Result<Option<WorkerTls>, ConfigError> {
    let Some(u) = u else {
        return Ok(None);
    };
    let cfg = u
        .validate()
        .map_err(|e| ConfigError::new(file, e.path, e.reason))?;
    if !cfg.enabled {
        return Ok(None);
    }
    let ca = cfg
        .load_ca()
        .map_err(|e| ConfigError::new(file, e.path, e.reason))?;
    Ok(Some(WorkerTls { cfg, ca }))
}
