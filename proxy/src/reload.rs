//! Hot reload of the config file: `SIGHUP` or `POST /admin/reload` on the admin listener.
//!
//! The file is parsed and validated like at startup; on any error the running config stays
//! and the error (file, key path, reason) is logged, returned and counted
//! (`hotplex_config_reloads_total{result="failure"}`). On success the new config is swapped
//! in atomically (`ArcSwap`): workers, routing (key order, secrets), timeouts, ejection and
//! health thresholds apply to the next request or probe; state of workers whose id and
//! address are unchanged (health, fill, ejection) is kept. Pinned sessions keep their
//! worker across reloads by construction (the worker id is in the signed id).
//!
//! Not reloadable (pingora cannot add listeners or change its runtime after start,
//! issue 690): `listen`, `admin.listen`, `threads`, `upstream.keepalive_pool_size` and the
//! probe `health_check.interval`. A reload that changes them is rejected: restart instead.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, ConfigError, RuntimeConfig};
use crate::metrics::ProxyMetrics;
use crate::upstream::Registry;

/// Reloads the running config from its file.
pub struct Reloader {
    path: Option<PathBuf>,
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    lock: tokio::sync::Mutex<()>,
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
        }
    }

    /// Reloads; returns the new config hash.
    pub async fn reload(&self) -> Result<String, ConfigError> {
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
                tracing::info!(hash = %hash, "config reloaded");
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(error = %e, "config reload failed; keeping the running config");
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
        let new = config::load(path)?;
        check_reloadable(&self.registry.config(), &new)?;
        let hash = new.hash.clone();
        self.registry.set_config(new);
        Ok(hash)
    }
}

/// Background service reloading on `SIGHUP`.
pub struct SighupService(pub Arc<Reloader>);

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
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.0.reload().await;
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
    }
}
