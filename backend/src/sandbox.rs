//! Agent isolation (issue #24): who an agent runs as, where, and how all of a session's
//! processes are killed.
//!
//! - **Per-session uid** (the worker runs as root or with CAP_SETUID, CAP_SETGID,
//!   CAP_CHOWN, CAP_KILL and CAP_DAC_OVERRIDE, e.g. the systemd unit's ambient set,
//!   cleared from the agents' reach at start by [`crate::uid_sweep::prepare_process`]): each
//!   session gets a uid from `agent.isolation.uid_range` (gid = uid, no supplementary
//!   groups; std's `Command::uid/gid` switch in the child, safe code). Its working
//!   directory `<session_dirs>/<id>-<random>` and private `TMPDIR` (`.tmp` inside) are
//!   owned by that uid, mode 0700; `HOME` is the working directory. Agents of other
//!   sessions cannot open its `/proc/<pid>/fd`, `environ` or `cwd` (the kernel's ptrace
//!   access checks) nor its files. On close every process of the uid is killed (a helper
//!   running as the uid calls `kill(-1)`, then a `/proc` sweep confirms where `/proc` shows
//!   them: [`crate::uid_sweep`]; processes that called `setsid` die too; under `hidepid` the
//!   uid is also swept before use), then the directory is removed and
//!   the uid goes back to the end of the free list. A uid is handed out only under a
//!   host-wide lock (`flock` on `<lock_dir>/<uid>`, released when the session ends or
//!   the worker dies), so several workers on one host may share a range.
//! - **Worker user** (the worker cannot switch, or `insecure_agents_as_worker_user`):
//!   agents share the worker's uid; only the process group is killed on close.
//!   A worker running as root without the capability, or as root without the
//!   named opt-in, refuses to start rather than run agents as root.

use std::collections::VecDeque;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix_fs::fcntl::{Flock, FlockArg};

use crate::agent_config::{
    AgentConfig, IsolationConfig, UidRange, DEFAULT_UID_LOCK_DIR, DEFAULT_UID_RANGE,
};
use crate::agent_stderr::StderrBudget;
use crate::session_dirs;

/// What the worker may do, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    /// What running agents as per-session users needs is effective: CAP_SETUID and
    /// CAP_SETGID (switch), CAP_CHOWN (hand over the session directory), CAP_KILL (the
    /// uid sweep), CAP_DAC_OVERRIDE (remove the session's files). Root has them all
    /// unless they were dropped.
    pub can_switch_uid: bool,
    /// The ambient capability set (`CapAmb`): inherited through `execve` by every agent.
    pub ambient_caps: u64,
    /// Supplementary groups besides the effective gid (inherited by agents whose uid is
    /// switched by a non-root worker).
    pub extra_groups: bool,
}

impl Privileges {
    pub fn detect() -> Privileges {
        Self::parse(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
    }

    fn parse(status: &str) -> Privileges {
        // CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7.
        const CAPS: u64 = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7);
        let mut p = Privileges {
            euid: u32::MAX,
            can_switch_uid: false,
            ambient_caps: 0,
            extra_groups: false,
        };
        let (mut egid, mut groups) = (None, Vec::new());
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Uid:") {
                p.euid = v
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(u32::MAX);
            } else if let Some(v) = line.strip_prefix("CapEff:") {
                let caps = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
                p.can_switch_uid = caps & CAPS == CAPS;
            } else if let Some(v) = line.strip_prefix("CapAmb:") {
                // Unreadable: assume the worst (a worker that switches uids refuses).
                p.ambient_caps = u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX);
            } else if let Some(v) = line.strip_prefix("Gid:") {
                egid = v
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse::<u32>().ok());
            } else if let Some(v) = line.strip_prefix("Groups:") {
                groups = v
                    .split_whitespace()
                    .map(|x| x.parse::<u32>().unwrap_or(u32::MAX))
                    .collect();
            }
        }
        p.extra_groups = groups.iter().any(|g| Some(*g) != egid);
        p
    }
}

