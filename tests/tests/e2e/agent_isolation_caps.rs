//! Per-session uids in the shipped deployment modes (issue #24, item 2): the real worker
//! binary runs as a NON-ROOT user holding exactly the five capabilities the systemd unit
//! grants (CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_KILL, CAP_DAC_OVERRIDE: inheritable +
//! ambient + bounding set, `no_new_privs`, as `AmbientCapabilities=` and
//! `NoNewPrivileges=yes` give it), started with a supplementary group, inside a private
//! mount + PID namespace whose `/proc` is mounted `hidepid=invisible` (what
//! `ProtectProc=invisible` does). Asserted from outside (the test is root on the host):
//! - the worker dropped its supplementary group and its ambient/inheritable sets, kept
//!   the five effective capabilities, and cannot see its agents in `/proc` (so a `/proc`
//!   sweep would find nothing);
//! - agents run as distinct uids of the range, with no group and no capability, cannot
//!   read a file of the worker's former group, cannot reach each other's or the worker's
//!   `/proc/<pid>/fd/1`, `environ`, `cwd`, directory or signals;
//! - a `setsid sleep 600` started by an agent dies on `DELETE /sessions/{id}` (checked by
//!   host pid), the other session is untouched, and the uid is not quarantined;
//! - a leftover process of a range uid, planted in the namespace before the first session
//!   (invisible to the worker), is dead once a session got that uid (swept before use).
//!
//! Both tests pin `sandbox: none`: in the shapes they copy, bubblewrap cannot run (the
//! unit's `RestrictNamespaces=yes`, the pod's RuntimeDefault seccomp), so `auto` falls
//! back to this uid layer; and they pass pids between agents and the host, which a PID
//! namespace would renumber (`agent_sandbox` covers the namespace layer).
//!
//! Needs root, `unshare` and `setpriv` (util-linux); without the namespace (a host that
//! refuses it) the same worker runs without `hidepid`, and the test says so.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::agent_isolation::{
    agent_dir, answer, config, delete_kills_the_tree, field, is_root, sid_and_comm, spawn_logged,
};
use crate::support::procs::process_alive;
use crate::support::worker::*;
use hotplex_e2e::eventually;

/// The worker's own (non-root) user and group.
const WORKER_UID: u32 = 1_953_000_000;
/// A supplementary group the worker is started with (must not reach the agents).
const SECRET_GID: u32 = 1_953_000_001;
/// The agents' range (distinct from `agent_isolation`'s: the sweeps kill by uid).
const UID_START: u32 = 1_954_000_000;
/// The five capabilities, in setpriv's syntax.
const CAPS: &str = "+setuid,+setgid,+chown,+kill,+dac_override";
/// CAP_CHOWN | CAP_DAC_OVERRIDE | CAP_KILL | CAP_SETGID | CAP_SETUID.
const CAPS_MASK: &str = "00000000000000e3";

