//! Proxy e2e: the slot a new session reserves on a worker is given back exactly once,
//! whatever ends the create (issue #19, the `SlotReservation` guard of
//! `proxy/src/routing/reservation.rs`).
//!
//! Read through the proxy's own view of a worker (`/admin/workers`): `in_flight` (creates
//! and deletes sent to the worker and not settled yet: a leaked reservation stays there
//! for ever) and `sessions` (the proxy's estimate: a slot released twice would take a
//! committed session away, one never released would stay counted). Probes are ten
//! minutes apart, so after the first one the estimate is this proxy's accounting alone.
//! Covered: creates the worker refuses (409 for a taken client-chosen id, 502 for an agent
//! that fails to start), a create whose client goes away while the worker is starting its
//! agent, a create the worker refuses with 503 `full` that is re-placed on another worker.

use std::io::Write;
use std::time::Duration;

use hotplex_common::names;
use hotplex_e2e::metric_value;
use serde_json::Value;

use crate::support::proxy::*;

const SLOW_PROBES: &str =
    "health_check:\n  interval: 600s\n  timeout: 500ms\n  failures: 1\n  successes: 1\n";

/// A real worker whose agent (a shell script speaking the `hotplex-jsonl` ready line)
/// fails to start while `<dir>/fail` exists and takes 30 s to start while `<dir>/slow`
/// exists (no bubblewrap sandbox, so the agent sees the test's directory).
struct FlagWorker {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    _guard: hotplex_e2e::ChildGuard,
}

impl FlagWorker {
    async fn spawn(id: &str) -> FlagWorker {
        let dir = tempfile::tempdir().expect("tempdir");
        // Agents may run as per-session users: they must be able to see the flags.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let d = dir.path().display();
        let script = format!(
            "if [ -e {d}/fail ]; then exit 1; fi; if [ -e {d}/slow ]; then sleep 30; fi; \
             echo '{{\"type\":\"ready\"}}'; exec cat >/dev/null"
        );
        let command = serde_json::to_string(&["sh", "-c", &script]).expect("json");
        let yaml = format!(
            "max_sessions: 10\nidle_timeout: 1h\nexecution_timeout: 60s\nretry_after_secs: 1\n\
             startup_timeout: 60s\n{POOL_TESTS_TENANT_QUOTAS}agent:\n  command: {command}\n  \
             wait_ready: true\n  isolation: {{sandbox: none}}\n"
        );
        let cfg = dir.path().join("worker.yaml");
        std::fs::write(&cfg, yaml).expect("write worker config");
        let mut cmd = std::process::Command::new(WORKER_BIN);
        cmd.arg("--node-id")
            .arg(id)
            .arg("--config")
            .arg(&cfg)
            // (the failed agent starts this suite causes are logged as warnings)
            .env("RUST_LOG", "error");
        let (guard, addr) = crate::support::spawn_worker_cmd(id, cmd, dir.path()).await;
        FlagWorker {
            addr,
            dir,
            _guard: guard,
        }
    }

    fn flag(&self, name: &str, on: bool) {
        let p = self.dir.path().join(name);
        if on {
            std::fs::write(p, b"").expect("flag");
        } else {
            std::fs::remove_file(p).expect("unflag");
        }
    }
}

/// `(in_flight, sessions)` of the proxy's view of worker `id`.
async fn accounting(c: &reqwest::Client, p: &TestProxy, id: &str) -> (u64, u64) {
    let w: Value = admin_worker(c, p, id).await;
    let n = |k: &str| {
        w[k].as_u64()
            .unwrap_or_else(|| panic!("no {k} in the admin view of {id}: {w}"))
    };
    (n("in_flight"), n("sessions"))
}

