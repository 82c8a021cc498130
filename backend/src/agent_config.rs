//! The `agent:` section of the worker config: the file type (strict) and the validated
//! runtime type [`AgentConfig`]. Re-exported by [`crate::config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Default agent protocol: the worker's own JSON lines (the demo agent's).
pub const DEFAULT_AGENT_PROTOCOL: AgentProtocol = AgentProtocol::HotplexJsonl;
/// Default environment allowlist: the only worker variables an agent inherits (values
/// taken from the worker's environment when set there). Everything else, secrets
/// included, is not passed on.
pub const DEFAULT_ENV_ALLOWLIST: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];
/// Default longest line accepted from an agent, bytes (4 MiB). A longer line ends the
/// turn with `agent_protocol_error`; at most this much of it is ever buffered.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Default for the demo agent's test prompts (`crash`, `garbage`, `fail`, `sleep N`,
/// `spawn`, `history`): off.
pub const DEFAULT_DEMO_TEST_HOOKS: bool = false;

/// Default uid range of the per-session agent users (`agent.isolation.uid_range`): 65536
/// uids from 1 900 000 000, a block no distribution, systemd or subuid default hands out.
/// The worker kills every process of a session's uid when the session closes, so the
/// range must belong to the worker alone.
pub const DEFAULT_UID_RANGE: UidRange = UidRange {
    start: 1_900_000_000,
    count: 65_536,
};
/// Default directory of the host-wide uid locks (`agent.isolation.lock_dir`): every
/// worker on a host takes a lock file per uid there before handing the uid to a session,
/// so workers sharing a range never share a uid (nor sweep another's agents).
pub const DEFAULT_UID_LOCK_DIR: &str = "/run/hotplex-agent-uids";
/// Default longest agent stderr line logged, bytes; the rest of a longer line is dropped
/// (the log line says `truncated`).
pub const DEFAULT_STDERR_LINE_BYTES: usize = 1024;
/// Default agent stderr logged per session, bytes (all restarts of its agent together);
/// past it the worker logs one notice and drains the rest unlogged.
pub const DEFAULT_STDERR_SESSION_BYTES: usize = 64 * 1024;

/// Default agent sandbox (`agent.isolation.sandbox`): bubblewrap when it is installed and
/// works here (a start-time probe), otherwise none, with a warning at startup.
pub const DEFAULT_SANDBOX: SandboxKind = SandboxKind::Auto;

/// `agent.isolation.sandbox`: the namespace sandbox each agent runs in (see
/// [`crate::bwrap`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxKind {
    /// No sandbox: agents see the host as their uid does.
    None,
    /// bubblewrap (`bwrap`), required: a worker where it is missing or does not work
    /// refuses to start.
    Bubblewrap,
    /// bubblewrap when found and working, otherwise none.
    #[default]
    Auto,
}

impl SandboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::None => "none",
            SandboxKind::Bubblewrap => "bubblewrap",
            SandboxKind::Auto => "auto",
        }
    }
}

/// `agent.isolation.uid_range`: the uids (and equal gids) handed to sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidRange {
    /// First uid.
    pub start: u32,
    /// Number of uids (at least `max_sessions`).
    pub count: u32,
}

impl UidRange {
    /// The uid at `i` (`i < count`).
    pub fn nth(&self, i: u32) -> u32 {
        self.start + i
    }

    fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("count must be at least 1".into());
        }
        if self.start < 1000 {
            return Err("start must be at least 1000 (system accounts live below)".into());
        }
        let end = u64::from(self.start) + u64::from(self.count);
        if end > 0x7fff_ffff {
            return Err("the range must end below 2^31 - 1".into());
        }
        if (u64::from(self.start)..end).contains(&65_534) {
            return Err("the range must not contain 65534 (nobody)".into());
        }
        Ok(())
    }
}

