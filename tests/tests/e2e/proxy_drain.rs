//! Proxy e2e: draining.
//! - `POST /admin/workers/{id}/drain`: no new sessions on the worker, its sessions keep
//!   working; visible in `/admin/workers` and `hotplex_proxy_worker_draining`; survives a
//!   reload; `resume` undoes it; `workers[].drain: true` drains by config;
//! - removing a worker from the config drains it for `workers_removal_grace` (state
//!   `removing`, pinned sessions and an open WebSocket still reach it), then it is gone (410).

use hotplex_common::names;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use hotplex_e2e::metric_value;
use serde_json::{json, Value};

fn draining_metric(text: &str, w: &str) -> Option<f64> {
    metric_value(
        text,
        names::proxy::WORKER_DRAINING,
        &[&format!("worker=\"{w}\"")],
    )
}

/// `workers` with a per-worker extra line (e.g. `drain: true`).
fn yaml_with(workers: &[TestWorker], extra_for: &[(&str, &str)], tail: &str) -> String {
    let mut y = proxy_yaml(&worker_list(workers), tail);
    for (id, extra) in extra_for {
        y = y.replace(
            &format!("  - id: {id}\n"),
            &format!("  - id: {id}\n    {extra}\n"),
        );
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_survives_reload_and_resumes() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let admin = p.admin_base();
    let mut sessions = Vec::new();
    for _ in 0..9 {
        sessions.push(create(&c, &p.base()).await);
    }
    assert!(sessions.iter().any(|s| s.1 == "w1"));

    let r = send(c.post(format!("{admin}/admin/workers/w1/drain"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["state"], "draining");
    assert_eq!(r.body["draining"], true);
    assert_eq!(
        send(c.post(format!("{admin}/admin/workers/nope/drain")))
            .await
            .status,
        404
    );
    assert_eq!(draining_metric(&metrics(&c, &p).await, "w1"), Some(1.0));
    for _ in 0..12 {
        let (_, node) = create(&c, &p.base()).await;
        assert_ne!(node, "w1", "a draining worker gets no new session");
    }
    for (id, node) in &sessions {
        let r = get_session(&c, &p.base(), id).await;
        assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
    }
    let w1 = admin_worker(&c, &p, "w1").await;
    assert_eq!(
        w1["sessions"].as_u64(),
        Some(sessions.iter().filter(|s| s.1 == "w1").count() as u64),
        "{w1}"
    );

    // A reload (w3 drained by config, a timeout changed) keeps the operator drain of w1.
    p.write_config(&yaml_with(
        &workers,
        &[("w3", "drain: true")],
        "timeouts:\n  connect: 400ms\n  read: 9s\n  write: 9s\n",
    ));
    let r = send(c.post(format!("{admin}/admin/reload"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(admin_worker(&c, &p, "w1").await["state"], "draining");
    assert_eq!(admin_worker(&c, &p, "w3").await["state"], "draining");
    let text = metrics(&c, &p).await;
    assert_eq!(draining_metric(&text, "w1"), Some(1.0));
    assert_eq!(draining_metric(&text, "w3"), Some(1.0));
    assert_eq!(draining_metric(&text, "w2"), Some(0.0));
    for _ in 0..6 {
        assert_eq!(
            create(&c, &p.base()).await.1,
            "w2",
            "only w2 takes new sessions"
        );
    }

    // Resume: w1 is the emptiest placeable worker again and gets the next session.
    let r = send(c.post(format!("{admin}/admin/workers/w1/resume"))).await;
    assert_eq!((r.status, &r.body["state"]), (200, &json!("active")));
    assert_eq!(draining_metric(&metrics(&c, &p).await, "w1"), Some(0.0));
    assert_eq!(create(&c, &p.base()).await.1, "w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_worker_drains_for_its_grace_then_is_gone() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let admin = p.admin_base();
    let mut sessions = Vec::new();
    for _ in 0..9 {
        sessions.push(create(&c, &p.base()).await);
    }
    let on_w3: Vec<_> = sessions.iter().filter(|s| s.1 == "w3").cloned().collect();
    assert!(!on_w3.is_empty());
    // An open WebSocket on w3 (pinned by its session id in the query).
    let (id3, _) = &on_w3[0];
    let url = format!("ws://{}/ws/v1/agent?session_id={id3}", p.listen);
    let (mut ws, resp, _) = ws_connect_checked(&url, &[]).await;
    assert_eq!(
        resp.headers()
            .get("x-hotplex-worker")
            .and_then(|v| v.to_str().ok()),
        Some("w3")
    );
    assert_eq!(
        terminal_event(&ws_execute(&mut ws, 1, id3, "hi").await.expect("ws turn")),
        "completed"
    );

    let grace = Duration::from_secs(4);
    p.write_config(&proxy_yaml(
        &worker_list(&workers[..2]),
        "workers_removal_grace: 4s\n",
    ));
    let removed_at = Instant::now();
    let r = send(c.post(format!("{admin}/admin/reload"))).await;
    assert_eq!(r.status, 200, "{r:?}");

    let w3 = admin_worker(&c, &p, "w3").await;
    assert_eq!(w3["state"], "removing", "{w3}");
    assert!(w3["removing_until"].as_u64().is_some());
    let text = metrics(&c, &p).await;
    assert_eq!(draining_metric(&text, "w3"), Some(1.0));
    assert!(
        metric_value(&text, names::proxy::WORKER_SESSIONS, &["worker=\"w3\""]).unwrap_or(0.0)
            >= 1.0
    );
    for _ in 0..6 {
        assert_ne!(
            create(&c, &p.base()).await.1,
            "w3",
            "no new session on a removed worker"
        );
    }
    for (id, node) in &sessions {
        let r = get_session(&c, &p.base(), id).await;
        assert_eq!(
            (r.status, r.node.as_deref()),
            (200, Some(node.as_str())),
            "within the grace"
        );
    }
    assert_eq!(
        terminal_event(&ws_execute(&mut ws, 2, id3, "hi").await.expect("ws turn")),
        "completed",
        "the open WebSocket keeps working"
    );

    // After the grace: gone.
    let left = grace.saturating_sub(removed_at.elapsed()) + Duration::from_millis(300);
    // allow-sleep: the removal grace must pass (the timer is under test): 410 only after it
    tokio::time::sleep(left).await;
    let r = get_session(&c, &p.base(), id3).await;
    assert_eq!(
        (r.status, &r.body["error"]),
        (410, &json!("session_worker_gone")),
        "{r:?}"
    );
    assert_eq!(admin_worker(&c, &p, "w3").await, Value::Null);
    let text = metrics(&c, &p).await;
    assert_eq!(draining_metric(&text, "w3"), None, "series removed");
    for (id, node) in sessions.iter().filter(|s| s.1 != "w3") {
        let r = get_session(&c, &p.base(), id).await;
        assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
    }
}