/// How agents are isolated on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationMode {
    /// Each session's agent runs as its own uid from the range.
    PerSessionUid(UidRange),
    /// Agents run as the worker's uid.
    WorkerUser { euid: u32 },
}

/// Decides the mode; `Err` is a startup error naming the key.
pub fn resolve_mode(cfg: &IsolationConfig, p: Privileges) -> Result<IsolationMode, String> {
    if cfg.insecure_agents_as_worker_user {
        return Ok(IsolationMode::WorkerUser { euid: p.euid });
    }
    if p.can_switch_uid {
        let r = cfg.uid_range.unwrap_or(DEFAULT_UID_RANGE);
        if (u64::from(r.start)..u64::from(r.start) + u64::from(r.count))
            .contains(&u64::from(p.euid))
        {
            return Err("agent.isolation.uid_range: contains the worker's own uid".into());
        }
        if p.ambient_caps != 0 {
            return Err(format!(
                "agent.isolation: the worker holds ambient capabilities ({:x}) that its agents \
                 would inherit; hotplex-worker clears them at start (an embedding program \
                 must call uid_sweep::prepare_process first)",
                p.ambient_caps
            ));
        }
        if p.extra_groups {
            return Err(
                "agent.isolation: the worker has supplementary groups that its agents would \
                 inherit; hotplex-worker drops them at start (an embedding program must call \
                 uid_sweep::prepare_process first, or start the worker without them)"
                    .into(),
            );
        }
        return Ok(IsolationMode::PerSessionUid(r));
    }
    if cfg.uid_range.is_some() {
        return Err(
            "agent.isolation.uid_range: per-session uids need a worker running as \
             root or with CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_KILL and CAP_DAC_OVERRIDE"
                .into(),
        );
    }
    if p.euid == 0 {
        return Err(
            "agent.isolation: the worker runs as root without all of CAP_SETUID, \
             CAP_SETGID, CAP_CHOWN, CAP_KILL and CAP_DAC_OVERRIDE, so its agents would run \
             as root; grant the capabilities or set \
             agent.isolation.insecure_agents_as_worker_user: true"
                .into(),
        );
    }
    Ok(IsolationMode::WorkerUser { euid: p.euid })
}

/// The worker-wide isolation state: the mode, the session-directory root, the uid pool.
#[derive(Debug)]
pub struct Sandbox {
    mode: IsolationMode,
    root: Option<PathBuf>,
    /// The root was made by this worker (a private directory under the temp dir).
    own_root: bool,
    uids: Option<Arc<UidPool>>,
    /// The worker cannot see other uids' processes (`/proc` with `hidepid`): a uid is
    /// swept before a session uses it, not only after (leftovers are invisible to the
    /// allocation's `/proc` check).
    sweep_at_start: bool,
    stderr_line: usize,
    stderr_session: usize,
    /// The bubblewrap sandbox every agent runs in (`agent.isolation.sandbox`).
    bwrap: Option<Arc<crate::bwrap::Bwrap>>,
}

impl Sandbox {
    /// Agents as the worker's user, session dirs as configured (tests, embedding).
    pub fn worker_user(cfg: &AgentConfig) -> Self {
        Sandbox {
            mode: IsolationMode::WorkerUser {
                euid: Privileges::detect().euid,
            },
            root: cfg.session_dirs.clone(),
            own_root: false,
            uids: None,
            sweep_at_start: false,
            stderr_line: cfg.stderr_line_bytes,
            stderr_session: cfg.stderr_session_bytes,
            bwrap: None,
        }
    }

    /// The sandbox for this process's privileges (see [`resolve_mode`]).
    pub fn resolve(cfg: &AgentConfig) -> Result<Self, String> {
        let p = Privileges::detect();
        let mut sb = Self::resolve_with(cfg, p)?;
        sb.attach_bwrap(cfg)?;
        Ok(sb)
    }

