//! Readers of `/proc` for the resource checks (fds, memory, threads, children). They fail
//! loudly: a process that cannot be read (exited, reaped, never existed) panics with the
//! reason instead of reading as "0 fds", which would pass every "back to baseline" check.

use std::time::Duration;

/// Open file descriptors of a process; panics when `/proc/<pid>/fd` cannot be read.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot read the fds of process {pid} (gone?): {e}"))
        .count()
}

/// `/proc/<pid>/status` of a live (not zombie) process; panics otherwise.
fn status(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status (gone?): {e}"));
    let state = status_field(&status, pid, "State:");
    assert!(
        !state.starts_with('Z') && !state.starts_with('X'),
        "process {pid} is dead ({state})"
    );
    status
}

/// The first word of the `name` line of a `/proc/<pid>/status` text; panics when absent.
fn status_field<'a>(status: &'a str, pid: u32, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

fn status_kb(status: &str, pid: u32, name: &str) -> u64 {
    let v = status_field(status, pid, name);
    v.parse()
        .unwrap_or_else(|e| panic!("{name} {v:?} of process {pid}: {e}"))
}

/// (open fds, VmRSS kB, threads) of a live process, from /proc; panics when unreadable.
pub fn proc_stats(pid: u32) -> (usize, u64, u64) {
    let fds = fd_count(pid);
    let status = status(pid);
    (
        fds,
        status_kb(&status, pid, "VmRSS:"),
        status_kb(&status, pid, "Threads:"),
    )
}

/// `RssAnon` (kB) of a live process: its heap and stacks, without mapped files.
pub fn rss_anon(pid: u32) -> u64 {
    status_kb(&status(pid), pid, "RssAnon:")
}

/// Waits (bounded) until the fd count of `pid` is at most `limit`; returns the last count.
pub async fn settle_fds(pid: u32, limit: usize, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let fds = fd_count(pid);
        if fds <= limit || tokio::time::Instant::now() >= deadline {
            return fds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a process exists and is not a zombie (for processes the test did not spawn,
/// e.g. a worker's agents; children of the test use `ChildGuard::assert_alive`).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Children of `pid` (by the ppid field of `/proc/*/stat`), with their state.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = vec![];
    let dir = std::fs::read_dir("/proc").expect("read /proc");
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A process that exited since the listing is not a child any more.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or_default().to_string();
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push((child, state));
        }
    }
    out.sort();
    out
}
