//! Proxy e2e: route reloads under HTTP, SSE and WebSocket load (issue #19), with real
//! processes: the proxy binary with a `routes:` table (the session API and the WebSocket
//! path to the `sessions` pool, an `http` route to a real HTTP service), 2 real workers.
//! Seven reloads (admin API and `SIGHUP`) add a route, change its path and its pool,
//! remove it, and remove a route a client is using with a request of it in flight, while
//! HTTP clients, SSE turns and 2 WebSockets (one connection each, held open across every
//! reload) run through the proxy: 0 failed requests or turns on the unchanged routes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotplex_common::names::{config as cn, routes as rn};
use hotplex_e2e::eventually;
use hotplex_e2e::sse::Reader;
use serde_json::json;

use crate::support::http_service::{self, HttpService, HEALTH_PATH};
use crate::support::proxy::*;

/// Upper bound of every load loop: they stop by themselves even if the test's `stop`
/// flag is never set (a failed assertion in the main task).
const LOAD_CAP: Duration = Duration::from_secs(60);
const WEBSOCKETS: usize = 2;
const SSE_CLIENTS: usize = 2;
const UI_CLIENTS: usize = 2;
/// 404s the client of the removed route must see before it stops.
const LEGACY_404S: u64 = 5;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    bad: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, good: bool, what: impl FnOnce() -> String) {
        if good {
            self.ok.fetch_add(1, Ordering::SeqCst);
        } else {
            self.failed.fetch_add(1, Ordering::SeqCst);
            let what = what();
            eprintln!("FAILED: {what}");
            if let Ok(mut b) = self.bad.lock() {
                b.push(what);
            }
        }
    }
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }
    fn failed(&self) -> (u64, Vec<String>) {
        let bad = self.bad.lock().map(|b| b.clone()).unwrap_or_default();
        (self.failed.load(Ordering::SeqCst), bad)
    }
}

/// The `extra` route of a config: its path and pool, or absent.
type Extra = Option<(&'static str, &'static str)>;

/// The proxy config: `api` and `ws` to the session pool, `ui` to the http pool `ui`,
/// `legacy` (while `legacy`) to `ui`, `extra` when given. Pools `ui` and `ui2` both hold
/// the one service, so a pool change shows in the route metric's `pool` label.
fn config(workers: &[TestWorker], svc: &HttpService, legacy: bool, extra: Extra) -> String {
    let pool = |name: &str| {
        format!(
            "  - name: {name}\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
             interval: 200ms\n      timeout: 1s\n      failures: 1\n      successes: 1\n",
            svc.addr
        )
    };
    let mut routes = String::from(
        "routes:\n  - name: api\n    path: /sessions\n    pool: sessions\n\
         \x20 - name: ws\n    path: /ws/v1/agent\n    pool: sessions\n\
         \x20 - name: ui\n    path: /ui\n    pool: ui\n",
    );
    if legacy {
        routes.push_str("  - name: legacy\n    path: /legacy\n    pool: ui\n");
    }
    if let Some((path, pool)) = extra {
        routes.push_str(&format!(
            "  - name: extra\n    path: {path}\n    pool: {pool}\n"
        ));
    }
    proxy_yaml(
        &worker_list(workers),
        // A long plain read timeout: the held request of the removed route waits across a
        // reload and the checks after it on a loaded machine.
        &format!(
            "timeouts:\n  connect: 500ms\n  read: 30s\n  write: 10s\n\
             pools:\n{}{}{routes}",
            pool("ui"),
            pool("ui2")
        ),
    )
}

async fn get(c: &reqwest::Client, p: &TestProxy, path: &str) -> Resp {
    send(c.get(format!("{}{path}", p.base()))).await
}

fn served_by(r: &Resp) -> &str {
    r.body["name"].as_str().unwrap_or("")
}

fn is_no_route(r: &Resp) -> bool {
    r.status == 404 && r.body["error"] == "no_route"
}