/// `agent.isolation`: how agents are kept apart from each other and from the worker.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationFileConfig {
    /// uids for the sessions' agents, used when the worker can switch uids (root, or
    /// CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_KILL, CAP_DAC_OVERRIDE). Default [`DEFAULT_UID_RANGE`]. Setting it on a worker
    /// that cannot switch is a startup error.
    pub uid_range: Option<UidRange>,
    /// Directory of the host-wide uid locks (created 0700; must be owned by the worker's
    /// user and writable by no one else). Default [`DEFAULT_UID_LOCK_DIR`].
    pub lock_dir: Option<PathBuf>,
    /// Run agents as the worker's own user even though it could switch (as root: agents
    /// run as root). Insecure; default false.
    pub insecure_agents_as_worker_user: Option<bool>,
    /// The namespace sandbox: `none`, `bubblewrap` or `auto`. Default [`DEFAULT_SANDBOX`].
    pub sandbox: Option<SandboxKind>,
    /// More host paths the sandbox hides from agents (absolute; a directory becomes an
    /// empty read-only tmpfs, a file an empty file). Default: none.
    pub hide_paths: Option<Vec<PathBuf>>,
}

/// The validated `agent.isolation`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IsolationConfig {
    /// The configured range (`None`: [`DEFAULT_UID_RANGE`]).
    pub uid_range: Option<UidRange>,
    /// The configured lock directory (`None`: [`DEFAULT_UID_LOCK_DIR`]).
    pub lock_dir: Option<PathBuf>,
    /// The named opt-out.
    pub insecure_agents_as_worker_user: bool,
    /// The namespace sandbox.
    pub sandbox: SandboxKind,
    /// Operator paths hidden in the sandbox (absolute, UTF-8).
    pub hide_paths: Vec<PathBuf>,
    /// The worker's own files (its config file, secret files, audit log): the sandbox
    /// hides their directories. Filled from the config file, not a key of its own.
    pub worker_files: Vec<PathBuf>,
}

/// Which line protocol the agent speaks on stdin/stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentProtocol {
    /// `{"type":"user","prompt":...}` in; `thinking` / `tool_use` / `tool_result` /
    /// `answer` / `result` / `error` out (see [`crate::protocol::jsonl`]).
    HotplexJsonl,
    /// Claude Code's `-p --input-format stream-json --output-format stream-json
    /// --verbose` (see [`crate::protocol::claude`]).
    ClaudeStreamJson,
}

impl AgentProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentProtocol::HotplexJsonl => "hotplex-jsonl",
            AgentProtocol::ClaudeStreamJson => "claude-stream-json",
        }
    }
}

/// `agent.limits`: per-agent resource limits (rlimits, set by the `agent-exec` launcher
/// before it execs the agent; inherited by the agent's children). Absent: unlimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// RLIMIT_AS: address space, bytes. Default: none. (Runtimes that reserve large
    /// virtual ranges, e.g. Node/Bun, need several GiB.)
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_CPU: CPU time, seconds (SIGXCPU, then SIGKILL). Default: none.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NPROC: processes of the agent's user id (per uid, not per session; not
    /// enforced for root). Default: none.
    pub processes: Option<u64>,
    /// RLIMIT_NOFILE: open file descriptors. Default: none.
    pub open_files: Option<u64>,
}

impl AgentLimits {
    pub fn is_empty(&self) -> bool {
        *self == AgentLimits::default()
    }

    /// The `agent-exec` flags for these limits.
    pub fn launcher_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, val) in [
            ("--rlimit-as", self.address_space_bytes),
            ("--rlimit-cpu", self.cpu_seconds),
            ("--rlimit-nproc", self.processes),
            ("--rlimit-nofile", self.open_files),
        ] {
            if let Some(n) = val {
                v.push(flag.to_string());
                v.push(n.to_string());
            }
        }
        v
    }
}

