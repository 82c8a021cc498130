//! Draining: `POST /admin/drain` (no new sessions, existing ones keep working, readiness
//! 503 draining) and SIGTERM on a real worker process (running turns finish within the
//! grace period, every agent is killed, exit status 0).

use std::time::{Duration, Instant};

use crate::support::procs::{children_of, process_alive};
use crate::support::worker::*;
use hotplex_e2e::sse::Reader;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

#[tokio::test]
async fn admin_drain_refuses_new_sessions_and_keeps_existing_ones() {
    let w = start(test_config()).await;
    let c = client();
    let base = &w.base;
    let id = create_session(&c, base).await;

    let r = c
        .post(format!("{base}/admin/drain"))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "draining");
    assert_eq!(v["sessions_active"], 1);

    let r = c
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v,
        json!({"status":"draining","node_id":"test-node","sessions_active":1,"max_sessions":50})
    );
    // Liveness is unaffected.
    let r = c
        .get(format!("{base}/health/live"))
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 200);

    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "draining");
    let mut ws = ws_connect(&w.ws_url).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"prompt":"new"}),
    )
    .await;
    assert_eq!(ws_recv(&mut ws).await["data"]["error"], "draining");

    // The existing session still serves turns, over SSE and WebSocket.
    let events = sse_turn(&c, base, &id, "still here").await;
    assert_eq!(
        event_names(&events).last().map(String::as_str),
        Some("completed")
    );
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":2,"session_id":id,"prompt":"ws too"}),
    )
    .await;
    let (frames, _) = ws_turn(&mut ws, 2).await;
    assert_eq!(
        events_of(&frames).last().map(String::as_str),
        Some("completed")
    );
    // Draining twice is harmless.
    let r = c
        .post(format!("{base}/admin/drain"))
        .send()
        .await
        .expect("drain");
    assert_eq!(
        r.json::<Value>().await.expect("json")["already_draining"],
        true
    );
    w.stop().await;
}

#[tokio::test]
async fn sigterm_lets_running_turns_finish_then_exits_zero() {
    let mut w = spawn_worker("shutdown_grace: 10s\n", "term-node").await;
    let c = client();
    let pid = w.guard.pid();
    let id = create_session(&c, &w.base).await;
    let idle = create_session(&c, &w.base).await;
    sse_turn(&c, &w.base, &idle, "spawn").await;
    let agents = children_of(pid);
    assert_eq!(agents.len(), 2, "{agents:?}");

    // A turn that takes 1.5 s is under way when SIGTERM arrives.
    let r = c
        .post(format!("{}/sessions/{id}/messages", w.base))
        .json(&json!({"prompt":"sleep 1500"}))
        .send()
        .await
        .expect("turn");
    let mut reader = Reader::new(r);
    assert_eq!(reader.next().await.expect("first event").event, "thinking");
    let sent = Instant::now();
    w.guard.signal(Signal::SIGTERM);

    // Readiness flips to draining while the turn finishes.
    // (The signal is handled asynchronously: poll.)
    let ready = format!("{}/health/ready", w.base);
    let cc = c.clone();
    let draining = hotplex_e2e::eventually(Duration::from_secs(1), move || {
        let (c, url) = (cc.clone(), ready.clone());
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 503) }
    })
    .await;
    assert!(draining, "readiness 503 while draining");
    let rest = reader.collect().await;
    assert_eq!(
        event_names(&rest).last().map(String::as_str),
        Some("completed"),
        "the running turn finished: {rest:?}"
    );
    let status = w
        .guard
        .wait_timeout(Duration::from_secs(10))
        .expect("worker exited");
    assert!(status.success(), "exit status {status:?}");
    assert!(sent.elapsed() < Duration::from_secs(8));
    for (agent, _) in agents {
        assert!(!process_alive(agent), "agent {agent} killed");
    }
}

#[tokio::test]
async fn sigterm_kills_turns_that_outlive_the_grace_period() {
    let mut w = spawn_worker("shutdown_grace: 300ms\n", "grace-node").await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    let r = c
        .post(format!("{}/sessions/{id}/messages", w.base))
        .json(&json!({"prompt":"sleep 60000"}))
        .send()
        .await
        .expect("turn");
    let mut reader = Reader::new(r);
    assert_eq!(reader.next().await.expect("first event").event, "thinking");
    let agents = children_of(w.guard.pid());
    assert_eq!(agents.len(), 1);
    let sent = Instant::now();
    w.guard.signal(Signal::SIGTERM);
    let rest = tokio::time::timeout(Duration::from_secs(10), reader.collect())
        .await
        .expect("stream ended");
    assert_eq!(event_names(&rest), ["stopped"], "{rest:?}");
    assert_eq!(rest[0].json()["data"]["reason"], "session_closed");
    let status = w
        .guard
        .wait_timeout(Duration::from_secs(10))
        .expect("worker exited");
    assert!(status.success(), "exit status {status:?}");
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(!process_alive(agents[0].0), "agent killed");
}

/// `hotplex-worker drain --url ...` (the Kubernetes preStop hook) drains a running worker:
/// exit 0, readiness turns 503 draining, new sessions are refused; a worker that is not
/// there makes it exit non-zero.
#[tokio::test]
async fn drain_subcommand_drains_a_running_worker() {
    let w = spawn_worker("max_sessions: 10\n", "prestop-node").await;
    let c = client();
    let out = tokio::process::Command::new(WORKER_BIN)
        .args(["drain", "--url", &w.base])
        .output()
        .await
        .expect("run drain");
    assert!(out.status.success(), "{out:?}");
    let body: Value = serde_json::from_slice(&out.stdout).expect("json body");
    assert_eq!(body["status"], "draining");
    let r = c
        .get(format!("{}/health/ready", w.base))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);
    let r = c
        .post(format!("{}/sessions", w.base))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 503);

    let dead = format!("http://{}", hotplex_e2e::free_addr());
    let out = tokio::process::Command::new(WORKER_BIN)
        .args(["drain", "--url", &dead])
        .output()
        .await
        .expect("run drain");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("drain"));
}
