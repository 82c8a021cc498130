//! Hot reload of the config file. Three triggers, one path ([`Reloader::reload_from`]):
//! `SIGHUP`, a change of the file's content ([`WatchService`], notify on the parent
//! directory, debounced [`WATCH_DEBOUNCE`], ignored when the content hash is unchanged) and
//! `POST /admin/reload` on the admin listener.
//!
//! The file is parsed and validated like at startup; on any error the running config stays
//! and the error (file, key path, reason) is logged, returned and counted
//! (`hotplex_config_reloads_total{result="failure"}`). On success the new config is swapped
//! in atomically (`ArcSwap`): workers, routing (key order, secrets), timeouts, ejection and
//! health thresholds apply to the next request or probe; state of workers whose id and
//! address are unchanged (health, fill, ejection) is kept. Pinned sessions keep their
//! worker across reloads by construction (the worker id is in the signed id).
//!
//! A reload never switches protection off silently: see [`crate::config::downgrade`]
//! (refused unless the new file says `allow_security_downgrade: true`); every reload's
//! audit line lists the security-relevant changes.
//!
//! Not reloadable (pingora cannot add listeners or change its runtime after start,
//! issue 690): `listen`, `admin.listen`, `threads`, `work_stealing`, `buffers`,
//! `upstream.keepalive_pool_size` and the probe `health_check.interval`, and the `upgrade:`
//! section. A reload that changes them is
//! rejected: do a graceful upgrade (`--upgrade`, see the README) instead.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, ConfigError, RuntimeConfig};
use crate::metrics::ProxyMetrics;
use crate::signals::Early;
use crate::upstream::Registry;

/// Debounce of file-change events.
pub const WATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(500);

/// A component with reloadable state (certificates, auth keys, rate limits...).
/// `check` runs on the validated new config before anything changes (an error rejects the
/// reload); `apply` runs right after the swap.
pub trait ReloadHook: Send + Sync {
    fn check(&self, old: &RuntimeConfig, new: &RuntimeConfig) -> Result<(), ConfigError>;
    fn apply(&self, new: &RuntimeConfig);
}

/// Reloads the running config from its file.
pub struct Reloader {
    path: Option<PathBuf>,
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    lock: tokio::sync::Mutex<()>,
    hooks: std::sync::RwLock<Vec<Arc<dyn ReloadHook>>>,
    /// Content hash of the last file read by a reload (the watcher skips it).
    last_attempt: std::sync::Mutex<String>,
    /// Security-relevant changes of the last successful reload (for its audit line).
    last_diff: std::sync::Mutex<String>,
}

fn unchanged<T: PartialEq + std::fmt::Debug>(
    file: &str,
    key: &str,
    old: T,
    new: T,
) -> Result<(), ConfigError> {
    if old == new {
        Ok(())
    } else {
        Err(ConfigError::new(
            file,
            key,
            format!("cannot change from {old:?} to {new:?} without a restart"),
        ))
    }
}

/// Checks the keys a reload cannot change.
pub fn check_reloadable(old: &RuntimeConfig, new: &RuntimeConfig) -> Result<(), ConfigError> {
    let f = new.source.as_str();
    unchanged(f, "listen", old.listen, new.listen)?;
    unchanged(f, "admin.listen", old.admin_listen, new.admin_listen)?;
    unchanged(f, "threads", old.threads, new.threads)?;
    unchanged(f, "work_stealing", old.work_stealing, new.work_stealing)?;
    unchanged(f, "buffers", old.buffers, new.buffers)?;
    unchanged(
        f,
        "upstream.keepalive_pool_size",
        old.keepalive_pool_size,
        new.keepalive_pool_size,
    )?;
    unchanged(
        f,
        "health_check.interval",
        old.health.interval,
        new.health.interval,
    )?;
    unchanged(f, "upgrade.sock", &old.upgrade_sock, &new.upgrade_sock)?;
    unchanged(f, "audit", &old.audit_sink, &new.audit_sink)?;
    unchanged(
        f,
        "upgrade.grace_period",
        old.upgrade_grace,
        new.upgrade_grace,
    )?;
    unchanged(
        f,
        "upgrade.shutdown_timeout",
        old.shutdown_timeout,
        new.shutdown_timeout,
    )
}