/// `agent:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFileConfig {
    /// argv of the agent (program first). Default: `[<this executable>, "demo-agent"]`.
    pub command: Option<Vec<String>>,
    /// The agent's line protocol, `hotplex-jsonl` or `claude-stream-json`. Default
    /// `hotplex-jsonl`.
    pub protocol: Option<AgentProtocol>,
    /// Extra environment variables for the agent (literal values). Default: none.
    pub env: Option<BTreeMap<String, String>>,
    /// Worker environment variables passed through to the agent (names). Default
    /// [`DEFAULT_ENV_ALLOWLIST`]; list e.g. `ANTHROPIC_API_KEY` here.
    pub env_allowlist: Option<Vec<String>>,
    /// Working directory of the agent. Default: the worker's. Ignored with `session_dirs`.
    pub cwd: Option<PathBuf>,
    /// A directory under which each session gets its own working directory (created at
    /// session start, kept across agent restarts, removed when the session closes).
    /// Default: none (every agent runs in `cwd`).
    pub session_dirs: Option<PathBuf>,
    /// Wait for the agent's ready signal (hotplex-jsonl: a `ready`/`system` line;
    /// claude-stream-json: the answer to an `initialize` request) before the session
    /// counts as started (bounded by `startup_timeout`). Default: true.
    pub wait_ready: Option<bool>,
    /// Longest line accepted from the agent, bytes. Default 4 MiB.
    pub max_line_bytes: Option<usize>,
    /// Resource limits per agent process. Default: none.
    pub limits: Option<AgentLimits>,
    /// Enable the demo agent's test prompts (only with the default command). Default false.
    pub demo_test_hooks: Option<bool>,
    /// Per-session users and their limits. Default: see [`IsolationFileConfig`].
    pub isolation: Option<IsolationFileConfig>,
    /// Longest agent stderr line logged, bytes. Default 1024.
    pub stderr_line_bytes: Option<usize>,
    /// Agent stderr logged per session, bytes. Default 64 KiB.
    pub stderr_session_bytes: Option<usize>,
}

/// How the agent process of a session is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// argv, never empty.
    pub command: Vec<String>,
    /// The line protocol.
    pub protocol: AgentProtocol,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Worker variables passed through.
    pub env_allowlist: Vec<String>,
    /// Working directory (when `session_dirs` is unset).
    pub cwd: Option<PathBuf>,
    /// Root of the per-session working directories.
    pub session_dirs: Option<PathBuf>,
    /// Wait for the ready signal at startup.
    pub wait_ready: bool,
    /// Longest accepted line, bytes.
    pub max_line_bytes: usize,
    /// Resource limits.
    pub limits: AgentLimits,
    /// Per-session users.
    pub isolation: IsolationConfig,
    /// Longest agent stderr line logged, bytes.
    pub stderr_line_bytes: usize,
    /// Agent stderr logged per session, bytes.
    pub stderr_session_bytes: usize,
}

impl AgentConfig {
    /// The built-in demo agent: this very executable with the `demo-agent` subcommand.
    pub fn demo() -> Self {
        Self::command(vec![current_exe(), "demo-agent".to_string()])
    }

    /// An agent started with `argv` and otherwise default settings.
    pub fn command(argv: Vec<String>) -> Self {
        AgentConfig {
            command: argv,
            protocol: DEFAULT_AGENT_PROTOCOL,
            env: BTreeMap::new(),
            env_allowlist: DEFAULT_ENV_ALLOWLIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cwd: None,
            session_dirs: None,
            wait_ready: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            limits: AgentLimits::default(),
            isolation: IsolationConfig::default(),
            stderr_line_bytes: DEFAULT_STDERR_LINE_BYTES,
            stderr_session_bytes: DEFAULT_STDERR_SESSION_BYTES,
        }
    }

