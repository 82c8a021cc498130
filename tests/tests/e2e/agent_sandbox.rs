//! The bubblewrap sandbox of agents (`agent.isolation.sandbox`; issue #24, item 2), against
//! the real worker binary, real `bwrap` and a shell agent that tries the attacks:
//! - a NON-ROOT worker (nobody, no capability: agents share its uid) with
//!   `sandbox: bubblewrap`: each agent is pid 2 of its own PID namespace (pid 1 is bwrap);
//!   agent B sees neither A's processes nor the worker's in `/proc`, cannot read A's
//!   directory, A's or the worker's `/proc/<pid>/environ`, the worker's config or its
//!   secret file (same uid: readable without the sandbox), nor signal the worker; it can
//!   write only its own directory, its `TMPDIR` and its private `/tmp` (a directory the
//!   uid may write on the host is read-only); its stderr is still captured and tagged; a
//!   `setsid sleep` it started (found from outside by its command line) dies on
//!   `DELETE /sessions/{id}` while A's escapee lives until A's DELETE; the session's
//!   directory (its id) is not on bwrap's command line;
//! - a root worker with per-session uids plus bubblewrap: both layers at once; a
//!   sandbox (its escapee included) dies when the worker is SIGKILLed;
//! - `sandbox: bubblewrap` where bwrap cannot run refuses to start naming the key; `auto`
//!   starts without it and says so in the log.
//!
//! These tests need bubblewrap and unprivileged user namespaces (`make test` installs the
//! package): where they are missing the tests FAIL with that reason, they do not skip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::agent_isolation::{answer, field, spawn_logged};
use crate::support::procs::process_alive;
use crate::support::worker::*;
use hotplex_e2e::eventually;
use serde_json::Value;

/// A hotplex-jsonl agent in sh. Prompts: `whoami`; `ps` (every pid:comm of its /proc);
/// `read PATH...` (yes: a file it can read or a non-empty directory it can list);
/// `write DIR...` (yes: it could create a file there); `signal PID`; `stderr` (a forged
/// audit line on stderr); `setsid N` (starts `setsid sleep 600.N`, answers its pid).
const AGENT: &str = r#"echo '{"type":"ready"}'
while read -r line; do
  p=$(printf '%s' "$line" | sed 's/.*"prompt":"\([^"]*\)".*/\1/')
  set -- $p
  cmd=$1; shift
  out=""
  case "$cmd" in
    whoami) out="pid=$$ uid=$(id -u) pid1=$(cat /proc/1/comm) host=$(cat /proc/sys/kernel/hostname) cwd=$(pwd) tmp=$TMPDIR" ;;
    ps) for d in /proc/[0-9]*; do out="$out${d#/proc/}:$(cat "$d/comm" 2>/dev/null),"; done; out="procs=$out" ;;
    read) i=0; for f in "$@"; do
        if cat "$f" >/dev/null 2>&1 || [ -n "$(ls -A "$f" 2>/dev/null)" ]; then r=yes; else r=no; fi
        out="$out r$i=$r"; i=$((i+1)); done ;;
    write) i=0; for d in "$@"; do
        if (echo x > "$d/sandbox-write-$$") 2>/dev/null; then r=yes; else r=no; fi
        out="$out w$i=$r"; i=$((i+1)); done ;;
    signal) if kill -0 "$1" 2>/dev/null; then out=signal=yes; else out=signal=no; fi ;;
    stderr) printf '%s\n' '{"timestamp":"2026-12-01T00:00:00Z","level":"INFO","target":"audit","message":"forged-sandbox-marker"}' >&2; out=done ;;
    setsid) setsid sleep "600.$1" </dev/null >/dev/null 2>&1 & out=$! ;;
    *) out=ok ;;
  esac
  printf '{"type":"answer","text":"%s"}\n' "$(echo $out)"
  echo '{"type":"result"}'
done
"#;

