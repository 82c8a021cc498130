//! Tenant quotas (issue 18 item 1), on real processes through the real proxy (two API-key
//! tenants): every session creation and every turn counts, whatever carries it.
//!
//! - Sessions: WebSocket `execute` frames creating sessions hit the tenant's session quota
//!   (an `error` event `tenant_session_quota` with `retry_after`; the socket stays open and
//!   the same frame works once a session is closed); HTTP creates count against the same
//!   budget (429 + `Retry-After`); tenant B is unaffected.
//! - Turns: SSE turns and WebSocket turns share one turn rate (`tenant_turn_rate`).
//! - One WebSocket straight to a worker (dev mode, the anonymous tenant) creating a
//!   session per frame: the quota holds there too (through the proxy, a socket only ever
//!   creates its routed session).
//! - Fleet-wide: two workers sharing a real `redis-server` hold one tenant quota and one
//!   turn rate between them; a killed worker's sessions stop counting after
//!   `stale_after`; Redis down: `on_error: open` decides with the per-worker quota,
//!   `closed` answers 503 `quota_store_unavailable`; Redis back: the store is used again.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hotplex_common::names::worker as wnames;
use hotplex_e2e::{free_addr, ChildGuard};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::proxy::*;
use crate::support::{redis, spawn_worker_cmd};

const KEY_A: &str = "quota-tenant-a-key-0123456789";
const KEY_B: &str = "quota-tenant-b-key-0123456789";

fn tenants_yaml() -> String {
    format!(
        "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n    - name: tenant-b\n      hash: \"{}\"\n",
        key_hash(KEY_A),
        key_hash(KEY_B)
    )
}