    /// Validates the file section; `Err((key, reason))`.
    pub fn from_file(a: AgentFileConfig) -> Result<Self, (&'static str, String)> {
        let mut c = AgentConfig::demo();
        if a.demo_test_hooks.unwrap_or(DEFAULT_DEMO_TEST_HOOKS) {
            if a.command.is_some() {
                return Err((
                    "agent.demo_test_hooks",
                    "only applies to the default (demo) command".into(),
                ));
            }
            c.command.push("--test-hooks".into());
        }
        if let Some(cmd) = a.command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(("agent.command", "must name a program".into()));
            }
            c.command = cmd;
        }
        c.protocol = a.protocol.unwrap_or(DEFAULT_AGENT_PROTOCOL);
        c.env = a.env.unwrap_or_default();
        if let Some(list) = a.env_allowlist {
            if let Some(bad) = list
                .iter()
                .find(|n| n.is_empty() || n.contains('=') || n.contains('\0'))
            {
                return Err((
                    "agent.env_allowlist",
                    format!("not a variable name: {bad:?}"),
                ));
            }
            c.env_allowlist = list;
        }
        c.cwd = a.cwd;
        c.session_dirs = a.session_dirs;
        c.wait_ready = a.wait_ready.unwrap_or(true);
        c.max_line_bytes = a.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
        if c.max_line_bytes < 1024 {
            return Err(("agent.max_line_bytes", "must be at least 1024".into()));
        }
        c.limits = a.limits.unwrap_or_default();
        let l = c.limits;
        if [
            l.address_space_bytes,
            l.cpu_seconds,
            l.processes,
            l.open_files,
        ]
        .contains(&Some(0))
        {
            return Err(("agent.limits", "a limit must be greater than 0".into()));
        }
        let iso = a.isolation.unwrap_or_default();
        c.isolation = IsolationConfig {
            uid_range: iso.uid_range,
            lock_dir: iso.lock_dir,
            insecure_agents_as_worker_user: iso.insecure_agents_as_worker_user.unwrap_or(false),
            sandbox: iso.sandbox.unwrap_or(DEFAULT_SANDBOX),
            hide_paths: iso.hide_paths.unwrap_or_default(),
            worker_files: Vec::new(),
        };
        for p in &c.isolation.hide_paths {
            crate::bwrap::check_hide_path(p).map_err(|e| ("agent.isolation.hide_paths", e))?;
        }
        if let Some(r) = iso.uid_range {
            if c.isolation.insecure_agents_as_worker_user {
                return Err((
                    "agent.isolation.uid_range",
                    "contradicts insecure_agents_as_worker_user: true".into(),
                ));
            }
            r.validate().map_err(|e| ("agent.isolation.uid_range", e))?;
        }
        c.stderr_line_bytes = a.stderr_line_bytes.unwrap_or(DEFAULT_STDERR_LINE_BYTES);
        if !(64..=65_536).contains(&c.stderr_line_bytes) {
            return Err(("agent.stderr_line_bytes", "must be 64 to 65536".into()));
        }
        c.stderr_session_bytes = a
            .stderr_session_bytes
            .unwrap_or(DEFAULT_STDERR_SESSION_BYTES);
        if c.stderr_session_bytes < c.stderr_line_bytes {
            return Err((
                "agent.stderr_session_bytes",
                "must be at least agent.stderr_line_bytes".into(),
            ));
        }
        Ok(c)
    }
}

