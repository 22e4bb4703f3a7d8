//! The datanode's HTTP endpoints: `/healthz` (the process is up), `/readyz` (the store is
//! open and the datanode is registered with the namenode) and `/metrics` (Prometheus,
//! with the seconds until its certificates expire when mTLS is on).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::link::Link;
use crate::metrics;
use crate::scanner::ScannerStats;
use crate::service::Node;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub node: Arc<Node>,
    pub link: Arc<Link>,
    pub scanner: Arc<ScannerStats>,
    /// The mTLS configuration in force, for its expiry gauge.
    pub tls: Option<Arc<kdfs_proto::tls::Tls>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

#[tracing::instrument(name = "GET /readyz", level = "debug", skip_all)]
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.link.is_registered() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with the namenode\n",
        )
    }
}

#[tracing::instrument(name = "GET /metrics", level = "debug", skip_all)]
async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    let mut body = metrics::render(
        &s.node.store,
        &s.scanner,
        &s.node.metrics,
        s.link.is_registered(),
    );
    if let Some(tls) = &s.tls {
        body.push_str(&kdfs_proto::tls::expiry::metrics_text(
            &[("mtls", tls.as_ref())],
            std::time::SystemTime::now(),
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
