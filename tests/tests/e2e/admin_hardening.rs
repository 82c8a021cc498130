//! The proxy's admin API against a browser (issue 24): cross-site and DNS-rebinding
//! requests are refused even without tokens, and every refusal is audited with the peer.

use crate::support::proxy::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_and_rebinding_requests_are_refused() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = spawn_logged_proxy(dir.path(), &proxy_yaml(&worker_list(&workers), ""), &[]).await;
    let c = client();
    let admin = p.admin_base();
    let reload = format!("{admin}/admin/reload");
    let drain = format!("{admin}/admin/workers/w1/drain");
    // A page on evil.example posting text/plain (no preflight needed): refused.
    let r = send(
        c.post(&drain)
            .header("origin", "http://evil.example")
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body["error"], "cross_origin");
    // The same without Origin, but not JSON: refused.
    let r = send(
        c.post(&reload)
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_eq!(r.status, 415, "{r:?}");
    // A rebinding name in Host: refused, reads too.
    let r = send(
        c.get(format!("{admin}/admin/workers"))
            .header("host", "rebind.evil.example"),
    )
    .await;
    assert_eq!(r.status, 421, "{r:?}");
    let r = send(c.post(&drain).header("host", "rebind.evil.example:9900")).await;
    assert_eq!(r.status, 421, "{r:?}");
    // Nothing was drained.
    let workers_now = send(c.get(format!("{admin}/admin/workers"))).await.body;
    let w1 = workers_now["workers"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["id"] == "w1").cloned())
        .expect("w1");
    assert_eq!(w1["draining"], false, "{w1}");
    // The operator's own calls work (curl-style: no Origin, no body or JSON).
    let r = send(c.post(&reload)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        c.post(&drain)
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert!(r.status < 300, "{r:?}");
    // Every refusal is audited with the peer address.
    let audit: Vec<serde_json::Value> = p
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit" && v["outcome"] == "denied")
        .collect();
    assert_eq!(audit.len(), 4, "{audit:#?}");
    assert!(audit.iter().all(|v| v["ip"] == "127.0.0.1"), "{audit:#?}");
    // /metrics and /health/live stay open to scrapers and probes (any Host).
    let r = send(
        c.get(format!("{admin}/metrics"))
            .header("host", "prometheus.svc"),
    )
    .await;
    assert_eq!(r.status, 200);
}