impl Reloader {
    /// `path`: the `--config` file (`None`: embedded default, nothing to reload).
    pub fn new(
        path: Option<PathBuf>,
        registry: Arc<Registry>,
        metrics: Arc<ProxyMetrics>,
    ) -> Reloader {
        Reloader {
            path,
            registry,
            metrics,
            lock: tokio::sync::Mutex::new(()),
            hooks: std::sync::RwLock::new(Vec::new()),
            last_attempt: std::sync::Mutex::new(String::new()),
            last_diff: std::sync::Mutex::new(String::new()),
        }
    }

    /// Registers a hook run on every reload.
    pub fn add_hook(&self, hook: Arc<dyn ReloadHook>) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// The config file (`None`: embedded default).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Reloads (admin API); returns the new config hash.
    pub async fn reload(&self) -> Result<String, ConfigError> {
        self.reload_by("admin", None).await
    }

    /// Reloads; `trigger` (`sighup`, `watch`, `admin`) is only logged.
    pub async fn reload_from(&self, trigger: &str) -> Result<String, ConfigError> {
        self.reload_by(trigger, None).await
    }

    /// Reloads; `trigger` and the requester's address `ip` (admin API) go into the log and
    /// the audit line.
    pub async fn reload_by(
        &self,
        trigger: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Result<String, ConfigError> {
        let _one_at_a_time = self.lock.lock().await;
        let result = self.try_reload();
        match &result {
            Ok(hash) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.config_loaded(hash);
                self.metrics.forget_workers();
                self.metrics.refresh_worker_gauges(&self.registry);
                tracing::info!(hash = %hash, trigger, "config reloaded");
                let diff =
                    std::mem::take(&mut *self.last_diff.lock().unwrap_or_else(|p| p.into_inner()));
                let detail = if diff.is_empty() {
                    format!("hash={hash}")
                } else {
                    format!("hash={hash}; security: {diff}")
                };
                crate::audit::record(
                    crate::audit::Actor { name: trigger, ip },
                    "config.reload",
                    "success",
                    &detail,
                );
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(error = %e, trigger, "config reload failed; keeping the running config");
                crate::audit::record(
                    crate::audit::Actor { name: trigger, ip },
                    "config.reload",
                    "failure",
                    &e.to_string(),
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<String, ConfigError> {
        let Some(path) = self.path.as_ref() else {
            return Err(ConfigError::new(
                config::EMBEDDED_NAME,
                ".",
                "running the embedded default: start with --config FILE to reload",
            ));
        };
        if let Ok(bytes) = std::fs::read(path) {
            *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = content_hash(&bytes);
        }
        let mut new = config::load(path)?;
        check_reloadable(&self.registry.config(), &new)?;
        config::downgrade::check(&self.registry.config(), &new)?;
        let security_diff = config::downgrade::diff(&self.registry.config(), &new);
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        for h in &hooks {
            h.check(&self.registry.config(), &new)?;
        }
        // Last check: swaps the certificates on success (rejects the reload if they are bad).
        crate::tls::on_config_reload(&self.registry.config(), &new)?;
        let hash = new.hash.clone();
        if !security_diff.is_empty() {
            tracing::warn!(hash = %hash, changes = %security_diff, "reload changes security settings");
        }
        *self.last_diff.lock().unwrap_or_else(|p| p.into_inner()) = security_diff;
        for w in &new.secret_warnings {
            tracing::warn!(config = %new.source, "{w}");
        }
        // The http pools' live state (health, ejection, in flight) of unchanged upstreams
        // carries over; the table swaps with the rest of the config.
        if let Some(t) = std::sync::Arc::get_mut(&mut new.routes) {
            t.adopt(&self.registry.config().routes);
        }
        self.registry.set_config(new);
        let active = self.registry.config();
        for h in &hooks {
            h.apply(&active);
        }
        Ok(hash)
    }
}

/// Background service reloading on `SIGHUP`.
pub struct SighupService {
    /// The reloader SIGHUP drives.
    pub reloader: Arc<Reloader>,
    /// The signals recorded since before the services started (a SIGHUP before this
    /// service made its stream is taken from here).
    pub early: Early,
}

#[async_trait]
impl BackgroundService for SighupService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                return;
            }
        };
        // The stream first, then the flag: a SIGHUP since the proxy started is not lost (one
        // right between the two may reload twice, which changes nothing).
        let mut pending = self.early.take_hup();
        loop {
            if std::mem::take(&mut pending) {
                tracing::info!("SIGHUP: reloading the config");
                let _ = self.reloader.reload_from("sighup").await;
            }
            tokio::select! {
                _ = hup.recv() => {
                    // This delivery covers the flag the same signal set.
                    self.early.take_hup();
                    pending = true;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// First 16 hex characters of the SHA-256 of `bytes` (the config hash).
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// A Kubernetes ConfigMap/Secret volume update: the kubelet's atomic writer swaps the
/// `..data` symlink (the config file itself, a symlink through it, sees no event).
fn kubernetes_swap(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with("..data"))
}

/// Background service reloading when the config file's content changes (watching the
/// parent directory, [`hotplex_common::dirwatch`], so editors that replace the file by
/// rename are seen too, and so are Kubernetes ConfigMap updates, see [`kubernetes_swap`]).
pub struct WatchService(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for WatchService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(path) = self.0.path().map(|p| p.to_path_buf()) else {
            return;
        };
        let file_name = path.file_name().map(|n| n.to_os_string());
        let dir = hotplex_common::dirwatch::parent_of(&path);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let _watch = match hotplex_common::dirwatch::watch(
            std::slice::from_ref(&dir),
            "config-file-events",
            move |n| Some(n) == file_name.as_deref() || kubernetes_swap(n),
            move || {
                let _ = tx.send(());
            },
        ) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the config directory");
                return;
            }
        };
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    // Debounce: wait for quiet, swallowing the burst.
                    loop {
                        match tokio::time::timeout(WATCH_DEBOUNCE, rx.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    let Ok(bytes) = std::fs::read(&path) else { continue };
                    let h = content_hash(&bytes);
                    let last = self.0.last_attempt.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if h == self.0.registry.config().hash || h == last {
                        continue;
                    }
                    tracing::info!(file = %path.display(), "config file changed: reloading");
                    let _ = self.0.reload_from("watch").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_changes_are_not_reloadable() {
        let a =
            config::parse("a", "workers:\n  - id: w1\n    address: 127.0.0.1:1\n").expect("valid");
        let b = config::parse(
            "b",
            "listen: 127.0.0.1:7000\nworkers:\n  - id: w1\n    address: 127.0.0.1:1\n",
        )
        .expect("valid");
        let c = config::parse(
            "c",
            "workers:\n  - id: w1\n    address: 127.0.0.1:1\n  - id: w2\n    address: 127.0.0.1:2\n",
        )
        .expect("valid");
        assert_eq!(check_reloadable(&a, &b).expect_err("listen").key, "listen");
        assert!(check_reloadable(&a, &c).is_ok());
        let d = config::parse(
            "d",
            "buffers:\n  read: 4096\nworkers:\n  - id: w1\n    address: 127.0.0.1:1\n",
        )
        .expect("valid");
        let e = check_reloadable(&a, &d).expect_err("buffers");
        assert_eq!(e.key, "buffers");
        assert!(e.to_string().contains("without a restart"), "{e}");
    }
}
