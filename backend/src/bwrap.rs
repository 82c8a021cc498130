//! The bubblewrap sandbox of agents (issue #24, item 2; `agent.isolation.sandbox`).
//!
//! Each agent command is executed through `bwrap` (the Debian package `bubblewrap`),
//! unprivileged: it needs unprivileged user namespaces, not a setuid helper nor any
//! capability of the worker. The agent gets new user, PID, IPC, UTS and (when the kernel
//! has them) cgroup namespaces, no capabilities, no further user namespaces
//! (`--disable-userns`), a session of its own (`--new-session`: no TIOCSTI into a
//! terminal) and dies with the worker (`--die-with-parent`). It sees:
//!
//! - the host filesystem read-only, with a fresh `/proc` of its own PID namespace (other
//!   sessions' agents and the worker are not in it) and a minimal `/dev`;
//! - its session directory (and the `TMPDIR` inside it) read-write, at the same path;
//! - private, size-capped tmpfs on `/tmp`, `/var/tmp` and `/dev/shm` (gone with the
//!   session);
//! - empty read-only tmpfs over `/run`, the sessions root (the other sessions'
//!   directories), the directories of the worker's config, secret and audit files, and
//!   `agent.isolation.hide_paths`; a file in a top-level directory (e.g. `/etc/x.yaml`)
//!   is hidden alone, behind an empty file. Files the agent itself needs that would be
//!   hidden (its command's program and script files, `/etc/resolv.conf`'s target) are
//!   bound back read-only.
//!
//! The network is shared (agents call their API). Closing a session kills the
//! namespace's init: the kernel then kills every process of the namespace, `setsid`
//! escapees included ([`namespace_init`], [`kill_namespace`], [`wait_namespace_gone`]).
//! Sandboxes are started by one long-lived [`Spawner`] thread per worker (bwrap's
//! `--die-with-parent` watches the forking *thread*), which hands bwrap its options over a
//! pipe (`--args FD`): the session directory's path is not on its command line.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::agent_config::{IsolationConfig, SandboxKind};

/// The bubblewrap executable, looked up in the worker's `PATH`.
pub const BWRAP_PROGRAM: &str = "bwrap";
/// Size cap of each private writable tmpfs (`/tmp`, `/var/tmp`, `/dev/shm`) of a sandbox,
/// bytes: they live in memory.
pub const SANDBOX_TMPFS_BYTES: u64 = 64 * 1024 * 1024;
/// Writable, private to each sandbox.
const PRIVATE_TMPFS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];
/// Always hidden (runtime sockets, the uid lock directory).
const ALWAYS_HIDDEN: &[&str] = &["/run"];
/// Host files an agent needs even when their directory is hidden.
const KEEP_FILES: &[&str] = &["/etc/resolv.conf"];
/// The hostname inside a sandbox.
const HOSTNAME: &str = "hotplex-agent";
/// The probe's user when agents run as per-session uids.
const NOBODY: u32 = 65_534;
/// Pause between polls of a dying namespace.
const POLL: Duration = Duration::from_millis(2);

/// Checks an `agent.isolation.hide_paths` entry.
pub fn check_hide_path(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("{}: must be an absolute path", p.display()));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{}: must not contain `..`", p.display()));
    }
    if p.parent().is_none() {
        return Err("cannot hide `/`".into());
    }
    if p.to_str().is_none() {
        return Err(format!("{}: must be UTF-8", p.display()));
    }
    Ok(())
}

/// Starts sandboxed agents from one long-lived thread. bwrap's `--die-with-parent` is
/// `PR_SET_PDEATHSIG`, which fires when the *thread* that forked bwrap exits, not the
/// process: started from tokio's blocking pool (whose idle threads exit after 10 s),
/// sandboxes were killed under their sessions. This thread lives as long as the worker's
/// [`crate::sandbox::Sandbox`] (its agents die with it).
#[derive(Debug)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<SpawnJob>,
}

