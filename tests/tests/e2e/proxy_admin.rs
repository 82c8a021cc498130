//! Proxy e2e: the authenticated admin API and the three reload triggers.
//! - `/admin/*` is open without `admin.tokens` (loopback), and needs a bearer token (plain or
//!   `sha256:`) once tokens are configured by a reload; `/metrics`, `/health/live` stay open;
//! - `GET /admin/config` and the metrics report the active config hash (one series);
//! - a change of the config file is picked up by the watcher (no signal, no API call); a bad
//!   file is rejected (failure counted, hash unchanged); an identical rewrite is ignored.

use hotplex_common::names;
use std::time::Duration;

use crate::support::proxy::*;
use hotplex_e2e::metric_value;
use hotplex_proxy::config::tokens::hashed_entry;

const TOKEN: &str = "e2e-admin-token-0123456789";
const SECOND: &str = "e2e-second-token-0123456789";

fn reloads(text: &str, result: &str) -> f64 {
    metric_value(
        text,
        names::config::RELOADS_TOTAL,
        &[&format!("result=\"{result}\"")],
    )
    .unwrap_or(-1.0)
}

fn active_hashes(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("hotplex_config_active_info{"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_auth_config_hash_and_file_watch() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let yaml = proxy_yaml(&worker_list(&workers), "");
    let p = spawn_proxy(&yaml).await;
    let c = client();
    let admin = p.admin_base();

    // No tokens: open (loopback). The config document.
    let cfg0 = send(c.get(format!("{admin}/admin/config"))).await;
    assert_eq!(cfg0.status, 200, "{cfg0:?}");
    let hash0 = cfg0.body["hash"].as_str().expect("hash").to_string();
    assert_eq!(hash0.len(), 16);
    assert_eq!(
        cfg0.body["source"].as_str(),
        Some(p.config_path.display().to_string().as_str())
    );
    assert!(cfg0.body["loaded_at"].as_f64().unwrap_or(0.0) > 1.7e9);

    // Configure tokens (one plain, one hashed) by a reload: auth keys are live-reloadable.
    let admin_extra = format!("  tokens: [\"{TOKEN}\", \"{}\"]\n", hashed_entry(SECOND));
    let hash1 = p.write_config_with(&admin_extra, &yaml);
    let r = send(c.post(format!("{admin}/admin/reload"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["config_hash"].as_str(), Some(hash1.as_str()));
    assert_eq!(r.body["config"]["hash"].as_str(), Some(hash1.as_str()));

    // Now /admin/* needs a bearer token.
    for path in ["/admin/workers", "/admin/config"] {
        let r = send(c.get(format!("{admin}{path}"))).await;
        assert_eq!(r.status, 401, "{path}: {r:?}");
        assert_eq!(r.body["error"], "unauthorized");
        let r = send(
            c.get(format!("{admin}{path}"))
                .bearer_auth("wrong-token-0123456789"),
        )
        .await;
        assert_eq!(r.status, 401, "{path} wrong token");
        for t in [TOKEN, SECOND] {
            let r = send(c.get(format!("{admin}{path}")).bearer_auth(t)).await;
            assert_eq!(r.status, 200, "{path} with a valid token: {r:?}");
        }
    }
    for path in [
        "/admin/reload",
        "/admin/workers/w1/drain",
        "/admin/workers/w1/resume",
    ] {
        let r = send(c.post(format!("{admin}{path}"))).await;
        assert_eq!(r.status, 401, "{path}");
    }
    assert_eq!(
        send(c.get(format!("{admin}/health/live"))).await.status,
        200
    );
    let text = metrics(&c, &p).await;
    let active = active_hashes(&text);
    assert_eq!(
        active.len(),
        1,
        "exactly one active hash series: {active:?}"
    );
    assert!(active[0].contains(&format!("hash=\"{hash1}\"")) && active[0].ends_with(" 1"));
    assert_eq!(reloads(&text, "success"), 1.0);

    // File watch: change a timeout in the file, no signal, no API call.
    let yaml2 = proxy_yaml(
        &worker_list(&workers),
        "timeouts:\n  connect: 400ms\n  read: 9s\n  write: 9s\n",
    );
    let hash2 = p.write_config_with(&admin_extra, &yaml2);
    let authed_hash = || async {
        send(c.get(format!("{admin}/admin/config")).bearer_auth(TOKEN))
            .await
            .body["hash"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        hotplex_e2e::eventually(Duration::from_secs(5), || async {
            authed_hash().await == hash2
        })
        .await,
        "the watcher reloaded the changed file"
    );
    let text = metrics(&c, &p).await;
    assert_eq!(reloads(&text, "success"), 2.0);
    assert_eq!(active_hashes(&text).len(), 1);

    // A bad file seen by the watcher: rejected, counted once, the running config stays.
    std::fs::write(
        &p.config_path,
        format!(
            "listen: \"{}\"\nadmin:\n  listen: \"{}\"\n{admin_extra}{}",
            p.configured.0,
            p.configured.1,
            yaml2.replace("read: 9s", "read: soon")
        ),
    )
    .expect("write bad");
    assert!(
        hotplex_e2e::eventually(Duration::from_secs(5), || async {
            reloads(&metrics(&c, &p).await, "failure") == 1.0
        })
        .await,
        "the bad file was tried and rejected"
    );
    // allow-sleep: a negative check: the watcher must not retry the bad file (no event to await)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let text = metrics(&c, &p).await;
    assert_eq!(reloads(&text, "failure"), 1.0, "tried once, not in a loop");
    assert_eq!(authed_hash().await, hash2, "old config keeps serving");
    assert!(!create(&c, &p.base()).await.0.is_empty(), "still serving");

    // The explicit call reports file, key and reason.
    let r = send(c.post(format!("{admin}/admin/reload")).bearer_auth(TOKEN)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["key"], "timeouts.read", "{r:?}");
    assert_eq!(r.body["config_hash"].as_str(), Some(hash2.as_str()));
    assert!(r.body["file"]
        .as_str()
        .unwrap_or("")
        .ends_with("proxy.yaml"));

    // Rewriting identical content to the active config triggers nothing.
    p.write_config_with(&admin_extra, &yaml2);
    // allow-sleep: a negative check: an identical rewrite must trigger no reload (no event to await)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = metrics(&c, &p).await;
    assert_eq!(
        (reloads(&text, "success"), reloads(&text, "failure")),
        (2.0, 2.0),
        "identical content is not reloaded"
    );

    // SIGHUP is the third trigger through the same path.
    let hash3 = p.write_config_with(
        &admin_extra,
        &proxy_yaml(&worker_list(&workers[..1]), "workers_removal_grace: 0s\n"),
    );
    p.guard.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        hotplex_e2e::eventually(Duration::from_secs(5), || async {
            authed_hash().await == hash3
        })
        .await
    );
}
