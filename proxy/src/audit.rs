//! Audit log: one JSON line per security-relevant event, tracing target `audit`.
//!
//! Fields: `ts_ms` (Unix ms), `actor` (API-key name, `admin`, `sighup`, or `-`), `ip`,
//! `action` (`auth`, `admin.reload`, `config.reload`, `limits.change`, ...), `outcome`
//! (`success`, `failure`, `denied`, ...), `detail`. Never a key or secret in clear.
//!
//! Call [`record`] from anywhere: auth failures are recorded by [`crate::security`];
//! admin actions and config reloads call it from their handlers.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// API-key (tenant) name, `admin`, `sighup`, or `-` when unknown.
    pub name: &'a str,
    pub ip: Option<IpAddr>,
}

impl<'a> Actor<'a> {
    /// An actor with a name and no address.
    pub fn named(name: &'a str) -> Actor<'a> {
        Actor { name, ip: None }
    }
}

/// Writes one audit line.
pub fn record(actor: Actor<'_>, action: &str, outcome: &str, detail: &str) {
    let ts_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ip = actor.ip.map(|i| i.to_string()).unwrap_or_default();
    tracing::info!(
        target: "audit",
        ts_ms,
        actor = actor.name,
        ip = %ip,
        action,
        outcome,
        detail,
        "audit"
    );
}