type SpawnJob = (
    tokio::process::Command,
    Vec<String>,
    tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

/// Longest option list passed over a pipe (it is written before bwrap runs, so it must
/// fit the pipe's buffer); a longer one stays on the command line.
const ARGS_PIPE_MAX: usize = 60_000;

impl Spawner {
    /// The thread, entered into the current tokio runtime (children are its).
    pub fn start() -> std::io::Result<Spawner> {
        let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("agent-spawner".into())
            .spawn(move || {
                let _rt = handle.enter();
                for (mut cmd, args, reply) in rx {
                    let _ = reply.send(spawn_with_args_fd(&mut cmd, &args));
                }
            })?;
        Ok(Spawner { tx })
    }

    /// Spawns `cmd` (bwrap, without arguments) with `args` (bwrap's options, `--`, the
    /// agent's argv) on the spawner thread.
    pub async fn spawn(
        &self,
        cmd: tokio::process::Command,
        args: Vec<String>,
    ) -> std::io::Result<tokio::process::Child> {
        let stopped = || std::io::Error::other("the agent spawner thread is gone");
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send((cmd, args, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Spawns bwrap with its options (`args` up to the first `--`) read from a pipe
/// (`--args FD`), so that the session directory's path (it names the session) is not
/// on the command line that every host user can read in `/proc`. Runs on the spawner
/// thread, which makes every sandbox fork of the worker: no other child inherits the
/// pipe, and bwrap closes it once read.
fn spawn_with_args_fd(
    cmd: &mut tokio::process::Command,
    args: &[String],
) -> std::io::Result<tokio::process::Child> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (options, rest) = args.split_at(split);
    let mut data = Vec::new();
    for o in options {
        data.extend_from_slice(o.as_bytes());
        data.push(0);
    }
    if data.len() > ARGS_PIPE_MAX || options.iter().any(|o| o.contains('\0')) {
        return cmd.args(args).spawn();
    }
    let (reader, mut writer) = std::io::pipe()?;
    // Inherited by bwrap (std's pipe is close-on-exec).
    nix_fs::fcntl::fcntl(
        &reader,
        nix_fs::fcntl::FcntlArg::F_SETFD(nix_fs::fcntl::FdFlag::empty()),
    )
    .map_err(std::io::Error::from)?;
    writer.write_all(&data)?;
    drop(writer);
    cmd.arg("--args")
        .arg(reader.as_raw_fd().to_string())
        .args(rest);
    let child = cmd.spawn();
    drop(reader);
    child
}

/// A sandbox plan: the program and the host paths it hides or keeps.
#[derive(Debug)]
pub struct Bwrap {
    program: String,
    /// Directories covered by an empty tmpfs, read-only once the binds are in place.
    hide_dirs: Vec<String>,
    /// Files covered by an empty file (`/dev/null`, read-only).
    hide_files: Vec<String>,
    /// Files under a hidden directory bound back read-only.
    keep: Vec<String>,
    /// The thread that starts the agents (set by [`for_worker`]).
    spawner: Option<std::sync::Arc<Spawner>>,
}

/// `PATH` lookup of [`BWRAP_PROGRAM`].
pub fn find_program() -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(BWRAP_PROGRAM))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|p| p.to_str().map(str::to_string))
        .ok_or_else(|| format!("no `{BWRAP_PROGRAM}` in PATH (install the bubblewrap package)"))
}

/// The sandbox `agent.isolation.sandbox` asks for: `None` for `none`, and for `auto`
/// when bubblewrap is missing or its probe fails (logged). `Err` (a startup error naming
/// the key) when `bubblewrap` is required but does not work. The probe runs
/// `bwrap <the agents' options> true` in `probe_dir` as `probe_uid` (the user agents'
/// `bwrap` will run as; `None`: the worker's).
pub fn resolve(
    iso: &IsolationConfig,
    command: &[String],
    sessions_root: Option<&Path>,
    probe_dir: &Path,
    probe_uid: Option<u32>,
) -> Result<Option<Bwrap>, String> {
    if iso.sandbox == SandboxKind::None {
        return Ok(None);
    }
    let built = find_program()
        .and_then(|program| Bwrap::plan(program, iso, command, sessions_root))
        .and_then(|b| b.probe(probe_dir, probe_uid).map(|()| b));
    match (built, iso.sandbox) {
        (Ok(b), _) => Ok(Some(b)),
        (Err(e), SandboxKind::Bubblewrap) => Err(format!(
            "agent.isolation.sandbox: bubblewrap does not work here: {e}"
        )),
        (Err(e), _) => {
            tracing::warn!(
                reason = %e,
                "agent.isolation.sandbox: auto: bubblewrap is unavailable, agents run without a namespace sandbox (docs/reliability.md)"
            );
            Ok(None)
        }
    }
}

/// The sandbox of a worker's agents ([`resolve`]) and, when the worker has no
/// session-directory root yet (`root`), the private one made for it by `make_root`
/// (sandboxed agents always get a session directory). With per-session uids the agents'
/// `bwrap` runs as an unprivileged uid: so does the probe (as nobody, outside the range).
pub fn for_worker(
    cfg: &crate::agent_config::AgentConfig,
    per_session_uids: bool,
    root: Option<&Path>,
    make_root: impl FnOnce() -> std::io::Result<PathBuf>,
) -> Result<Option<(Bwrap, Option<PathBuf>)>, String> {
    if let Some(r) = root {
        std::fs::create_dir_all(r)
            .map_err(|e| format!("agent.session_dirs: {}: {e}", r.display()))?;
    }
    let probe_dir = root.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let probe_uid = per_session_uids.then_some(NOBODY);
    let Some(mut bw) = resolve(&cfg.isolation, &cfg.command, root, &probe_dir, probe_uid)? else {
        return Ok(None);
    };
    let mut own = None;
    if root.is_none() {
        let r = make_root()
            .map_err(|e| format!("agent.session_dirs: cannot create a default root: {e}"))?;
        bw.hide(&r)?;
        own = Some(r);
    }
    bw.spawner =
        Some(std::sync::Arc::new(Spawner::start().map_err(|e| {
            format!("agent.isolation.sandbox: spawner thread: {e}")
        })?));
    tracing::info!(program = bw.program(), "agents run in a bubblewrap sandbox");
    Ok(Some((bw, own)))
}

/// `path` as a canonical UTF-8 string; `Ok(None)` when it does not exist.
fn canonical(path: &Path) -> Result<Option<String>, String> {
    match std::fs::canonicalize(path) {
        Ok(p) => p
            .into_os_string()
            .into_string()
            .map(Some)
            .map_err(|p| format!("{}: not UTF-8", p.to_string_lossy())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn depth(p: &str) -> usize {
    Path::new(p).components().count()
}

impl Bwrap {
    /// The plan for `program`: what to hide (the sessions root, the worker's files'
    /// directories, `hide_paths`, [`ALWAYS_HIDDEN`]) and which of `command`'s files and
    /// [`KEEP_FILES`] to bind back. Paths that do not exist are skipped.
    pub fn plan(
        program: String,
        iso: &IsolationConfig,
        command: &[String],
        sessions_root: Option<&Path>,
    ) -> Result<Bwrap, String> {
        let mut b = Bwrap {
            program,
            hide_dirs: Vec::new(),
            hide_files: Vec::new(),
            keep: Vec::new(),
            spawner: None,
        };
        for d in ALWAYS_HIDDEN {
            b.hide(Path::new(d))?;
        }
        if let Some(root) = sessions_root {
            b.hide(root)?;
        }
        for f in &iso.worker_files {
            // A file's directory is hidden, unless it is a top-level one (`/etc`); both
            // the named one and, for a symbolic link, its target's. A file that does not
            // exist (no config file: `<defaults>`) hides nothing.
            let Ok(Some(real)) = canonical(f) else {
                continue;
            };
            for p in [std::path::absolute(f).unwrap_or_default(), real.into()] {
                match p.parent() {
                    Some(dir) if dir.components().count() > 2 => b.hide(dir)?,
                    Some(_) => b.hide(&p)?,
                    None => {}
                }
            }
        }
        for p in &iso.hide_paths {
            b.hide(p)?;
        }
        let exe = crate::agent_config::current_exe();
        let wanted = KEEP_FILES
            .iter()
            .copied()
            .chain(command.iter().map(String::as_str))
            .chain(std::iter::once(exe.as_str()));
        for f in wanted.filter(|f| f.starts_with('/')) {
            let Ok(Some(c)) = canonical(Path::new(f)) else {
                continue;
            };
            let hidden = b
                .hide_dirs
                .iter()
                .map(String::as_str)
                .chain(PRIVATE_TMPFS.iter().copied())
                .any(|d| Path::new(&c).starts_with(d));
            if hidden && Path::new(&c).is_file() && !b.keep.contains(&c) {
                b.keep.push(c);
            }
        }
        Ok(b)
    }

    /// Adds a host path to hide (canonicalised; nothing if it does not exist or an
    /// already hidden directory or private tmpfs covers it).
    pub fn hide(&mut self, path: &Path) -> Result<(), String> {
        let Some(c) = canonical(path)? else {
            return Ok(());
        };
        let covered = |c: &str| {
            self.hide_dirs
                .iter()
                .map(String::as_str)
                .chain(PRIVATE_TMPFS.iter().copied())
                .any(|d| Path::new(c).starts_with(d))
        };
        if covered(&c) {
            return Ok(());
        }
        if Path::new(&c).is_dir() {
            self.hide_dirs.retain(|d| !Path::new(d).starts_with(&c));
            self.hide_files.retain(|f| !Path::new(f).starts_with(&c));
            self.hide_dirs.push(c);
            self.hide_dirs.sort_by_key(|d| depth(d));
        } else if !self.hide_files.contains(&c) {
            self.hide_files.push(c);
        }
        Ok(())
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// The thread that starts this worker's sandboxed agents.
    pub fn spawner(&self) -> Option<std::sync::Arc<Spawner>> {
        self.spawner.clone()
    }

    /// `bwrap`'s options for a session whose directory is `dir` (up to and with `--`).
    pub fn args(&self, dir: &str) -> Vec<String> {
        let mut a: Vec<String> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            HOSTNAME,
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let size = SANDBOX_TMPFS_BYTES.to_string();
        for t in PRIVATE_TMPFS {
            a.extend(["--size", &size, "--tmpfs", t].map(String::from));
        }
        for d in &self.hide_dirs {
            a.extend(["--tmpfs", d].map(String::from));
        }
        for f in &self.hide_files {
            a.extend(["--ro-bind", "/dev/null", f].map(String::from));
        }
        a.extend(["--bind", dir, dir].map(String::from));
        for k in &self.keep {
            a.extend(["--ro-bind", k, k].map(String::from));
        }
        for d in &self.hide_dirs {
            a.extend(["--remount-ro", d].map(String::from));
        }
        a.extend(["--chdir", dir, "--"].map(String::from));
        a
    }

    /// The argv that runs `argv` in the sandbox of the session directory `dir`.
    pub fn wrap(&self, argv: Vec<String>, dir: &Path) -> Result<Vec<String>, String> {
        let dir = dir
            .to_str()
            .ok_or_else(|| format!("{}: not UTF-8", dir.display()))?;
        // A missing program is a spawn error naming it, as without the sandbox (not an
        // agent that exits at once).
        if let Some(p) = argv.first().filter(|p| p.starts_with('/')) {
            if !Path::new(p).is_file() {
                return Err(format!("{p}: no such file"));
            }
        }
        let mut w = vec![self.program.clone()];
        w.extend(self.args(dir));
        w.extend(argv);
        Ok(w)
    }

    /// Runs `bwrap <options> true` in `dir` as `uid`: `Err` with bwrap's own words.
    pub fn probe(&self, dir: &Path, uid: Option<u32>) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let argv = self.wrap(vec!["true".into()], dir)?;
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`{} ... true` failed ({}): {} (are unprivileged user namespaces allowed? \
             kernel.unprivileged_userns_clone, user.max_user_namespaces)",
            self.program,
            out.status,
            err.trim()
        ))
    }
}

/// The PID-namespace init of a sandbox whose outer `bwrap` is `outer` (its only child),
/// as seen from the worker's namespace.
pub fn namespace_init(outer: u32) -> Option<u32> {
    if let Ok(c) = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")) {
        return c.split_whitespace().next().and_then(|p| p.parse().ok());
    }
    // Kernels without CONFIG_PROC_CHILDREN: the ppid field of every process.
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| stat_field(*pid, 1).and_then(|p| p.parse().ok()) == Some(outer))
}

