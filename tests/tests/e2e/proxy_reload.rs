//! Proxy e2e: hot reload (`POST /admin/reload` and `SIGHUP`): adding a worker moves no
//! session, a bad file keeps the running config, removing a worker gives its sessions 410.

use hotplex_common::names;
use std::time::Duration;

use crate::support::proxy::*;
use hotplex_e2e::metric_value;

fn write_config(p: &TestProxy, workers_yaml: &str) {
    p.write_config(workers_yaml);
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
        p.configured.1,
        proxy_yaml(&worker_list(&workers), "")
    );
    std::fs::write(&p.config_path, moved).expect("write");
    let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
    assert_eq!(
        (r.status, &r.body["key"]),
        (400, &serde_json::json!("listen"))
    );

    // Remove w3 with SIGHUP and no removal grace: its sessions get 410 at once, the others
    // are untouched (with a grace it drains first: see proxy_drain.rs).
    write_config(
        &p,
        &proxy_yaml(&worker_list(&workers[..2]), "workers_removal_grace: 0s\n"),
    );
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
        metric_value(&text, names::config::RELOADS_TOTAL, &["result=\"success\""]),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&text, names::config::RELOADS_TOTAL, &["result=\"failure\""]),
        Some(2.0)
    );
}

mod soak {
    //! 50 reloads (admin API and SIGHUP; weights, timeouts, a 4th worker added and removed,
    //! invalid files interleaved) while HTTP turns, SSE turns and 5 WebSockets run through
    //! the proxy: 0 failed requests, 0 dropped WebSockets, every session on its worker.

    use crate::support::proxy::*;
    use hotplex_common::names;
    use hotplex_e2e::metric_value;
    use hotplex_e2e::sse::Reader;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    const RELOADS: usize = 50;
    const WEBSOCKETS: usize = 5;

    #[derive(Default)]
    struct Tally {
        ok: AtomicU64,
        failed: AtomicU64,
    }

    impl Tally {
        fn record(&self, good: bool, what: &str) {
            if good {
                self.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("FAILED: {what}");
            }
        }
    }

    async fn ws_turn(ws: &mut Ws, rid: u64, session: &str) -> Result<(), String> {
        let frames = ws_execute(ws, rid, session, "hi").await?;
        match terminal_event(&frames).as_str() {
            "completed" => Ok(()),
            _ => Err(format!("turn ended: {:?}", frames.last())),
        }
    }

