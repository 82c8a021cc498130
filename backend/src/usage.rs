//! What turns cost, per tenant: token and cost counters fed by the `completed` event of
//! any agent protocol (`usage` with token counts, `cost_usd`). The `tenant` label is
//! bounded: the first [`MAX_TENANT_LABELS`] tenants seen get their own value, later ones
//! count under [`OTHER_TENANT`]; sessions without a tenant count under [`NO_TENANT`].

use std::collections::HashSet;
use std::sync::Mutex;

use hotplex_common::names::worker;
use prometheus::{CounterVec, IntCounterVec, Opts, Registry};
use serde_json::{Map, Value};

/// Distinct `tenant` label values at most (count).
pub const MAX_TENANT_LABELS: usize = 100;
/// `tenant` value past [`MAX_TENANT_LABELS`].
pub const OTHER_TENANT: &str = "_other";
/// `tenant` value of anonymous sessions (direct clients, dev mode).
pub const NO_TENANT: &str = "_anonymous";
/// `kind` label values: the token counters of a turn's `usage`.
pub const TOKEN_KINDS: [&str; 4] = [
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
];

/// The usage counters.
pub struct UsageMetrics {
    tokens: IntCounterVec,
    cost: CounterVec,
    tenants: Mutex<HashSet<String>>,
}

impl UsageMetrics {
    /// Creates and registers the counters in `r`.
    #[allow(clippy::expect_used)]
    pub fn new(r: &Registry) -> Self {
        let tokens = IntCounterVec::new(
            Opts::new(
                worker::AGENT_TOKENS,
                "Tokens used by agent turns, by tenant and kind.",
            ),
            &["tenant", "kind"],
        )
        .expect("valid counter");
        let cost = CounterVec::new(
            Opts::new(
                worker::AGENT_COST_USD,
                "Cost of agent turns in US dollars, by tenant.",
            ),
            &["tenant"],
        )
        .expect("valid counter");
        let tokens = crate::metrics::reg(r, tokens);
        let cost = crate::metrics::reg(r, cost);
        for k in TOKEN_KINDS {
            tokens.with_label_values(&[NO_TENANT, k]);
        }
        cost.with_label_values(&[NO_TENANT]);
        UsageMetrics {
            tokens,
            cost,
            tenants: Mutex::new(HashSet::new()),
        }
    }

    /// The bounded `tenant` label of `tenant`.
    pub fn label(&self, tenant: Option<&str>) -> String {
        let Some(t) = tenant else {
            return NO_TENANT.to_string();
        };
        let mut seen = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(t) {
            return t.to_string();
        }
        if seen.len() < MAX_TENANT_LABELS {
            seen.insert(t.to_string());
            return t.to_string();
        }
        OTHER_TENANT.to_string()
    }

    /// Counts one finished turn's `usage` and `cost_usd` (absent fields count 0).
    pub fn record(&self, tenant: Option<&str>, fields: &Map<String, Value>) {
        let usage = fields.get("usage").and_then(Value::as_object);
        let cost = fields
            .get("cost_usd")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c > 0.0);
        if usage.is_none() && cost.is_none() {
            return;
        }
        let label = self.label(tenant);
        for k in TOKEN_KINDS {
            if let Some(n) = usage.and_then(|u| u.get(k)).and_then(Value::as_u64) {
                self.tokens.with_label_values(&[&label, k]).inc_by(n);
            }
        }
        if let Some(c) = cost {
            self.cost.with_label_values(&[&label]).inc_by(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_per_bounded_tenant() {
        let r = Registry::new();
        let u = UsageMetrics::new(&r);
        let f = json!({"usage":{"input_tokens":10,"output_tokens":3},"cost_usd":0.5});
        let f = f.as_object().expect("object");
        u.record(Some("acme"), f);
        u.record(Some("acme"), f);
        u.record(None, f);
        assert_eq!(
            u.tokens.with_label_values(&["acme", "input_tokens"]).get(),
            20
        );
        assert_eq!(u.cost.with_label_values(&["acme"]).get(), 1.0);
        assert_eq!(
            u.tokens
                .with_label_values(&[NO_TENANT, "output_tokens"])
                .get(),
            3
        );
        for i in 0..MAX_TENANT_LABELS + 5 {
            u.record(Some(&format!("t{i}")), f);
        }
        assert_eq!(
            u.tokens
                .with_label_values(&[OTHER_TENANT, "input_tokens"])
                .get(),
            60
        );
        assert_eq!(u.label(Some("acme")), "acme");
    }
}
