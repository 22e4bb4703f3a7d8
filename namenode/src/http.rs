//! The namenode's small HTTP side: `/healthz` (the process is up), `/readyz` (the
//! gRPC service is serving; the body says whether safe mode is on; with HA, 200 only
//! while a member that is caught up) and `/metrics`
//! (Prometheus text, with the seconds until its certificates expire when mTLS is on).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::namesystem::NameSystem;

/// What `/readyz` and `/metrics` ask of the namenode: a single one's namesystem, or
/// an HA member (`crate::ha`).
pub trait Health: Send + Sync + 'static {
    /// `/readyz`'s status and body.
    fn ready(&self) -> (StatusCode, String);
    /// Sets the gauges `/metrics` renders (may scan the block map: called off the
    /// runtime's workers).
    fn export_metrics(&self);
}

impl Health for NameSystem {
    fn ready(&self) -> (StatusCode, String) {
        let mode = if self.in_safe_mode() {
            "safe mode"
        } else {
            "serving"
        };
        (StatusCode::OK, format!("ready ({mode})\n"))
    }

    fn export_metrics(&self) {
        NameSystem::export_metrics(self);
    }
}

/// What the endpoints read.
#[derive(Clone)]
struct HttpState {
    ns: Arc<dyn Health>,
    /// The mTLS configuration in force, for its expiry gauge.
    tls: Option<Arc<kdfs_proto::tls::Tls>>,
}

/// The process-wide Prometheus recorder, shared with every other component of the
/// process (see [`kdfs_core::telemetry::prometheus`]).
pub fn prometheus() -> &'static PrometheusHandle {
    kdfs_core::telemetry::prometheus()
}

/// The routes, served on `--http`.
pub fn router(ns: Arc<dyn Health>, tls: Option<Arc<kdfs_proto::tls::Tls>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState { ns, tls })
}

#[tracing::instrument(level = "debug", skip_all)]
async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    s.ns.ready()
}

#[tracing::instrument(level = "debug", skip_all)]
async fn metrics_text(State(s): State<HttpState>) -> String {
    let handle = prometheus();
    let ns = s.ns.clone();
    let _ = tokio::task::spawn_blocking(move || ns.export_metrics()).await;
    let mut text = handle.render();
    if let Some(tls) = &s.tls {
        text.push_str(&kdfs_proto::tls::expiry::metrics_text(
            &[("mtls", tls.as_ref())],
            std::time::SystemTime::now(),
        ));
    }
    text
}
