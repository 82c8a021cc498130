//! Debounced watching of certificate/key files. The parent directories are watched (not
//! the files, [`hotplex_common::dirwatch`]), so replacements by rename (editors, `mv`), and
//! Kubernetes' `..data` symlink swap in Secret/ConfigMap volumes, are seen. Runs on threads
//! of its own: no async runtime needed, so it can be started before pingora's `run_forever`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use hotplex_common::dirwatch::{self, parent_of, DirWatch};

use crate::store::{CertStore, ReloadReport, StoreError};

/// A directory could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {reason}", path.display())]
pub struct WatchError {
    /// Directory.
    pub path: PathBuf,
    /// The reason.
    pub reason: String,
}

/// Keeps watching while alive; dropping it stops the watcher and its thread.
pub struct CertWatcher {
    watcher: Option<DirWatch>,
    stop: Arc<AtomicBool>,
    dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for CertWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertWatcher")
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl CertWatcher {
    /// Directories being watched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for CertWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.watcher.take();
    }
}

/// Call `on_change` (on the watcher thread) once things have been quiet for `debounce`
/// after any change to one of `files` (or a `..`-prefixed entry such as Kubernetes'
/// `..data` in their directories).
pub fn watch_paths<F>(
    files: &[PathBuf],
    debounce: Duration,
    on_change: F,
) -> Result<CertWatcher, WatchError>
where
    F: Fn() + Send + 'static,
{
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut names: HashSet<OsString> = HashSet::new();
    for f in files {
        let canon = std::fs::canonicalize(f).ok();
        for p in std::iter::once(f.clone()).chain(canon) {
            if let Some(n) = p.file_name() {
                names.insert(n.to_os_string());
            }
            let d = parent_of(&p);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    if dirs.is_empty() {
        return Ok(CertWatcher {
            watcher: None,
            stop,
            dirs,
        });
    }
    let (tx, rx) = mpsc::channel::<()>();
    let watcher = dirwatch::watch(
        &dirs,
        "tls-cert-events",
        move |n| names.contains(n) || n.to_string_lossy().starts_with(".."),
        move || {
            let _ = tx.send(());
        },
    )
    .map_err(|e| WatchError {
        reason: e.source.to_string(),
        path: e.path,
    })?;
    let stop2 = stop.clone();
    std::thread::Builder::new()
        .name("tls-cert-watch".into())
        .spawn(move || loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Debounce: wait until no event arrived for `debounce`.
            loop {
                match rx.recv_timeout(debounce) {
                    Ok(()) => continue,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            on_change();
        })
        .map_err(|e| WatchError {
            path: PathBuf::new(),
            reason: format!("cannot spawn watcher thread: {e}"),
        })?;
    tracing::info!(dirs = ?dirs, "watching TLS certificate files");
    Ok(CertWatcher {
        watcher: Some(watcher),
        stop,
        dirs,
    })
}

/// Watch the store's files and call [`CertStore::reload`] on change; `on_result` gets
/// every outcome (map it to metrics: successes, failures). Failures are already logged
/// and counted in [`CertStore::stats`]; the old certificates keep serving. Re-create the
/// watcher after [`CertStore::reload_with`] changes the file list.
pub fn watch_store<F>(
    store: Arc<CertStore>,
    debounce: Duration,
    on_result: F,
) -> Result<CertWatcher, WatchError>
where
    F: Fn(&Result<ReloadReport, StoreError>) + Send + 'static,
{
    let files = store.watched_files();
    watch_paths(&files, debounce, move || {
        let r = store.reload();
        on_result(&r);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{config_with, TestCa};
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn rename_replace_triggers_one_debounced_reload_and_bad_files_are_counted() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tmp");
        let a = ca.leaf(&["a.test"], None);
        let (c, k) = a.write(dir.path(), "a", None);
        let store = CertStore::from_config(&config_with(&[(&[], &c, &k)])).expect("load");
        let oks = Arc::new(AtomicU64::new(0));
        let errs = Arc::new(AtomicU64::new(0));
        let (o2, e2) = (oks.clone(), errs.clone());
        let w = watch_store(store.clone(), Duration::from_millis(200), move |r| {
            match r {
                Ok(_) => o2.fetch_add(1, Ordering::SeqCst),
                Err(_) => e2.fetch_add(1, Ordering::SeqCst),
            };
        })
        .expect("watch");
        assert_eq!(
            w.dirs().len(),
            1 + usize::from(std::fs::canonicalize(dir.path()).expect("c") != dir.path())
        );

        // Editor-style: write new files elsewhere in the dir, rename over the old ones.
        let b = ca.leaf(&["a.test"], None);
        let (tc, tk) = b.write(dir.path(), "tmp-new", None);
        std::fs::rename(&tk, &k).expect("mv key");
        std::fs::rename(&tc, &c).expect("mv cert");
        wait_for("reload", || {
            store.current().select(None).fingerprint == b.fingerprint
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(oks.load(Ordering::SeqCst), 1, "debounced into one reload");

        // A broken write is rejected, counted, and the current cert keeps serving.
        let before = errs.load(Ordering::SeqCst);
        std::fs::write(&k, "garbage").expect("w");
        wait_for("failure", || errs.load(Ordering::SeqCst) > before);
        assert_eq!(store.current().select(None).fingerprint, b.fingerprint);
        assert!(store.stats().failures >= 1);
        drop(w);
    }

    #[cfg(unix)]
    #[test]
    fn kubernetes_style_symlink_swap_triggers_reload() {
        use std::os::unix::fs::symlink;
        let ca = TestCa::new();
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path();
        let v1 = r.join("..v1");
        std::fs::create_dir(&v1).expect("mkdir");
        let a = ca.leaf(&["k.test"], None);
        a.write(&v1, "tls", None);
        symlink("..v1", r.join("..data")).expect("ln");
        symlink("..data/tls.crt", r.join("tls.crt")).expect("ln");
        symlink("..data/tls.key", r.join("tls.key")).expect("ln");
        let (c, k) = (r.join("tls.crt"), r.join("tls.key"));
        let store = CertStore::from_config(&config_with(&[(&[], &c, &k)])).expect("load");
        let _w = watch_store(store.clone(), Duration::from_millis(100), |_| {}).expect("watch");

        let v2 = r.join("..v2");
        std::fs::create_dir(&v2).expect("mkdir");
        let b = ca.leaf(&["k.test"], None);
        b.write(&v2, "tls", None);
        symlink("..v2", r.join("..data_tmp")).expect("ln");
        std::fs::rename(r.join("..data_tmp"), r.join("..data")).expect("swap");
        wait_for("reload", || {
            store.current().select(None).fingerprint == b.fingerprint
        });
    }
}
