//! Validated `auth.jwt` (built by [`crate::config::jwt::settings`], used by [`crate::jwt`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::route_label::{HttpRouteName, RouteName};

/// A token already verified: its identity and time claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub id: JwtIdentity,
    pub exp: u64,
    pub nbf: Option<u64>,
}

/// One verification key and the algorithms it may verify.
#[derive(Clone)]
pub struct JwtKey {
    /// `keys_file[i]` (the i-th PEM block).
    pub label: String,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// Claim checks with this key's algorithms (jsonwebtoken wants one family per check).
    pub validation: Validation,
}

/// Validated `auth.jwt`.
#[derive(Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: Vec<String>,
    pub keys: Vec<JwtKey>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub tenant_claim: String,
    pub routes_claim: Option<String>,
    /// Names of the config's routes to `http` pools: route labels a token's routes claim
    /// may name besides the session API's ([`super::route_label::RouteLabel`]).
    pub http_routes: Vec<HttpRouteName>,
    /// Tokens already verified, by SHA-256 (see `crate::jwt`); new and empty per (re)load.
    pub verified: Arc<Mutex<HashMap<[u8; 32], Verified>>>,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.label).collect::<Vec<_>>(),
            )
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("tenant_claim", &self.tenant_claim)
            .field("routes_claim", &self.routes_claim)
            .finish()
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    pub tenant: String,
    /// Route labels from `routes_claim` (None: all).
    pub routes: Option<Vec<RouteName>>,
}