/// This executable's path (the demo agent and the `agent-exec` launcher live in it).
pub fn current_exe() -> String {
    std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "hotplex-worker".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<AgentConfig, (&'static str, String)> {
        let f: AgentFileConfig = serde_yaml::from_str(y).expect("yaml");
        AgentConfig::from_file(f)
    }

    #[test]
    fn defaults_and_claude_section() {
        let c = parse("{}").expect("valid");
        assert_eq!(c.protocol, AgentProtocol::HotplexJsonl);
        assert_eq!(c.command.get(1).map(String::as_str), Some("demo-agent"));
        assert_eq!(c.command.len(), 2, "no test hooks by default");
        assert!(c.limits.is_empty());
        assert_eq!(c.isolation, IsolationConfig::default());
        assert_eq!(c.stderr_line_bytes, DEFAULT_STDERR_LINE_BYTES);
        let c = parse("isolation: {uid_range: {start: 300000, count: 100}}\n").expect("valid");
        assert_eq!(
            c.isolation.uid_range,
            Some(UidRange {
                start: 300000,
                count: 100
            })
        );
        let c = parse(
            "command: [claude, -p]\nprotocol: claude-stream-json\nenv_allowlist: [PATH, ANTHROPIC_API_KEY]\nsession_dirs: /tmp/s\nlimits: {open_files: 256, cpu_seconds: 600}\n",
        )
        .expect("valid");
        assert_eq!(c.protocol, AgentProtocol::ClaudeStreamJson);
        assert_eq!(c.env_allowlist, ["PATH", "ANTHROPIC_API_KEY"]);
        assert_eq!(
            c.limits.launcher_args(),
            ["--rlimit-cpu", "600", "--rlimit-nofile", "256"]
        );
        assert_eq!(c.isolation.sandbox, SandboxKind::Auto, "default");
        let c =
            parse("isolation: {sandbox: bubblewrap, hide_paths: [/srv/keys]}\n").expect("valid");
        assert_eq!(c.isolation.sandbox, SandboxKind::Bubblewrap);
        assert_eq!(c.isolation.hide_paths, [PathBuf::from("/srv/keys")]);
        assert_eq!(
            parse("isolation: {sandbox: none}\n").map(|c| c.isolation.sandbox),
            Ok(SandboxKind::None)
        );
        let c = parse("demo_test_hooks: true\n").expect("valid");
        assert_eq!(c.command.last().map(String::as_str), Some("--test-hooks"));
    }

    #[test]
    fn bad_sections() {
        assert_eq!(
            parse("command: [x]\ndemo_test_hooks: true\n").map(|_| ()),
            Err((
                "agent.demo_test_hooks",
                "only applies to the default (demo) command".into()
            ))
        );
        assert!(parse("limits: {open_files: 0}\n").is_err());
        assert!(parse("env_allowlist: ['A=B']\n").is_err());
        assert!(parse("max_line_bytes: 10\n").is_err());
        for bad in [
            "isolation: {uid_range: {start: 0, count: 10}}\n",
            "isolation: {uid_range: {start: 60000, count: 10000}}\n",
            "isolation: {uid_range: {start: 2147483000, count: 10000}}\n",
            "isolation: {uid_range: {start: 100000, count: 0}}\n",
            "isolation: {uid_range: {start: 100000, count: 5}, insecure_agents_as_worker_user: true}\n",
        ] {
            assert_eq!(
                parse(bad).map(|_| ()).map_err(|e| e.0),
                Err("agent.isolation.uid_range"),
                "{bad}"
            );
        }
        for bad in [
            "isolation: {hide_paths: [relative]}\n",
            "isolation: {hide_paths: [/]}\n",
            "isolation: {hide_paths: [/a/../etc]}\n",
        ] {
            assert_eq!(
                parse(bad).map(|_| ()).map_err(|e| e.0),
                Err("agent.isolation.hide_paths"),
                "{bad}"
            );
        }
        assert!(
            serde_yaml::from_str::<AgentFileConfig>("isolation: {sandbox: firejail}\n").is_err()
        );
        assert!(parse("stderr_line_bytes: 10\n").is_err());
        assert!(parse("stderr_line_bytes: 2048\nstderr_session_bytes: 1024\n").is_err());
        assert!(serde_yaml::from_str::<AgentFileConfig>("isolation: {uid: 3}\n").is_err());
        assert!(serde_yaml::from_str::<AgentFileConfig>("protocol: nope\n").is_err());
        assert!(serde_yaml::from_str::<AgentFileConfig>("limits: {files: 3}\n").is_err());
    }
}
