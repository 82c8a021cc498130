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

/// The `method` label values: the standard methods (RFC 9110 and PATCH) and [`OTHER_METHOD`].
pub const METHOD_LABELS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// The `method` label of any other method (a raw method is client input: never a label).
pub const OTHER_METHOD: &str = "other";

/// The bounded `method` label of a request method.
pub fn method_label(method: &str) -> &'static str {
    METHOD_LABELS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(OTHER_METHOD)
}

/// The `status` label of a status code: the code itself for real HTTP codes (100..=599,
/// a fixed set), `other` for anything else an upstream could send.
pub fn status_label(code: u16, buf: &mut [u8; 3]) -> &str {
    if !(100..=599).contains(&code) {
        return OTHER_METHOD;
    }
    buf[0] = b'0' + (code / 100) as u8;
    buf[1] = b'0' + (code / 10 % 10) as u8;
    buf[2] = b'0' + (code % 10) as u8;
    std::str::from_utf8(buf).unwrap_or(OTHER_METHOD)
}

/// The content type of [`render`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounter, Opts};

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label(&"X".repeat(100_000)), "other");
        let mut b = [0u8; 3];
        assert_eq!(status_label(200, &mut b), "200");
        assert_eq!(status_label(404, &mut b), "404");
        assert_eq!(status_label(599, &mut b), "599");
        assert_eq!(status_label(999, &mut b), "other");
        assert_eq!(status_label(0, &mut b), "other");
    }

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
