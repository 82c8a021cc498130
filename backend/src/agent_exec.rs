//! `hotplex-worker agent-exec [--rlimit-* N]... -- PROGRAM ARGS...`: the launcher that
//! applies an agent's resource limits to itself and then execs the agent (same pid, so
//! the worker's process group and kill semantics are unchanged). Safe code only: nix's
//! `setrlimit` and `execvp`, no `pre_exec` hook.

use std::ffi::CString;

use nix::sys::resource::{setrlimit, Resource};

/// The limits and the command to run.
#[derive(Debug, clap::Args)]
pub struct AgentExec {
    /// RLIMIT_AS, bytes.
    #[arg(long)]
    pub rlimit_as: Option<u64>,
    /// RLIMIT_CPU, seconds.
    #[arg(long)]
    pub rlimit_cpu: Option<u64>,
    /// RLIMIT_NPROC, processes of the user id.
    #[arg(long)]
    pub rlimit_nproc: Option<u64>,
    /// RLIMIT_NOFILE, open files.
    #[arg(long)]
    pub rlimit_nofile: Option<u64>,
    /// The agent's argv.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

impl AgentExec {
    /// Sets the limits (soft = hard) and execs; returns only on failure (exit status 126/127).
    pub fn run(&self) -> i32 {
        for (res, val, name) in [
            (Resource::RLIMIT_AS, self.rlimit_as, "RLIMIT_AS"),
            (Resource::RLIMIT_CPU, self.rlimit_cpu, "RLIMIT_CPU"),
            (Resource::RLIMIT_NPROC, self.rlimit_nproc, "RLIMIT_NPROC"),
            (Resource::RLIMIT_NOFILE, self.rlimit_nofile, "RLIMIT_NOFILE"),
        ] {
            if let Some(n) = val {
                if let Err(e) = setrlimit(res, n, n) {
                    eprintln!("hotplex-worker agent-exec: setrlimit {name}={n}: {e}");
                    return 126;
                }
            }
        }
        let args: Result<Vec<CString>, _> = self
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect();
        let Ok(args) = args else {
            eprintln!("hotplex-worker agent-exec: an argument contains a NUL byte");
            return 126;
        };
        let Some(program) = args.first() else {
            eprintln!("hotplex-worker agent-exec: no program");
            return 126;
        };
        let e = match nix::unistd::execvp(program, &args) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        eprintln!(
            "hotplex-worker agent-exec: cannot exec {:?}: {e}",
            self.argv[0]
        );
        127
    }
}
