//! `GET /healthz` (the process serves), `GET /readyz` (the namenode answers and enough
//! datanodes are live to accept a write), `GET /metrics` (Prometheus text, with the
//! seconds until the gateway's certificates expire).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::error::ApiError;
use crate::gateway::state::AppState;

/// Readiness gives the namenode this long to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[tracing::instrument(name = "http_healthz", level = "debug", skip_all)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[tracing::instrument(name = "http_readyz", level = "debug", skip_all)]
pub async fn readyz(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let unavailable = |m: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m);
    let info = tokio::time::timeout(READY_TIMEOUT, st.client.cluster_info())
        .await
        .map_err(|_| unavailable("namenode did not answer in time".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let live = info.live_datanodes();
    let needed = info.min_replicas.max(1) as usize;
    if live < needed {
        return Err(unavailable(format!(
            "not enough live datanodes: {live} live, {needed} needed"
        )));
    }
    Ok(Json(json!({ "status": "ready", "live_datanodes": live })))
}

#[tracing::instrument(name = "http_metrics", level = "debug", skip_all)]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let tls: Vec<_> = st.tls.iter().map(|(u, t)| (*u, t.as_ref())).collect();
    text.push_str(&kdfs_proto::tls::expiry::metrics_text(
        &tls,
        std::time::SystemTime::now(),
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
