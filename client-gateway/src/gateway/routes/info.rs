//! `GET /info`: the cluster as the namenode sees it, in richardstore's shape
//! (`service`, `status`, `namenode`) plus kdfs's totals, datanode counts by state, at
//! most `INFO_NODE_LIMIT` datanodes (writable ones first) and every configured namenode
//! with its role (`namenodes`, asked of each at the same time as the cluster's state,
//! also when no leader answers).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::state::AppState;

/// The service name `/info` reports.
pub const SERVICE: &str = "kdfs-gateway";

#[tracing::instrument(name = "http_info", skip_all)]
pub async fn info(State(st): State<AppState>) -> Response {
    let namenode = st.client.namenode_url().to_owned();
    let (cluster, namenodes) = tokio::join!(st.client.cluster_info(), st.client.namenode_roles());
    match cluster {
        Ok(c) => {
            let live = c.live_datanodes();
            let status = if c.safe_mode {
                "safe mode"
            } else if live < c.min_replicas.max(1) as usize {
                "not enough live datanodes"
            } else if c.missing > 0 || c.under_replicated > 0 {
                "degraded"
            } else {
                "ok"
            };
            Json(json!({
                "service": SERVICE,
                "status": status,
                "namenode": namenode,
                "namenodes": namenodes,
                "version": kdfs_core::VERSION,
                "namenode_version": c.version,
                "cluster_id": c.cluster_id,
                "safe_mode": c.safe_mode,
                "reported_fraction": c.reported_fraction,
                "files": c.files,
                "blocks": c.blocks,
                "bytes": c.bytes,
                "under_replicated": c.under_replicated,
                "missing": c.missing,
                "replication": c.replication,
                "min_replicas": c.min_replicas,
                "block_size": c.block_size,
                "live_datanodes": live,
                "datanode_counts": c.datanode_counts,
                "unconfirmed_replicas": c.unconfirmed_replicas,
                "uptime_secs": st.started.elapsed().as_secs(),
                "datanodes": c.datanodes,
            }))
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": e.to_string(),
                "service": SERVICE,
                "status": "namenode unreachable",
                "namenode": namenode,
                "namenodes": namenodes,
                "version": kdfs_core::VERSION,
            })),
        )
            .into_response(),
    }
}
