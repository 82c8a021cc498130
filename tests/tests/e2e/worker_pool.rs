//! Pool behaviour end to end: the cap (503 + Retry-After, never overcommitted), idle
//! reaping, execution timeout, crashing and garbage-writing agents, process-group kill,
//! failed agent start, and no leaked fds or zombies after thousands of sessions.

use hotplex_common::names;
use std::time::{Duration, Instant};

use crate::support::procs::{children_of, fd_count, process_alive};
use crate::support::worker::*;
use futures_util::{stream, StreamExt};
use hotplex_e2e::eventually;
use hotplex_worker::AgentConfig;
use serde_json::{json, Value};

#[tokio::test]
async fn full_pool_answers_503_with_retry_after_and_never_overcommits() {
    let w = start(hotplex_worker::WorkerConfig {
        max_sessions: 3,
        ..test_config()
    })
    .await;
    let c = client();
    let base = &w.base;

    // 10 concurrent creates against 3 slots: exactly 3 win.
    let results: Vec<u16> = stream::iter(0..10)
        .map(|_| {
            let c = c.clone();
            let url = format!("{base}/sessions");
            async move { c.post(url).send().await.expect("create").status().as_u16() }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert_eq!(
        results.iter().filter(|s| **s == 201).count(),
        3,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|s| **s == 503).count(),
        7,
        "{results:?}"
    );
    assert_eq!(w.server().pool().len(), 3);

    let r = c
        .post(format!("{base}/sessions"))
        .send()
        .await
        .expect("full");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "pool_full");
    assert_eq!(v["max_sessions"], 3);

    // Readiness says full, with the fields the proxy parses.
    let r = c
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v,
        json!({"status":"full","node_id":"test-node","sessions_active":3,"max_sessions":3})
    );

    // WebSocket execute on a new session: error event pool_full.
    let mut ws = ws_connect(&w.ws_url).await;
    ws_send(
        &mut ws,
        json!({"type":"execute","request_id":1,"prompt":"x"}),
    )
    .await;
    let f = ws_recv(&mut ws).await;
    assert_eq!(f["event"], "error");
    assert_eq!(f["data"]["error"], "pool_full");
    assert_eq!(
        metric_at(&c, base, names::worker::POOL_REJECTIONS, &[]).await,
        9.0
    );

    // Freeing a slot makes room again.
    let list: Value = c
        .get(format!("{base}/sessions"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let victim = list["sessions"][0]["id"].as_str().expect("id").to_string();
    let r = c
        .delete(format!("{base}/sessions/{victim}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    create_session(&c, base).await;
    w.stop().await;
}

#[tokio::test]
async fn idle_sessions_are_reaped() {
    let w = start(hotplex_worker::WorkerConfig {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    let pid = w
        .server()
        .pool()
        .list()
        .first()
        .and_then(|s| s.pid())
        .expect("agent pid");
    assert!(process_alive(pid));
    let url = format!("{}/sessions/{id}", w.base);
    let gone = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.get(url)
                .send()
                .await
                .map(|r| r.status() == 404)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(gone, "idle session reaped");
    // The session leaves the table first; the agent then gets SIGTERM and needs a moment to
    // exit (a fresh-clone CI run once looked within that moment).
    let killed = eventually(
        Duration::from_secs(3),
        || async move { !process_alive(pid) },
    )
    .await;
    assert!(killed, "agent killed");
    // The close is counted once it is complete: after the agent's death come the sweep of
    // the session's uid (agent isolation) and the removal of its directory.
    let counted = eventually(Duration::from_secs(3), || {
        let c = c.clone();
        let base = w.base.clone();
        async move {
            metric_at(
                &c,
                &base,
                names::worker::SESSIONS_CLOSED,
                &["reason=\"idle\""],
            )
            .await
                == 1.0
        }
    })
    .await;
    assert!(counted, "idle close counted once");
    assert_eq!(
        metric_at(
            &c,
            &w.base,
            names::worker::SESSIONS_CLOSED,
            &["reason=\"idle\""]
        )
        .await,
        1.0,
        "exactly once"
    );
    w.stop().await;
}

#[tokio::test]
async fn execution_timeout_kills_the_turn_not_the_session() {
    let w = start(hotplex_worker::WorkerConfig {
        execution_timeout: Duration::from_millis(400),
        ..test_config()
    })
    .await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    let started = Instant::now();
    let events = sse_turn(&c, &w.base, &id, "sleep 30000").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(event_names(&events), ["thinking", "error"]);
    assert_eq!(events[1].json()["data"]["error"], "execution_timeout");
    // The session is still there and works with a fresh agent.
    let events = sse_turn(&c, &w.base, &id, "after").await;
    assert_eq!(
        event_names(&events).last().map(String::as_str),
        Some("completed")
    );
    assert_eq!(
        metric_at(
            &c,
            &w.base,
            names::shared::SESSIONS_ERRORS,
            &["reason=\"timeout\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_at(
            &c,
            &w.base,
            names::worker::TURNS_TOTAL,
            &["outcome=\"timeout\""]
        )
        .await,
        1.0
    );
    w.stop().await;
}

#[tokio::test]
async fn crashing_and_garbage_writing_agents_are_contained() {
    let w = start(test_config()).await;
    let c = client();
    let base = &w.base;

    // Garbage: an error event, the session survives with a fresh agent.
    let id = create_session(&c, base).await;
    let events = sse_turn(&c, base, &id, "garbage").await;
    assert_eq!(event_names(&events), ["error"]);
    let data = &events[0].json()["data"];
    assert_eq!(data["error"], "agent_protocol_error");
    assert!(data["message"]
        .as_str()
        .is_some_and(|m| m.contains("not json")));
    let events = sse_turn(&c, base, &id, "ok").await;
    assert_eq!(
        event_names(&events).last().map(String::as_str),
        Some("completed")
    );

    // Agent-reported error: error event, agent kept.
    let events = sse_turn(&c, base, &id, "fail").await;
    assert_eq!(event_names(&events), ["thinking", "error"]);
    assert_eq!(events[1].json()["data"]["error"], "agent_error");

    // Crash: an error event, the session is closed, the worker keeps serving.
    let events = sse_turn(&c, base, &id, "crash").await;
    assert_eq!(event_names(&events), ["error"]);
    assert_eq!(events[0].json()["data"]["error"], "agent_crashed");
    let r = c
        .get(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let other = create_session(&c, base).await;
    let events = sse_turn(&c, base, &other, "still here").await;
    assert_eq!(
        event_names(&events).last().map(String::as_str),
        Some("completed")
    );

    let text = metrics_at(&c, base).await;
    let m =
        |labels: &[&str]| hotplex_e2e::metric_value(&text, names::shared::SESSIONS_ERRORS, labels);
    assert_eq!(m(&["reason=\"garbage\""]), Some(1.0));
    assert_eq!(m(&["reason=\"crashed\""]), Some(1.0));
    assert_eq!(m(&["reason=\"agent_error\""]), Some(1.0));
    assert_eq!(
        hotplex_e2e::metric_value(
            &text,
            names::worker::SESSIONS_CLOSED,
            &["reason=\"crashed\""]
        ),
        Some(1.0)
    );
    // No zombie left behind by the crashed agent.
    let me = std::process::id();
    assert!(
        eventually(Duration::from_secs(5), || async move {
            children_of(me).iter().all(|(_, state)| state != "Z")
        })
        .await
    );
    w.stop().await;
}

#[tokio::test]
async fn closing_a_session_kills_the_whole_process_group() {
    // The process group without a namespace sandbox (in one, the grandchild's pid is
    // its namespace's; agent_sandbox covers that kill).
    let mut cfg = test_config();
    cfg.agent.isolation.sandbox = hotplex_worker::agent_config::SandboxKind::None;
    let w = start(cfg).await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    let events = sse_turn(&c, &w.base, &id, "spawn").await;
    let grandchild = events
        .iter()
        .find(|e| e.event == "tool_result")
        .and_then(|e| e.json()["data"]["output"]["grandchild_pid"].as_u64())
        .expect("grandchild pid") as u32;
    assert!(process_alive(grandchild), "grandchild runs");
    // The agent leads its own process group, and the grandchild is in it.
    let agent = w.server().pool().list()[0].pid().expect("agent pid");
    assert_eq!(pgrp(agent), Some(agent));
    assert_eq!(pgrp(grandchild), Some(agent));
    assert_ne!(pgrp(std::process::id()), Some(agent));
    let r = c
        .delete(format!("{}/sessions/{id}", w.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert!(
        eventually(Duration::from_secs(5), || async move {
            !process_alive(grandchild)
        })
        .await,
        "grandchild {grandchild} killed with its group"
    );
    w.stop().await;
}

#[tokio::test]
async fn failed_agent_start_is_a_clear_error() {
    let w = start(hotplex_worker::WorkerConfig {
        agent: AgentConfig::command(vec!["/nonexistent/agent-binary".into()]),
        ..test_config()
    })
    .await;
    let c = client();
    let r = c
        .post(format!("{}/sessions", w.base))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "agent_start_failed");
    assert!(v["message"]
        .as_str()
        .is_some_and(|m| m.contains("agent-binary")));
    assert_eq!(w.server().pool().len(), 0, "slot released");
    assert_eq!(
        metric_at(
            &c,
            &w.base,
            names::shared::SESSIONS_ERRORS,
            &["reason=\"start_failed\""]
        )
        .await,
        1.0
    );
    w.stop().await;
}

/// Creates and deletes 2000 sessions (each a real agent process) on a child worker;
/// its fd count and its set of child processes are the same before and after.
#[tokio::test]
async fn thousands_of_sessions_leak_no_fds_and_no_zombies() {
    const SESSIONS: usize = 2000;
    let w = spawn_worker("max_sessions: 64\n", "fd-node").await;
    let pid = w.guard.pid();
    // Warm up (first-use allocations), then measure with no client connection open.
    {
        let c = client();
        let id = create_session(&c, &w.base).await;
        c.delete(format!("{}/sessions/{id}", w.base))
            .send()
            .await
            .expect("delete");
    }
    // allow-sleep: quiet period after the warm-up before the fd baseline
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = fd_count(pid);
    let children_before = children_of(pid);
    assert!(fds_before > 0);

    let c = client();
    let started = Instant::now();
    stream::iter(0..SESSIONS)
        .for_each_concurrent(16, |_| {
            let c = c.clone();
            let base = w.base.clone();
            async move {
                let id = create_session(&c, &base).await;
                let r = c
                    .delete(format!("{base}/sessions/{id}"))
                    .send()
                    .await
                    .expect("delete");
                assert_eq!(r.status(), 204);
            }
        })
        .await;
    eprintln!("{SESSIONS} sessions in {:?}", started.elapsed());
    // Close the client's keep-alive connections: they are not the worker's leak.
    drop(c);

    let settled = eventually(Duration::from_secs(10), || async move {
        fd_count(pid) <= fds_before && children_of(pid).is_empty()
    })
    .await;
    let fds_after = fd_count(pid);
    let children_after = children_of(pid);
    assert!(
        settled,
        "fds before {fds_before} after {fds_after}; children before {children_before:?} after {children_after:?}"
    );
    assert_eq!(children_before, children_after);
    let text = metrics_at(&client(), &w.base).await;
    assert_eq!(
        hotplex_e2e::metric_value(&text, names::shared::SESSIONS_TOTAL, &[]),
        Some((SESSIONS + 1) as f64)
    );
    assert_eq!(
        hotplex_e2e::metric_value(&text, names::shared::SESSIONS_ACTIVE, &[]),
        Some(0.0)
    );
}

/// Process-group id of `pid` (field 5 of `/proc/<pid>/stat`).
fn pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}
