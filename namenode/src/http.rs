//! The namenode's small HTTP side: `/healthz` (the process is up), `/readyz` (the
//! gRPC service is serving; the body says whether safe mode is on) and `/metrics`
//! (Prometheus text).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::namesystem::NameSystem;

/// The process-wide Prometheus recorder. Installed once; several namenodes in one
/// test process share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another component of the same process may have installed its recorder
        // first; then our metrics go there and this handle renders only ours.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn router(ns: Arc<NameSystem>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ns)
}

async fn readyz(State(ns): State<Arc<NameSystem>>) -> (StatusCode, String) {
    let mode = if ns.in_safe_mode() {
        "safe mode"
    } else {
        "serving"
    };
    (StatusCode::OK, format!("ready ({mode})\n"))
}

async fn metrics_text(State(ns): State<Arc<NameSystem>>) -> String {
    let handle = prometheus();
    let _ = tokio::task::spawn_blocking(move || ns.export_metrics()).await;
    handle.render()
}
