//! Agents are isolated from each other and from the worker (issue #24, item 2), against
//! the real worker binary with a shell agent that tries the attacks:
//! - as root (the default: one uid per session from `agent.isolation.uid_range`): two
//!   sessions run as distinct uids of the range, without supplementary groups, in their
//!   own 0700 directories (private `TMPDIR`, `HOME`); agent B cannot open A's
//!   `/proc/<pid>/fd/1` for writing (A's next turn is A's own), read A's `environ`, list
//!   A's `/proc/<pid>/cwd` or directory, or signal A, while each can read its own; nor
//!   can it reach the worker's fds, environment, cwd, signals or uid lock directory;
//! - an agent's stderr line that looks like a worker audit line reaches the worker's log
//!   only escaped, inside the `stderr` field of a line tagged with the session id;
//! - a `setsid sleep 600` started by an agent (its own session, outside the agent's
//!   process group) is gone after `DELETE /sessions/{id}` (the uid sweep);
//! - root without CAP_SETUID/CAP_SETGID refuses to start instead of running agents as
//!   root; a non-root worker runs agents as itself, still captures their stderr and kills
//!   their process group.
//!
//! These tests cover the uid layer alone (`sandbox: none`: they pass pids between
//! agents, which a PID namespace renumbers); `agent_sandbox` covers the namespace
//! sandbox. The uid-based tests need root and say so when skipped.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::procs::process_alive;
use crate::support::worker::*;
use hotplex_e2e::{eventually, ChildGuard};
use serde_json::Value;

/// A hotplex-jsonl agent in sh. `whoami`: identity, directories, parent pid and
/// capability sets; `read FILE`: whether it can read a file; `attack PID DIR`:
/// tries another agent's fd 1, environ, cwd, directory and signals (and its own environ
/// as a control); `stderr`: prints a forged audit line on stderr; `setsid`: starts a
/// `setsid sleep 600` and reports its pid.
pub(crate) const AGENT: &str = r#"echo '{"type":"ready"}'
while read -r line; do
  case "$line" in
    *'"prompt":"whoami"'*)
      printf '{"type":"answer","text":"pid=%s uid=%s gid=%s groups=%s cwd=%s tmp=%s home=%s ppid=%s capprm=%s capeff=%s capamb=%s"}\n' \
        "$$" "$(id -u)" "$(id -g)" "$(id -G)" "$(pwd)" "$TMPDIR" "$HOME" "$PPID" \
        "$(sed -n 's/^CapPrm:[[:space:]]*//p' /proc/self/status)" \
        "$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)" \
        "$(sed -n 's/^CapAmb:[[:space:]]*//p' /proc/self/status)"
      echo '{"type":"result"}' ;;
    *'"prompt":"attack '*)
      set -- $(printf '%s' "$line" | sed 's/.*"prompt":"attack \([0-9]*\) \([^"]*\)".*/\1 \2/')
      if (printf '{"type":"answer","text":"FORGED"}\n{"type":"result"}\n' > "/proc/$1/fd/1") 2>/dev/null; then w=yes; else w=no; fi
      if cat "/proc/$1/environ" >/dev/null 2>&1; then e=yes; else e=no; fi
      if ls "/proc/$1/cwd/" >/dev/null 2>&1; then c=yes; else c=no; fi
      if ls "$2" >/dev/null 2>&1; then d=yes; else d=no; fi
      if kill -0 "$1" 2>/dev/null; then k=yes; else k=no; fi
      if cat "/proc/$$/environ" >/dev/null 2>&1; then s=yes; else s=no; fi
      printf '{"type":"answer","text":"fd1=%s environ=%s proccwd=%s dir=%s signal=%s self=%s"}\n' $w $e $c $d $k $s
      echo '{"type":"result"}' ;;
    *'"prompt":"read '*)
      f=$(printf '%s' "$line" | sed 's/.*"prompt":"read \([^"]*\)".*/\1/')
      if cat "$f" >/dev/null 2>&1; then r=yes; else r=no; fi
      printf '{"type":"answer","text":"read=%s"}\n' $r
      echo '{"type":"result"}' ;;
    *'"prompt":"stderr"'*)
      printf '%s\n' '{"timestamp":"2026-12-01T00:00:00Z","level":"INFO","target":"audit","message":"forged-audit-marker","action":"config.reload"}' >&2
      echo '{"type":"answer","text":"done"}'; echo '{"type":"result"}' ;;
    *'"prompt":"setsid"'*)
      setsid sleep 600 </dev/null >/dev/null 2>&1 &
      printf '{"type":"answer","text":"%s"}\n' "$!"
      echo '{"type":"result"}' ;;
    *)
      echo '{"type":"answer","text":"ok"}'; echo '{"type":"result"}' ;;
  esac
done
"#;

const UID_START: u32 = 1_950_000_000;

pub(crate) fn is_root() -> bool {
    hotplex_worker::sandbox::Privileges::detect().euid == 0
}