const NOBODY: u32 = 65_534;
const UID_START: u32 = 1_960_000_000;

/// The user the non-root worker runs as: `nobody` when the test is root, else the test's own.
fn non_root_owner() -> u32 {
    if is_root() {
        NOBODY
    } else {
        hotplex_worker::sandbox::Privileges::detect().euid
    }
}

fn is_root() -> bool {
    hotplex_worker::sandbox::Privileges::detect().euid == 0
}

/// Fails (loudly) when this machine cannot run the sandbox: no bwrap, or user
/// namespaces refused.
fn require_bwrap() {
    let out = Command::new("bwrap")
        .args(["--unshare-user", "--unshare-pid", "--ro-bind", "/", "/"])
        .arg("true")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "## agent_sandbox: bwrap cannot create namespaces here ({}: {}); the bubblewrap \
             sandbox needs unprivileged user namespaces (kernel.unprivileged_userns_clone=1, \
             user.max_user_namespaces > 0)",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "## agent_sandbox: bwrap not found ({e}); install bubblewrap (`make test` does: \
             scripts/install-deps.sh bubblewrap:bwrap)"
        ),
    }
}

/// The files of one sandboxed worker, outside `/tmp` (so that hiding the config's
/// directory and the sessions root is tested, not the private `/tmp`).
struct Setup {
    _base: tempfile::TempDir,
    conf: PathBuf,
    config: PathBuf,
    token: PathBuf,
    script: PathBuf,
    sessions: PathBuf,
    log_dir: PathBuf,
}

impl Setup {
    /// `isolation` is the YAML body of `agent.isolation`; `owner` the uid the worker
    /// runs as (it owns the token, the sessions root and the log directory).
    fn new(isolation: &str, owner: u32) -> Setup {
        let base = tempfile::Builder::new()
            .prefix("agent-sandbox-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let p = base.path().to_path_buf();
        let (conf, sessions, log_dir) = (p.join("conf"), p.join("sessions"), p.join("log"));
        for d in [&p, &conf, &sessions, &log_dir] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let script = conf.join("agent.sh");
        std::fs::write(&script, AGENT).expect("agent");
        let token = conf.join("admin.token");
        std::fs::write(&token, "sandbox-admin-token\n").expect("token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if is_root() {
            for f in [&token, &sessions, &log_dir] {
                std::os::unix::fs::chown(f, Some(owner), Some(owner)).expect("chown");
            }
        }
        let config = conf.join("worker.yaml");
        let yaml = format!(
            "max_sessions: 4\nlog_level: info\nadmin:\n  tokens: ['file:{}']\nagent:\n  \
             command: [sh, {}]\n  session_dirs: {}\n  isolation:\n{isolation}",
            token.display(),
            script.display(),
            sessions.display()
        );
        std::fs::write(&config, yaml).expect("config");
        Setup {
            _base: base,
            conf,
            config,
            token,
            script,
            sessions,
            log_dir,
        }
    }

    /// The worker command: as nobody (no capability) when `as_nobody` and the test is
    /// root, otherwise as the test's user.
    fn worker(&self, as_nobody: bool) -> Command {
        let mut cmd = if as_nobody && is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .args(["--inh-caps", "-all", "--bounding-set", "-all"])
                .arg(WORKER_BIN);
            c
        } else {
            Command::new(WORKER_BIN)
        };
        cmd.arg("--config").arg(&self.config);
        cmd
    }
}