/// A worker child process and its config directory.
struct QWorker {
    id: String,
    addr: std::net::SocketAddr,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl QWorker {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A worker process (demo agent) with `extra` config, node id `id`.
async fn quota_worker(id: &str, extra: &str) -> QWorker {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("worker.yaml");
    let yaml = format!(
        "max_sessions: 20\nidle_timeout: 1h\nexecution_timeout: 30s\nretry_after_secs: 2\n\
         agent:\n  demo_test_hooks: true\n{extra}"
    );
    std::fs::write(&cfg, yaml).expect("write worker config");
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--node-id")
        .arg(id)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn");
    let (guard, addr) = spawn_worker_cmd(&format!("worker {id}"), cmd, dir.path()).await;
    QWorker {
        id: id.to_string(),
        addr,
        guard,
        _dir: dir,
    }
}

fn ws_url(p: &TestProxy, query: &str) -> String {
    format!("{}/ws/v1/agent{query}", p.base().replacen("http", "ws", 1))
}

async fn ws_open(p: &TestProxy, key: &str, query: &str) -> ProxyWs {
    ws_connect_checked(&ws_url(p, query), &[("x-api-key", key)])
        .await
        .0
}

/// One `execute` (session id `sid`, empty: the connection's routed session): the
/// terminal frame.
async fn ws_turn(ws: &mut ProxyWs, rid: u64, sid: &str) -> Value {
    let frames = ws_execute(ws, rid, sid, "hello").await.expect("ws turn");
    frames.last().cloned().expect("a terminal frame")
}

/// A `version` round trip on `ws`: the socket is open and serves frames.
async fn ws_alive(ws: &mut ProxyWs) {
    use futures_util::StreamExt;
    let probe = json!({"type":"version","request_id":9999});
    ws.send(Message::text(probe.to_string()))
        .await
        .expect("send version");
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("version answer in time")
            .expect("socket open")
            .expect("frame");
        let Ok(text) = msg.to_text() else { continue };
        let v: Value = serde_json::from_str(text).expect("json frame");
        if v["event"] == "version" {
            return;
        }
    }
}

/// An SSE turn of session `id` through the proxy: (status, retry-after, body text).
async fn sse_turn(
    c: &reqwest::Client,
    p: &TestProxy,
    key: &str,
    id: &str,
) -> (u16, Option<String>, String) {
    let r = c
        .post(format!("{}/sessions/{id}/messages", p.base()))
        .header("x-api-key", key)
        .json(&json!({"prompt": "hello"}))
        .send()
        .await
        .expect("sse request");
    let status = r.status().as_u16();
    let ra = hdr(&r, "retry-after");
    (status, ra, r.text().await.unwrap_or_default())
}

async fn http_create(c: &reqwest::Client, p: &TestProxy, key: &str) -> Resp {
    send(
        c.post(format!("{}/sessions", p.base()))
            .header("x-api-key", key),
    )
    .await
}

fn assert_refusal_frame(f: &Value, code: &str, max_retry: u64) -> u64 {
    assert_eq!(f["event"], "error", "{f}");
    assert_eq!(f["data"]["error"], code, "{f}");
    let ra = f["data"]["retry_after"].as_u64().expect("retry_after");
    assert!((1..=max_retry).contains(&ra), "retry_after {ra}: {f}");
    ra
}

async fn refusals(c: &reqwest::Client, w: &QWorker, code: &str) -> f64 {
    metric_at(
        c,
        &w.base(),
        wnames::QUOTA_REFUSALS,
        &[&format!("code=\"{code}\"")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_and_http_creates_share_the_tenant_session_quota() {
    let w = quota_worker("qw1", "tenant_quotas:\n  max_sessions: 3\n").await;
    let p = spawn_proxy(&proxy_yaml(&[("qw1", w.addr)], &tenants_yaml())).await;
    let c = client();

    // Tenant A: three WebSockets, each `execute` creates the connection's session.
    let mut sockets = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let mut ws = ws_open(&p, KEY_A, "").await;
        let f = ws_turn(&mut ws, i + 1, "").await;
        assert_eq!(f["event"], "completed", "session {i}: {f}");
        ids.push(f["data"]["session_id"].as_str().expect("id").to_string());
        sockets.push(ws);
    }
    // The fourth creation, by a frame: refused in-band, the socket stays open.
    let mut ws4 = ws_open(&p, KEY_A, "").await;
    let f = ws_turn(&mut ws4, 10, "").await;
    assert_refusal_frame(&f, "tenant_session_quota", 2);
    assert_eq!(f["data"]["limit"], 3, "{f}");
    ws_alive(&mut ws4).await;
    // An existing session is not a new one: its frames still work.
    let f = ws_turn(&mut sockets[0], 11, &ids[0]).await;
    assert_eq!(f["event"], "completed", "{f}");
    // HTTP creates count against the same budget.
    let r = http_create(&c, &p, KEY_A).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body["error"], "tenant_session_quota", "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("2"), "{r:?}");
    // Tenant B is unaffected: HTTP and WebSocket creations work.
    let r = http_create(&c, &p, KEY_B).await;
    assert_eq!(r.status, 201, "B: {r:?}");
    let mut wsb = ws_open(&p, KEY_B, "").await;
    assert_eq!(ws_turn(&mut wsb, 1, "").await["event"], "completed");

    // A closes one session: the refused socket's next frame creates its session.
    let del = send(
        c.delete(format!("{}/sessions/{}", p.base(), ids[1]))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(del.status, 204, "{del:?}");
    let f = ws_turn(&mut ws4, 12, "").await;
    assert_eq!(f["event"], "completed", "after a close: {f}");
    // Full again, whatever carries the next creation.
    assert_eq!(http_create(&c, &p, KEY_A).await.status, 429);

    let sessions = metric_at(
        &c,
        &w.base(),
        hotplex_common::names::shared::SESSIONS_ACTIVE,
        &[],
    )
    .await;
    assert_eq!(sessions, 5.0, "A holds 3, B 2");
    assert_eq!(refusals(&c, &w, "tenant_session_quota").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_and_websocket_turns_share_the_tenant_turn_rate() {
    // 4 turns at once, then one every 15 s (the five turns below fit in 15 s even on a
    // loaded machine).
    let w = quota_worker(
        "qw2",
        "tenant_quotas:\n  turns_per_minute: 4\n  turns_burst: 4\n",
    )
    .await;
    let p = spawn_proxy(&proxy_yaml(&[("qw2", w.addr)], &tenants_yaml())).await;
    let c = client();

    let r = http_create(&c, &p, KEY_A).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["session_id"].as_str().expect("id").to_string();
    // Two SSE turns, two WebSocket turns: the burst.
    for _ in 0..2 {
        let (status, _, body) = sse_turn(&c, &p, KEY_A, &id).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("event: completed"), "{body}");
    }
    let mut ws = ws_open(&p, KEY_A, &format!("?session_id={id}")).await;
    for rid in 1..=2 {
        assert_eq!(ws_turn(&mut ws, rid, &id).await["event"], "completed");
    }
    // The fifth turn, by a frame: refused in-band; by SSE: 429.
    let f = ws_turn(&mut ws, 3, &id).await;
    let ra = assert_refusal_frame(&f, "tenant_turn_rate", 15);
    assert_eq!(f["data"]["session_id"], id.as_str(), "{f}");
    ws_alive(&mut ws).await;
    let (status, retry, body) = sse_turn(&c, &p, KEY_A, &id).await;
    assert_eq!(status, 429, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json error");
    assert_eq!(v["error"], "tenant_turn_rate", "{v}");
    let retry: u64 = retry.and_then(|r| r.parse().ok()).expect("Retry-After");
    assert!((1..=15).contains(&retry), "{retry}");

    // Tenant B has its own rate.
    let r = http_create(&c, &p, KEY_B).await;
    assert_eq!(r.status, 201, "{r:?}");
    let idb = r.body["session_id"].as_str().expect("id").to_string();
    assert_eq!(sse_turn(&c, &p, KEY_B, &idb).await.0, 200);

    // Once the rate allows it, the same socket runs the turn.
    // allow-sleep: waiting out the refusal's own retry_after (one token per 15 s).
    tokio::time::sleep(Duration::from_secs(ra)).await;
    let deadline = Instant::now() + Duration::from_secs(17);
    let mut rid = 100;
    let ok = loop {
        rid += 1;
        let f = ws_turn(&mut ws, rid, &id).await;
        if f["event"] == "completed" {
            break true;
        }
        assert_eq!(f["data"]["error"], "tenant_turn_rate", "{f}");
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ok, "a turn after retry_after");
    assert!(refusals(&c, &w, "tenant_turn_rate").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_direct_websocket_creating_sessions_hits_the_quota() {
    let w = quota_worker("qw3", "tenant_quotas:\n  max_sessions: 2\n").await;
    let url = format!("ws://{}/ws/v1/agent", w.addr);
    let (mut ws, _, _) = ws_connect_checked(&url, &[]).await;
    for (rid, sid) in [(1, "mine-1"), (2, "mine-2")] {
        assert_eq!(ws_turn(&mut ws, rid, sid).await["event"], "completed");
    }
    let f = ws_turn(&mut ws, 3, "mine-3").await;
    assert_refusal_frame(&f, "tenant_session_quota", 2);
    ws_alive(&mut ws).await;
    assert_eq!(ws_turn(&mut ws, 4, "mine-1").await["event"], "completed");
    // A stop frame on an existing session, then a close frees a place for a new id.
    let c = client();
    let del = send(c.delete(format!("{}/sessions/mine-2", w.base()))).await;
    assert_eq!(del.status, 204, "{del:?}");
    assert_eq!(ws_turn(&mut ws, 5, "mine-3").await["event"], "completed");
    assert_refusal_frame(
        &ws_turn(&mut ws, 6, "mine-4").await,
        "tenant_session_quota",
        2,
    );
    assert_eq!(refusals(&c, &w, "tenant_session_quota").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_one_tenant_quota_through_redis() {
    if redis::skip_without_redis() {
        return;
    }
    let raddr = free_addr();
    let _redis = redis::start_redis(raddr.port(), &[]).await;
    let extra = format!(
        "tenant_quotas:\n  max_sessions: 4\n  turns_per_minute: 3\n  turns_burst: 3\n\
         quota_store:\n  url: redis://{raddr}/0\n  timeout: 500ms\n  \
         refresh_interval: 200ms\n  stale_after: 2s\n  on_error: open\n"
    );
    let w1 = quota_worker("rq1", &extra).await;
    let w2 = quota_worker("rq2", &extra).await;
    let wl = [("rq1", w1.addr), ("rq2", w2.addr)];
    let p = spawn_proxy(&proxy_yaml(&wl, &tenants_yaml())).await;
    let c = client();

    // A: four sessions, placed on both workers; the fifth is refused whichever worker
    // it lands on (alone, each worker would admit 4).
    let mut sessions: Vec<(String, String)> = Vec::new();
    for _ in 0..4 {
        let r = http_create(&c, &p, KEY_A).await;
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.body["session_id"].as_str().expect("id").to_string();
        sessions.push((id, r.node.clone().expect("node")));
    }
    let on = |n: &str| sessions.iter().filter(|(_, w)| w == n).count();
    assert!(
        on("rq1") >= 1 && on("rq2") >= 1,
        "both workers: {sessions:?}"
    );
    for _ in 0..4 {
        let r = http_create(&c, &p, KEY_A).await;
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.body["error"], "tenant_session_quota", "{r:?}");
    }
    // A WebSocket creation is refused the same way.
    let mut ws = ws_open(&p, KEY_A, "").await;
    assert_refusal_frame(&ws_turn(&mut ws, 1, "").await, "tenant_session_quota", 2);
    // B is unaffected.
    assert_eq!(http_create(&c, &p, KEY_B).await.status, 201);
    // A closes one (on the worker holding more): room again, for the refused socket.
    let busiest = if on("rq1") >= on("rq2") { "rq1" } else { "rq2" };
    let victim = sessions
        .iter()
        .position(|(_, w)| w == busiest)
        .expect("a session there");
    let (gone, _) = sessions.remove(victim);
    let del = send(
        c.delete(format!("{}/sessions/{gone}", p.base()))
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(del.status, 204, "{del:?}");
    // The other worker learns of the close at once (or at the next refresh, 200 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rid = 10;
    let created = loop {
        rid += 1;
        let f = ws_turn(&mut ws, rid, "").await;
        if f["event"] == "completed" {
            break true;
        }
        assert_eq!(f["data"]["error"], "tenant_session_quota", "{f}");
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(created, "a WebSocket creation after the close");
    assert_eq!(http_create(&c, &p, KEY_A).await.status, 429);

    // One turn rate across both workers (burst 3): the WebSocket turn above and two turns
    // on rq1 spend it; a turn on rq2 is then refused, though rq2 alone ran at most one.
    let s1 = sessions
        .iter()
        .find(|(_, w)| w == "rq1")
        .expect("on rq1")
        .0
        .clone();
    let s2 = sessions
        .iter()
        .find(|(_, w)| w == "rq2")
        .expect("on rq2")
        .0
        .clone();
    for _ in 0..2 {
        let (status, _, body) = sse_turn(&c, &p, KEY_A, &s1).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry, body) = sse_turn(&c, &p, KEY_A, &s2).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("tenant_turn_rate"), "{body}");
    assert!(retry.is_some(), "Retry-After");

    let total = refusals(&c, &w1, "tenant_session_quota").await
        + refusals(&c, &w2, "tenant_session_quota").await;
    assert!(
        total >= 6.0,
        "4 HTTP + 1 WebSocket + 1 HTTP refusals: {total}"
    );
    for w in [&w1, &w2] {
        let errs = metric_at(&c, &w.base(), wnames::QUOTA_STORE_ERRORS, &[]).await;
        assert_eq!(errs, 0.0, "{}: no store errors", w.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_store_outage_and_dead_workers() {
    if redis::skip_without_redis() {
        return;
    }
    let raddr = free_addr();
    let mut redis = redis::start_redis(raddr.port(), &[]).await;
    let extra = |on_error: &str| {
        format!(
            "tenant_quotas:\n  max_sessions: 2\n\
             quota_store:\n  url: redis://{raddr}/0\n  timeout: 300ms\n  \
             refresh_interval: 200ms\n  stale_after: 3s\n  on_error: {on_error}\n"
        )
    };
    // Straight to the workers (dev mode): the anonymous tenant is one tenant fleet-wide.
    let open = quota_worker("open-w", &extra("open")).await;
    let closed = quota_worker("closed-w", &extra("closed")).await;
    let mut doomed = quota_worker("doomed-w", &extra("open")).await;
    let c = client();
    let create = |w: &QWorker| {
        let c = c.clone();
        let url = format!("{}/sessions", w.base());
        async move { send(c.post(url)).await }
    };
    assert_eq!(create(&doomed).await.status, 201);
    let first = create(&open).await;
    assert_eq!(first.status, 201, "{first:?}");
    for w in [&open, &closed] {
        let r = create(w).await;
        assert_eq!(r.status, 429, "{}: {r:?}", w.id);
        assert_eq!(r.body["error"], "tenant_session_quota");
    }
    // A worker that dies stops counting once its count is stale (3 s).
    doomed.guard.kill();
    let killed = Instant::now();
    let freed = loop {
        let r = create(&open).await;
        if r.status == 201 {
            break killed.elapsed();
        }
        assert_eq!(r.status, 429, "{r:?}");
        assert!(
            killed.elapsed() < WAIT,
            "the dead worker's sessions still count"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("a killed worker's sessions stopped counting after {freed:?} (stale_after 3s)");
    // Not before stale_after less one (possibly late) refresh interval.
    assert!(
        freed >= Duration::from_millis(1500),
        "not before stale_after: {freed:?}"
    );

    // Redis down. Open: the per-worker quota decides (open-w holds 2 of 2, then 1 of 2).
    redis.kill();
    let r = create(&open).await;
    assert_eq!(r.status, 429, "the local quota still holds: {r:?}");
    let id = first.body["session_id"].as_str().expect("id");
    let del = send(c.delete(format!("{}/sessions/{id}", open.base()))).await;
    assert_eq!(del.status, 204);
    let t = Instant::now();
    let r = create(&open).await;
    println!(
        "fail-open create with Redis down: {} in {:?}",
        r.status,
        t.elapsed()
    );
    assert_eq!(r.status, 201, "open: admitted by the local quota: {r:?}");
    // Closed: refused with 503 and Retry-After, whatever the local count.
    let t = Instant::now();
    let r = create(&closed).await;
    println!(
        "fail-closed create with Redis down: {} in {:?}",
        r.status,
        t.elapsed()
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["error"], "quota_store_unavailable", "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("2"), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    for w in [&open, &closed] {
        let errs = metric_at(&c, &w.base(), wnames::QUOTA_STORE_ERRORS, &[]).await;
        assert!(errs >= 1.0, "{}: store errors counted", w.id);
    }
    assert_eq!(refusals(&c, &closed, "quota_store_unavailable").await, 1.0);

    // Redis back (empty): the workers republish their counts and use it again; the
    // fleet (open-w holds 2) is full for closed-w once open-w's counts are back.
    let _redis = redis::start_redis(raddr.port(), &[]).await;
    let back = Instant::now();
    let ok = loop {
        let r = create(&closed).await;
        if r.status == 429 && r.body["error"] == "tenant_session_quota" {
            break true;
        }
        assert!(
            r.status == 503 || r.status == 201,
            "while Redis comes back: {r:?}"
        );
        if r.status == 201 {
            let id = r.body["session_id"].as_str().expect("id").to_string();
            send(c.delete(format!("{}/sessions/{id}", closed.base()))).await;
        }
        if back.elapsed() > WAIT {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ok, "the store decides again after Redis is back");
    println!(
        "store used again {:?} after Redis restarted",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_on_two_workers_never_exceed_the_fleet_quota() {
    if redis::skip_without_redis() {
        return;
    }
    let raddr = free_addr();
    let _redis = redis::start_redis(raddr.port(), &[]).await;
    let extra = format!(
        "tenant_quotas:\n  max_sessions: 5\nquota_store:\n  url: redis://{raddr}/0\n  \
         timeout: 2s\n  stale_after: 10s\n"
    );
    let w1 = quota_worker("cq1", &extra).await;
    let w2 = quota_worker("cq2", &extra).await;
    let c = client();
    // 30 creates at once, alternating between the workers (the anonymous tenant).
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let c = c.clone();
            let url = format!("{}/sessions", [&w1, &w2][i % 2].base());
            tokio::spawn(async move { send(c.post(url)).await })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            201 => created += 1,
            429 => {
                assert_eq!(r.body["error"], "tenant_session_quota", "{r:?}");
                refused += 1;
            }
            s => panic!("create: {s} {r:?}"),
        }
    }
    println!(
        "30 concurrent creates on 2 workers, fleet quota 5: {created} created, {refused} refused"
    );
    assert_eq!((created, refused), (5, 25));
    let mut held = 0.0;
    for w in [&w1, &w2] {
        held += metric_at(
            &c,
            &w.base(),
            hotplex_common::names::shared::SESSIONS_ACTIVE,
            &[],
        )
        .await;
    }
    assert_eq!(held, 5.0, "the fleet holds exactly the quota");
}
