//! Killing every process of a session's uid without seeing them (issue #24), and the
//! process-wide preparation a worker that switches agents to per-session uids needs.
//!
//! **The sweep helper.** Under `ProtectProc=invisible` (procfs `hidepid=invisible`) a
//! non-root worker with CAP_KILL but without CAP_SYS_PTRACE does not see its agents'
//! `/proc` entries, so a `/proc` scan finds nothing to kill. The worker therefore starts a
//! short-lived child of its own binary *as the session's uid* (std's `Command::uid/gid`,
//! safe code) with the hidden first argument [`SWEEP_ARG`]; [`child_main`], called at the
//! very top of `main`, runs it: `kill(-1, SIGKILL)` signals every process the caller may
//! signal except itself, i.e. exactly the processes of its own uid (and setuid programs
//! whose real uid it is). One call is atomic with respect to `fork` (a process forking
//! meanwhile gets the signal before its child is attached, and the fork fails), so
//! `setsid` escapees die with the rest. The helper repeats until its own view of `/proc`
//! (a process sees the entries of its own uid under `hidepid`) shows no other live process
//! of the uid, at most [`HELPER_ROUNDS`] rounds; exit status 0 means clean.
//! `kill(-1)` itself cannot confirm anything: Linux returns 0 whenever another process
//! exists in the caller's PID namespace, even when every one of them refused the signal.
//!
//! **Process preparation** ([`prepare_process`], before any thread exists): the ambient
//! and inheritable capability sets are cleared (a non-root worker's capabilities survive
//! its `setuid` to a session uid, and ambient ones would pass through `execve` to the
//! agent: CAP_SETUID in an agent is root), supplementary groups are dropped and
//! `no_new_privs` is set when agents run as per-session uids.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// First argument that turns the worker binary into the sweep helper (hidden: not a
/// subcommand; the second argument is the uid the helper must run as).
pub const SWEEP_ARG: &str = "--hotplex-internal-uid-sweep";
/// Rounds of `kill(-1, SIGKILL)` + own-uid scan in the helper before it gives up.
pub const HELPER_ROUNDS: usize = 200;
/// Pause between helper rounds (killed processes take a moment to exit).
const HELPER_PAUSE: Duration = Duration::from_millis(2);
/// Longest the worker waits for a helper before killing it and reporting failure.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of a uid sweep (scan `/proc`, SIGKILL what is found) before the uid is
/// quarantined instead of reused.
const SWEEP_ROUNDS: usize = 100;
/// Pause between sweep rounds (killed processes take a moment to become zombies).
const SWEEP_PAUSE: Duration = Duration::from_millis(2);
/// Exit status: the uid has no other live process left (as far as the helper can see).
const EXIT_CLEAN: u8 = 0;
/// Exit status: processes of the uid survived every round.
const EXIT_SURVIVORS: u8 = 1;
/// Exit status: refused to run (wrong uid, root, capabilities, bad arguments).
const EXIT_REFUSED: u8 = 3;

/// The executable that handles [`SWEEP_ARG`]; set by `cli::main` (a worker embedded in
/// another program has none and sweeps through `/proc` only).
static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Declares that this process's own executable handles [`SWEEP_ARG`] (its `main` calls
/// [`child_main`] first). `/proc/self/exe` is resolved in the child: the very binary the
/// worker runs, even after the file on disk was replaced by an upgrade.
pub fn enable_helper() {
    let _ = HELPER.set(PathBuf::from("/proc/self/exe"));
}

/// Whether [`kill_as`] can run (see [`enable_helper`]).
pub fn helper_enabled() -> bool {
    HELPER.get().is_some()
}

/// The helper's entry: `Some(exit code)` when this process was started as the sweep
/// helper, `None` otherwise (go on with the normal `main`).
pub fn child_main() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(SWEEP_ARG)) {
        return None;
    }
    let expected: Option<OsString> = args.next();
    let extra = args.next().is_some();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let code = match helper_identity(expected.as_ref().and_then(|s| s.to_str()), extra, &status) {
        Ok(uid) => sweep_own_uid(uid),
        Err(e) => {
            eprintln!("hotplex-worker {SWEEP_ARG}: refused: {e}");
            EXIT_REFUSED
        }
    };
    Some(ExitCode::from(code))
}

