//! Validated `auth:` and `limits:` (built by [`crate::config::security`]), read per request
//! from the live config, so a hot reload changes keys and limits at once.

use sha2::{Digest, Sha256};

use crate::config::file::security::RateFile;
use crate::config::store::StoreSettings;

pub use super::route_label::{HttpRouteName, RouteLabel, RouteName, ROUTE_LABELS};

/// A validated API key.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// `auth.keys[].routes`: the routes this key may use (`None`: all).
    pub routes: Option<Vec<RouteName>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// Validated `auth:`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub enabled: bool,
    /// `auth.allow_anonymous`.
    pub allow_anonymous: bool,
    pub public_paths: Vec<String>,
    pub keys: Vec<ApiKey>,
    /// Validated `auth.jwt` (keys read at load).
    pub jwt: Option<std::sync::Arc<super::jwt::JwtSettings>>,
}

/// A CIDR block (the type is [`crate::policy::ip::Cidr`]: route rules use it too).
pub use crate::policy::ip::Cidr;

/// Validated `limits:`.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub trusted_proxies: Vec<Cidr>,
    pub per_ip: Option<RateFile>,
    pub per_key: Option<RateFile>,
    pub routes: std::collections::BTreeMap<RouteName, RateFile>,
    pub new_sessions_per_minute: Option<u32>,
    pub max_websockets_per_key: Option<u32>,
    pub max_body_bytes: u64,
    /// `limits.allow_streamed_bodies`.
    pub allow_streamed_bodies: bool,
    pub max_tracked_keys: usize,
    pub store: Option<StoreSettings>,
    /// `limits.auth_failures`.
    pub auth_failures: RateFile,
    /// `limits.body_read_timeout`.
    pub body_read_timeout: std::time::Duration,
    /// `limits.h2_idle_timeout`.
    pub h2_idle_timeout: std::time::Duration,
    /// 0: no limit.
    pub max_connections: u32,
    pub max_connections_per_ip: Option<u32>,
    /// Zero: off.
    pub header_read_timeout: std::time::Duration,
}

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}