    /// Runs agents in the bubblewrap sandbox when configured and working (see
    /// [`crate::bwrap::for_worker`]).
    fn attach_bwrap(&mut self, cfg: &AgentConfig) -> Result<(), String> {
        let uids = matches!(self.mode, IsolationMode::PerSessionUid(_));
        let got =
            crate::bwrap::for_worker(cfg, uids, self.root.as_deref(), session_dirs::private_root)?;
        if let Some((bw, own_root)) = got {
            if let Some(r) = own_root {
                (self.root, self.own_root) = (Some(r), true);
            }
            self.bwrap = Some(Arc::new(bw));
        }
        Ok(())
    }

    /// Whether agents run in the bubblewrap sandbox.
    pub fn bubblewrap(&self) -> bool {
        self.bwrap.is_some()
    }

    fn resolve_with(cfg: &AgentConfig, p: Privileges) -> Result<Self, String> {
        let mode = resolve_mode(&cfg.isolation, p)?;
        let mut sb = Sandbox::worker_user(cfg);
        sb.mode = mode;
        let IsolationMode::PerSessionUid(range) = mode else {
            return Ok(sb);
        };
        match &cfg.session_dirs {
            Some(root) => {
                std::fs::create_dir_all(root)
                    .map_err(|e| format!("agent.session_dirs: {}: {e}", root.display()))?;
                session_dirs::searchable_by_others(root)?;
            }
            None => {
                sb.root = Some(session_dirs::private_root().map_err(|e| {
                    format!("agent.session_dirs: cannot create a default root: {e}")
                })?);
                sb.own_root = true;
            }
        }
        if let Some(root) = &sb.root {
            session_dirs::no_replaceable_ancestor(root, p.euid)
                .map_err(|e| format!("agent.session_dirs: {}: {e}", root.display()))?;
        }
        let locks = cfg
            .isolation
            .lock_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_UID_LOCK_DIR));
        session_dirs::private_dir(&locks, p.euid)
            .map_err(|e| format!("agent.isolation.lock_dir: {}: {e}", locks.display()))?;
        session_dirs::no_replaceable_ancestor(&locks, p.euid)
            .map_err(|e| format!("agent.isolation.lock_dir: {}: {e}", locks.display()))?;
        sb.uids = Some(Arc::new(UidPool::new(range, locks)));
        sb.sweep_at_start =
            crate::uid_sweep::helper_enabled() && crate::uid_sweep::proc_hides_other_uids();
        if sb.sweep_at_start {
            tracing::info!(
                "/proc hides other uids' processes (hidepid): each session uid is swept before use"
            );
        }
        Ok(sb)
    }

    pub fn mode(&self) -> IsolationMode {
        self.mode
    }

    /// Whether a session's uid must be swept before its first agent starts.
    pub fn sweeps_at_start(&self) -> bool {
        self.sweep_at_start
    }

    /// The root of the session directories.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// A new session's sandbox: a uid (per-session mode) and a working directory.
    pub fn session(&self, session_id: &str) -> std::io::Result<Arc<SessionSandbox>> {
        let lease = match &self.uids {
            Some(pool) => Some(pool.allocate().ok_or_else(|| {
                std::io::Error::other("no free uid in agent.isolation.uid_range")
            })?),
            None => None,
        };
        let uid = lease.as_ref().map(|l| l.uid);
        let mut sb = SessionSandbox {
            dir: None,
            uid,
            lease,
            swept: AtomicBool::new(true),
            uids: self.uids.clone(),
            stderr: Arc::new(StderrBudget::new(self.stderr_line, self.stderr_session)),
            bwrap: self.bwrap.clone(),
        };
        if let Some(root) = &self.root {
            // On failure `sb` is dropped: the uid goes back to the pool.
            sb.dir = Some(session_dirs::create_session_dir(root, session_id, uid)?);
        }
        Ok(Arc::new(sb))
    }
}

