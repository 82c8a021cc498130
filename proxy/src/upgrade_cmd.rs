//! `hotplex-proxy upgrade --pid PID [--config FILE]`: the whole binary upgrade in one
//! command, for an operator or a systemd `ExecReload=` (whose children stay in the unit):
//! starts `<this binary> --config FILE --upgrade` (detached, same environment, so the same
//! `upgrade.sock` and `NOTIFY_SOCKET`), waits until it listens on the upgrade socket, sends
//! SIGQUIT to `PID`, and waits until the new process has taken the listeners (it removes
//! the socket) while still running. Exit 0 then; 1 otherwise (the old process, if it got
//! SIGQUIT, exits 3 without a handover and systemd restarts it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::handover::RECEIVE_WAIT;

/// Runs the upgrade; `Err` is the message to print.
pub fn run(config: Option<&Path>, pid: i32) -> Result<u32, String> {
    let cfg = match config {
        Some(p) => crate::config::load(p),
        None => crate::config::embedded_default(),
    }
    .map_err(|e| format!("invalid config: {e}"))?;
    let sock: PathBuf = cfg
        .upgrade_sock
        .clone()
        .ok_or("graceful upgrade is disabled: no upgrade.sock and no private runtime directory")?;
    crate::upgrade_sock::check(&sock, crate::upgrade_sock::euid())?;
    // A stale socket would look like the new process's.
    let _ = std::fs::remove_file(&sock);
    let old = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(old, None).map_err(|e| format!("process {pid}: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    let mut cmd = Command::new(exe);
    if let Some(p) = config {
        cmd.arg("--config").arg(p);
    }
    let mut child = cmd
        .arg("--upgrade")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the new process: {e}"))?;
    let new_pid = child.id();
    let alive = |child: &mut std::process::Child| matches!(child.try_wait(), Ok(None));
    let wait_for = |child: &mut std::process::Child, cond: &dyn Fn() -> bool, what: &str| {
        let deadline = Instant::now() + RECEIVE_WAIT;
        loop {
            if cond() {
                return Ok(());
            }
            if !alive(child) {
                return Err(format!("the new process {new_pid} exited ({what})"));
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out ({what})"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(
        &mut child,
        &|| sock.exists(),
        "waiting for its upgrade socket",
    )?;
    nix::sys::signal::kill(old, nix::sys::signal::Signal::SIGQUIT)
        .map_err(|e| format!("SIGQUIT to {pid}: {e}"))?;
    wait_for(&mut child, &|| !sock.exists(), "waiting for the handover")?;
    // Taken: it removed the socket and still runs (a failed receive exits at once).
    std::thread::sleep(Duration::from_millis(200));
    if !alive(&mut child) {
        return Err(format!(
            "the new process {new_pid} exited after the handover"
        ));
    }
    Ok(new_pid)
}
