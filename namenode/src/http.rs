//! The namenode's small HTTP side: `/healthz` (the process is up), `/readyz` (the
//! gRPC service is serving; the body says whether safe mode is on) and `/metrics`
//! (Prometheus text).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::namesystem::NameSystem;

/// The process-wide Prometheus recorder, shared with every other component of the
/// process (see [`kdfs_core::telemetry::prometheus`]).
pub fn prometheus() -> &'static PrometheusHandle {
    kdfs_core::telemetry::prometheus()
}

/// The routes, served on `--http`.
pub fn router(ns: Arc<NameSystem>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ns)
}

#[tracing::instrument(level = "debug", skip_all)]
async fn readyz(State(ns): State<Arc<NameSystem>>) -> (StatusCode, String) {
    let mode = if ns.in_safe_mode() {
        "safe mode"
    } else {
        "serving"
    };
    (StatusCode::OK, format!("ready ({mode})\n"))
}

#[tracing::instrument(level = "debug", skip_all)]
async fn metrics_text(State(ns): State<Arc<NameSystem>>) -> String {
    let handle = prometheus();
    let _ = tokio::task::spawn_blocking(move || ns.export_metrics()).await;
    handle.render()
}