impl Sandbox {
    /// Removes the private session-directory root this worker made (at shutdown, once
    /// every session is closed; again on drop, harmlessly).
    pub fn remove_own_root(&self) {
        if let (true, Some(root)) = (self.own_root, &self.root) {
            if let Err(e) = std::fs::remove_dir_all(root) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %root.display(), error = %e, "cannot remove the session root");
                }
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.remove_own_root();
    }
}

/// One session's isolation, shared by all agent processes of the session (restarts
/// keep the uid and the directory). Dropped with the last of them: sweeps the uid,
/// removes the directory, frees the uid.
#[derive(Debug)]
pub struct SessionSandbox {
    dir: Option<PathBuf>,
    uid: Option<u32>,
    lease: Option<UidLease>,
    /// No agent was started since the last complete sweep.
    swept: AtomicBool,
    uids: Option<Arc<UidPool>>,
    stderr: Arc<StderrBudget>,
    bwrap: Option<Arc<crate::bwrap::Bwrap>>,
}

impl SessionSandbox {
    /// The argv to execute: `argv`, or `argv` in the session's bubblewrap sandbox.
    pub fn wrap(&self, argv: Vec<String>) -> Result<Vec<String>, String> {
        match (&self.bwrap, &self.dir) {
            (None, _) => Ok(argv),
            (Some(b), Some(d)) => b.wrap(argv, d),
            (Some(_), None) => Err("a sandboxed agent needs a session directory".into()),
        }
    }

    /// Whether the agent runs in a bubblewrap sandbox (its pid is bwrap's).
    pub fn sandboxed(&self) -> bool {
        self.bwrap.is_some()
    }

    /// The thread that must start a sandboxed agent ([`crate::bwrap::Spawner`]).
    pub fn spawner(&self) -> Option<Arc<crate::bwrap::Spawner>> {
        self.bwrap.as_ref().and_then(|b| b.spawner())
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The session's own uid (per-session mode).
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The session's stderr allowance.
    pub fn stderr_budget(&self) -> Arc<StderrBudget> {
        self.stderr.clone()
    }

    /// User, working directory and `TMPDIR`/`HOME` of the agent command (call after the
    /// environment allowlist, before `agent.env`).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        self.swept.store(false, Ordering::Release);
        if let Some(u) = self.uid {
            // std sets the gid, drops supplementary groups (setgroups(0)), then the uid,
            // in the child between fork and exec.
            cmd.uid(u).gid(u);
        }
        if let Some(d) = &self.dir {
            cmd.current_dir(d).env("TMPDIR", d.join(".tmp"));
            if self.uid.is_some() {
                cmd.env("HOME", d);
            }
        }
    }

    /// Kills every process of the session's uid (nothing without one). `false`: some
    /// survived the sweep (see [`crate::uid_sweep::sweep_session_uid`]).
    pub fn sweep(&self) -> bool {
        let clean = self
            .uid
            .map(crate::uid_sweep::sweep_session_uid)
            .unwrap_or(true);
        self.swept.store(clean, Ordering::Release);
        clean
    }
}

impl Drop for SessionSandbox {
    fn drop(&mut self) {
        // Normally the agent's close swept already; this is the safety net.
        let clean = self.swept.load(Ordering::Acquire) || self.sweep();
        if let Some(d) = &self.dir {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot remove session dir");
                }
            }
        }
        if let (Some(lease), Some(pool)) = (self.lease.take(), &self.uids) {
            if clean {
                pool.release(lease);
            } else {
                tracing::error!(
                    uid = lease.uid,
                    "processes of a closed session's uid survived the sweep; uid quarantined"
                );
            }
        }
    }
}

/// The per-session uids: never-used ones first, then released ones oldest first (a uid
/// is reused as late as possible).
#[derive(Debug)]
pub struct UidPool {
    range: UidRange,
    locks: PathBuf,
    state: Mutex<UidState>,
}

