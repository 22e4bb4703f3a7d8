//! `POST /datanodes/{id}/decommission`: an operator decommissions a datanode for good
//! (its blocks are copied to full replication elsewhere; it may stop once the answer
//! says `drained`, which polling the same request shows). `DELETE` on the same path
//! cancels it; a datanode that registers again (restarts) is live again too. Guarded
//! by the bearer token and audited like deletes.

use axum::Json;
use axum::extract::{Path, State};
use kdfs_core::DatanodeId;

use crate::client::Decommission;
use crate::gateway::error::ApiError;
use crate::gateway::state::AppState;

/// The datanode id of a `/datanodes/{id}/...` path, if it parses (for the audit line).
pub fn named(path: &str) -> Option<DatanodeId> {
    let rest = path.strip_prefix("/datanodes/")?;
    let (id, _) = rest.split_once('/')?;
    DatanodeId::parse(id).ok()
}

fn parse(raw: &str) -> Result<DatanodeId, ApiError> {
    DatanodeId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid datanode id: {e}")))
}

pub async fn decommission(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Decommission>, ApiError> {
    let id = parse(&id)?;
    Ok(Json(st.client.decommission(id, false).await?))
}

pub async fn recommission(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Decommission>, ApiError> {
    let id = parse(&id)?;
    Ok(Json(st.client.decommission(id, true).await?))
}