/// Field `n` after the command of `/proc/<pid>/stat` (0: state, 1: ppid).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n).map(str::to_string)
}

/// SIGKILLs a sandbox's namespace init: the kernel then kills every other process of the
/// namespace.
pub fn kill_namespace(init: u32) {
    let Ok(pid) = i32::try_from(init) else {
        return;
    };
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, error = %e, "sandbox: cannot kill the namespace init"),
    }
}

/// Waits (at most `within`) until the namespace init `init` is a zombie or gone: the
/// kernel lets a namespace init exit only once every other process of its namespace
/// has. `false` on timeout.
pub fn wait_namespace_gone(init: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match stat_field(init, 0).as_deref() {
            None | Some("Z" | "X") => return true,
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso() -> IsolationConfig {
        IsolationConfig {
            sandbox: SandboxKind::Bubblewrap,
            ..IsolationConfig::default()
        }
    }

    /// The index of the first occurrence of the option sequence `seq` in `a`.
    fn at(a: &[String], seq: &[&str]) -> Option<usize> {
        a.windows(seq.len())
            .position(|w| w.iter().zip(seq).all(|(x, y)| x == y))
    }

    #[test]
    fn hide_paths_are_checked() {
        assert!(check_hide_path(Path::new("/srv/secrets")).is_ok());
        for bad in ["relative/x", "/srv/../etc", "/"] {
            assert!(check_hide_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn arguments_isolate_and_order_the_mounts() {
        let base = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(base.path()).expect("canonical");
        // Not under /tmp in real deployments: use a hide path to stand for the root.
        let root = base.join("sessions");
        let conf = base.join("etc-hotplex");
        let secret_dir = base.join("secrets");
        let extra = base.join("extra");
        for d in [&root, &conf, &secret_dir, &extra] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let script = conf.join("agent.sh");
        std::fs::write(&script, "echo").expect("script");
        std::fs::write(conf.join("worker.yaml"), "{}").expect("config");
        std::fs::write(secret_dir.join("key"), "k").expect("secret");
        let cfg = IsolationConfig {
            worker_files: vec![conf.join("worker.yaml"), secret_dir.join("key")],
            hide_paths: vec![extra.clone(), base.join("missing")],
            ..iso()
        };
        let command = vec!["sh".to_string(), script.display().to_string()];
        let mut b =
            Bwrap::plan("/usr/bin/bwrap".into(), &cfg, &command, Some(&root)).expect("plan");
        // Everything under /tmp (this tempdir) is covered by the private /tmp already.
        if base.starts_with("/tmp") {
            assert!(b.hide_dirs.iter().all(|d| !d.starts_with("/tmp")), "{b:?}");
            // Force the hides as if the base were elsewhere, to check the argument order.
            b.hide_dirs = vec![
                "/run".to_string(),
                root.display().to_string(),
                conf.display().to_string(),
                secret_dir.display().to_string(),
            ];
            b.keep = vec![script.display().to_string()];
        } else {
            for d in [&root, &conf, &secret_dir, &extra] {
                assert!(
                    b.hide_dirs.contains(&d.display().to_string()),
                    "{d:?}: {b:?}"
                );
            }
            assert_eq!(b.keep, [script.display().to_string()], "the script is kept");
        }
        let dir = root.join("s1-00ff");
        let dir_s = dir.display().to_string();
        let argv = b
            .wrap(vec!["sh".into(), "-c".into(), "true".into()], &dir)
            .expect("wrap");
        assert_eq!(argv[0], "/usr/bin/bwrap");
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(argv.contains(&flag.to_string()), "{flag}: {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.contains("net")), "network shared");
        assert!(at(&argv, &["--cap-drop", "ALL"]).is_some());
        let ro = at(&argv, &["--ro-bind", "/", "/"]).expect("ro root");
        let proc_ = at(&argv, &["--proc", "/proc"]).expect("proc");
        let dev = at(&argv, &["--dev", "/dev"]).expect("dev");
        let tmp = at(&argv, &["--tmpfs", "/tmp"]).expect("tmp");
        assert_eq!(
            &argv[tmp - 2..tmp],
            ["--size", &SANDBOX_TMPFS_BYTES.to_string()]
        );
        let shm = at(&argv, &["--tmpfs", "/dev/shm"]).expect("shm");
        let hide_root = at(&argv, &["--tmpfs", &root.display().to_string()]).expect("root");
        let hide_run = at(&argv, &["--tmpfs", "/run"]).expect("run");
        let bind = at(&argv, &["--bind", &dir_s, &dir_s]).expect("session dir rw");
        let s = script.display().to_string();
        let keep = at(&argv, &["--ro-bind", &s, &s]).expect("script bound back");
        let ro_root = at(&argv, &["--remount-ro", &root.display().to_string()]).expect("hidden ro");
        let chdir = at(&argv, &["--chdir", &dir_s, "--"]).expect("chdir");
        assert!(ro < proc_ && proc_ < dev && dev < shm, "{argv:?}");
        assert!(ro < tmp && tmp < hide_root && hide_run < bind, "{argv:?}");
        assert!(
            hide_root < bind && bind < keep && keep < ro_root,
            "{argv:?}"
        );
        assert!(ro_root < chdir, "{argv:?}");
        assert_eq!(&argv[chdir + 3..], ["sh", "-c", "true"], "the agent last");
    }

    #[test]
    fn top_level_files_are_hidden_alone_and_parents_absorb_children() {
        let mut b = Bwrap::plan("bwrap".into(), &iso(), &[], None).expect("plan");
        assert_eq!(b.hide_dirs, ["/run"]);
        // A config directly in /etc hides that file, not /etc.
        let etc_file = Path::new("/etc/hostname");
        if etc_file.exists() {
            let cfg = IsolationConfig {
                worker_files: vec![etc_file.to_path_buf()],
                ..iso()
            };
            let b2 = Bwrap::plan("bwrap".into(), &cfg, &[], None).expect("plan");
            assert_eq!(b2.hide_files, ["/etc/hostname"]);
            assert!(!b2.hide_dirs.contains(&"/etc".to_string()));
            let a = b2.args("/s");
            assert!(at(&a, &["--ro-bind", "/dev/null", "/etc/hostname"]).is_some());
        }
        // No config file (`<defaults>`, relative to the cwd): nothing hidden.
        let cfg = IsolationConfig {
            worker_files: vec!["<defaults>".into()],
            ..iso()
        };
        let b3 = Bwrap::plan("bwrap".into(), &cfg, &[], None).expect("plan");
        assert_eq!((b3.hide_dirs, b3.hide_files), (b.hide_dirs.clone(), vec![]));
        b.hide(Path::new("/usr/share")).expect("hide");
        b.hide(Path::new("/usr/share/doc")).expect("hide");
        assert_eq!(b.hide_dirs, ["/run", "/usr/share"], "covered child dropped");
        b.hide(Path::new("/usr")).expect("hide");
        assert_eq!(b.hide_dirs, ["/run", "/usr"], "parent replaces child");
        b.hide(Path::new("/nonexistent/x"))
            .expect("missing is skipped");
        assert_eq!(b.hide_dirs.len(), 2);
    }

    #[test]
    fn probe_reports_failure_and_a_missing_program() {
        let b = Bwrap {
            program: "/bin/false".into(),
            hide_dirs: vec![],
            hide_files: vec![],
            keep: vec![],
            spawner: None,
        };
        let e = b.probe(Path::new("/"), None).expect_err("false fails");
        assert!(
            e.contains("/bin/false") && e.contains("user namespaces"),
            "{e}"
        );
        let missing = Bwrap {
            program: "/nonexistent/bwrap".into(),
            ..b
        };
        assert!(missing
            .probe(Path::new("/"), None)
            .expect_err("missing")
            .contains("cannot run"));
        let none = IsolationConfig {
            sandbox: SandboxKind::None,
            ..iso()
        };
        assert!(matches!(
            resolve(&none, &[], None, Path::new("/"), None),
            Ok(None)
        ));
    }

    #[test]
    fn a_real_sandbox_hides_and_dies_as_a_tree() {
        let Ok(program) = find_program() else {
            eprintln!(
                "## bwrap not installed: real sandbox unit test not run (make test installs it)"
            );
            return;
        };
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("s1");
        std::fs::create_dir(&dir).expect("mkdir");
        let b = Bwrap::plan(program, &iso(), &[], Some(root.path())).expect("plan");
        if let Err(e) = b.probe(&dir, None) {
            panic!("bwrap is installed but does not work here (user namespaces refused?): {e}");
        }
        // In the sandbox: its own PID namespace (pid 1 is bwrap), a setsid escapee.
        let argv = b
            .wrap(
                vec![
                    "sh".into(),
                    "-c".into(),
                    "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $$ $(cat /proc/1/comm); exec sleep 600".into(),
                ],
                &dir,
            )
            .expect("wrap");
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut out,
        )
        .expect("read");
        assert_eq!(out.trim(), "2 bwrap", "own PID namespace");
        let outer = child.id();
        let init = namespace_init(outer).expect("namespace init");
        kill_namespace(init);
        assert!(
            wait_namespace_gone(init, Duration::from_secs(10)),
            "namespace torn down"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
