//! Validated `upstream_tls:` (built by [`crate::config::tls`], used by [`crate::tls`]).

use std::sync::Arc;

/// TLS to the workers (`upstream_tls:`), with the CA loaded once per (re)load.
#[derive(Debug, Clone)]
pub struct WorkerTls {
    pub cfg: hotplex_tls::UpstreamTls,
    pub ca: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
}
