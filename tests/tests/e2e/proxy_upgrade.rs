//! Proxy e2e: zero-downtime binary upgrade (pingora graceful upgrade). Proxy A serves HTTP
//! load; proxy B starts with `--upgrade` on the same config (same `upgrade.sock`); SIGQUIT to
//! A hands the listening sockets to B. 0 failed requests across the switch, A exits, B
//! serves afterwards (and binds the admin listener once A has released it).
//!
//! Known pingora limit (0.9): the old process keeps accepting on the shared socket for a
//! fixed 5 s after SIGQUIT, then drops connections it accepted but whose request head it has
//! not read yet. Such a request got no response byte; the client retries it once (RFC 9110
//! 9.2.2, idempotent GET) and the retries are counted and bounded.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use hotplex_e2e::{eventually, ChildGuard};

/// Proxy B: `yaml` on the addresses `a` bound (A's own file has port 0: the listening
/// sockets are handed over keyed by address), started with `--upgrade`. Returns once B
/// listens on the upgrade socket `sock`: it then waits for A's listening fds there on
/// SIGQUIT (the harness must not connect to it: B takes the first connection for A's).
/// B must not have stopped first (on a busy port, say).
async fn start_upgrader(
    dir: &tempfile::TempDir,
    a: &TestProxy,
    yaml: &str,
    sock: &std::path::Path,
) -> ChildGuard {
    let b_config = dir.path().join("proxy-b.yaml");
    write_config_file(&b_config, a.listen, a.admin, "", yaml);
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(&b_config)
        .arg("--upgrade")
        .env("RUST_LOG", "warn");
    let mut b = ChildGuard::spawn("proxy-b", &mut cmd);
    let listening = eventually(WAIT, || {
        let sock = sock.to_path_buf();
        async move { sock.exists() }
    })
    .await;
    b.assert_alive();
    assert!(
        listening,
        "B listens on the upgrade socket {}",
        sock.display()
    );
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_upgrade_under_load_drops_nothing() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("upgrade.sock");
    let extra = format!(
        "upgrade:\n  sock: \"{}\"\n  grace_period: 2s\n  shutdown_timeout: 2s\n",
        sock.display()
    );
    let yaml = proxy_yaml(&worker_list(&workers), &extra);
    let mut a = spawn_proxy(&yaml).await;
    let c = client();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(create(&c, &a.base()).await);
    }

    // Load: keep-alive clients and fresh-connection clients, reads and creates.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for k in 0..4 {
        let keepalive = k % 2 == 0;
        let c = if keepalive {
            client()
        } else {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client")
        };
        let (stop, ok, failed, base) = (stop.clone(), ok.clone(), failed.clone(), a.base());
        let retried = retried.clone();
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (id, node) in &sessions {
                    let url = format!("{base}/sessions/{id}");
                    let mut r = c.get(&url).send().await;
                    // RFC 9110 9.2.2: an idempotent request whose connection closed before
                    // any response byte may be retried (what browsers and most clients do).
                    if r.as_ref().is_err_and(|e| e.is_request() && !e.is_timeout()) {
                        retried.fetch_add(1, Ordering::Relaxed);
                        eprintln!("retry at {:?} (keepalive={keepalive}): {r:?}", t0.elapsed());
                        r = c.get(&url).send().await;
                    }
                    let good = match &r {
                        Ok(r) => {
                            r.status() == 200
                                && r.headers()
                                    .get("x-hotplex-node")
                                    .and_then(|v| v.to_str().ok())
                                    == Some(node.as_str())
                        }
                        Err(_) => false,
                    };
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "FAILED at {:?} (keepalive={keepalive}): {r:?}",
                            t0.elapsed()
                        );
                    }
                }
            }
        }));
    }
    // The load runs on A.
    let ok2 = ok.clone();
    assert!(
        eventually(WAIT, || {
            let ok = ok2.clone();
            async move { ok.load(Ordering::Relaxed) >= 20 }
        })
        .await,
        "load served by A"
    );
    let before = ok.load(Ordering::Relaxed);

    // B takes over.
    let mut b = start_upgrader(&sock_dir, &a, &yaml, &sock).await;
    let switch = Instant::now();
    println!("SIGQUIT at {:?}", t0.elapsed());
    a.guard.signal(nix::sys::signal::Signal::SIGQUIT);
    let exited = tokio::task::block_in_place(|| a.guard.wait_timeout(Duration::from_secs(20)));
    let a_gone = switch.elapsed();
    assert!(exited.is_some(), "A exits after its grace period");
    // B has taken the sockets: it runs, and the load keeps being served with A gone.
    b.assert_alive();
    let at_exit = ok.load(Ordering::Relaxed);
    let ok2 = ok.clone();
    let served = eventually(WAIT, || {
        let ok = ok2.clone();
        async move { ok.load(Ordering::Relaxed) > at_exit + 10 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    let after = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let retried = retried.load(Ordering::Relaxed);
    println!(
        "upgrade: {before} ok before SIGQUIT, {} ok until A exited ({a_gone:?} after SIGQUIT), {} ok on B alone; {failed} failed, {retried} retried once",
        at_exit - before,
        after - at_exit
    );
    assert!(
        retried <= 4,
        "only the handful of connections cut at A's shutdown instant"
    );
    assert_eq!(failed, 0, "0 failed requests across the upgrade");
    assert!(served && after > at_exit + 10, "B serves after A exited");

    // B's admin listener is up (bound once A released it) and B keeps every session.
    hotplex_e2e::wait_until_http_ok(&format!("{}/admin/config", a.admin_base()), WAIT).await;
    for (id, node) in &sessions {
        let r = get_session(&c, &a.base(), id).await;
        assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
    }
    let s = create(&c, &a.base()).await;
    assert!(!s.0.is_empty());
    b.assert_alive();
    drop(b);
}

/// The upgrade with a TLS listener and the HTTP → HTTPS redirect (the shipped configs have
/// TLS): B must not test-bind the ports A still holds. It takes the TLS listener with the
/// handover and binds the redirect listener once A has let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_with_a_tls_listener_and_redirect() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("upgrade.sock");
    let redirect = hotplex_e2e::free_addr();
    let extra = format!(
        "upgrade:\n  sock: \"{}\"\n  grace_period: 1s\n  shutdown_timeout: 1s\ntls:\n  listen: \"{ANY_PORT}\"\n  redirect_http: \"{redirect}\"\n",
        sock.display()
    );
    let yaml = proxy_yaml(&worker_list(&workers), &extra);
    let mut a = spawn_proxy(&yaml).await;
    let tls = a.tls.expect("TLS listener");
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let live = format!("https://{tls}/health/live");
    let r = https.get(&live).send().await.expect("https on A");
    assert_eq!(r.status(), 200);

    // B names the addresses A bound (A's file has port 0).
    let b_yaml = yaml.replace(
        &format!("listen: \"{ANY_PORT}\"\n  redirect"),
        &format!("listen: \"{tls}\"\n  redirect"),
    );
    assert!(b_yaml.contains(&tls.to_string()), "{b_yaml}");
    let mut b = start_upgrader(&sock_dir, &a, &b_yaml, &sock).await;
    a.guard.signal(nix::sys::signal::Signal::SIGQUIT);
    let exited = tokio::task::block_in_place(|| a.guard.wait_timeout(Duration::from_secs(20)));
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "A handed over and exited 0"
    );
    b.assert_alive();
    let r = https.get(&live).send().await.expect("https on B");
    assert_eq!(r.status(), 200, "B serves TLS on A's port");
    // The redirect listener: bound by B once A released it.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let redirected = eventually(WAIT, || {
        let c = no_redirects.clone();
        async move {
            c.get(format!("http://{redirect}/x"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 301)
        }
    })
    .await;
    assert!(redirected, "B answers the HTTP redirect port");
}
