//! The systemd unit's zero-downtime upgrade: `conf/systemd/hotplex-proxy-upgrade`, the
//! `ExecReload=` of `conf/systemd/hotplex-proxy.service`, run the way systemd runs it
//! (`MAINPID` = the running proxy, `RUNTIME_DIRECTORY` = the unit's private runtime
//! directory, which holds the upgrade socket and the `PIDFile=`), against real proxies.
//!
//! - it starts the new binary with `--upgrade`, SIGQUITs the old process, returns 0 once
//!   the new one holds the listeners, and names the new process in the PID file (what
//!   systemd reads to follow the new main process when the old one exits); the old one
//!   exits and the new one serves the same port and the same sessions;
//! - a new binary that dies at start fails the reload (exit 1), leaves no PID file (systemd
//!   must not adopt a dead PID) and does not signal the running proxy, which keeps serving;
//! - without `MAINPID` (not run by systemd) it starts nothing and signals nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::proxy::*;
use hotplex_e2e::eventually;

const HELPER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conf/systemd/hotplex-proxy-upgrade"
);

/// Kills (SIGKILL) the process the helper started, by the PID it wrote, when the test ends:
/// it is not the test's child (its parent, the helper, has exited).
struct PidGuard(i32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Running and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// A proxy in front of one worker whose upgrade socket is in `dir` (the unit's runtime
/// directory), plus the config the new process reads (the addresses the old one bound:
/// pingora hands the sockets over keyed by address).
async fn setup(dir: &Path) -> (Vec<TestWorker>, TestProxy, PathBuf) {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let extra = format!(
        "upgrade:\n  sock: \"{}\"\n  grace_period: 1s\n  shutdown_timeout: 1s\n",
        dir.join("upgrade.sock").display()
    );
    let yaml = proxy_yaml(&worker_list(&workers), &extra);
    let a = spawn_proxy(&yaml).await;
    let b_config = dir.join("proxy-b.yaml");
    write_config_file(&b_config, a.listen, a.admin, "", &yaml);
    (workers, a, b_config)
}

/// What the helper did: its exit status and its stderr.
struct Run {
    status: std::process::ExitStatus,
    stderr: String,
}

/// Runs the helper as systemd's ExecReload= would, and waits for it to exit. Its output
/// goes to a file, as systemd's goes to the journal: the new process it starts inherits
/// it and outlives the helper (a pipe would stay open until that process exits).
async fn run_helper(
    envs: Vec<(&'static str, String)>,
    config: &Path,
    bin: &str,
    dir: &Path,
) -> Run {
    let log = dir.join("helper.log");
    let file = std::fs::File::create(&log).expect("helper log");
    let mut cmd = Command::new("sh");
    cmd.arg(HELPER)
        .arg(config)
        .arg(bin)
        .env_remove("MAINPID")
        .env_remove("RUNTIME_DIRECTORY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log fd"))
        .stderr(file);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status =
        tokio::task::spawn_blocking(move || cmd.status().expect("run hotplex-proxy-upgrade"))
            .await
            .expect("join");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    Run { status, stderr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reload_hands_listeners_to_new_process_named_in_pid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_workers, mut a, b_config) = setup(dir.path()).await;
    let c = client();
    let (id, node) = create(&c, &a.base()).await;
    let old = a.guard.pid() as i32;

    let out = run_helper(
        vec![
            ("MAINPID", old.to_string()),
            ("RUNTIME_DIRECTORY", dir.path().display().to_string()),
        ],
        &b_config,
        PROXY_BIN,
        dir.path(),
    )
    .await;
    let stderr = &out.stderr;
    let pid_file = dir.path().join("hotplex-proxy.pid");
    let new: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("PID file {}: {e}; helper: {stderr}", pid_file.display()))
        .trim()
        .parse()
        .expect("PID file holds a PID");
    let _new_guard = PidGuard(new);
    assert!(out.status.success(), "reload succeeds: {stderr}");
    assert!(stderr.contains("holds the listeners"), "{stderr}");
    assert_ne!(new, old, "the PID file names the new process");
    assert!(alive(new), "the new process runs");
    let cmdline = std::fs::read(format!("/proc/{new}/cmdline")).expect("cmdline");
    assert!(
        cmdline.split(|b| *b == 0).any(|a| a == b"--upgrade"),
        "the PID file's process is the upgraded proxy"
    );
    assert!(
        !dir.path().join("upgrade-ready.json").exists(),
        "the readiness file is cleaned up"
    );

    // The old process hands over and exits (what makes systemd read the PID file).
    let exited = tokio::task::block_in_place(|| a.guard.wait_timeout(Duration::from_secs(30)));
    assert!(
        exited.is_some(),
        "the old process exits after its grace period"
    );

    // The same port and the same session, served by the new process alone.
    let c = client();
    let served = eventually(WAIT, || {
        let (c, base, id) = (c.clone(), a.base(), id.clone());
        async move { get_session(&c, &base, &id).await.status == 200 }
    })
    .await;
    assert!(served, "the new process serves the old one's port");
    let r = get_session(&c, &a.base(), &id).await;
    assert_eq!((r.status, r.node.as_deref()), (200, Some(node.as_str())));
    assert!(alive(new), "the new process keeps running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reload_fails_without_pid_file_when_new_binary_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_workers, mut a, b_config) = setup(dir.path()).await;
    let c = client();
    let (id, _) = create(&c, &a.base()).await;
    let old = a.guard.pid() as i32;
    // A "new binary" that exits at once (a broken build, a crash at start).
    let out = run_helper(
        vec![
            ("MAINPID", old.to_string()),
            ("RUNTIME_DIRECTORY", dir.path().display().to_string()),
        ],
        &b_config,
        "/bin/false",
        dir.path(),
    )
    .await;
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "the reload fails: {stderr}");
    assert!(
        stderr.contains("exited at start: the running proxy"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("hotplex-proxy.pid").exists(),
        "no PID file: systemd keeps the old main PID"
    );
    // No SIGQUIT: the running proxy keeps its listeners and its sessions.
    a.assert_alive().await;
    assert_eq!(get_session(&c, &a.base(), &id).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reload_outside_systemd_starts_and_signals_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_workers, mut a, b_config) = setup(dir.path()).await;
    let out = run_helper(
        vec![("RUNTIME_DIRECTORY", dir.path().display().to_string())],
        &b_config,
        PROXY_BIN,
        dir.path(),
    )
    .await;
    let stderr = &out.stderr;
    assert!(!out.status.success(), "refused without MAINPID");
    assert!(stderr.contains("MAINPID is not set"), "{stderr}");
    assert!(!dir.path().join("hotplex-proxy.pid").exists());
    // The running proxy got no SIGQUIT: it still serves.
    a.assert_alive().await;
    let c = client();
    let (id, _) = create(&c, &a.base()).await;
    assert_eq!(get_session(&c, &a.base(), &id).await.status, 200);
}
