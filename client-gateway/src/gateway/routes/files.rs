//! `GET /files` (paginated listing), `GET /files/{hash}` (one record with its blocks and
//! live replicas), `DELETE /files/{hash}` (tombstone).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::field::Empty;
use tracing::{Span, instrument};

use crate::client::FileRecord;
use crate::gateway::audit::Audited;
use crate::gateway::error::ApiError;
use crate::gateway::routes::parse_hash;
use crate::gateway::state::AppState;

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
    /// Creation time as RFC 3339 UTC (`2026-11-22T01:23:45Z`).
    pub created: String,
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
            created: rfc3339(r.created_ms),
            replication: r.replication,
            blocks: r.blocks.len(),
            replicas,
        }
    }
}

/// `GET /files`: one page of the listing.
#[instrument(name = "http_list", skip_all)]
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

/// `GET /files/{hash}`: a file's record and its blocks' replicas.
#[instrument(name = "http_file", skip_all, fields(file = Empty))]
pub async fn get(
    State(st): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&hash)?;
    Span::current().record("file", tracing::field::display(id));
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

/// Tombstones a file. Its size is looked up first, for the audit line only: a failed
/// lookup (an unknown or already deleted file) leaves the size out and the delete
/// decides the answer.
#[instrument(name = "http_delete", skip_all, fields(file = Empty))]
pub async fn delete(
    State(st): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_hash(&hash)?;
    Span::current().record("file", tracing::field::display(id));
    let size = st.client.get(id).await.ok().map(|f| f.record.size);
    let deleted = st.client.delete(id).await?;
    let mut resp = Json(json!({ "hash": id.to_string(), "deleted": deleted })).into_response();
    resp.extensions_mut().insert(Audited {
        file: Some(id),
        size,
    });
    Ok(resp)
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_310_625_999), "2026-11-22T01:23:45Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
    }
}
