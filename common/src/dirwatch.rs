//! Watching directories for changes to some of their entries (the proxy's config file, the
//! TLS certificates), on a thread of its own.
//!
//! The directories are watched, not the files, so that replacements by rename (editors,
//! `mv`) and Kubernetes' `..data` symlink swap in ConfigMap/Secret volumes are seen. The
//! inotify mask is narrow ([`CHANGE_MASK`]): an entry closed after writing, created, moved in
//! or out, deleted, or its attributes changed. Not every `write(2)`: with the `notify` crate
//! used before (it always asks for `IN_MODIFY`), each line another process appended to a file
//! in a watched directory woke the watcher thread: an access log beside the config cost a
//! wake-up and two `read(2)` per proxied request (`benches/syscall_count.sh`). A config or a
//! certificate is written and then closed, or renamed into place: both are in the mask.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use inotify::{Inotify, WatchMask};

/// The changes watched: closed after writing, created, moved in, moved out, deleted,
/// attributes changed (`chmod`, `touch`).
pub const CHANGE_MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::CREATE)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB);

/// How often the watcher thread checks whether its [`DirWatch`] was dropped, in ms.
const STOP_CHECK_MS: u16 = 1000;
/// Room for the events of one `read(2)` (each: 16 bytes + the name, padded).
const EVENT_BUFFER: usize = 4096;

/// A directory that could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", path.display())]
pub struct WatchError {
    /// The directory (empty when inotify itself could not be set up).
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Watching while alive; dropping it stops the thread (within a second).
#[derive(Debug)]
pub struct DirWatch {
    stop: Arc<AtomicBool>,
    wakeups: Arc<AtomicU64>,
}

impl DirWatch {
    /// How many times the watcher thread woke up to read events, relevant or not.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Watches `dirs` on a thread named `thread`; `on_change` runs on that thread after each
/// `read(2)` of events of which one names an entry for which `relevant` is true.
pub fn watch<R, F>(
    dirs: &[PathBuf],
    thread: &str,
    relevant: R,
    mut on_change: F,
) -> Result<DirWatch, WatchError>
where
    R: Fn(&OsStr) -> bool + Send + 'static,
    F: FnMut() + Send + 'static,
{
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WatchError { path, source }
    };
    let mut inotify = Inotify::init().map_err(fail(Path::new("")))?;
    for d in dirs {
        inotify.watches().add(d, CHANGE_MASK).map_err(fail(d))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let wakeups = Arc::new(AtomicU64::new(0));
    let woke = wakeups.clone();
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let mut buf = vec![0u8; EVENT_BUFFER];
            while !stopped.load(Ordering::SeqCst) {
                let mut fds = [nix::poll::PollFd::new(
                    inotify.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, STOP_CHECK_MS) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "directory watch stopped");
                        return;
                    }
                }
                woke.fetch_add(1, Ordering::Relaxed);
                let hit = match inotify.read_events(&mut buf) {
                    Ok(mut events) => events.any(|e| e.name.is_some_and(&relevant)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                    Err(e) => {
                        tracing::error!(error = %e, "directory watch stopped");
                        return;
                    }
                };
                if hit && !stopped.load(Ordering::SeqCst) {
                    on_change();
                }
            }
        })
        .map_err(fail(Path::new("")))?;
    Ok(DirWatch { stop, wakeups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);
    const QUIET: Duration = Duration::from_millis(300);

    #[test]
    fn appends_wake_nobody_but_close_rename_and_swap_are_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().to_path_buf();
        let (tx, rx) = mpsc::channel();
        let w = watch(
            std::slice::from_ref(&d),
            "test-watch",
            |n| n == "conf.yaml" || n.to_string_lossy().starts_with(".."),
            move || {
                let _ = tx.send(());
            },
        )
        .expect("watch");

        // Lines appended to an open file in the directory (an access log): not even a
        // wake-up of the watcher thread (its creation is one).
        let mut log = std::fs::File::create(d.join("access.log")).expect("log");
        let t = std::time::Instant::now();
        while w.wakeups() == 0 {
            assert!(
                t.elapsed() < WAIT,
                "the creation of access.log wakes the watcher"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(QUIET);
        let woken = w.wakeups();
        for _ in 0..100 {
            log.write_all(b"{\"line\":1}\n").expect("write");
            log.flush().expect("flush");
        }
        std::thread::sleep(QUIET);
        assert_eq!(w.wakeups(), woken, "appends to an open file wake nobody");
        // Another file written and closed: not relevant.
        std::fs::write(d.join("other.yaml"), "x").expect("write");
        assert!(
            rx.recv_timeout(QUIET).is_err(),
            "no change of conf.yaml yet"
        );

        // Written and closed in place.
        std::fs::write(d.join("conf.yaml"), "a: 1\n").expect("write");
        rx.recv_timeout(WAIT).expect("close-write seen");
        while rx.recv_timeout(QUIET).is_ok() {}

        // Renamed into place (an editor, `mv`).
        std::fs::write(d.join("tmp"), "a: 2\n").expect("write");
        std::fs::rename(d.join("tmp"), d.join("conf.yaml")).expect("mv");
        rx.recv_timeout(WAIT).expect("rename seen");
        while rx.recv_timeout(QUIET).is_ok() {}

        // A Kubernetes-style `..data` symlink swap.
        std::os::unix::fs::symlink("v2", d.join("..data_tmp")).expect("ln");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
        rx.recv_timeout(WAIT).expect("symlink swap seen");
        while rx.recv_timeout(QUIET).is_ok() {}

        // Dropped: the thread stops, later changes call nothing.
        drop(w);
        std::thread::sleep(Duration::from_millis(u64::from(STOP_CHECK_MS) + 200));
        std::fs::write(d.join("conf.yaml"), "a: 3\n").expect("write");
        assert!(rx.recv_timeout(QUIET).is_err(), "stopped");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("nope");
        let e = watch(
            std::slice::from_ref(&missing),
            "test-watch",
            |_| true,
            || {},
        )
        .expect_err("missing");
        assert_eq!(e.path, missing);
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