/// A uid held by one session: its host-wide lock is released on drop.
#[derive(Debug)]
pub struct UidLease {
    pub uid: u32,
    _lock: Flock<std::fs::File>,
}

#[derive(Debug, Default)]
struct UidState {
    next_fresh: u32,
    free: VecDeque<u32>,
}

impl UidPool {
    /// A pool of `range` whose host-wide locks live in `locks`.
    pub fn new(range: UidRange, locks: PathBuf) -> Self {
        UidPool {
            range,
            locks,
            state: Mutex::new(UidState::default()),
        }
    }

    /// A uid this worker holds the host-wide lock of and no process runs as. A uid
    /// locked by another worker is put back at the end; one in use without a lock (a
    /// foreign user, or agents of a worker that died) is skipped for good.
    pub fn allocate(&self) -> Option<UidLease> {
        let mut busy = Vec::new();
        let got = loop {
            // The state lock is held only to pick a candidate: the /proc scan runs
            // outside it, so concurrent session starts do not queue behind scans.
            let next = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if st.next_fresh < self.range.count {
                    st.next_fresh += 1;
                    Some(self.range.nth(st.next_fresh - 1))
                } else {
                    st.free.pop_front()
                }
            };
            let Some(uid) = next else { break None };
            let Some(lock) = self.lock(uid) else {
                busy.push(uid);
                continue;
            };
            if !uid_owns_a_process(uid) {
                break Some(UidLease { uid, _lock: lock });
            }
            tracing::warn!(
                uid,
                "a uid of agent.isolation.uid_range is in use by another process; skipped"
            );
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free.extend(busy);
        got
    }

    /// The lock of `uid`, unless another worker holds it (or it cannot be taken).
    fn lock(&self, uid: u32) -> Option<Flock<std::fs::File>> {
        let path = self.locks.join(uid.to_string());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "uid lock"))
            .ok()?;
        Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
    }

    /// Gives a uid back (its lock is released), to be reused last.
    pub fn release(&self, lease: UidLease) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free.push_back(lease.uid);
    }
}