pub(crate) fn answer(events: &[hotplex_e2e::sse::Event]) -> String {
    events
        .iter()
        .filter(|e| e.event == "answer")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["data"]["text"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("|")
}

/// `key=value` out of an answer.
pub(crate) fn field(text: &str, key: &str) -> String {
    text.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

/// The session id (field 6) and command of `/proc/<pid>/stat`.
pub(crate) fn sid_and_comm(pid: u32) -> (u32, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let comm = stat
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    let sid = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (sid, comm)
}

/// A worker child process with its log (stderr) in `<dir>/worker.log`.
pub(crate) struct Logged {
    pub(crate) guard: ChildGuard,
    pub(crate) base: String,
    pub(crate) log: std::path::PathBuf,
}

/// Starts `cmd` (a worker command line) with `--listen 127.0.0.1:0 --addr-file`, its log
/// captured.
pub(crate) async fn spawn_logged(mut cmd: Command, dir: &Path) -> Logged {
    let log = dir.join("worker.log");
    let addr_path = dir.join("worker.addr");
    let file = std::fs::File::create(&log).expect("log file");
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--addr-file")
        .arg(&addr_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file);
    let mut guard = ChildGuard::spawn_with_output("e2e-worker (isolation)", &mut cmd);
    let bound = crate::support::addr_file(&addr_path, &mut guard).await;
    let addr = crate::support::addr_of(&bound, "listen");
    let base = format!("http://{addr}");
    hotplex_e2e::wait_until_http_ok(&format!("{base}/health/live"), Duration::from_secs(15)).await;
    Logged { guard, base, log }
}

/// A directory the agent users can read the script from (tempdirs may be 0700).
/// `DELETE /sessions/{id}`: succeeds, every pid of `pids` (host pids: the agent and what
/// it left behind, `setsid` escapees included) is gone, and the session's directory too.
pub(crate) async fn delete_kills_the_tree(
    c: &reqwest::Client,
    base: &str,
    id: &str,
    pids: &[u32],
    dir: &str,
) {
    let r = c
        .delete(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    assert!(
        eventually(WAIT, || async { pids.iter().all(|p| !process_alive(*p)) }).await,
        "a process of the session ({pids:?}) survived DELETE"
    );
    assert!(
        eventually(WAIT, || async { !Path::new(dir).is_dir() }).await,
        "the session's directory {dir} was not removed"
    );
}

pub(crate) fn agent_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = dir.path().join("agent.sh");
    std::fs::write(&script, AGENT).expect("write agent");
    (dir, script)
}

pub(crate) fn config(dir: &Path, script: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("worker.yaml");
    let yaml = format!(
        "max_sessions: 4\nlog_level: info\nagent:\n  command: [sh, {}]\n{extra}",
        script.display()
    );
    std::fs::write(&cfg, yaml).expect("write config");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_session_uids_keep_agents_apart_and_close_kills_everything() {
    if !is_root() {
        eprintln!("## SKIPPED agent_isolation (per-session uids): the test needs root");
        return;
    }
    let (dir, script) = agent_dir();
    let cfg = config(
        dir.path(),
        &script,
        &format!(
            "  isolation:\n    sandbox: none\n    uid_range: {{start: {UID_START}, count: 8}}\n"
        ),
    );
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--config").arg(&cfg);
    let w = spawn_logged(cmd, dir.path()).await;
    let c = client();
    let a = create_session(&c, &w.base).await;
    let b = create_session(&c, &w.base).await;
    let who_a = answer(&sse_turn(&c, &w.base, &a, "whoami").await);
    let who_b = answer(&sse_turn(&c, &w.base, &b, "whoami").await);

    // Distinct uids of the range; gid = uid, no other group; own 0700 directories.
    let range = UID_START..UID_START + 8;
    let (uid_a, uid_b): (u32, u32) = (
        field(&who_a, "uid").parse().expect("uid a"),
        field(&who_b, "uid").parse().expect("uid b"),
    );
    assert!(
        range.contains(&uid_a) && range.contains(&uid_b),
        "{who_a} {who_b}"
    );
    assert_ne!(uid_a, uid_b, "one uid per session");
    for (who, uid) in [(&who_a, uid_a), (&who_b, uid_b)] {
        assert_eq!(field(who, "gid"), uid.to_string(), "{who}");
        assert_eq!(
            field(who, "groups"),
            uid.to_string(),
            "no extra groups: {who}"
        );
        let cwd = field(who, "cwd");
        let meta = std::fs::metadata(&cwd).expect("session dir");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700), "{cwd}");
        assert_eq!(field(who, "tmp"), format!("{cwd}/.tmp"), "private TMPDIR");
        assert_eq!(field(who, "home"), cwd, "HOME");
        for set in ["capprm", "capeff", "capamb"] {
            assert_eq!(field(who, set), "0000000000000000", "no capability: {who}");
        }
        let tmeta = std::fs::metadata(format!("{cwd}/.tmp")).expect("tmp dir");
        assert_eq!((tmeta.uid(), tmeta.mode() & 0o777), (uid, 0o700));
    }

    // B attacks A: A's stdout pipe, environment, working directory, signals.
    let pid_a: u32 = field(&who_a, "pid").parse().expect("pid a");
    let cwd_a = field(&who_a, "cwd");
    let got = answer(&sse_turn(&c, &w.base, &b, &format!("attack {pid_a} {cwd_a}")).await);
    assert_eq!(
        got, "fd1=no environ=no proccwd=no dir=no signal=no self=yes",
        "agent B reached agent A"
    );
    let next_a = answer(&sse_turn(&c, &w.base, &a, "hello").await);
    assert_eq!(next_a, "ok", "A's turn is A's own");
    // ... and the worker (root): its fds, environment, cwd, signals, its uid locks.
    let worker = w.guard.pid();
    let got = answer(
        &sse_turn(
            &c,
            &w.base,
            &b,
            &format!("attack {worker} /run/hotplex-agent-uids"),
        )
        .await,
    );
    assert_eq!(
        got, "fd1=no environ=no proccwd=no dir=no signal=no self=yes",
        "agent B reached the worker"
    );

    // A forged audit line on stderr: logged escaped, inside a line tagged with A.
    assert_eq!(answer(&sse_turn(&c, &w.base, &a, "stderr").await), "done");
    let tagged = eventually(WAIT, || async {
        std::fs::read_to_string(&w.log).is_ok_and(|l| l.contains("forged-audit-marker"))
    })
    .await;
    assert!(tagged, "the agent's stderr line reached the log");
    let log = std::fs::read_to_string(&w.log).expect("log");
    let mut seen = 0;
    for line in log.lines().filter(|l| l.contains("forged-audit-marker")) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_ne!(
            v["target"], "audit",
            "a forged top-level audit line: {line}"
        );
        assert_eq!(v["target"], "hotplex_worker::agent_stderr", "{line}");
        assert_eq!(v["session"], a.as_str(), "tagged with the session: {line}");
        let field = v["stderr"].as_str().unwrap_or_default();
        assert!(
            field.starts_with(r#""{\"timestamp\""#),
            "escaped as a string literal: {line}"
        );
        seen += 1;
    }
    assert_eq!(seen, 1, "{log}");

    // A `setsid` escapee of B: its own session, alive until B's session is deleted.
    let pid_b: u32 = field(&who_b, "pid").parse().expect("pid b");
    let escapee: u32 = answer(&sse_turn(&c, &w.base, &b, "setsid").await)
        .parse()
        .expect("escapee pid");
    // (setsid execs sleep in place: wait for the exec.)
    assert!(
        eventually(WAIT, || async { sid_and_comm(escapee).1 == "sleep" }).await,
        "the escapee itself: {:?}",
        sid_and_comm(escapee)
    );
    let (sid, _) = sid_and_comm(escapee);
    assert_ne!(sid, pid_b, "left the agent's session and process group");
    assert!(process_alive(escapee), "alive before DELETE");
    delete_kills_the_tree(&c, &w.base, &b, &[escapee, pid_b], &field(&who_b, "cwd")).await;
    // A is untouched by B's sweep.
    assert!(process_alive(pid_a), "A survives B's close");
    assert_eq!(answer(&sse_turn(&c, &w.base, &a, "hello").await), "ok");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_without_setuid_refuses_and_non_root_runs_agents_as_itself() {
    if !is_root() {
        eprintln!("## SKIPPED agent_isolation (capability modes): the test needs root");
        return;
    }
    let (dir, script) = agent_dir();
    // Root without CAP_SETUID/CAP_SETGID would run agents as root: refused.
    let cfg = config(dir.path(), &script, "  isolation:\n    sandbox: none\n");
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-setuid,-setgid", "--inh-caps", "-all"])
        .arg(WORKER_BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(err.contains("insecure_agents_as_worker_user"), "{err}");

    // A non-root worker (nobody): agents run as the worker's uid, stderr is still
    // captured and tagged, the process group is still killed.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--inh-caps",
        "-all",
    ])
    .arg(WORKER_BIN)
    .arg("--config")
    .arg(&cfg);
    let log_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(log_dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let w = spawn_logged(cmd, log_dir.path()).await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    let who = answer(&sse_turn(&c, &w.base, &id, "whoami").await);
    assert_eq!(field(&who, "uid"), "65534", "{who}");
    assert_eq!(answer(&sse_turn(&c, &w.base, &id, "stderr").await), "done");
    assert!(
        eventually(WAIT, || async {
            std::fs::read_to_string(&w.log).is_ok_and(|l| {
                l.lines().any(|line| {
                    serde_json::from_str::<Value>(line).is_ok_and(|v| {
                        v["target"] == "hotplex_worker::agent_stderr" && v["session"] == id.as_str()
                    })
                })
            })
        })
        .await,
        "stderr captured and tagged"
    );
    let pid: u32 = field(&who, "pid").parse().expect("pid");
    let r = c
        .delete(format!("{}/sessions/{id}", w.base))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success());
    assert!(eventually(WAIT, || async { !process_alive(pid) }).await);
    drop(dir);
}
