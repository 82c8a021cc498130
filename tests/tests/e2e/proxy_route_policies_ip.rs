//! Proxy e2e: the per-route IP rules (`allow` / `deny`) and redirects of issue #19, with
//! real processes: the real proxy binary, real HTTP services (axum) for the `http` pool, a
//! real worker for the session pool. The client IP is the peer, or `X-Forwarded-For` only
//! when the peer is in `limits.trusted_proxies`: a forged header from an untrusted peer
//! can neither pass a deny nor enter an allow. A refused request never reaches a pool.

use hotplex_common::names::proxy as pn;

use crate::support::http_service::{self, HttpService, HEALTH_PATH};
use crate::support::proxy::*;
use crate::support::{client, metric_in};

/// The routes both proxies use: an admin UI allowed only from 10.1.0.0/16 (minus
/// 10.1.9.0/24) and 2001:db8::/32; a UI that denies loopback; the session API denying
/// 192.0.2.0/24; a redirect.
fn routes(ui: &HttpService) -> String {
    format!(
        "pools:\n  - name: ui\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
         interval: 200ms\n      failures: 1\n      successes: 1\n\
         routes:\n  - name: admin-ui\n    path: /admin-ui\n    pool: ui\n    auth: off\n    \
         allow: [\"10.1.0.0/16\", \"2001:db8::/32\"]\n    deny: [\"10.1.9.0/24\"]\n\
         \x20 - name: blocked\n    path: /blocked\n    pool: ui\n    auth: off\n    deny: [\"127.0.0.0/8\", \"::1\"]\n\
         \x20 - name: api\n    path: /sessions\n    pool: sessions\n    deny: [\"192.0.2.0/24\"]\n\
         \x20 - name: moved\n    path: /old\n    redirect:\n      to: https://new.example.test\n      status: 308\n\
         \x20 - name: moved-home\n    path: /home\n    path_match: exact\n    redirect:\n      to: \"http://127.0.0.1:1/landing?src=edge\"\n      status: 302\n      keep_path: false\n      keep_query: false\n\
         \x20 - name: open\n    path: /\n    pool: ui\n    auth: off\n",
        ui.addr
    )
}

async fn get_from(c: &reqwest::Client, p: &TestProxy, path: &str, xff: Option<&str>) -> Resp {
    let mut rb = c.get(format!("{}{path}", p.base()));
    if let Some(x) = xff {
        rb = rb.header("x-forwarded-for", x);
    }
    send(rb).await
}

/// Waits until the `ui` pool answers through the proxy (its health probe passed).
async fn wait_ui(c: &reqwest::Client, p: &TestProxy) {
    let ok = hotplex_e2e::eventually(WAIT, || async {
        get_from(c, p, "/", None).await.status == 200
    })
    .await;
    assert!(ok, "the ui pool never came up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_honour_xff_from_a_trusted_peer_only_and_never_forward_a_denied_request() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let ui = http_service::start("ui").await;
    let c = client();

    // A proxy behind a trusted load balancer (the test client on loopback): XFF honoured.
    let trusted = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &format!(
            "limits:\n  trusted_proxies: [\"127.0.0.1/32\", \"::1\"]\n{}",
            routes(&ui)
        ),
    ))
    .await;
    wait_ui(&c, &trusted).await;
    let seen = ui.seen().len();
    for (path, xff, status) in [
        ("/admin-ui/panel", Some("10.1.2.3"), 200),
        ("/admin-ui/panel", Some("198.51.100.7, 10.1.2.3"), 200),
        ("/admin-ui/panel", Some("2001:db8::5"), 200),
        ("/admin-ui/panel", Some("10.1.9.9"), 403),
        ("/admin-ui/panel", Some("2001:db9::5"), 403),
        // No header: the client is the peer (127.0.0.1), not in the allow list.
        ("/admin-ui/panel", None, 403),
        ("/blocked/x", Some("203.0.113.5"), 200),
        ("/blocked/x", None, 403),
    ] {
        let r = get_from(&c, &trusted, path, xff).await;
        assert_eq!(r.status, status, "{path} xff {xff:?}: {r:?}");
        if status == 403 {
            assert_eq!(r.body["error"], "ip_denied", "{r:?}");
            assert!(r.request_id.is_some(), "{r:?}");
        } else {
            assert_eq!(r.body["name"], "ui", "{r:?}");
        }
    }
    assert_eq!(
        ui.seen().len() - seen,
        4,
        "only the 4 admitted requests reached the upstream: {:?}",
        ui.seen()
    );
    // The session pool's route: a denied client never reaches the worker.
    let before = worker_requests_at(&c, &workers[0].base()).await;
    let r = send(
        c.post(format!("{}/sessions", trusted.base()))
            .header("x-forwarded-for", "192.0.2.44"),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["error"]),
        (403, &"ip_denied".into()),
        "{r:?}"
    );
    assert_eq!(worker_requests_at(&c, &workers[0].base()).await, before);
    let r = send(
        c.post(format!("{}/sessions", trusted.base()))
            .header("x-forwarded-for", "198.51.100.9"),
    )
    .await;
    assert_eq!(
        r.status, 201,
        "an allowed client creates its session: {r:?}"
    );
    let m = metrics(&c, &trusted).await;
    assert_eq!(
        metric_in(&m, pn::REJECTIONS, &["reason=\"ip_denied\""]),
        5.0
    );

    // The same routes on a proxy that trusts no peer: the header is ignored, the real
    // peer (127.0.0.1) decides. A forged XFF cannot get into the allow list...
    let direct = spawn_proxy(&proxy_yaml(&worker_list(&workers), &routes(&ui))).await;
    wait_ui(&c, &direct).await;
    let seen = ui.seen().len();
    for xff in ["10.1.2.3", "2001:db8::5", "127.0.0.1, 10.1.2.3"] {
        let r = get_from(&c, &direct, "/admin-ui/panel", Some(xff)).await;
        assert_eq!(
            (r.status, &r.body["error"]),
            (403, &"ip_denied".into()),
            "xff {xff}: {r:?}"
        );
    }
    // ...nor past a deny.
    for xff in ["203.0.113.5", "203.0.113.5, 198.51.100.1"] {
        let r = get_from(&c, &direct, "/blocked/x", Some(xff)).await;
        assert_eq!(
            (r.status, &r.body["error"]),
            (403, &"ip_denied".into()),
            "xff {xff}: {r:?}"
        );
    }
    assert_eq!(
        ui.seen().len(),
        seen,
        "nothing denied was forwarded: {:?}",
        ui.seen()
    );
    // The loopback client is not in the session route's deny list: a forged XFF in it
    // does not lock the real client out either.
    let r = send(
        c.post(format!("{}/sessions", direct.base()))
            .header("x-forwarded-for", "192.0.2.44"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let m = metrics(&c, &direct).await;
    assert_eq!(
        metric_in(&m, pn::REJECTIONS, &["reason=\"ip_denied\""]),
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_routes_are_answered_by_the_edge() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let ui = http_service::start("ui").await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), &routes(&ui))).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    wait_ui(&c, &p).await;
    let seen = ui.seen().len();
    let worker_before = worker_requests_at(&c, &workers[0].base()).await;
    for (method, path, status, location) in [
        (
            "GET",
            "/old/docs/a.html?lang=en&x=1",
            308,
            "https://new.example.test/old/docs/a.html?lang=en&x=1",
        ),
        ("POST", "/old", 308, "https://new.example.test/old"),
        (
            "GET",
            "/home?q=1",
            302,
            "http://127.0.0.1:1/landing?src=edge",
        ),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = c
            .request(m, format!("{}{path}", p.base()))
            .body(if method == "POST" { "{}" } else { "" })
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(loc, location, "{method} {path}");
        assert!(r.headers().get("x-request-id").is_some());
        let body: serde_json::Value = r.json().await.expect("json body");
        assert_eq!(body["redirect"], location);
    }
    // `/home` is exact: `/home/x` falls through to the ui route.
    let r = send(c.get(format!("{}/home/x", p.base()))).await;
    assert_eq!((r.status, &r.body["name"]), (200, &"ui".into()), "{r:?}");
    assert_eq!(
        ui.seen().len(),
        seen + 1,
        "redirects are never forwarded: {:?}",
        ui.seen()
    );
    assert_eq!(
        worker_requests_at(&c, &workers[0].base()).await,
        worker_before
    );
    let m = metrics(&c, &p).await;
    assert_eq!(
        metric_in(
            &m,
            hotplex_common::names::routes::ROUTE_REQUESTS,
            &["route=\"moved\"", "status=\"308\""]
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_edit_both_directions_with_variables() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let ui = http_service::start("ui").await;
    let yaml = proxy_yaml(
        &worker_list(&workers),
        &format!(
            "pools:\n  - name: ui\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
             interval: 200ms\n      failures: 1\n      successes: 1\n\
             routes:\n  - name: api\n    path: /sessions\n    pool: sessions\n    response_headers:\n      \
             set: {{Strict-Transport-Security: \"max-age=63072000\"}}\n\
             \x20 - name: ui\n    path: /\n    pool: ui\n    auth: off\n    request_headers:\n      \
             remove: [X-Drop-Me]\n      set: {{X-Tag: edge, X-Real-IP: \"$client_ip\", X-Origin: \"$scheme://$host\", X-Req: \"id=$request_id\"}}\n      \
             add: {{X-Multi: edge}}\n    response_headers:\n      remove: [Content-Type]\n      \
             set: {{X-Frame-Options: DENY}}\n      add: {{X-Served-By: \"edge $$ $scheme\"}}\n",
            ui.addr
        ),
    );
    let p = spawn_proxy(&yaml).await;
    let c = client();
    wait_ui(&c, &p).await;
    let r = c
        .get(format!("{}/page", p.base()))
        .header("host", "app.example.test:8443")
        .header("x-drop-me", "secret")
        .header("x-tag", "client")
        .header("x-multi", "client")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let hs = r.headers().clone();
    let one = |n: &str| hs.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(one("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(one("x-served-by").as_deref(), Some("edge $ http"));
    assert_eq!(
        one("content-type"),
        None,
        "removed from the response: {hs:?}"
    );
    let rid = one("x-request-id").expect("request id");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["name"], "ui");

    let h = ui.headers_of(ui.seen().len() - 1);
    let at_upstream = |n: &str| -> Vec<String> {
        h.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert!(at_upstream("x-drop-me").is_empty(), "{h:?}");
    assert_eq!(at_upstream("x-tag"), ["edge"], "set replaces: {h:?}");
    assert_eq!(at_upstream("x-real-ip"), ["127.0.0.1"], "{h:?}");
    assert_eq!(
        at_upstream("x-origin"),
        ["http://app.example.test"],
        "{h:?}"
    );
    assert_eq!(at_upstream("x-req"), [format!("id={rid}")], "{h:?}");
    assert_eq!(
        at_upstream("x-multi"),
        ["client", "edge"],
        "add appends: {h:?}"
    );

    // Response rules on the session route: the worker's answer gets the header.
    let r = c
        .post(format!("{}/sessions", p.base()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=63072000")
    );
    // The ui route has no such rule: the header is the session route's alone.
    let r = c
        .get(format!("{}/page", p.base()))
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("strict-transport-security").is_none());
}