/// The uid the helper may sweep: the one it was told, which must be its real, effective
/// and saved uid, not root, and with no effective or permitted capability (with CAP_KILL
/// or as root `kill(-1)` would reach every process of the host).
fn helper_identity(expected: Option<&str>, extra: bool, status: &str) -> Result<u32, String> {
    let expected: u32 = expected
        .filter(|_| !extra)
        .and_then(|s| s.parse().ok())
        .ok_or("usage: <uid>")?;
    let mut uids = None;
    let mut caps = (None, None);
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            uids = Some(
                v.split_whitespace()
                    .map(|x| x.parse::<u32>().unwrap_or(0))
                    .collect::<Vec<_>>(),
            );
        } else if let Some(v) = line.strip_prefix("CapEff:") {
            caps.0 = u64::from_str_radix(v.trim(), 16).ok();
        } else if let Some(v) = line.strip_prefix("CapPrm:") {
            caps.1 = u64::from_str_radix(v.trim(), 16).ok();
        }
    }
    let uids = uids.ok_or("no Uid line in /proc/self/status")?;
    if expected == 0 || uids.len() != 4 || uids.iter().any(|&u| u != expected) {
        return Err(format!("runs as uids {uids:?}, not {expected}"));
    }
    if caps != (Some(0), Some(0)) {
        return Err(format!("holds capabilities {caps:x?}"));
    }
    Ok(expected)
}

/// SIGKILLs every process of this process's uid until none is left in its view.
fn sweep_own_uid(uid: u32) -> u8 {
    let me = std::process::id() as i32;
    for round in 0..HELPER_ROUNDS {
        match kill(Pid::from_raw(-1), Signal::SIGKILL) {
            // ESRCH: no other process at all in this PID namespace.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                eprintln!("hotplex-worker {SWEEP_ARG}: kill(-1): {e}");
                return EXIT_SURVIVORS;
            }
        }
        if pids_of_uid(uid, Scan::AfterKillAll)
            .into_iter()
            .all(|p| p == me)
        {
            return EXIT_CLEAN;
        }
        if round > 0 {
            std::thread::sleep(HELPER_PAUSE);
        }
    }
    EXIT_SURVIVORS
}

/// Kills every process of `uid` from a helper running as `uid` (see the module docs).
/// `Ok(())`: the helper reported a clean sweep. Blocking (call it off the event loop).
pub fn kill_as(uid: u32) -> Result<(), String> {
    let exe = HELPER
        .get()
        .ok_or("no sweep helper (the worker is embedded in another program)")?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg(SWEEP_ARG)
        .arg(uid.to_string())
        .uid(uid)
        .gid(uid)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the sweep helper: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < HELPER_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the sweep helper ran longer than {HELPER_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("waiting for the sweep helper: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.by_ref().take(512).read_to_string(&mut err);
    }
    Err(format!(
        "the sweep helper exited with {status}: {}",
        err.trim()
    ))
}

/// Which `/proc` entries a scan for a uid's processes reads (see [`pids_of_uid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Every process's `status`: finds `uid` among any of its four uids. The kernel
    /// formats a whole `status` per process (~30 µs each: a host of 2,000 agents makes
    /// one scan ~60 ms), so this is the scan of a worker that could not `kill(-1)` first.
    Full,
    /// Right after a `kill(-1, SIGKILL)` sent as `uid`: only the entries owned by `uid` or
    /// by root are read. `/proc/PID` belongs to the process's effective uid, or to root
    /// while it is not dumpable, which every credential change (a setuid or setgid exec,
    /// `setresuid`) makes it unless `fs.suid_dumpable` says otherwise (proc(5)). A process
    /// of `uid` owned by anyone else therefore changed its effective uid and kept its real
    /// or saved uid `uid` (an unprivileged process cannot drop them all without leaving
    /// every trace of `uid`, which no scan can see either): the `kill(-1)` just sent
    /// already killed it, as `kill` lets a sender whose uid is the target's real or saved
    /// uid signal it. One `statx` per process instead of a `status`.
    AfterKillAll,
}

/// Live (non-zombie) processes whose real, effective, saved or fs uid is `uid` (with
/// [`Scan::AfterKillAll`]: among the entries owned by `uid` or root).
pub fn pids_of_uid(uid: u32, scan: Scan) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let may_hold =
                scan == Scan::Full || e.metadata().is_ok_and(|m| m.uid() == uid || m.uid() == 0);
            may_hold.then_some(pid)
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| status_matches(&s, uid))
                .unwrap_or(false)
        })
        .collect()
}

