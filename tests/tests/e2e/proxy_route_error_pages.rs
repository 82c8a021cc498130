//! Proxy e2e: per-route error pages (`routes[].error_pages`, issue #19), with the real
//! proxy binary and a real HTTP service behind an `http` pool: the UI route answers the
//! edge's errors with its HTML pages while the API route keeps the JSON catalogue.

use crate::support::client;
use crate::support::http_service::{self, HttpService, HEALTH_PATH};
use crate::support::proxy::*;

const KEY: &str = "error-pages-test-key-0123456789";
const PAGE_V1: &str = "<!doctype html><h1>The UI is down, back soon</h1>\n";
const PAGE_V2: &str = "<!doctype html><h1>Maintenance</h1>\n";

fn yaml(workers: &[TestWorker], svc: &HttpService, page: &std::path::Path, mark: &str) -> String {
    proxy_yaml(
        &worker_list(workers),
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: t\n      hash: \"{}\"\n\
             pools:\n  - name: ui\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
             interval: 200ms\n      failures: 1\n      successes: 1\n\
             routes:\n  - name: api\n    path: /api\n    pool: ui\n    auth: off\n\
             \x20 - name: login\n    path: /login\n    pool: ui\n    error_pages:\n      \
             401: {{content_type: text/plain, body: \"sign in\"}}\n\
             \x20 - name: ui\n    path: /\n    pool: ui\n    auth: off\n    max_body_bytes: 16\n    error_pages:\n      \
             503: {{file: \"{}\"}}\n      413: {{content_type: text/html, body: \"<p>too big</p>\"}}\n# {mark}\n",
            key_hash(KEY),
            svc.addr,
            page.display()
        ),
    )
}

struct Raw {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: String,
}

async fn raw(rb: reqwest::RequestBuilder) -> Raw {
    let r = rb.send().await.expect("request");
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, retry_after) = (h("content-type").unwrap_or_default(), h("retry-after"));
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    Raw {
        status,
        content_type,
        retry_after,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_route_gets_its_html_503_while_the_api_route_keeps_json() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let svc = http_service::start("ui").await;
    let dir = tempfile::tempdir().expect("dir");
    let page = dir.path().join("503.html");
    std::fs::write(&page, PAGE_V1).expect("page");
    let p = spawn_proxy(&yaml(&workers, &svc, &page, "v1")).await;
    let c = client();
    let base = p.base();

    let ok = raw(c.get(format!("{base}/index.html"))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // A body over the UI route's 16 bytes: its HTML 413.
    let big = raw(c.post(format!("{base}/form")).body(vec![b'a'; 100])).await;
    assert_eq!(big.status, 413);
    assert!(
        big.content_type.starts_with("text/html"),
        "{}",
        big.content_type
    );
    assert_eq!(big.body, "<p>too big</p>");

    // The login route (auth required): its text 401 without a key, served with one.
    let keyed = raw(c.get(format!("{base}/login")).header("x-api-key", KEY)).await;
    assert_eq!(keyed.status, 200, "{}", keyed.body);
    let denied = c.get(format!("{base}/login")).send().await.expect("401");
    assert_eq!(denied.status(), 401);
    assert!(
        denied.headers().get("www-authenticate").is_some(),
        "the refusal's headers are kept: {:?}",
        denied.headers()
    );
    let denied = raw(c.get(format!("{base}/login"))).await;
    assert_eq!(denied.content_type, "text/plain");
    assert_eq!(denied.body, "sign in");

    // The pool goes down: the UI route's page, the API route's JSON.
    svc.set_healthy(false);
    let down = hotplex_e2e::eventually(WAIT, || async {
        raw(c.get(format!("{base}/index.html"))).await.status == 503
    })
    .await;
    assert!(down, "the pool never went down");
    let ui = raw(c.get(format!("{base}/index.html"))).await;
    assert_eq!(ui.status, 503);
    assert_eq!(ui.content_type, "text/html; charset=utf-8");
    assert_eq!(ui.body, PAGE_V1);
    assert!(ui.retry_after.is_some(), "Retry-After kept on a page");
    let api = raw(c.get(format!("{base}/api/items"))).await;
    assert_eq!(api.status, 503);
    assert_eq!(api.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    assert_eq!(v["error"], "no_healthy_upstream", "{v}");
    // no_route is never a route's: JSON whatever the pages (no route matched)... here
    // `/` takes every path, so every answer on it is the UI's.

    // Reload: the file is read again.
    std::fs::write(&page, PAGE_V2).expect("page v2");
    p.write_config(&yaml(&workers, &svc, &page, "v2"));
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ui = raw(c.get(format!("{base}/index.html"))).await;
    assert_eq!((ui.status, ui.body.as_str()), (503, PAGE_V2));

    // A reload naming a missing page is refused and the running pages stay.
    let gone = dir.path().join("gone.html");
    p.write_config(&yaml(&workers, &svc, &gone, "v3"));
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert!(r.status >= 400, "{r:?}");
    let text = r.body.to_string();
    assert!(text.contains("routes[2].error_pages.503.file"), "{text}");
    let ui = raw(c.get(format!("{base}/index.html"))).await;
    assert_eq!((ui.status, ui.body.as_str()), (503, PAGE_V2));
}
