//! The admin listener (separate from the proxy listener; default 127.0.0.1:9900):
//! - `GET /metrics`: Prometheus text, `component="proxy"`;
//! - `GET /admin/workers`: JSON list of workers: `id`, `address`, `weight`, `healthy`,
//!   `ejected`, `ejected_until` (Unix ms, `null` when not ejected), `draining`, `full`,
//!   `sessions`, `capacity`, `available`, `placeable`, plus the active `config_hash`;
//! - `POST /admin/reload`: reload the config file (see [`crate::reload`]);
//! - `GET /health/live`: 200 while the process runs.
//!
//! An axum server run as a pingora background service on a listener bound before start
//! (so a busy port fails at startup, not later).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};

use crate::metrics::ProxyMetrics;
use crate::reload::Reloader;
use crate::upstream::{Registry, Worker};

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    reloader: Arc<Reloader>,
}

/// The router.
pub fn router(
    registry: Arc<Registry>,
    metrics: Arc<ProxyMetrics>,
    reloader: Arc<Reloader>,
) -> Router {
    Router::new()
        .route(hotplex_common::headers::METRICS_PATH, get(metrics_handler))
        .route("/admin/workers", get(workers_handler))
        .route("/admin/reload", post(reload_handler))
        .route(hotplex_common::headers::HEALTH_LIVE_PATH, get(live))
        .with_state(AdminState {
            registry,
            metrics,
            reloader,
        })
}

async fn reload_handler(State(s): State<AdminState>) -> impl IntoResponse {
    match s.reloader.reload().await {
        Ok(hash) => (
            StatusCode::OK,
            Json(json!({"status": "reloaded", "config_hash": hash})),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "invalid_config", "file": e.file, "key": e.key, "reason": e.reason, "message": e.to_string()}),
            ),
        ),
    }
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            hotplex_common::metrics::TEXT_CONTENT_TYPE,
        )],
        s.metrics.render(&s.registry),
    )
}

async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// The `/admin/workers` document.
pub fn workers_json(registry: &Registry) -> Value {
    let now = Instant::now();
    let wall = SystemTime::now();
    let list: Vec<Value> = registry
        .workers()
        .list
        .iter()
        .map(|w| {
            let s = w.snapshot();
            let ejected_until = s.ejected_until.filter(|t| *t > now).map(|t| {
                (wall + (t - now))
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            });
            json!({
                "id": w.spec.id,
                "address": w.spec.address.to_string(),
                "weight": w.spec.weight,
                "healthy": s.healthy,
                "ejected": ejected_until.is_some(),
                "ejected_until": ejected_until,
                "draining": s.draining,
                "full": s.full,
                "sessions": Worker::sessions_of(&s),
                "capacity": w.capacity_of(&s),
                "available": w.available(now),
                "placeable": w.placeable_of(&s, now),
            })
        })
        .collect();
    json!({ "workers": list, "config_hash": registry.config().hash })
}

async fn workers_handler(State(s): State<AdminState>) -> Json<Value> {
    Json(workers_json(&s.registry))
}

/// Background service serving the admin router.
pub struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    router: Router,
}

impl AdminService {
    /// `listener` must be bound already.
    pub fn new(listener: std::net::TcpListener, router: Router) -> AdminService {
        AdminService {
            listener: Mutex::new(Some(listener)),
            router,
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let std_listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(std_listener) = std_listener else {
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let serve = axum::serve(listener, self.router.clone()).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin server failed");
        }
    }
}