fn status_matches(status: &str, uid: u32) -> bool {
    let mut live = true;
    let mut ours = false;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("State:") {
            live = !matches!(v.trim_start().chars().next(), Some('Z' | 'X'));
        } else if let Some(v) = line.strip_prefix("Uid:") {
            ours = v.split_whitespace().any(|x| x.parse() == Ok(uid));
        }
    }
    live && ours
}

/// Kills every process of a session's uid: first from a helper running as that uid
/// ([`kill_as`]: works when `/proc` hides the agents from the worker),
/// then through the worker's own view of `/proc` (a confirmation where it sees them; the
/// only sweep of a worker embedded without the helper). `false`: not confirmed clean.
pub fn sweep_session_uid(uid: u32) -> bool {
    // `None`: no helper (an embedded worker), the scan below is the only sweep.
    let helper = helper_enabled().then(|| {
        kill_as(uid)
            .map_err(|e| tracing::error!(uid, error = %e, "uid sweep helper failed"))
            .is_ok()
    });
    // After the helper's clean `kill(-1)` the worker's scan reads only the entries that
    // can still hold a process of the uid; otherwise every one.
    let scan = if helper == Some(true) {
        Scan::AfterKillAll
    } else {
        Scan::Full
    };
    sweep_uid(uid, scan) && helper != Some(false)
}

/// SIGKILLs every process of `uid` until a scan finds none (processes forking meanwhile
/// are caught by the next round). `false`: some survived [`SWEEP_ROUNDS`] rounds.
pub fn sweep_uid(uid: u32, scan: Scan) -> bool {
    for round in 0..SWEEP_ROUNDS {
        let pids = pids_of_uid(uid, scan);
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::warn!(pid, uid, error = %e, "uid sweep: kill failed"),
            }
        }
        if round > 0 {
            std::thread::sleep(SWEEP_PAUSE);
        }
    }
    pids_of_uid(uid, scan).is_empty()
}

/// Whether this process cannot see (all of) other uids' processes in `/proc`: `/proc` is
/// mounted with `hidepid` (1/noaccess, 2/invisible, ptraceable: systemd's
/// `ProtectProc=`) and the process lacks CAP_SYS_PTRACE.
pub fn proc_hides_other_uids() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    let ptrace = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|c| c & CAP_SYS_PTRACE != 0);
    !ptrace && proc_mount_hides(&mountinfo)
}

/// Whether the `/proc` mount of a mountinfo text has a hiding `hidepid=` option (the
/// last mount at `/proc` counts: it covers the earlier ones).
fn proc_mount_hides(mountinfo: &str) -> bool {
    let mut hides = false;
    for line in mountinfo.lines() {
        let mut fields = line.split_whitespace();
        if fields.nth(4) != Some("/proc") {
            continue;
        }
        let Some((_, tail)) = line.split_once(" - ") else {
            continue;
        };
        let mut t = tail.split_whitespace();
        if t.next() != Some("proc") {
            continue;
        }
        let opts = t.nth(1).unwrap_or_default();
        hides = opts
            .split(',')
            .filter_map(|o| o.strip_prefix("hidepid="))
            .any(|v| !matches!(v, "0" | "off"));
    }
    hides
}

