//! Proxy e2e: the edge's own answers come from one catalogue and one writer
//! (`proxy/src/errors/`, `docs/errors.md`, issue #19 item 4), with the real proxy binary,
//! a real worker and a real HTTP service: exact JSON bytes, the client's request id, the
//! catalogue's headers, a route's error page through the same writer (status and headers
//! kept), redirects and refusals counted (or not) under the documented reason, and every
//! reason's series present at 0 on a fresh proxy.

use hotplex_common::names::proxy as pn;

use crate::support::client;
use crate::support::http_service::{self, HEALTH_PATH};
use crate::support::proxy::*;

const KEY: &str = "edge-errors-test-key-0123456789";

/// Status, named headers and the body text of an answer.
struct Raw {
    status: u16,
    header: std::collections::HashMap<String, String>,
    body: String,
}

async fn raw(rb: reqwest::RequestBuilder) -> Raw {
    let r = rb.send().await.expect("request");
    let header = r
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    Raw {
        status,
        header,
        body,
    }
}

impl Raw {
    fn h(&self, n: &str) -> &str {
        self.header.get(n).map_or("", String::as_str)
    }
}

fn rejections(text: &str, reason: Option<&str>) -> f64 {
    let label = reason.map(|r| format!("reason=\"{r}\""));
    let labels: Vec<&str> = label.iter().map(String::as_str).collect();
    hotplex_e2e::metric_value(text, pn::REJECTIONS, &labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_answers_follow_the_catalogue() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let ui = http_service::start("ui").await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: t\n      hash: \"{}\"\n\
             pools:\n  - name: ui\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
             interval: 200ms\n      failures: 1\n      successes: 1\n\
             routes:\n  - name: api\n    path: /sessions\n    pool: sessions\n\
             \x20 - name: blocked\n    path: /blocked\n    pool: ui\n    auth: off\n    deny: [\"127.0.0.0/8\", \"::1\"]\n    \
             error_pages:\n      403: {{content_type: text/plain, body: \"not from here\"}}\n\
             \x20 - name: moved\n    path: /old\n    redirect:\n      to: https://new.example.test\n      status: 308\n\
             \x20 - name: ui\n    path: /ui\n    pool: ui\n    auth: off\n",
            key_hash(KEY),
            ui.addr
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = p.base();

    // A fresh proxy: every reason the edge counts has its series, at 0 (`ip_denied` was
    // missing once: named here too).
    let m = metrics(&client(), &p).await;
    let reasons = hotplex_proxy::metrics::REJECTION_REASONS;
    for reason in reasons.iter().chain(&["ip_denied", "no_route", "auth"]) {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            hotplex_e2e::metric_value(&m, pn::REJECTIONS, &[&label]),
            Some(0.0),
            "{reason} at 0 from the start: {m}"
        );
    }
    let ok = hotplex_e2e::eventually(WAIT, || async {
        raw(c.get(format!("{base}/ui/x"))).await.status == 200
    })
    .await;
    assert!(ok, "the ui pool never came up");

    // No route: the catalogue's bytes, the client's request id, nothing forwarded.
    let seen = ui.seen().len();
    let r = raw(c
        .get(format!("{base}/nothing"))
        .header("x-request-id", "e2e-rid-1"))
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        r#"{"error":"no_route","message":"no route matches this host, path and method"}"#
    );
    assert_eq!(r.h("content-type"), "application/json");
    assert_eq!(r.h("content-length"), r.body.len().to_string());
    assert_eq!(r.h("x-request-id"), "e2e-rid-1");

    // An admission refusal through the same writer: exact bytes and WWW-Authenticate.
    let r = raw(c.post(format!("{base}/sessions")).body("{}")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        r#"{"error":"unauthorized","message":"a valid API key is required (X-API-Key, Authorization: Bearer, or WebSocket subprotocol hotplex-api-<key>)","reason":"missing_key"}"#
    );
    assert_eq!(r.h("www-authenticate"), "Bearer realm=\"hotplex\"");
    assert!(!r.h("x-request-id").is_empty());

    // The route's page for 403: its body and type, the catalogue's status, a request id.
    let r = raw(c
        .get(format!("{base}/blocked/x"))
        .header("x-request-id", "e2e-rid-2"))
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        (r.h("content-type"), r.body.as_str()),
        ("text/plain", "not from here")
    );
    assert_eq!(r.h("x-request-id"), "e2e-rid-2");
    assert_eq!(ui.seen().len(), seen, "nothing refused was forwarded");

    // A redirect: Location and its JSON body, not counted as a rejection.
    let before = rejections(&metrics(&client(), &p).await, None);
    let r = raw(c.get(format!("{base}/old/a?b=1"))).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.h("location"), "https://new.example.test/old/a?b=1");
    assert_eq!(
        r.body,
        r#"{"redirect":"https://new.example.test/old/a?b=1"}"#
    );

    let m = metrics(&client(), &p).await;
    assert_eq!(
        rejections(&m, None),
        before,
        "a redirect is no rejection: {m}"
    );
    assert_eq!(rejections(&m, Some("no_route")), 1.0, "{m}");
    assert_eq!(rejections(&m, Some("auth")), 1.0, "{m}");
    assert_eq!(rejections(&m, Some("ip_denied")), 1.0, "{m}");
    assert_eq!(rejections(&m, None), 3.0, "{m}");
}
