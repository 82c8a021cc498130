//! `conf/examples/nginx-replacement.yaml` serves as is (issue #19, item 7).
//!
//! The example listens on fixed ports (127.0.0.1:8000, admin 9900) in front of workers on
//! 127.0.0.1:8081-8083 and a UI on 127.0.0.1:8090, which would clash with other tests and
//! with anything on the machine. So [`serves_as_is`] runs the real thing inside a private
//! network namespace (`unshare --net`, root): it re-executes this test binary there, with
//! only [`inside_the_namespace`] selected, after bringing `lo` up and giving it a second,
//! non-loopback address (192.0.2.10, TEST-NET-1) to be a client the example's IP rule
//! refuses. The file is passed to `hotplex-proxy --config` unmodified.
//!
//! Without root or a working `unshare --net` the test is skipped with a loud message;
//! with `HOTPLEX_E2E_REQUIRE_NETNS=1` (CI) that is a failure instead.

use std::process::Command;
use std::time::Duration;

use hotplex_e2e::{wait_until_http_ok, ChildGuard};

use crate::support::http_service;
use crate::support::proxy::{spawn_worker_at, wait_probed, WorkerOpts, PROXY_BIN, WAIT};

/// Set for the re-executed binary: the host's network namespace (`/proc/self/ns/net`).
const HOST_NETNS: &str = "HOTPLEX_E2E_HOST_NETNS";
/// Set (CI): a host where the namespace cannot be made fails the test instead of skipping.
const REQUIRE: &str = "HOTPLEX_E2E_REQUIRE_NETNS";
/// The outside client's address inside the namespace (on `lo`, not in 127.0.0.0/8).
const OUTSIDER: &str = "192.0.2.10";
const INNER: &str = "example_nginx::inside_the_namespace";

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/examples/nginx-replacement.yaml")
}

fn netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Why the namespace cannot be made here, if it cannot.
fn cannot_unshare() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the test needs root (unshare --net)".into());
    }
    match Command::new("unshare").args(["--net", "true"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`unshare --net true` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

#[test]
fn serves_as_is() {
    if let Some(why) = cannot_unshare() {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but the example cannot run: {why}"
        );
        eprintln!(
            "\n########################################################################\n\
             ## SKIPPED example_nginx::serves_as_is: {why}.\n\
             ## conf/examples/nginx-replacement.yaml was NOT served end to end.\n\
             ########################################################################\n"
        );
        return;
    }
    let me = std::env::current_exe().expect("current exe");
    let script = format!(
        "ip link set lo up && ip addr add {OUTSIDER}/32 dev lo && exec \"$0\" {INNER} --exact --ignored --nocapture --test-threads 1"
    );
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &script])
        .arg(&me)
        .env(HOST_NETNS, netns())
        .output()
        .expect("run the example inside a network namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed inside the namespace ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("test {INNER} ... ok")) && stdout.contains("1 passed"),
        "the inner test did not run:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by serves_as_is inside a private network namespace (fixed ports)"]
async fn inside_the_namespace() {
    let host = std::env::var(HOST_NETNS)
        .expect("run by example_nginx::serves_as_is (inside a private network namespace)");
    assert_ne!(
        netns(),
        host,
        "not in a private network namespace: fixed ports"
    );

    // What the example expects: workers w1-w3 on 8081-8083, a UI on 8090.
    let mut workers = Vec::new();
    for (id, port) in [("w1", 8081), ("w2", 8082), ("w3", 8083)] {
        let at = format!("127.0.0.1:{port}").parse().expect("addr");
        workers.push(spawn_worker_at(id, Some(at), WorkerOpts::default()).await);
    }
    let ui_at = "127.0.0.1:8090".parse().expect("addr");
    let ui = http_service::start_at("ui", ui_at).await;

    // The proxy with the example, unmodified (its default upgrade socket in a temp dir,
    // the process's runtime directory, not the host's /run).
    let run = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(example())
        .env("RUNTIME_DIRECTORY", run.path())
        .env("RUST_LOG", "warn");
    let mut proxy = ChildGuard::spawn("proxy (nginx-replacement.yaml)", &mut cmd);
    wait_until_http_ok("http://127.0.0.1:9900/health/live", WAIT).await;
    proxy.assert_alive();
    wait_probed("127.0.0.1:9900".parse().expect("addr")).await;

    let base = "http://127.0.0.1:8000";
    let local = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let outsider = reqwest::Client::builder()
        .local_address(Some(OUTSIDER.parse().expect("ip")))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // The UI at `/`, with the response header rule (nginx add_header).
    let r = local.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(r.status(), 200);
    let h = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(h(&r, "x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(h(&r, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(h(&r, "referrer-policy").as_deref(), Some("same-origin"));
    let body: serde_json::Value = r.json().await.expect("UI JSON");
    assert_eq!(
        (body["name"].as_str(), body["path"].as_str()),
        (Some("ui"), Some("/"))
    );
    // Compression of a large enough UI answer (nginx gzip on).
    let r = local
        .get(format!("{base}/app.js?pad=4000"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("GET /app.js");
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "content-encoding").as_deref(), Some("gzip"));

    // The HotPlex API: a session and a turn (SSE) through the session pool.
    let r = local
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let node = h(&r, "x-hotplex-node").expect("x-hotplex-node");
    assert!(["w1", "w2", "w3"].contains(&node.as_str()), "{node}");
    let created: serde_json::Value = r.json().await.expect("JSON");
    let id = created["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();
    let r = local
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&serde_json::json!({"prompt": "hello from the example"}))
        .send()
        .await
        .expect("turn");
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-hotplex-node").as_deref(), Some(node.as_str()));
    assert!(h(&r, "content-type").is_some_and(|c| c.starts_with("text/event-stream")));
    let events = r.text().await.expect("SSE body");
    assert!(events.contains("completed"), "{events}");
    // Worker internals stay out of reach (declared surface).
    let r = local
        .get(format!("{base}/sessions"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 404, "the admin list is not forwarded");

    // The redirect (nginx `return 301`).
    let r = local
        .get(format!("{base}/app"))
        .send()
        .await
        .expect("GET /app");
    assert_eq!(r.status(), 301);
    assert_eq!(h(&r, "location").as_deref(), Some("http://127.0.0.1:8000/"));

    // The IP rule: /admin from this machine reaches the UI, from elsewhere it does not.
    let r = local
        .get(format!("{base}/admin/users"))
        .send()
        .await
        .expect("GET /admin");
    assert_eq!(r.status(), 200);
    let before = ui.seen().len();
    let r = outsider
        .get(format!("{base}/admin/users"))
        .send()
        .await
        .expect("GET /admin from outside");
    assert_eq!(r.status(), 403, "the allow list refuses {OUTSIDER}");
    let r = outsider
        .get(format!("{base}/from-outside"))
        .send()
        .await
        .expect("GET / from outside");
    assert_eq!(r.status(), 200, "the public UI serves {OUTSIDER}");
    // (The pool's health probes of `/` arrive meanwhile.)
    let seen: Vec<String> = ui.seen().into_iter().skip(before).map(|s| s.1).collect();
    assert!(seen.contains(&"/from-outside".to_string()), "{seen:?}");
    assert!(
        !seen.contains(&"/admin/users".to_string()),
        "the refused request never reached the UI: {seen:?}"
    );

    proxy.assert_alive();
    for w in &mut workers {
        w.guard.assert_alive();
    }
}
