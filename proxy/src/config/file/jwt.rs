//! `auth.jwt:` in the file layer (see [`crate::config::runtime::jwt`] for the validated
//! form and [`crate::config::jwt`] for the validation).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// Largest accepted `auth.jwt.leeway`.
pub const MAX_JWT_LEEWAY: Duration = Duration::from_secs(600);
/// Claim naming the tenant.
pub const DEFAULT_TENANT_CLAIM: &str = "sub";
/// Accepted signature algorithms.
pub const DEFAULT_JWT_ALGORITHMS: &[&str] = &["ES256", "RS256"];
/// Algorithms that may be configured (asymmetric only: no `none`, no HMAC).
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
];
/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `auth.jwt:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    /// Required `iss` value. Required.
    pub issuer: String,
    /// Accepted `aud` value(s): a string or a list; the token's `aud` must contain one.
    /// Required.
    pub audience: OneOrMany,
    /// PEM file with one or more public keys (`PUBLIC KEY` for EC P-256 / P-384 or RSA,
    /// `RSA PUBLIC KEY`). Required. Re-read on every config (re)load.
    pub keys_file: PathBuf,
    /// Clock skew tolerated on `exp` / `nbf`. Default [`DEFAULT_JWT_LEEWAY`], at most
    /// [`MAX_JWT_LEEWAY`].
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Claim whose value is the tenant name. Default [`DEFAULT_TENANT_CLAIM`].
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Optional claim listing the route labels the token may use (JSON array or
    /// space-separated string; unknown labels ignored). Not configured, or the claim absent
    /// from a token: all routes.
    #[serde(default)]
    pub routes_claim: Option<String>,
    /// Accepted `alg` values. Default [`DEFAULT_JWT_ALGORITHMS`]; any of
    /// [`SUPPORTED_ALGORITHMS`].
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

pub(crate) fn default_leeway() -> Duration {
    DEFAULT_JWT_LEEWAY
}
pub(crate) fn default_tenant_claim() -> String {
    DEFAULT_TENANT_CLAIM.into()
}
pub(crate) fn default_algorithms() -> Vec<String> {
    DEFAULT_JWT_ALGORITHMS
        .iter()
        .map(|s| s.to_string())
        .collect()
}