    fn config(p: &TestProxy, workers: &[TestWorker], i: usize) -> String {
        let with_w4 = i % 4 == 1 || i % 4 == 2;
        let n = if with_w4 { 4 } else { 3 };
        let mut y = proxy_yaml(
            &worker_list(&workers[..n]),
            &format!(
                "timeouts:\n  connect: 500ms\n  read: {}s\n  write: 10s\n",
                10 + i % 3
            ),
        );
        // Alternate weights.
        y = y.replace(
            "  - id: w2\n",
            &format!("  - id: w2\n    weight: {}\n", 1 + i % 3),
        );
        let (listen, admin) = p.configured;
        format!("listen: \"{listen}\"\nadmin:\n  listen: \"{admin}\"\n{y}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_reloads_under_http_sse_and_websocket_load() {
        let started = Instant::now();
        let workers = spawn_workers(4, WorkerOpts::default()).await;
        let p = spawn_proxy(&proxy_yaml(&worker_list(&workers[..3]), "")).await;
        let c = client();
        let admin = p.admin_base();

        let mut sessions = Vec::new();
        for _ in 0..12 {
            sessions.push(create(&c, &p.base()).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let http = Arc::new(Tally::default());
        let sse = Arc::new(Tally::default());
        let wst = Arc::new(Tally::default());
        let mut tasks = Vec::new();

        // WebSockets pinned to the first sessions, one turn after another.
        for (k, (id, node)) in sessions.iter().take(WEBSOCKETS).cloned().enumerate() {
            let url = format!("ws://{}/ws/v1/agent?session_id={id}", p.listen);
            let (mut ws, resp, _) = ws_connect_checked(&url, &[]).await;
            let w = resp
                .headers()
                .get("x-hotplex-worker")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            assert_eq!(w.as_deref(), Some(node.as_str()), "ws {k} on its worker");
            let (stop, t) = (stop.clone(), wst.clone());
            tasks.push(tokio::spawn(async move {
                let mut rid = 0;
                while !stop.load(Ordering::Relaxed) {
                    rid += 1;
                    let r = ws_turn(&mut ws, rid, &id).await;
                    t.record(r.is_ok(), &format!("ws {k} turn {rid}: {r:?}"));
                    if r.is_err() {
                        return;
                    }
                }
                // One more turn after the last reload: the connection survived them all.
                let r = ws_turn(&mut ws, rid + 1, &id).await;
                t.record(r.is_ok(), &format!("ws {k} final turn: {r:?}"));
                let _ = ws.close(None).await;
            }));
        }
        // SSE turns on two other sessions.
        for (id, node) in &sessions[WEBSOCKETS..WEBSOCKETS + 2] {
            let (id, node) = (id.clone(), node.clone());
            let (stop, t, c, base) = (stop.clone(), sse.clone(), c.clone(), p.base());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .post(format!("{base}/sessions/{id}/messages"))
                        .header("accept", "text/event-stream")
                        .json(&json!({"prompt": "hi"}))
                        .send()
                        .await;
                    let Ok(r) = r else {
                        t.record(false, &format!("sse send {r:?}"));
                        continue;
                    };
                    let on = r
                        .headers()
                        .get("x-hotplex-node")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let status = r.status().as_u16();
                    let evs = Reader::new(r).collect().await;
                    let done = evs.last().is_some_and(|e| e.event == "completed");
                    t.record(
                        status == 200 && on.as_deref() == Some(node.as_str()) && done,
                        &format!("sse {status} {on:?} (want {node}) completed={done}"),
                    );
                }
            }));
        }
        // HTTP turns: every session read in a loop, plus new sessions created and read back.
        for part in 0..2 {
            let (stop, t, c, base) = (stop.clone(), http.clone(), c.clone(), p.base());
            let mine: Vec<_> = sessions.iter().skip(part).step_by(2).cloned().collect();
            tasks.push(tokio::spawn(async move {
                let mut created = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for (id, node) in mine.iter().chain(created.iter()) {
                        let r = get_session(&c, &base, id).await;
                        t.record(
                            r.status == 200 && r.node.as_deref() == Some(node.as_str()),
                            &format!("GET {id}: {} {:?} (want {node})", r.status, r.node),
                        );
                    }
                    let r = send(c.post(format!("{base}/sessions"))).await;
                    let ok = r.status == 201;
                    t.record(ok, &format!("create: {r:?}"));
                    if ok && created.len() < 10 {
                        let id = r.body["session_id"].as_str().unwrap_or("").to_string();
                        created.push((id, r.node.unwrap_or_default()));
                    }
                }
            }));
        }

        // The reload loop.
        let hash_of = |c: reqwest::Client, admin: String| async move {
            send(c.get(format!("{admin}/admin/config"))).await.body["hash"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let mut invalid = 0;
        let mut valid = 0;
        for i in 0..RELOADS {
            if i % 10 == 7 {
                // Invalid: rejected, nothing changes.
                let before = hash_of(c.clone(), admin.clone()).await;
                let bad = config(&p, &workers, i).replace("read: ", "read: -");
                std::fs::write(&p.config_path, bad).expect("write");
                let r = send(c.post(format!("{admin}/admin/reload"))).await;
                assert_eq!(
                    (r.status, r.body["key"].as_str()),
                    (400, Some("timeouts.read")),
                    "{r:?}"
                );
                assert_eq!(
                    hash_of(c.clone(), admin.clone()).await,
                    before,
                    "hash unchanged"
                );
                invalid += 1;
            } else if i % 10 == 3 {
                std::fs::write(&p.config_path, config(&p, &workers, i)).expect("write");
                let want = hotplex_proxy::reload::content_hash(config(&p, &workers, i).as_bytes());
                p.guard.signal(nix::sys::signal::Signal::SIGHUP);
                assert!(
                    hotplex_e2e::eventually(Duration::from_secs(5), || {
                        let (c, a, w) = (c.clone(), admin.clone(), want.clone());
                        async move { hash_of(c, a).await == w }
                    })
                    .await,
                    "SIGHUP reload {i}"
                );
                valid += 1;
            } else {
                std::fs::write(&p.config_path, config(&p, &workers, i)).expect("write");
                let r = send(c.post(format!("{admin}/admin/reload"))).await;
                assert_eq!(r.status, 200, "reload {i}: {r:?}");
                valid += 1;
            }
            // allow-sleep: pacing: 50 reloads spread over the traffic window
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        // The active config includes w4 or not; let the traffic see the last state.
        // allow-sleep: traffic runs on the last config for a while (a measurement window)
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("task ends")
                .expect("task ok");
        }

        let text = metrics(&c, &p).await;
        let failures = metric_value(&text, names::config::RELOADS_TOTAL, &["result=\"failure\""]);
        let successes = metric_value(&text, names::config::RELOADS_TOTAL, &["result=\"success\""]);
        let load = |t: &Tally| {
            (
                t.ok.load(Ordering::Relaxed),
                t.failed.load(Ordering::Relaxed),
            )
        };
        println!(
            "soak: {valid} good + {invalid} bad reloads in {:?}; http ok/failed {:?}, sse {:?}, ws turns {:?}; reloads_total success={successes:?} failure={failures:?}",
            started.elapsed(),
            load(&http),
            load(&sse),
            load(&wst)
        );
        assert_eq!(failures, Some(invalid as f64));
        assert!(successes.unwrap_or(0.0) >= valid as f64);
        assert_eq!(load(&http).1, 0, "0 failed HTTP requests");
        assert_eq!(load(&sse).1, 0, "0 failed SSE turns");
        assert_eq!(load(&wst).1, 0, "0 dropped WebSockets");
        assert!(load(&wst).0 >= (WEBSOCKETS * 2) as u64);
        assert!(load(&sse).0 >= 2 && load(&http).0 >= 50);
        // Every original session is still on its worker.
        for (id, node) in &sessions {
            let r = get_session(&c, &p.base(), id).await;
            assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
