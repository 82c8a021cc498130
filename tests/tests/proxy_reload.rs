//! Proxy e2e: hot reload (`POST /admin/reload` and `SIGHUP`): adding a worker moves no
//! session, a bad file keeps the running config, removing a worker gives its sessions 410.

#[path = "support/proxy.rs"]
mod proxy_support;

use std::time::Duration;

use hotplex_e2e::metric_value;
use proxy_support::*;

fn write_config(p: &TestProxy, workers_yaml: &str) {
    let full = format!(
        "listen: \"{}\"\nadmin:\n  listen: \"{}\"\n{workers_yaml}",
        p.listen, p.admin
    );
    std::fs::write(&p.config_path, full).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_workers_without_moving_sessions() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers[..2]), "")).await;
    let c = client();
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(create(&c, &p.base()).await);
    }
    let hash0 = admin_workers(&c, &p).await["config_hash"].clone();

    // Add w3 and reload through the admin API.
    write_config(&p, &proxy_yaml(&worker_list(&workers), ""));
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(admin_workers(&c, &p).await["config_hash"], hash0);
    for (id, node) in &sessions {
        let r = get_session(&c, &p.base(), id).await;
        assert_eq!(
            (r.status, r.node.as_deref()),
            (200, Some(node.as_str())),
            "no move"
        );
    }
    let mut on_w3 = Vec::new();
    for _ in 0..5 {
        let s = create(&c, &p.base()).await;
        assert_eq!(s.1, "w3", "the new, empty worker is filled first");
        on_w3.push(s);
    }

    // A broken file is rejected, naming file and key; the running config stays.
    write_config(&p, "workers:\n  - id: w1\n    address: nowhere\n");
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["key"], "workers[0].address", "{r:?}");
    assert!(r.body["message"]
        .as_str()
        .unwrap_or("")
        .contains(&p.config_path.display().to_string()));
    assert_eq!(
        get_session(&c, &p.base(), &on_w3[0].0)
            .await
            .node
            .as_deref(),
        Some("w3")
    );
    // So is a listener change (needs a restart).
    let moved = format!(
        "listen: \"127.0.0.1:1\"\nadmin:\n  listen: \"{}\"\n{}",
        p.admin,
        proxy_yaml(&worker_list(&workers), "")
    );
    std::fs::write(&p.config_path, moved).expect("write");
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert_eq!(
        (r.status, &r.body["key"]),
        (400, &serde_json::json!("listen"))
    );

    // Remove w3 with SIGHUP: its sessions get 410, the others are untouched.
    write_config(&p, &proxy_yaml(&worker_list(&workers[..2]), ""));
    p.guard.signal(nix::sys::signal::Signal::SIGHUP);
    let (id3, _) = &on_w3[0];
    assert!(
        hotplex_e2e::eventually(Duration::from_secs(5), || async {
            get_session(&c, &p.base(), id3).await.status == 410
        })
        .await,
        "w3 sessions are gone after the reload"
    );
    assert!(p.guard.pid() > 0);
    for (id, node) in &sessions {
        let r = get_session(&c, &p.base(), id).await;
        assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
    }
    let text = metrics(&c, &p).await;
    assert_eq!(
        metric_value(
            &text,
            "hotplex_config_reloads_total",
            &["result=\"success\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "hotplex_config_reloads_total",
            &["result=\"failure\""]
        ),
        Some(2.0)
    );
}