/// Whether this host lets root make a mount + PID namespace with a `hidepid=invisible`
/// `/proc`.
fn hidepid_namespace_works() -> bool {
    Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child", "--"])
        .args(["sh", "-c", "mount -t proc -o hidepid=invisible proc /proc"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The value of the `/proc/<pid>/status` line `name` (trimmed), from the host's `/proc`.
fn status_line(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// The PID namespace of `pid`, e.g. `pid:[4026532301]`.
fn pid_ns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Maps a pid seen inside the namespace `ns` to the host's pid (`None` in the host
/// namespace: identity).
fn host_pid(ns: Option<&str>, inner: u32) -> u32 {
    let Some(ns) = ns else { return inner };
    let found = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| {
            pid_ns(p) == ns
                && status_line(p, "NSpid:")
                    .split_whitespace()
                    .last()
                    .and_then(|x| x.parse().ok())
                    == Some(inner)
        });
    found.unwrap_or_else(|| panic!("no host pid for pid {inner} of {ns}"))
}

/// The host pid of a `sleep` of `uid` in the namespace `ns`.
fn sleeper_of(ns: Option<&str>, uid: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| {
            Some(pid_ns(p).as_str()) == ns
                && status_line(p, "Uid:").split_whitespace().next()
                    == Some(uid.to_string().as_str())
                && sid_and_comm(p).1 == "sleep"
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_worker_with_five_ambient_caps_under_hidepid_isolates_agents() {
    if !is_root() {
        eprintln!("## SKIPPED agent_isolation_caps: the test needs root (setpriv, unshare)");
        return;
    }
    let hidepid = hidepid_namespace_works();
    if !hidepid {
        eprintln!(
            "## agent_isolation_caps: this host refuses a mount + PID namespace with \
             hidepid=invisible; running the non-root worker without it"
        );
    }
    let (dir, script) = agent_dir();
    // A file only the worker's start-up group may read.
    let secret = dir.path().join("group-secret");
    std::fs::write(&secret, "s3cret").expect("secret");
    std::os::unix::fs::chown(&secret, Some(0), Some(SECRET_GID)).expect("chown secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    // The worker's own directory (its log, address file, uid locks), like a StateDirectory.
    let wdir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(wdir.path(), Some(WORKER_UID), Some(WORKER_UID)).expect("chown");
    std::fs::set_permissions(wdir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let locks = wdir.path().join("uid-locks");
    let cfg = config(
        dir.path(),
        &script,
        &format!(
            "  isolation:\n    sandbox: none\n    uid_range: {{start: {UID_START}, count: 8}}\n    lock_dir: {}\n",
            locks.display()
        ),
    );

    let mut cmd = if hidepid {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
        ])
        // PID 1 of the namespace: mounts the hidepid /proc, runs the worker and reaps
        // orphans while it waits (as tini does in the container).
        .arg("mount -t proc -o hidepid=invisible proc /proc || exit 97; \"$@\" & wait")
        .arg("sh");
        c
    } else {
        Command::new("env")
    };
    cmd.arg("setpriv")
        .arg(format!("--reuid={WORKER_UID}"))
        .arg(format!("--regid={WORKER_UID}"))
        .arg(format!("--groups={SECRET_GID}"))
        .arg(format!("--inh-caps={CAPS}"))
        .arg(format!("--ambient-caps={CAPS}"))
        .arg(format!("--bounding-set=-all,{CAPS}"))
        .arg("--no-new-privs")
        .arg("--")
        .arg(WORKER_BIN)
        .arg("--config")
        .arg(&cfg)
        .env("TMPDIR", "/tmp");
    let w = spawn_logged(cmd, wdir.path()).await;
    // The namespace's PID 1 (the launcher's child), by its host pid.
    let init = hidepid.then(|| {
        let launcher = w.guard.pid();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&p| status_line(p, "PPid:") == launcher.to_string())
            .expect("the namespace's PID 1")
    });
    let ns = init.map(pid_ns);
    let ns = ns.as_deref();
    // A leftover of the first uid of the range (as a worker killed without its unit would
    // leave): invisible to the worker under hidepid, so it must sweep the uid before use.
    let leftover = init.map(|init| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={init}"))
            .args(["--pid", "--mount", "--", "setpriv"])
            .arg(format!("--reuid={UID_START}"))
            .arg(format!("--regid={UID_START}"))
            .args(["--clear-groups", "--", "setsid", "sleep", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        hotplex_e2e::ChildGuard::spawn_with_output("leftover", &mut cmd)
    });
    let mut leftover_pid = None;
    if leftover.is_some() {
        let found = eventually(WAIT, || async { sleeper_of(ns, UID_START).is_some() }).await;
        assert!(found, "the leftover sleep of uid {UID_START}");
        leftover_pid = sleeper_of(ns, UID_START);
    }
    let c = client();
    let a = create_session(&c, &w.base).await;
    let b = create_session(&c, &w.base).await;
    let who_a = answer(&sse_turn(&c, &w.base, &a, "whoami").await);
    let who_b = answer(&sse_turn(&c, &w.base, &b, "whoami").await);

    // The worker: non-root, no supplementary group, the five capabilities effective but
    // neither ambient nor inheritable, no_new_privs.
    let worker_inner: u32 = field(&who_a, "ppid").parse().expect("ppid");
    let worker = host_pid(ns, worker_inner);
    let w4 = format!("{WORKER_UID}\t{WORKER_UID}\t{WORKER_UID}\t{WORKER_UID}");
    assert_eq!(
        status_line(worker, "Uid:"),
        w4,
        "the worker's real, effective, saved uid"
    );
    let groups = std::fs::read_to_string(format!("/proc/{worker}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:").map(|g| g.trim().to_string()))
        .expect("Groups line");
    assert_eq!(groups, "", "the worker kept supplementary groups");
    assert_eq!(status_line(worker, "CapEff:"), CAPS_MASK);
    assert_eq!(status_line(worker, "CapAmb:"), "0000000000000000");
    assert_eq!(status_line(worker, "CapInh:"), "0000000000000000");
    assert_eq!(status_line(worker, "NoNewPrivs:"), "1");

    // The agents: distinct uids of the range, gid = uid, no group, no capability.
    let range = UID_START..UID_START + 8;
    let uid_a: u32 = field(&who_a, "uid").parse().expect("uid a");
    let uid_b: u32 = field(&who_b, "uid").parse().expect("uid b");
    assert!(
        range.contains(&uid_a) && range.contains(&uid_b),
        "{who_a} {who_b}"
    );
    assert_ne!(uid_a, uid_b, "one uid per session");
    if let Some(p) = leftover_pid {
        assert_eq!(uid_a, UID_START, "the first uid of the range went to A");
        assert!(
            !process_alive(p),
            "the leftover {p} of A's uid is alive while A runs"
        );
    }
    for (who, uid) in [(&who_a, uid_a), (&who_b, uid_b)] {
        assert_eq!(field(who, "gid"), uid.to_string(), "{who}");
        assert_eq!(field(who, "groups"), uid.to_string(), "no group: {who}");
        for set in ["capprm", "capeff", "capamb"] {
            assert_eq!(field(who, set), "0000000000000000", "no capability: {who}");
        }
    }
    let got = answer(&sse_turn(&c, &w.base, &a, &format!("read {}", secret.display())).await);
    assert_eq!(
        got, "read=no",
        "an agent read a file of the worker's start-up group"
    );

    // Under hidepid the worker's user does not see its agents in /proc: a /proc sweep
    // alone would kill nothing.
    let pid_a_inner: u32 = field(&who_a, "pid").parse().expect("pid a");
    if hidepid {
        let in_ns = |as_worker: bool, script: String| {
            let mut c = Command::new("nsenter");
            c.arg(format!("--target={worker}"))
                .args(["--mount", "--pid", "--"]);
            if as_worker {
                c.arg("setpriv")
                    .arg(format!("--reuid={WORKER_UID}"))
                    .arg(format!("--regid={WORKER_UID}"))
                    .args(["--clear-groups", "--"]);
            }
            c.args(["sh", "-c", &script])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let a_status = format!("/proc/{pid_a_inner}/status");
        assert!(
            in_ns(false, format!("test -e {a_status}")),
            "root in the namespace sees agent A"
        );
        assert!(
            in_ns(
                true,
                format!("test -e /proc/self/status && ! test -e {a_status}")
            ),
            "the worker's user sees agent A in /proc"
        );
    }

    // B attacks A, then the worker.
    let cwd_a = field(&who_a, "cwd");
    let got = answer(&sse_turn(&c, &w.base, &b, &format!("attack {pid_a_inner} {cwd_a}")).await);
    assert_eq!(
        got, "fd1=no environ=no proccwd=no dir=no signal=no self=yes",
        "agent B reached agent A"
    );
    assert_eq!(
        answer(&sse_turn(&c, &w.base, &a, "hello").await),
        "ok",
        "A's own turn"
    );
    let got = answer(
        &sse_turn(
            &c,
            &w.base,
            &b,
            &format!("attack {worker_inner} {}", locks.display()),
        )
        .await,
    );
    assert_eq!(
        got, "fd1=no environ=no proccwd=no dir=no signal=no self=yes",
        "agent B reached the worker"
    );

    // A `setsid` escapee of B dies on DELETE (checked by its host pid).
    let pid_b = host_pid(ns, field(&who_b, "pid").parse().expect("pid b"));
    let escapee_inner: u32 = answer(&sse_turn(&c, &w.base, &b, "setsid").await)
        .parse()
        .expect("escapee pid");
    let escapee = host_pid(ns, escapee_inner);
    assert!(
        eventually(WAIT, || async { sid_and_comm(escapee).1 == "sleep" }).await,
        "the escapee itself: {:?}",
        sid_and_comm(escapee)
    );
    assert_ne!(sid_and_comm(escapee).0, pid_b, "left B's session");
    assert_eq!(
        status_line(escapee, "Uid:").split_whitespace().next(),
        Some(uid_b.to_string().as_str())
    );
    delete_kills_the_tree(&c, &w.base, &b, &[escapee, pid_b], &field(&who_b, "cwd")).await;
    let pid_a = host_pid(ns, pid_a_inner);
    assert!(process_alive(pid_a), "A survives B's close");
    assert_eq!(answer(&sse_turn(&c, &w.base, &a, "hello").await), "ok");
    // The sweep was confirmed: no helper failure, no quarantined uid.
    let log = std::fs::read_to_string(&w.log).expect("log");
    assert!(
        !log.contains("sweep helper failed") && !log.contains("quarantined"),
        "{log}"
    );
    assert!(log.contains("agents run as per-session users"), "{log}");
    if hidepid {
        assert!(log.contains("swept before use"), "{log}");
    }
    drop(leftover);
    drop(w);
    drop(dir);
}

/// The Kubernetes pod's shape: uid 0 with only the five capabilities (bounding set, as
/// `capabilities: {drop: [ALL], add: [...]}` gives it), `no_new_privs`
/// (`allowPrivilegeEscalation: false`), its temp dir an emptyDir-like 0777 directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_worker_with_only_the_five_caps_like_the_kubernetes_pod() {
    if !is_root() {
        eprintln!("## SKIPPED agent_isolation_caps (pod shape): the test needs root (setpriv)");
        return;
    }
    const START: u32 = 1_956_000_000;
    let (dir, script) = agent_dir();
    let empty_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(empty_dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let cfg = config(
        dir.path(),
        &script,
        &format!(
            "  isolation:\n    sandbox: none\n    uid_range: {{start: {START}, count: 8}}\n    lock_dir: {}\n",
            empty_dir.path().join("hotplex-agent-uids").display()
        ),
    );
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{CAPS}"))
        .args(["--inh-caps=-all", "--no-new-privs", "--"])
        .arg(WORKER_BIN)
        .arg("--config")
        .arg(&cfg)
        .env("TMPDIR", empty_dir.path());
    let w = spawn_logged(cmd, dir.path()).await;
    let worker = w.guard.pid();
    assert_eq!(status_line(worker, "CapEff:"), CAPS_MASK);
    assert_eq!(status_line(worker, "NoNewPrivs:"), "1");
    // The emptyDir got the sticky bit: agents cannot rename the worker's entries in it.
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(empty_dir.path()).expect("stat").mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the 0777 temp dir was not made sticky");

    let c = client();
    let a = create_session(&c, &w.base).await;
    let b = create_session(&c, &w.base).await;
    let who_a = answer(&sse_turn(&c, &w.base, &a, "whoami").await);
    let who_b = answer(&sse_turn(&c, &w.base, &b, "whoami").await);
    let uid_a: u32 = field(&who_a, "uid").parse().expect("uid a");
    let uid_b: u32 = field(&who_b, "uid").parse().expect("uid b");
    let range = START..START + 8;
    assert!(
        range.contains(&uid_a) && range.contains(&uid_b),
        "{who_a} {who_b}"
    );
    assert_ne!(uid_a, uid_b);
    for (who, uid) in [(&who_a, uid_a), (&who_b, uid_b)] {
        assert_eq!(field(who, "groups"), uid.to_string(), "{who}");
        assert_eq!(field(who, "ppid"), worker.to_string(), "{who}");
        assert!(
            field(who, "cwd").starts_with(&empty_dir.path().display().to_string()),
            "{who}"
        );
        for set in ["capprm", "capeff", "capamb"] {
            assert_eq!(field(who, set), "0000000000000000", "no capability: {who}");
        }
    }
    let pid_a: u32 = field(&who_a, "pid").parse().expect("pid a");
    let got = answer(
        &sse_turn(
            &c,
            &w.base,
            &b,
            &format!("attack {pid_a} {}", field(&who_a, "cwd")),
        )
        .await,
    );
    assert_eq!(
        got, "fd1=no environ=no proccwd=no dir=no signal=no self=yes",
        "agent B reached agent A"
    );
    let pid_b: u32 = field(&who_b, "pid").parse().expect("pid b");
    let escapee: u32 = answer(&sse_turn(&c, &w.base, &b, "setsid").await)
        .parse()
        .expect("escapee pid");
    assert!(
        eventually(WAIT, || async { sid_and_comm(escapee).1 == "sleep" }).await,
        "the escapee itself"
    );
    assert_ne!(sid_and_comm(escapee).0, pid_b, "left B's session");
    let r = c
        .delete(format!("{}/sessions/{b}", w.base))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    assert!(
        eventually(WAIT, || async { !process_alive(escapee) }).await,
        "the setsid escapee {escapee} survived DELETE"
    );
    assert!(process_alive(pid_a), "A survives B's close");
    let log = std::fs::read_to_string(&w.log).expect("log");
    assert!(log.contains("sticky bit set"), "{log}");
    assert!(
        !log.contains("sweep helper failed") && !log.contains("quarantined"),
        "{log}"
    );
    drop(w);
    drop(dir);
}