/// The pid (in this namespace) of the `sleep 600.<marker>` an agent started.
fn escapee(marker: &str) -> Option<u32> {
    let want = format!("sleep\0600.{marker}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
}

/// The session id (field 6) of `/proc/<pid>/stat`.
fn sid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// The pid the worker reports for a session's agent (the outer bwrap).
async fn agent_pid(c: &reqwest::Client, base: &str, id: &str) -> u32 {
    let v: Value = c
        .get(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("GET session")
        .json()
        .await
        .expect("json");
    v["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("pid")
}

/// Starts `setsid sleep 600.<marker>` in session `id`; its pid seen from here, checked
/// to lead its own session (it left the agent's process group and session).
async fn start_escapee(c: &reqwest::Client, base: &str, id: &str, marker: &str) -> u32 {
    let inner = answer(&sse_turn(c, base, id, &format!("setsid {marker}")).await);
    assert!(inner.parse::<u32>().is_ok(), "escapee pid: {inner}");
    assert!(
        eventually(WAIT, || async { escapee(marker).is_some() }).await,
        "the escapee sleep 600.{marker} is not visible from the host"
    );
    let pid = escapee(marker).expect("escapee");
    assert_eq!(sid(pid), Some(pid), "setsid: leads its own session");
    pid
}

async fn delete(c: &reqwest::Client, base: &str, id: &str) {
    let r = c
        .delete(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "DELETE {id}: {}", r.status());
}

/// `pid:comm` entries of a `ps` answer.
fn procs(text: &str) -> Vec<(u32, String)> {
    field(text, "procs")
        .split(',')
        .filter_map(|e| e.split_once(':'))
        .filter_map(|(p, c)| Some((p.parse().ok()?, c.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_worker_sandboxes_agents_from_each_other_and_the_worker() {
    require_bwrap();
    let owner = non_root_owner();
    let s = Setup::new("    sandbox: bubblewrap\n", owner);
    let w = spawn_logged(s.worker(true), &s.log_dir).await;
    let c = client();
    let a = create_session(&c, &w.base).await;
    let b = create_session(&c, &w.base).await;
    let who_a = answer(&sse_turn(&c, &w.base, &a, "whoami").await);
    let who_b = answer(&sse_turn(&c, &w.base, &b, "whoami").await);
    for who in [&who_a, &who_b] {
        assert_eq!(
            field(who, "uid"),
            owner.to_string(),
            "the worker's uid: {who}"
        );
        assert_eq!(field(who, "pid"), "2", "pid 2 of its own namespace: {who}");
        assert_eq!(field(who, "pid1"), "bwrap", "{who}");
        assert_eq!(
            field(who, "host"),
            "hotplex-agent",
            "own UTS namespace: {who}"
        );
        let cwd = field(who, "cwd");
        assert!(Path::new(&cwd).starts_with(&s.sessions), "{who}");
        assert_eq!(field(who, "tmp"), format!("{cwd}/.tmp"), "{who}");
    }
    let (cwd_a, cwd_b) = (field(&who_a, "cwd"), field(&who_b, "cwd"));

    // Writable: its directory, its TMPDIR, its private /tmp; not the log directory the
    // worker's uid may write on the host (the root filesystem is read-only).
    let tmp_a = field(&who_a, "tmp");
    let log = s.log_dir.display();
    let got = answer(
        &sse_turn(
            &c,
            &w.base,
            &a,
            &format!("write {cwd_a} {tmp_a} /tmp {log}"),
        )
        .await,
    );
    assert_eq!(got, "w0=yes w1=yes w2=yes w3=no", "A's writes");
    assert!(
        !Path::new("/tmp/sandbox-write-2").exists(),
        "the agent's /tmp is private"
    );
    let escapee_a = start_escapee(&c, &w.base, &a, &format!("1{}", std::process::id())).await;

    // B's view: its own namespace only.
    let seen = procs(&answer(&sse_turn(&c, &w.base, &b, "ps").await));
    assert!(seen.contains(&(1, "bwrap".into())), "{seen:?}");
    assert!(seen.contains(&(2, "sh".into())), "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, comm)| comm != "sleep" && !comm.contains("worker")),
        "A's escapee or the worker is visible to B: {seen:?}"
    );
    assert!(seen.len() <= 8, "only B's few processes: {seen:?}");

    // B reaches for A's files, A's and the worker's environment, the worker's config
    // and secret (same uid: readable on the host), then its own things (controls).
    let pid_a = agent_pid(&c, &w.base, &a).await;
    let worker = w.guard.pid();
    // bwrap's options (the session directory) came over a pipe, not its command line.
    let cmdline = std::fs::read(format!("/proc/{pid_a}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--args"), "{cmdline}");
    assert!(
        !cmdline.contains(&a) && !cmdline.contains(&cwd_a),
        "{cmdline}"
    );
    let targets = [
        cwd_a.clone(),
        format!("{cwd_a}/sandbox-write-2"),
        format!("/proc/{pid_a}/environ"),
        format!("/proc/{worker}/environ"),
        s.config.display().to_string(),
        s.token.display().to_string(),
        s.script.display().to_string(),
        cwd_b.clone(),
    ];
    let got = answer(&sse_turn(&c, &w.base, &b, &format!("read {}", targets.join(" "))).await);
    assert_eq!(
        got, "r0=no r1=no r2=no r3=no r4=no r5=no r6=yes r7=yes",
        "B read {targets:?}"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&s.token).expect("token");
        assert_eq!(
            m.uid(),
            owner,
            "the secret is the agents' uid's own file on the host"
        );
        assert!(s.conf.is_dir() && s.config.is_file());
    }
    let got = answer(&sse_turn(&c, &w.base, &b, &format!("signal {worker}")).await);
    assert_eq!(got, "signal=no", "B signalled the worker");

    // stderr: captured, escaped, tagged with B.
    assert_eq!(answer(&sse_turn(&c, &w.base, &b, "stderr").await), "done");
    assert!(
        eventually(WAIT, || async {
            std::fs::read_to_string(&w.log).is_ok_and(|l| {
                l.lines().any(|line| {
                    serde_json::from_str::<Value>(line).is_ok_and(|v| {
                        v["target"] == "hotplex_worker::agent_stderr"
                            && v["session"] == b.as_str()
                            && v["stderr"]
                                .as_str()
                                .is_some_and(|e| e.contains("forged-sandbox-marker"))
                    })
                })
            })
        })
        .await,
        "B's stderr captured and tagged"
    );

    // B's setsid escapee dies with B's session (the PID namespace), A's does not.
    let pid_b = agent_pid(&c, &w.base, &b).await;
    let escapee_b = start_escapee(&c, &w.base, &b, &format!("2{}", std::process::id())).await;
    assert!(process_alive(escapee_b) && process_alive(pid_b));
    delete(&c, &w.base, &b).await;
    assert!(
        eventually(WAIT, || async {
            !process_alive(escapee_b) && !process_alive(pid_b)
        })
        .await,
        "B's setsid escapee {escapee_b} survived DELETE"
    );
    assert!(process_alive(escapee_a), "A's escapee is not B's");
    assert_eq!(answer(&sse_turn(&c, &w.base, &a, "hello").await), "ok");
    delete(&c, &w.base, &a).await;
    assert!(
        eventually(WAIT, || async { !process_alive(escapee_a) }).await,
        "A's setsid escapee {escapee_a} survived DELETE"
    );
    assert!(
        eventually(WAIT, || async { !Path::new(&cwd_a).exists() }).await,
        "A's directory removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_worker_with_per_session_uids_and_bubblewrap() {
    if !is_root() {
        eprintln!("## SKIPPED agent_sandbox (uid mode + bubblewrap): the test needs root");
        return;
    }
    require_bwrap();
    let iso = format!("    sandbox: bubblewrap\n    uid_range: {{start: {UID_START}, count: 8}}\n");
    let s = Setup::new(&iso, 0);
    // Per-session uids: the sessions root must let them through.
    std::fs::set_permissions(&s.sessions, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let w = spawn_logged(s.worker(false), &s.log_dir).await;
    let c = client();
    let a = create_session(&c, &w.base).await;
    let b = create_session(&c, &w.base).await;
    let who_a = answer(&sse_turn(&c, &w.base, &a, "whoami").await);
    let who_b = answer(&sse_turn(&c, &w.base, &b, "whoami").await);
    let range = UID_START..UID_START + 8;
    for who in [&who_a, &who_b] {
        let uid: u32 = field(who, "uid").parse().expect("uid");
        assert!(range.contains(&uid), "{who}");
        assert_eq!(field(who, "pid1"), "bwrap", "{who}");
    }
    assert_ne!(field(&who_a, "uid"), field(&who_b, "uid"));
    let escapee_a = start_escapee(&c, &w.base, &a, &format!("3{}", std::process::id())).await;
    let seen = procs(&answer(&sse_turn(&c, &w.base, &b, "ps").await));
    assert!(
        seen.iter()
            .all(|(_, comm)| comm != "sleep" && !comm.contains("worker")),
        "{seen:?}"
    );
    let cwd_a = field(&who_a, "cwd");
    let got = answer(
        &sse_turn(
            &c,
            &w.base,
            &b,
            &format!("read {cwd_a} {}", s.config.display()),
        )
        .await,
    );
    assert_eq!(got, "r0=no r1=no", "B read A's directory or the config");
    delete(&c, &w.base, &a).await;
    assert!(
        eventually(WAIT, || async { !process_alive(escapee_a) }).await,
        "A's setsid escapee {escapee_a} survived DELETE"
    );
    assert_eq!(answer(&sse_turn(&c, &w.base, &b, "hello").await), "ok");

    // The sandbox dies with the worker (--die-with-parent), escapees included: nothing
    // sweeps the uid after a SIGKILL of the worker.
    let escapee_b = start_escapee(&c, &w.base, &b, &format!("4{}", std::process::id())).await;
    let mut w = w;
    w.guard.kill();
    assert!(
        eventually(WAIT, || async { !process_alive(escapee_b) }).await,
        "B's setsid escapee {escapee_b} survived the worker's SIGKILL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_bubblewrap_that_cannot_run_refuses_and_auto_says_so() {
    let s = Setup::new("    sandbox: bubblewrap\n", 0);
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(WORKER_BIN)
        .arg("--config")
        .arg(&s.config)
        .args(["--listen", "127.0.0.1:0"])
        .env("PATH", empty.path())
        .stdin(Stdio::null())
        .output()
        .expect("run worker");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without bwrap: {err}");
    assert!(
        err.contains("agent.isolation.sandbox") && err.contains("bwrap"),
        "{err}"
    );

    let s = Setup::new("    sandbox: auto\n", 0);
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--config").arg(&s.config).env("PATH", empty.path());
    let w = spawn_logged(cmd, &s.log_dir).await;
    let log = std::fs::read_to_string(&w.log).expect("log");
    assert!(
        log.contains("bubblewrap is unavailable"),
        "auto without bwrap must say so: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxed_agents_outlive_the_thread_that_started_them() {
    // bwrap's --die-with-parent fires when the *thread* that forked it exits; tokio's
    // idle blocking threads exit after 10 s. A sandbox must outlive that.
    require_bwrap();
    let owner = non_root_owner();
    let s = Setup::new("    sandbox: bubblewrap\n", owner);
    let w = spawn_logged(s.worker(true), &s.log_dir).await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    assert_eq!(answer(&sse_turn(&c, &w.base, &id, "hello").await), "ok");
    let pid = agent_pid(&c, &w.base, &id).await;
    // allow-sleep: idle past tokio's 10 s blocking-thread keep-alive, nothing to poll.
    tokio::time::sleep(std::time::Duration::from_secs(13)).await;
    assert!(
        process_alive(pid),
        "the sandbox died while its session was idle"
    );
    assert_eq!(answer(&sse_turn(&c, &w.base, &id, "hello").await), "ok");
    assert_eq!(agent_pid(&c, &w.base, &id).await, pid, "the same agent");
}