/// Waits until worker `id` shows `want`; panics with the last view otherwise.
async fn settles_to(c: &reqwest::Client, p: &TestProxy, id: &str, want: (u64, u64), what: &str) {
    let ok = hotplex_e2e::eventually(WAIT, || async { accounting(c, p, id).await == want }).await;
    let got = accounting(c, p, id).await;
    assert!(
        ok,
        "{what}: (in_flight, sessions) of {id} is {got:?}, want {want:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_the_worker_refuses_give_their_slot_back() {
    let w = FlagWorker::spawn("w1").await;
    let p = spawn_proxy(&proxy_yaml(&[("w1", w.addr)], SLOW_PROBES)).await;
    let c = client();
    for _ in 0..2 {
        create(&c, &p.base()).await;
    }
    settles_to(&c, &p, "w1", (0, 2), "two sessions created").await;

    // A client-chosen id (hashed, counted without a capacity check), then the same id
    // again: the worker answers 409, the second slot is given back.
    let mine = || {
        c.post(format!("{}/sessions", p.base()))
            .header("x-hotplex-session", "reservation-test-1")
    };
    let r = send(mine()).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = send(mine()).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.body["error"], "session_exists", "{r:?}");
    settles_to(&c, &p, "w1", (0, 3), "after a 409 create").await;

    // A placed create whose agent fails to start: 502 from the worker, slot given back.
    w.flag("fail", true);
    for _ in 0..3 {
        let r = send(c.post(format!("{}/sessions", p.base()))).await;
        assert_eq!(r.status, 502, "{r:?}");
        assert_eq!(
            r.worker.as_deref(),
            Some("w1"),
            "the worker's answer: {r:?}"
        );
    }
    settles_to(&c, &p, "w1", (0, 3), "after three 502 creates").await;
    w.flag("fail", false);
    create(&c, &p.base()).await;
    settles_to(&c, &p, "w1", (0, 4), "a create after them").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_client_goes_away_gives_its_slot_back() {
    let w = FlagWorker::spawn("w1").await;
    let extra = format!("{SLOW_PROBES}timeouts:\n  connect: 500ms\n  read: 60s\n  write: 10s\n");
    let p = spawn_proxy(&proxy_yaml(&[("w1", w.addr)], &extra)).await;
    let c = client();
    create(&c, &p.base()).await;
    settles_to(&c, &p, "w1", (0, 1), "one session created").await;

    // The worker now takes 30 s to start an agent: the create is placed and waits for it.
    w.flag("slow", true);
    let mut s = std::net::TcpStream::connect(p.listen).expect("connect");
    s.write_all(b"POST /sessions HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    settles_to(&c, &p, "w1", (1, 2), "the create is placed (slot reserved)").await;
    // The client goes away before the worker answers.
    s.shutdown(std::net::Shutdown::Both).expect("shutdown");
    drop(s);
    settles_to(&c, &p, "w1", (0, 1), "after the client went away").await;
    let text = metrics(&c, &p).await;
    assert_eq!(
        metric_value(&text, names::proxy::SESSIONS_PLACED, &["worker=\"w1\""]),
        Some(1.0),
        "only the first create counts as placed"
    );
    // The freed slot serves again once the worker is fast.
    w.flag("slow", false);
    let created = tokio::time::timeout(Duration::from_secs(20), create(&c, &p.base())).await;
    assert!(created.is_ok(), "a create after the client left");
    settles_to(&c, &p, "w1", (0, 2), "a create after it").await;
}

/// Two proxies place on the same workers, each with its own estimate. Proxy B (only w1)
/// fills w1; proxy A, whose probes are minutes apart, still thinks w1 is empty: w1's 503
/// `full` to A's new session must not reach the client, it is re-placed on w2, and the slot
/// A reserved on w1 is given back (once: A's estimate of w1 stays at 0, not below what it
/// committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_replaced_after_a_503_gives_the_refused_slot_back() {
    let opts = WorkerOpts {
        max_sessions: 2,
        light: true,
    };
    let workers = spawn_workers(2, opts).await;
    let a = spawn_proxy(&proxy_yaml(&worker_list(&workers), SLOW_PROBES)).await;
    let b = spawn_proxy(&proxy_yaml(&worker_list(&workers)[..1], "")).await;
    let c = client();
    for _ in 0..2 {
        let (_, node) = create(&c, &b.base()).await;
        assert_eq!(node, "w1");
    }
    for _ in 0..2 {
        let (_, node) = create(&c, &a.base()).await;
        assert_eq!(node, "w2", "the only worker with room");
    }
    let text = metrics(&c, &a).await;
    let replaced = metric_value(&text, names::proxy::SESSIONS_REPLACED, &["worker=\"w1\""]);
    assert!(
        replaced >= Some(1.0),
        "w1 refused at least once: {replaced:?}"
    );
    assert_eq!(
        metric_value(&text, names::proxy::REJECTIONS, &["reason=\"no_capacity\""]).unwrap_or(0.0),
        0.0,
        "the refusal never reached a client"
    );
    settles_to(&c, &a, "w1", (0, 0), "A placed nothing on w1").await;
    settles_to(&c, &a, "w2", (0, 2), "A placed two on w2").await;
    // The fleet is full: A's own 503 after trying both, and still nothing reserved.
    let r = send(c.post(format!("{}/sessions", a.base()))).await;
    assert_eq!((r.status, r.worker.as_deref()), (503, None), "{r:?}");
    assert_eq!(r.body["error"], "no_capacity");
    settles_to(&c, &a, "w1", (0, 0), "after a refused create").await;
    settles_to(&c, &a, "w2", (0, 2), "after a refused create").await;
}
