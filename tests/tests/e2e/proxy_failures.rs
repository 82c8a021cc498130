//! Proxy e2e: a worker killed with SIGKILL under load, all workers full, a worker full
//! by another proxy's placements, a draining worker, passive ejection and recovery.

use hotplex_common::names;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use hotplex_e2e::metric_value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_only_hits_its_own_sessions() {
    let workers = spawn_workers(3, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let mut sessions = Vec::new();
    for _ in 0..30 {
        sessions.push(create(&c, &p.base()).await);
    }
    assert!(sessions.iter().any(|s| s.1 == "w2"));

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // One task per session: GET in a loop.
    for (id, node) in sessions.clone() {
        let (c, base, stop, killed) = (c.clone(), p.base(), stop.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut unavailable, mut slowest) =
                (0u32, 0u32, 0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let after_kill = killed.load(Ordering::Relaxed);
                let r = get_session(&c, &base, &id).await;
                if node == "w2" && after_kill {
                    if r.status == 503 {
                        assert_eq!(r.body["error"], "worker_unavailable", "{r:?}");
                        assert_eq!(r.body["worker"], "w2");
                        assert_eq!(r.body["session_id"], id.as_str());
                        assert!(r.retry_after.is_some());
                        unavailable += 1;
                        slowest = slowest.max(r.elapsed);
                    } else if r.status != 200 {
                        errors += 1;
                    }
                } else if r.status == 200 && r.node.as_deref() == Some(node.as_str()) {
                    ok += 1;
                } else if !(node == "w2" && r.status == 503) {
                    // (a w2 request in flight exactly at the kill may see the 503 early)
                    errors += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (node, ok, errors, unavailable, slowest)
        }));
    }
    // New sessions keep being created during the kill.
    let creator = {
        let (c, base, stop) = (c.clone(), p.base(), stop.clone());
        tokio::spawn(async move {
            let (mut created, mut failed, mut on_w2_after) = (0u32, 0u32, 0u32);
            let kill_at = Instant::now() + Duration::from_millis(700);
            while !stop.load(Ordering::Relaxed) {
                let r = send(c.post(format!("{base}/sessions"))).await;
                if r.status == 201 {
                    created += 1;
                    if Instant::now() > kill_at + Duration::from_millis(200)
                        && r.node.as_deref() == Some("w2")
                    {
                        on_w2_after += 1;
                    }
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            (created, failed, on_w2_after)
        })
    };
    // allow-sleep: load runs on both workers before the kill (a measurement window)
    tokio::time::sleep(Duration::from_millis(700)).await;
    workers[1].guard.signal(nix::sys::signal::Signal::SIGKILL);
    killed.store(true, Ordering::Relaxed);
    // allow-sleep: load keeps running after the kill (a measurement window)
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut other_ok, mut other_err, mut w2_503, mut w2_err, mut slowest) =
        (0, 0, 0, 0, Duration::ZERO);
    for t in tasks {
        let (node, ok, errors, unavailable, slow) = t.await.expect("task");
        if node == "w2" {
            w2_503 += unavailable;
            w2_err += errors;
            slowest = slowest.max(slow);
        } else {
            other_ok += ok;
            other_err += errors;
        }
    }
    let (created, create_failed, on_w2_after) = creator.await.expect("creator");
    println!(
        "kill -9 w2: other sessions {other_ok} ok / {other_err} errors; w2 sessions {w2_503} x 503 \
         (slowest {slowest:?}), {w2_err} other errors; creates {created} ok / {create_failed} failed, {on_w2_after} on w2 after the kill"
    );
    assert_eq!(other_err, 0);
    assert!(other_ok > 100);
    assert!(w2_503 > 0);
    assert_eq!(w2_err, 0);
    assert!(
        slowest < Duration::from_millis(1000),
        "503s are fast: {slowest:?}"
    );
    assert_eq!(create_failed, 0, "new sessions are placed on live workers");
    assert_eq!(on_w2_after, 0);
    let text = metrics(&c, &p).await;
    assert!(metric_value(&text, names::proxy::WORKER_EJECTIONS, &["worker=\"w2\""]) >= Some(1.0));
    assert!(
        metric_value(
            &text,
            names::proxy::ROUTING_DECISIONS,
            &["outcome=\"unavailable\""]
        ) >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_full_gives_503_no_capacity() {
    let opts = WorkerOpts {
        max_sessions: 2,
        light: true,
    };
    let workers = spawn_workers(2, opts).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create(&c, &p.base()).await);
    }
    let per_w1 = ids.iter().filter(|s| s.1 == "w1").count();
    assert_eq!(
        per_w1, 2,
        "no worker past its capacity while another has room: {ids:?}"
    );
    for _ in 0..3 {
        let r = send(c.post(format!("{}/sessions", p.base()))).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.body["error"], "no_capacity");
        assert!(r.retry_after.is_some());
        assert!(r.worker.is_none(), "answered by the proxy");
    }
    // Also once the probes report the workers full.
    let reported_full = hotplex_e2e::eventually(WAIT, || async {
        admin_worker(&c, &p, "w1").await["full"] == true
    })
    .await;
    let w = admin_worker(&c, &p, "w1").await;
    assert!(reported_full, "{w}");
    assert_eq!(w["full"], true, "{w}");
    let r = send(c.post(format!("{}/sessions", p.base()))).await;
    assert_eq!(
        (r.status, &r.body["error"]),
        (503, &serde_json::json!("no_capacity"))
    );
    // Deleting a session makes room.
    let (id, node) = &ids[0];
    let r = send(c.delete(format!("{}/sessions/{id}", p.base()))).await;
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    let (mut last, again) = create(&c, &p.base()).await;
    assert_eq!(&again, node);
    // At capacity, delete/create cycles keep working: each DELETE frees its slot by the
    // time its answer reaches the client (no slot leaks across cycles).
    for _ in 0..20 {
        let r = send(c.delete(format!("{}/sessions/{last}", p.base()))).await;
        assert!(r.status == 200 || r.status == 204, "{r:?}");
        let (id, placed_on) = create(&c, &p.base()).await;
        assert_eq!(&placed_on, node);
        last = id;
    }
    let text = metrics(&c, &p).await;
    assert!(
        metric_value(&text, names::proxy::REJECTIONS, &["reason=\"no_capacity\""]) >= Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_worker_keeps_its_sessions_but_gets_no_new_ones() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let mut on_w1 = None;
    for _ in 0..20 {
        let s = create(&c, &p.base()).await;
        if s.1 == "w1" {
            on_w1 = Some(s.0);
            break;
        }
    }
    let on_w1 = on_w1.expect("a session on w1");
    let r = send(c.post(format!("{}/admin/drain", workers[0].base()))).await;
    assert!(r.status < 300, "drain: {r:?}");
    assert!(
        hotplex_e2e::eventually(WAIT, || async {
            admin_worker(&c, &p, "w1").await["draining"] == true
        })
        .await,
        "proxy sees w1 draining"
    );
    for _ in 0..20 {
        let (_, node) = create(&c, &p.base()).await;
        assert_eq!(node, "w2");
    }
    let r = get_session(&c, &p.base(), &on_w1).await;
    assert_eq!(
        (r.status, r.node.as_deref()),
        (200, Some("w1")),
        "existing session still served"
    );
    let text = metrics(&c, &p).await;
    assert_eq!(
        metric_value(&text, names::proxy::WORKER_DRAINING, &["worker=\"w1\""]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_and_recovery() {
    let mut workers = spawn_workers(2, WorkerOpts::default()).await;
    // Slow active checks: only passive ejection reacts within the test.
    let extra = "health_check:\n  interval: 30s\n  timeout: 500ms\n  failures: 1\n  successes: 1\nejection:\n  base: 1500ms\n  max: 10s\n";
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), extra)).await;
    let c = client();
    let mut on_w1 = None;
    for _ in 0..20 {
        let s = create(&c, &p.base()).await;
        if s.1 == "w1" {
            on_w1 = Some(s.0);
            break;
        }
    }
    let on_w1 = on_w1.expect("a session on w1");
    let w1_addr = workers[0].addr;
    workers[0].guard.kill();

    let r = get_session(&c, &p.base(), &on_w1).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["error"], "worker_unavailable");
    let w = admin_worker(&c, &p, "w1").await;
    assert_eq!(w["ejected"], true, "{w}");
    // While ejected: answered without connecting, counted once.
    for _ in 0..5 {
        let r = get_session(&c, &p.base(), &on_w1).await;
        assert_eq!(r.status, 503);
        assert!(r.elapsed < Duration::from_millis(500), "{r:?}");
    }
    let text = metrics(&c, &p).await;
    assert_eq!(
        metric_value(&text, names::proxy::WORKER_EJECTIONS, &["worker=\"w1\""]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, names::proxy::WORKER_HEALTHY, &["worker=\"w1\""]),
        Some(0.0)
    );
    assert!(
        metric_value(
            &text,
            names::proxy::UPSTREAM_ERRORS,
            &["worker=\"w1\"", "kind=\"connect\""]
        ) >= Some(1.0)
    );
    for _ in 0..5 {
        assert_eq!(
            create(&c, &p.base()).await.1,
            "w2",
            "ejected worker gets no new sessions"
        );
    }

    // Bring w1 back on the same address; after the ejection period it serves again.
    workers[0] = spawn_worker_at("w1", Some(w1_addr), WorkerOpts::default()).await;
    assert!(
        hotplex_e2e::eventually(Duration::from_secs(5), || async {
            admin_worker(&c, &p, "w1").await["available"] == true
        })
        .await,
        "w1 recovers after the ejection period"
    );
    // The old session died with the process: routed to w1 (404 from w1), not elsewhere.
    let r = get_session(&c, &p.base(), &on_w1).await;
    assert_eq!((r.status, r.node.as_deref()), (404, Some("w1")), "{r:?}");
    // Least fill places new sessions on the recovered, empty w1.
    let (_, node) = create(&c, &p.base()).await;
    assert_eq!(node, "w1");
}