/// Whether some process runs with effective uid `uid` (the owner of its `/proc/<pid>`):
/// one `stat` per process, cheap enough for every session start.
fn uid_owns_a_process(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .any(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Privileges = Privileges {
        euid: 0,
        can_switch_uid: true,
        ambient_caps: 0,
        extra_groups: false,
    };

    #[test]
    fn privileges_from_status() {
        let p = Privileges::parse("Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n");
        assert_eq!(p, ROOT);
        let p = Privileges::parse("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000080\n");
        assert_eq!(
            (p.euid, p.can_switch_uid),
            (1000, false),
            "CAP_SETUID alone"
        );
        let p = Privileges::parse("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t00000000000000c0\n");
        assert!(
            !p.can_switch_uid,
            "SETUID + SETGID without CHOWN, KILL, DAC_OVERRIDE"
        );
        let p = Privileges::parse("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t00000000000000e3\n");
        assert!(p.can_switch_uid);
    }

    #[test]
    fn modes() {
        let def = IsolationConfig::default();
        assert_eq!(
            resolve_mode(&def, ROOT),
            Ok(IsolationMode::PerSessionUid(DEFAULT_UID_RANGE))
        );
        let plain = Privileges {
            euid: 1000,
            can_switch_uid: false,
            ..ROOT
        };
        assert_eq!(
            resolve_mode(&def, plain),
            Ok(IsolationMode::WorkerUser { euid: 1000 })
        );
        let ranged = IsolationConfig {
            uid_range: Some(UidRange {
                start: 5000,
                count: 10,
            }),
            ..def.clone()
        };
        assert!(resolve_mode(&ranged, plain).is_err(), "cannot switch");
        let capless_root = Privileges {
            euid: 0,
            can_switch_uid: false,
            ..ROOT
        };
        let e = resolve_mode(&def, capless_root).expect_err("agents as root refused");
        assert!(e.contains("insecure_agents_as_worker_user"), "{e}");
        let opt_in = IsolationConfig {
            insecure_agents_as_worker_user: true,
            ..def.clone()
        };
        assert_eq!(
            resolve_mode(&opt_in, ROOT),
            Ok(IsolationMode::WorkerUser { euid: 0 })
        );
        let own = Privileges {
            euid: 5003,
            can_switch_uid: true,
            ..ROOT
        };
        assert!(resolve_mode(&ranged, own).is_err(), "worker's uid in range");
        // A non-root worker with the five capabilities (the systemd unit's ambient set):
        // only once its ambient set is cleared and its supplementary groups are dropped.
        let unit = Privileges { euid: 990, ..ROOT };
        assert_eq!(
            resolve_mode(&ranged, unit),
            Ok(IsolationMode::PerSessionUid(UidRange {
                start: 5000,
                count: 10
            }))
        );
        let e = resolve_mode(
            &ranged,
            Privileges {
                ambient_caps: 0xe3,
                ..unit
            },
        )
        .expect_err("ambient capabilities would reach the agents");
        assert!(e.contains("ambient"), "{e}");
        let e = resolve_mode(
            &ranged,
            Privileges {
                extra_groups: true,
                ..unit
            },
        )
        .expect_err("groups would reach the agents");
        assert!(e.contains("supplementary groups"), "{e}");
        // Agents as the worker's user: nothing to refuse.
        assert!(resolve_mode(
            &opt_in,
            Privileges {
                extra_groups: true,
                ambient_caps: 1,
                ..unit
            }
        )
        .is_ok());
    }

    #[test]
    fn ambient_caps_and_extra_groups_from_status() {
        let p = Privileges::parse(
            "Uid:\t990\t990\t990\t990\nGid:\t990\t990\t990\t990\nGroups:\t990 \n\
             CapEff:\t00000000000000e3\nCapAmb:\t00000000000000e3\n",
        );
        assert_eq!((p.euid, p.can_switch_uid), (990, true));
        assert_eq!(p.ambient_caps, 0xe3);
        assert!(
            !p.extra_groups,
            "the primary gid listed in Groups is not extra"
        );
        let p = Privileges::parse(
            "Gid:\t990\t990\t990\t990\nGroups:\t27 990\nCapAmb:\t0000000000000000\n",
        );
        assert_eq!((p.ambient_caps, p.extra_groups), (0, true));
        let p = Privileges::parse("Gid:\t0\t0\t0\t0\nGroups:\t\n");
        assert!(!p.extra_groups);
    }

    #[test]
    fn uid_pool_reuses_late_and_locks_host_wide() {
        let locks = tempfile::tempdir().expect("tempdir");
        let range = UidRange {
            start: 1_999_000_000,
            count: 3,
        };
        let pool = UidPool::new(range, locks.path().to_path_buf());
        // Another worker on the host (same range, same lock dir) holds the first uid.
        let other = UidPool::new(range, locks.path().to_path_buf());
        let held = other.allocate().expect("other");
        assert_eq!(held.uid, 1_999_000_000);
        let a = pool.allocate().expect("a");
        let b = pool.allocate().expect("b");
        assert_eq!(
            (a.uid, b.uid),
            (1_999_000_001, 1_999_000_002),
            "locked uid skipped"
        );
        assert!(
            pool.allocate().is_none(),
            "exhausted while the other holds its uid"
        );
        let (ua, ub) = (a.uid, b.uid);
        pool.release(b);
        pool.release(a);
        let again = pool.allocate().expect("again");
        assert_eq!(again.uid, ub, "oldest released first");
        other.release(held);
        let c = pool.allocate().expect("c");
        let d = pool.allocate().expect("d");
        assert_eq!(
            (c.uid, d.uid),
            (ua, 1_999_000_000),
            "freed by the other worker"
        );
    }
}
