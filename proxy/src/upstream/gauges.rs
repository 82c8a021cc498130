//! The per-worker gauges of [`ProxyMetrics`], refreshed from the live [`Registry`]: they
//! live here, on upstream's side, so that `metrics` does not import `upstream`.

use std::time::Instant;

use super::{Registry, Worker};
use crate::metrics::{ProxyMetrics, UPSTREAM_ERROR_KINDS};

impl ProxyMetrics {
    /// Sets the per-worker gauges from the registry.
    pub fn refresh_worker_gauges(&self, reg: &Registry) {
        let now = Instant::now();
        for w in reg.workers().live() {
            let s = w.snapshot();
            let id = w.spec.id.as_str();
            let up = s.healthy && s.ejected_until.is_none_or(|t| t <= now) && w.identity_ok_of(&s);
            self.worker_sessions
                .with_label_values(&[id])
                .set(Worker::sessions_of(&s) as i64);
            self.worker_capacity
                .with_label_values(&[id])
                .set(w.capacity_of(&s) as i64);
            self.worker_healthy
                .with_label_values(&[id])
                .set(i64::from(up));
            self.worker_draining
                .with_label_values(&[id])
                .set(i64::from(w.draining_of(&s)));
            // Per-worker counters exist at 0 from the start, so dashboards and
            // `increase()` see them before the first event.
            self.worker_ejections.with_label_values(&[id]);
            self.sessions_placed.with_label_values(&[id]);
            self.sessions_replaced.with_label_values(&[id]);
            self.upstream_duration.with_label_values(&[id]);
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[id, kind]);
            }
        }
    }

    /// Renders the text exposition (refreshing worker gauges first).
    pub fn render(&self, reg: &Registry) -> String {
        // Reset first: workers whose removal grace ended lose their series.
        self.forget_workers();
        self.refresh_worker_gauges(reg);
        hotplex_common::metrics::render(&self.registry)
    }
}
