//! Registry helpers: a registry carrying the `component` const label, and text rendering.

use std::collections::HashMap;

use prometheus::{Encoder, Registry, TextEncoder};

use crate::names::COMPONENT_LABEL;

/// A registry whose every metric carries `component="<component>"`.
pub fn component_registry(component: &str) -> Registry {
    let labels = HashMap::from([(COMPONENT_LABEL.to_string(), component.to_string())]);
    // Only fails for an invalid prefix or label name; ours are constants.
    Registry::new_custom(None, Some(labels)).unwrap_or_default()
}

/// Renders a registry in the Prometheus text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::with_capacity(16 * 1024);
    let families = registry.gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "failed to encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The content type of [`render`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounter, Opts};

    #[test]
    fn component_label_is_rendered() {
        let reg = component_registry("worker");
        let c = IntCounter::with_opts(Opts::new(crate::names::shared::SESSIONS_TOTAL, "help"))
            .expect("valid counter");
        reg.register(Box::new(c.clone())).expect("register");
        c.inc();
        let text = render(&reg);
        assert!(
            text.contains("hotplex_sessions_total{component=\"worker\"} 1"),
            "{text}"
        );
    }
}
