//! Route authentication modes (issue #19, item 3): `auth: required`, `optional`, `off` on
//! `http` routes, against a real proxy, a real worker and a real HTTP service.
//!
//! - `required`: no or a bad credential is 401, never forwarded;
//! - `optional`: a presented credential is checked exactly as with `required` (a bad key
//!   or token 401, a key scoped to other routes 403), none passes anonymously; the
//!   route's rate limit then counts per client IP;
//! - `off`: credentials are ignored;
//! - every mode strips the client's credentials before the service;
//! - a reload weakening a route's auth (required -> optional) is refused as a downgrade.

use std::net::IpAddr;
use std::time::Duration;

use hotplex_e2e::eventually;

use crate::support::http_service::{self, HEALTH_PATH};
use crate::support::proxy::*;

const KEY_A: &str = "route-auth-key-a-0123456789";
/// A key scoped to the `req` route only.
const KEY_B: &str = "route-auth-key-b-0123456789";

fn yaml(workers: &[TestWorker], svc: std::net::SocketAddr, opt_auth: &str) -> String {
    proxy_yaml(
        &worker_list(workers),
        &format!(
            "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n\
             \x20   - name: tenant-b\n      hash: \"{}\"\n      routes: [req]\n\
             limits:\n  routes:\n    opt: {{rate: 0.01, burst: 2}}\n\
             pools:\n  - name: svc\n    upstreams: [\"{svc}\"]\n    health_check:\n      \
             path: {HEALTH_PATH}\n      interval: 200ms\n\
             routes:\n  - name: req\n    path: /req\n    pool: svc\n\
             \x20 - name: opt\n    path: /opt\n    pool: svc\n    auth: {opt_auth}\n\
             \x20 - name: off\n    path: /off\n    pool: svc\n    auth: off\n",
            key_hash(KEY_A),
            key_hash(KEY_B),
        ),
    )
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is local).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse::<IpAddr>().expect("ip")))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_optional_and_off_routes() {
    let workers = spawn_workers(
        1,
        WorkerOpts {
            light: true,
            ..WorkerOpts::default()
        },
    )
    .await;
    let svc = http_service::start("svc").await;
    let p = spawn_proxy(&yaml(&workers, svc.addr, "optional")).await;
    let c = client();
    let up = eventually(WAIT, || async {
        send(c.get(format!("{}/off/ready", p.base()))).await.status == 200
    })
    .await;
    assert!(up, "the svc pool never served");

    // What the service saw of the last request (path, credential headers).
    let last = || {
        let seen = svc.seen();
        let i = seen.len() - 1;
        let creds: Vec<String> = svc
            .headers_of(i)
            .into_iter()
            .filter(|(k, _)| k == "x-api-key" || k == "authorization")
            .map(|(k, _)| k)
            .collect();
        (seen[i].1.clone(), creds)
    };
    let forwarded = |path: &str| svc.seen().iter().filter(|s| s.1 == path).count();
    let get = |path: &str, cred: Option<(&str, &str)>| {
        let mut r = c.get(format!("{}{path}", p.base()));
        if let Some((k, v)) = cred {
            r = r.header(k, v);
        }
        send(r)
    };
    let reason = |r: &Resp| r.body["reason"].as_str().unwrap_or("").to_string();

    // required: no key, a bad key: 401, never forwarded; the key: served, stripped.
    let r = get("/req/a", None).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (401, "missing_key"),
        "{r:?}"
    );
    let r = get("/req/b", Some(("x-api-key", "wrong-key-0123456789"))).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (401, "invalid_key"),
        "{r:?}"
    );
    assert_eq!(forwarded("/req/a") + forwarded("/req/b"), 0);
    let r = get("/req/c", Some(("x-api-key", KEY_A))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(last(), ("/req/c".to_string(), vec![]));

    // optional: anonymous passes; a bad key or token is refused as required would.
    let r = get("/opt/anon", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(last(), ("/opt/anon".to_string(), vec![]));
    let r = get("/opt/bad", Some(("x-api-key", "wrong-key-0123456789"))).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (401, "invalid_key"),
        "{r:?}"
    );
    let r = get("/opt/bad", Some(("authorization", "Bearer not-a-key-0123"))).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (401, "invalid_key"),
        "{r:?}"
    );
    assert_eq!(
        forwarded("/opt/bad"),
        0,
        "a refused credential is never forwarded"
    );
    // A valid key: the tenant is known (its route scope applies), credentials stripped.
    let r = get(
        "/opt/keyed",
        Some(("authorization", &format!("Bearer {KEY_A}"))),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(last(), ("/opt/keyed".to_string(), vec![]));
    let r = get("/opt/scoped", Some(("x-api-key", KEY_B))).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (403, "forbidden_route"),
        "{r:?}"
    );
    assert_eq!(forwarded("/opt/scoped"), 0);
    let r = get("/req/scoped", Some(("x-api-key", KEY_B))).await;
    assert_eq!(r.status, 200, "tenant-b's own route: {r:?}");

    // off: a bad key is ignored (anonymous), and stripped all the same.
    let r = get("/off/x", Some(("x-api-key", "wrong-key-0123456789"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(last(), ("/off/x".to_string(), vec![]));

    // optional's rate limit (burst 2): anonymous clients count per IP, a tenant on its own.
    let (x, y) = (client_from("127.0.0.3"), client_from("127.0.0.4"));
    for i in 0..2 {
        let r = send(x.get(format!("{}/opt/rl{i}", p.base()))).await;
        assert_eq!(r.status, 200, "within the burst: {r:?}");
    }
    let r = send(x.get(format!("{}/opt/rl2", p.base()))).await;
    assert_eq!(r.status, 429, "127.0.0.3 over its bucket: {r:?}");
    assert_eq!(forwarded("/opt/rl2"), 0);
    let r = send(y.get(format!("{}/opt/rl3", p.base()))).await;
    assert_eq!(r.status, 200, "another IP has its own bucket: {r:?}");
    let r = send(
        x.get(format!("{}/opt/rl4", p.base()))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 200, "tenant-a's bucket is not 127.0.0.3's: {r:?}");

    // A reload from required to optional (the req route) is a downgrade: refused.
    let weaker = yaml(&workers, svc.addr, "optional").replace(
        "    path: /req\n    pool: svc\n",
        "    path: /req\n    pool: svc\n    auth: optional\n",
    );
    assert_ne!(weaker, yaml(&workers, svc.addr, "optional"));
    p.write_config(&weaker);
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert_ne!(r.status, 200, "{r:?}");
    assert!(
        r.body.to_string().contains("routes[0].auth")
            && r.body.to_string().contains("optional authentication"),
        "{r:?}"
    );
    let r = get("/req/after", None).await;
    assert_eq!(
        r.status, 401,
        "the running config still requires auth: {r:?}"
    );
}
