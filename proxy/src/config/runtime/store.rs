//! Validated `limits.store` (built by [`crate::config::store`]).

/// A secret read from a reference; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A CA bundle read from `tls_ca_file` (printed as its path).
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: std::path::PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.path)
    }
}

/// Validated `limits.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Hostname or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS, the certificate checked against `host`.
    pub tls: bool,
    /// Database number (`SELECT`).
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls_ca: Option<CaBundle>,
    pub fail_open: bool,
    pub timeout: std::time::Duration,
    pub prefix: String,
}

impl StoreSettings {
    /// The address for logs: `redis[s]://host:port/db`, no credentials.
    pub fn display_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}/{}", self.port, self.db)
    }
}