async fn config_hash(c: &reqwest::Client, p: &TestProxy) -> String {
    send(c.get(format!("{}/admin/config", p.admin_base())))
        .await
        .body["hash"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn reloads_ok(c: &reqwest::Client, p: &TestProxy) -> f64 {
    metric(c, p, cn::RELOADS_TOTAL, &["result=\"success\""]).await
}

/// `hotplex_proxy_route_requests_total` of route `extra` on `pool` with status 200.
async fn extra_on(c: &reqwest::Client, p: &TestProxy, pool: &str) -> f64 {
    let pool = format!("pool=\"{pool}\"");
    metric(
        c,
        p,
        rn::ROUTE_REQUESTS,
        &["route=\"extra\"", &pool, "status=\"200\""],
    )
    .await
}

/// Writes `yaml`, reloads (admin API, or `SIGHUP` when `hup`) and proves it applied: the
/// admin config hash is the new file's, the success counter moved by one.
async fn reload(c: &reqwest::Client, p: &TestProxy, yaml: &str, hup: bool, n: usize) {
    let before = reloads_ok(c, p).await;
    let want = p.write_config(yaml);
    if hup {
        p.guard.signal(nix::sys::signal::Signal::SIGHUP);
        let applied = eventually(WAIT, || async { config_hash(c, p).await == want }).await;
        assert!(applied, "SIGHUP reload {n} never applied");
    } else {
        let r = send(c.post(format!("{}/admin/reload", p.admin_base()))).await;
        assert_eq!(r.status, 200, "reload {n}: {r:?}");
        assert_eq!(config_hash(c, p).await, want, "reload {n} hash");
    }
    let counted = eventually(WAIT, || async { reloads_ok(c, p).await == before + 1.0 }).await;
    assert!(counted, "reload {n} not counted as a success");
}

/// Per-WebSocket turn counters, read by the main task between reloads.
struct WsState {
    turns: AtomicU64,
    final_ok: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_reloads_under_http_sse_and_websocket_load_fail_nothing() {
    let started = Instant::now();
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let svc = http_service::start("svc").await;
    let p = spawn_proxy(&config(&workers, &svc, true, None)).await;
    let c = client();
    let up = format!("upstream=\"{}\"", svc.addr);
    for pool in ["ui", "ui2"] {
        let pl = format!("pool=\"{pool}\"");
        let admin = p.admin_base();
        let healthy = eventually(WAIT, || async {
            metric_at(&c, &admin, rn::POOL_UPSTREAM_HEALTHY, &[&pl, &up]).await == 1.0
        })
        .await;
        assert!(healthy, "pool {pool} never came up");
    }
    let deadline = Instant::now() + LOAD_CAP;
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        move || !stop.load(Ordering::SeqCst) && Instant::now() < deadline
    };
    let (ui, api, sse, wst) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let mut tasks = Vec::new();

    // Sessions created through the proxy (the api route): WebSockets, SSE, HTTP reads.
    let mut sessions = Vec::new();
    for _ in 0..WEBSOCKETS + SSE_CLIENTS {
        sessions.push(create(&c, &p.base()).await);
    }
    let nodes: std::collections::HashSet<_> = sessions.iter().map(|(_, n)| n.clone()).collect();
    println!("sessions on {nodes:?}");

    // (3) WebSockets: one connection each, turns one after another until stopped, then
    // one final turn on the same connection (after the last reload).
    let mut ws_states = Vec::new();
    for (k, (id, node)) in sessions.iter().take(WEBSOCKETS).cloned().enumerate() {
        let url = format!("ws://{}/ws/v1/agent?session_id={id}", p.listen);
        let (mut ws, resp, _) = ws_connect_checked(&url, &[]).await;
        let on = resp
            .headers()
            .get("x-hotplex-node")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(on.as_deref(), Some(node.as_str()), "ws {k} on its worker");
        let st = Arc::new(WsState {
            turns: AtomicU64::new(0),
            final_ok: AtomicBool::new(false),
        });
        ws_states.push(st.clone());
        let (t, running) = (wst.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut rid = 0u64;
            let turn = |frames: Result<Vec<serde_json::Value>, String>| match frames {
                Ok(f) if terminal_event(&f) == "completed" => Ok(()),
                Ok(f) => Err(format!("turn ended {:?}", f.last())),
                Err(e) => Err(e),
            };
            while running() {
                rid += 1;
                let r = turn(ws_execute(&mut ws, rid, &id, "hi").await);
                t.record(r.is_ok(), || format!("ws {k} turn {rid}: {r:?}"));
                if r.is_err() {
                    return; // the connection is gone: no final turn
                }
                st.turns.fetch_add(1, Ordering::SeqCst);
            }
            rid += 1;
            let r = turn(ws_execute(&mut ws, rid, &id, "after the reloads").await);
            t.record(r.is_ok(), || format!("ws {k} final turn {rid}: {r:?}"));
            st.final_ok.store(r.is_ok(), Ordering::SeqCst);
            let _ = futures_util::SinkExt::close(&mut ws).await;
        }));
    }

    // (2) SSE turns, each read to its `completed` event, on its session's worker.
    for (k, (id, node)) in sessions.iter().skip(WEBSOCKETS).cloned().enumerate() {
        let (t, running, c, base) = (sse.clone(), running.clone(), c.clone(), p.base());
        tasks.push(tokio::spawn(async move {
            while running() {
                let r = c
                    .post(format!("{base}/sessions/{id}/messages"))
                    .header("accept", "text/event-stream")
                    .json(&json!({"prompt": "hi"}))
                    .send()
                    .await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        t.record(false, || format!("sse {k} send: {e}"));
                        continue;
                    }
                };
                let status = r.status().as_u16();
                let on = r
                    .headers()
                    .get("x-hotplex-node")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let evs = tokio::time::timeout(WAIT, Reader::new(r).collect()).await;
                let last = evs
                    .as_ref()
                    .ok()
                    .and_then(|e| e.last())
                    .map(|e| e.event.clone());
                t.record(
                    status == 200
                        && on.as_deref() == Some(node.as_str())
                        && last.as_deref() == Some("completed"),
                    || format!("sse {k}: {status} on {on:?} (want {node}), last {last:?}"),
                );
            }
        }));
    }

    // (1) HTTP: clients on the ui route, and session reads on the api route.
    for k in 0..UI_CLIENTS {
        let (t, running, c, base) = (ui.clone(), running.clone(), c.clone(), p.base());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while running() {
                n += 1;
                let r = send(c.get(format!("{base}/ui/{k}/{n}"))).await;
                t.record(r.status == 200 && served_by(&r) == "svc", || {
                    format!("ui {k}/{n}: {r:?}")
                });
            }
        }));
    }
    {
        let (t, running, c, base) = (api.clone(), running.clone(), c.clone(), p.base());
        let all = sessions.clone();
        tasks.push(tokio::spawn(async move {
            while running() {
                for (id, node) in &all {
                    let r = get_session(&c, &base, id).await;
                    t.record(
                        r.status == 200 && r.node.as_deref() == Some(node.as_str()),
                        || format!("GET {id}: {} {:?} (want {node})", r.status, r.node),
                    );
                }
            }
        }));
    }

    // The client of the route that a reload removes: 200 for every request answered
    // before the removal began, 404 no_route for every request sent after the reload
    // returned (either one in between); it stops after LEGACY_404S such 404s.
    // phase: 0 before the removal, 1 during it, 2 after the reload returned.
    let phase = Arc::new(AtomicU8::new(0));
    let legacy = Arc::new(Tally::default());
    let legacy_after = Arc::new(AtomicU64::new(0));
    let legacy_task = {
        let (t, after, phase, running) = (
            legacy.clone(),
            legacy_after.clone(),
            phase.clone(),
            running.clone(),
        );
        let (c, base) = (c.clone(), p.base());
        tokio::spawn(async move {
            let mut n = 0u64;
            while running() && after.load(Ordering::SeqCst) < LEGACY_404S {
                n += 1;
                let at_start = phase.load(Ordering::SeqCst);
                let r = send(c.get(format!("{base}/legacy/{n}"))).await;
                let at_end = phase.load(Ordering::SeqCst);
                let served = r.status == 200 && served_by(&r) == "svc";
                let good = if at_end == 0 {
                    served
                } else if at_start == 2 {
                    is_no_route(&r)
                } else {
                    served || is_no_route(&r)
                };
                t.record(good, || {
                    format!("legacy {n} (phase {at_start}..{at_end}): {r:?}")
                });
                if at_start == 2 && good {
                    after.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    // Between reloads: every kind of load moves on (every WebSocket did a turn).
    let progress = |label: String| {
        let (ui_n, api_n, sse_n) = (ui.ok(), api.ok(), sse.ok());
        let ws_n: Vec<u64> = ws_states
            .iter()
            .map(|s| s.turns.load(Ordering::SeqCst))
            .collect();
        let (ui, api, sse, ws_states) = (ui.clone(), api.clone(), sse.clone(), &ws_states);
        async move {
            let moved = eventually(WAIT, || async {
                ui.ok() >= ui_n + 5
                    && api.ok() > api_n
                    && sse.ok() > sse_n
                    && ws_states
                        .iter()
                        .zip(&ws_n)
                        .all(|(s, &n)| s.turns.load(Ordering::SeqCst) > n)
            })
            .await;
            assert!(moved, "load stalled after {label}");
        }
    };
    progress("start".into()).await;
    let legacy_before = legacy.ok();
    assert!(legacy_before > 0, "the legacy client got answers");

    // 1. Add a route: `extra` at /extra to pool ui.
    reload(
        &c,
        &p,
        &config(&workers, &svc, true, Some(("/extra", "ui"))),
        false,
        1,
    )
    .await;
    let r = get(&c, &p, "/extra/a").await;
    assert_eq!((r.status, served_by(&r)), (200, "svc"), "{r:?}");
    progress("reload 1".into()).await;

    // 2. Change its path: /extra2 answers, /extra is no route.
    reload(
        &c,
        &p,
        &config(&workers, &svc, true, Some(("/extra2", "ui"))),
        false,
        2,
    )
    .await;
    let r = get(&c, &p, "/extra2/a").await;
    assert_eq!((r.status, served_by(&r)), (200, "svc"), "{r:?}");
    let r = get(&c, &p, "/extra/a").await;
    assert!(is_no_route(&r), "the old path after a path change: {r:?}");
    let admin = p.admin_base();
    assert!(
        eventually(WAIT, || async { extra_on(&c, &p, "ui").await == 2.0 }).await,
        "extra's requests on pool ui: {}",
        metrics_at(&c, &admin).await
    );
    progress("reload 2".into()).await;

    // 3. Change its pool (SIGHUP): the route's requests now count on pool ui2.
    reload(
        &c,
        &p,
        &config(&workers, &svc, true, Some(("/extra2", "ui2"))),
        true,
        3,
    )
    .await;
    let r = get(&c, &p, "/extra2/b").await;
    assert_eq!((r.status, served_by(&r)), (200, "svc"), "{r:?}");
    assert!(
        eventually(WAIT, || async { extra_on(&c, &p, "ui2").await == 1.0 }).await,
        "extra's request on pool ui2: {}",
        metrics_at(&c, &admin).await
    );
    assert_eq!(extra_on(&c, &p, "ui").await, 2.0, "nothing more on pool ui");
    progress("reload 3".into()).await;

    // 4. Remove it (no client uses it).
    reload(&c, &p, &config(&workers, &svc, true, None), false, 4).await;
    let r = get(&c, &p, "/extra2/c").await;
    assert!(is_no_route(&r), "a removed route: {r:?}");
    progress("reload 4".into()).await;

    // 5. Add it again, elsewhere.
    reload(
        &c,
        &p,
        &config(&workers, &svc, true, Some(("/extra3", "ui2"))),
        false,
        5,
    )
    .await;
    let r = get(&c, &p, "/extra3/a").await;
    assert_eq!((r.status, served_by(&r)), (200, "svc"), "{r:?}");
    progress("reload 5".into()).await;

    // 6. Remove `legacy` while its client runs and one of its requests is in flight.
    let held = {
        let (c, url) = (c.clone(), format!("{}/legacy/slow/1", p.base()));
        tokio::spawn(async move { send(c.get(url)).await })
    };
    let arrived = eventually(WAIT, || async {
        svc.seen().iter().any(|(_, p)| p == "/legacy/slow/1")
    })
    .await;
    assert!(arrived, "the held request never reached the service");
    assert!(legacy.ok() > legacy_before, "the legacy client runs");
    phase.store(1, Ordering::SeqCst);
    reload(
        &c,
        &p,
        &config(&workers, &svc, false, Some(("/extra3", "ui2"))),
        false,
        6,
    )
    .await;
    phase.store(2, Ordering::SeqCst);
    let r = get(&c, &p, "/legacy/x").await;
    assert!(is_no_route(&r), "the removed route: {r:?}");
    tokio::time::timeout(WAIT, legacy_task)
        .await
        .expect("the legacy client stops after its 404s")
        .expect("legacy task");
    assert_eq!(legacy_after.load(Ordering::SeqCst), LEGACY_404S);
    assert!(
        !held.is_finished(),
        "the held request answered before release"
    );
    svc.release();
    let r = tokio::time::timeout(WAIT, held)
        .await
        .expect("the in-flight request finishes")
        .expect("held task");
    assert_eq!(
        (r.status, served_by(&r), r.body["path"].as_str()),
        (200, "svc", Some("/legacy/slow/1")),
        "the in-flight request of the removed route: {r:?}"
    );
    progress("reload 6".into()).await;

    // 7. Remove `extra` again: the final config.
    reload(&c, &p, &config(&workers, &svc, false, None), false, 7).await;
    let r = get(&c, &p, "/extra3/b").await;
    assert!(is_no_route(&r), "{r:?}");
    progress("reload 7".into()).await;

    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("a load task ends")
            .expect("load task");
    }

    let summary = format!(
        "7 reloads in {:?}: ui ok {}, api ok {}, sse ok {}, ws turns {} ({:?}), legacy ok {} \
         ({} no_route after removal)",
        started.elapsed(),
        ui.ok(),
        api.ok(),
        sse.ok(),
        wst.ok(),
        ws_states
            .iter()
            .map(|s| s.turns.load(Ordering::SeqCst))
            .collect::<Vec<_>>(),
        legacy.ok(),
        legacy_after.load(Ordering::SeqCst),
    );
    println!("{summary}");
    for (name, t) in [
        ("ui", &ui),
        ("api", &api),
        ("sse", &sse),
        ("ws", &wst),
        ("legacy", &legacy),
    ] {
        assert_eq!(t.failed(), (0, vec![]), "{name}: {summary}");
    }
    for (k, s) in ws_states.iter().enumerate() {
        assert!(
            s.final_ok.load(Ordering::SeqCst),
            "ws {k}: the final turn on the same connection after the last reload"
        );
        // One turn at least between every two reloads (progress checks) on one connection.
        assert!(s.turns.load(Ordering::SeqCst) >= 8, "ws {k}: {summary}");
    }
    assert!(started.elapsed() < Duration::from_secs(90), "{summary}");
}
