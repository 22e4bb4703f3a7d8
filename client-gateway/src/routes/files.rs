//! `GET /files` (paginated listing), `GET /files/{hash}` (one record with its blocks and
//! live replicas), `DELETE /files/{hash}` (tombstone).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::FileRecord;
use crate::http::{ApiError, AppState};
use crate::routes::parse_hash;

/// Page size when `limit` is not given, and the largest one accepted.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    q: Option<String>,
}

/// One file in a listing.
#[derive(Debug, Serialize)]
pub struct FileJson {
    pub hash: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub created_ms: i64,
    pub replication: u32,
    pub blocks: usize,
    /// Fewest live replicas over the file's blocks.
    pub replicas: u32,
}

impl FileJson {
    fn new(r: &FileRecord, replicas: u32) -> Self {
        Self {
            hash: r.id.to_string(),
            name: r.name.clone(),
            size: r.size,
            content_type: r.content_type.clone(),
            created_ms: r.created_ms,
            replication: r.replication,
            blocks: r.blocks.len(),
            replicas,
        }
    }
}

pub async fn list(
    State(st): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be a number from 1 to {MAX_PAGE}"
                )));
            }
        },
    };
    let after = q.after.unwrap_or_default();
    let name = q.q.unwrap_or_default();
    if after.len() > 1024 || name.len() > 1024 {
        return Err(ApiError::bad_request("after and q are at most 1024 bytes"));
    }
    let page = st.client.list(limit, &after, &name).await?;
    let files: Vec<FileJson> = page
        .files
        .iter()
        .map(|s| FileJson::new(&s.record, s.min_live_replicas))
        .collect();
    Ok(Json(json!({ "files": files, "next": page.next })))
}

pub async fn get(
    State(st): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&hash)?;
    let info = st.client.get(id).await?;
    let min_live = info
        .blocks
        .iter()
        .map(|b| b.replicas.len() as u32)
        .min()
        .unwrap_or(info.record.replication);
    let blocks: Vec<Value> = info
        .blocks
        .iter()
        .map(|b| {
            json!({
                "id": b.id.to_string(),
                "offset": b.offset,
                "length": b.length,
                "replicas": b.replicas.iter().map(|l| json!({
                    "id": l.id.to_string(),
                    "address": l.address,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut v = serde_json::to_value(FileJson::new(&info.record, min_live))
        .expect("plain struct serializes");
    v["state"] = json!("live");
    v["blocks"] = json!(blocks);
    Ok(Json(v))
}

pub async fn delete(
    State(st): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&hash)?;
    let deleted = st.client.delete(id).await?;
    Ok(Json(json!({ "hash": id.to_string(), "deleted": deleted })))
}