/// Prepares the worker process before any thread exists (capabilities and groups are
/// per thread; threads started later inherit them): clears the ambient and inheritable
/// capability sets (always: agents must not inherit what the worker holds) and, when
/// agents run as per-session uids, drops every supplementary group and sets
/// `no_new_privs` (setuid programs grant an agent nothing). The worker keeps its
/// effective capabilities.
pub fn prepare_process(per_session_uids: bool) -> Result<(), String> {
    for set in [caps::CapSet::Ambient, caps::CapSet::Inheritable] {
        let held =
            caps::read(None, set).map_err(|e| format!("reading {set:?} capabilities: {e}"))?;
        if !held.is_empty() {
            caps::clear(None, set).map_err(|e| format!("clearing {set:?} capabilities: {e}"))?;
        }
    }
    if per_session_uids {
        nix::unistd::setgroups(&[]).map_err(|e| {
            format!(
                "agent.isolation: cannot drop the worker's supplementary groups (the agents \
                 would inherit them): setgroups: {e}"
            )
        })?;
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(uid: u32, eff: &str, prm: &str) -> String {
        format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapPrm:\t{prm}\nCapEff:\t{eff}\n")
    }

    #[test]
    fn helper_runs_only_as_the_uid_it_was_given_without_capabilities() {
        let zero = "0000000000000000";
        assert_eq!(
            helper_identity(
                Some("1900000001"),
                false,
                &status(1_900_000_001, zero, zero)
            ),
            Ok(1_900_000_001)
        );
        for (arg, extra, st, why) in [
            (None, false, status(5, zero, zero), "no uid"),
            (Some("x"), false, status(5, zero, zero), "not a number"),
            (Some("5"), true, status(5, zero, zero), "extra argument"),
            (Some("0"), false, status(0, zero, zero), "root"),
            (Some("5"), false, status(6, zero, zero), "another uid"),
            (
                Some("5"),
                false,
                status(5, "0000000000000020", zero),
                "CAP_KILL effective",
            ),
            (
                Some("5"),
                false,
                status(5, zero, "00000000000000e3"),
                "permitted caps",
            ),
            (Some("5"), false, "CapEff:\t0\n".to_string(), "no Uid line"),
            (
                Some("5"),
                false,
                "Uid:\t5\t0\t5\t5\nCapPrm:\t0\nCapEff:\t0\n".to_string(),
                "euid 0",
            ),
        ] {
            assert!(helper_identity(arg, extra, &st).is_err(), "{why}");
        }
    }

    #[test]
    fn status_parsing() {
        let s = "State:\tS (sleeping)\nUid:\t7\t7\t7\t7\n";
        assert!(status_matches(s, 7));
        assert!(!status_matches(s, 8));
        assert!(!status_matches("State:\tZ (zombie)\nUid:\t7\t7\t7\t7\n", 7));
        assert!(
            status_matches("State:\tR\nUid:\t7\t0\t0\t0\n", 7),
            "real uid"
        );
    }

    #[test]
    fn hidepid_from_mountinfo() {
        let plain = "22 1 0:5 / /proc rw,nosuid - proc proc rw\n";
        assert!(!proc_mount_hides(plain));
        let hidden = "22 1 0:5 / /proc rw,nosuid - proc proc rw\n\
                      301 22 0:60 / /proc rw,relatime - proc proc rw,hidepid=invisible\n";
        assert!(proc_mount_hides(hidden), "the last /proc mount counts");
        for opt in [
            "hidepid=2",
            "hidepid=1",
            "hidepid=noaccess",
            "hidepid=ptraceable",
        ] {
            let l = format!("9 1 0:5 / /proc rw - proc proc rw,{opt},subset=pid\n");
            assert!(proc_mount_hides(&l), "{opt}");
        }
        for opt in ["hidepid=0", "hidepid=off"] {
            let l = format!("9 1 0:5 / /proc rw - proc proc rw,{opt}\n");
            assert!(!proc_mount_hides(&l), "{opt}");
        }
        let elsewhere = "9 1 0:5 / /mnt/proc rw - proc proc rw,hidepid=2\n";
        assert!(!proc_mount_hides(elsewhere), "another mount point");
    }

    #[test]
    fn both_scans_find_a_uids_process_and_the_sweep_kills_it() {
        if nix::unistd::geteuid().as_raw() != 0 {
            eprintln!("## SKIPPED uid scans: starting a process as another uid needs root");
            return;
        }
        const UID: u32 = 1_950_777_001;
        let spawn = |uid: u32| {
            Command::new("sleep")
                .arg("30")
                .uid(uid)
                .gid(uid)
                .spawn()
                .expect("sleep as a test uid")
        };
        let mut ours = spawn(UID);
        let mut other = spawn(UID + 1);
        let pid = ours.id() as i32;
        for scan in [Scan::Full, Scan::AfterKillAll] {
            assert_eq!(pids_of_uid(UID, scan), vec![pid], "{scan:?}");
        }
        assert!(sweep_uid(UID, Scan::AfterKillAll), "swept");
        let st = ours.wait().expect("reaped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(Signal::SIGKILL as i32), "killed: {st:?}");
        assert!(
            other.try_wait().expect("status").is_none(),
            "another uid's process lives on"
        );
        let _ = other.kill();
        let _ = other.wait();
        assert!(pids_of_uid(UID + 1, Scan::Full).is_empty());
    }

    #[test]
    fn kill_as_without_the_helper_is_an_error_not_a_clean_sweep() {
        // Unit tests never call enable_helper: the test binary does not handle SWEEP_ARG.
        assert!(!helper_enabled());
        assert!(kill_as(1_999_999_000).is_err());
    }
}
