//! `IdentityMetrics`: worker identity checks (`crate::upstream::identity`).
//!
//! Identity checks run in free functions (health probes, DNS discovery) that get no
//! metrics handle, so the struct is process-wide: built at its first registration and
//! registered in every registry passed to [`IdentityMetrics::register`].

use std::sync::OnceLock;

use hotplex_common::names::identity as n;
use prometheus::{IntCounterVec, Registry as PromRegistry};

use super::{counter_vec, register};

/// `reason` values of `hotplex_proxy_worker_identity_failures_total`.
pub const IDENTITY_FAILURE_REASONS: [&str; 7] = [
    "missing_proof",
    "bad_proof",
    "wrong_node",
    "conflict",
    "certificate",
    "address_mismatch",
    "old_proof",
];

/// The identity metrics.
pub struct IdentityMetrics {
    /// `hotplex_proxy_worker_identity_failures_total{reason}`.
    pub failures: IntCounterVec,
}

static IDENTITY: OnceLock<IdentityMetrics> = OnceLock::new();

impl IdentityMetrics {
    /// Registers the metrics in `r` (built once per process). Panics only on a bad
    /// constant name.
    pub fn register(r: &PromRegistry) -> &'static IdentityMetrics {
        let mut fresh = false;
        let m = IDENTITY.get_or_init(|| {
            fresh = true;
            IdentityMetrics {
                failures: counter_vec(
                    r,
                    n::FAILURES,
                    "Worker identity checks that failed (the worker got no traffic), by reason",
                    &["reason"],
                ),
            }
        });
        if !fresh {
            register(r, m.failures.clone());
        }
        for reason in IDENTITY_FAILURE_REASONS {
            m.failures.with_label_values(&[reason]);
        }
        m
    }

    /// The process's identity metrics, once registered.
    pub fn get() -> Option<&'static IdentityMetrics> {
        IDENTITY.get()
    }
}
