//! The client's metadata calls to the namenode (a file's record and locations, listing,
//! delete, the cluster's state, reporting a bad replica): thin unary calls whose replies
//! become the checked types of [`super::model`].

use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_proto::namenodes::Retry;
use kdfs_proto::pb;
use kdfs_proto::wire::{self, Location};

use super::Client;
use super::model::{
    ClusterInfo, DatanodeCounts, DatanodeInfo, Decommission, FileInfo, FileRecord, FileSummary,
    Listing, LocatedBlock,
};
use super::rpc::bad_reply;
use crate::error::{Error, Result};

/// Datanodes `/info` lists, at most (the counts cover every one).
pub const INFO_NODE_LIMIT: u32 = 500;

impl Client {
    /// A file's record, blocks and live replica locations.
    pub async fn get(&self, id: FileId) -> Result<FileInfo> {
        let resp = self
            .namenode_call(
                "GetFile",
                Retry::Idempotent,
                pb::GetFileRequest {
                    file_id: wire::raw(id.as_bytes()),
                },
                |mut c, r| async move { c.get_file(r).await },
            )
            .await
            .map_err(not_found_as(id))?;
        if resp.state == pb::FileState::Deleted as i32 {
            return Err(Error::Deleted(id));
        }
        let record = resp
            .file
            .as_ref()
            .ok_or_else(|| bad_reply("GetFile without a file record"))
            .and_then(FileRecord::try_from)?;
        let blocks = resp
            .blocks
            .iter()
            .map(LocatedBlock::try_from)
            .collect::<Result<Vec<_>>>()?;
        let info = FileInfo { record, blocks };
        info.check()?;
        Ok(info)
    }

    /// One page of files, newest first.
    pub async fn list(&self, limit: u32, after: &str, name_contains: &str) -> Result<Listing> {
        let resp = self
            .namenode_call(
                "ListFiles",
                Retry::Idempotent,
                pb::ListFilesRequest {
                    limit,
                    after: after.to_owned(),
                    name_contains: name_contains.to_owned(),
                },
                |mut c, r| async move { c.list_files(r).await },
            )
            .await?;
        let files = resp
            .files
            .iter()
            .map(|s| {
                let record = s
                    .file
                    .as_ref()
                    .ok_or_else(|| bad_reply("ListFiles entry without a record"))
                    .and_then(FileRecord::try_from)?;
                Ok(FileSummary {
                    record,
                    min_live_replicas: s.min_live_replicas,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Listing {
            files,
            next: (!resp.next.is_empty()).then_some(resp.next),
        })
    }

    /// Tombstones a file; `Ok(false)` if it was already deleted. A file a key or a
    /// multipart part of the bucket/key namespace refers to is not deleted:
    /// [`Error::InUse`], naming the bucket and key.
    pub async fn delete(&self, id: FileId) -> Result<bool> {
        let resp = self
            .namenode_call(
                "DeleteFile",
                Retry::Idempotent,
                pb::DeleteFileRequest {
                    file_id: wire::raw(id.as_bytes()),
                },
                |mut c, r| async move { c.delete_file(r).await },
            )
            .await
            .map_err(not_found_as(id))
            .map_err(|e| match e {
                Error::Rpc { status, .. } if status.code() == tonic::Code::FailedPrecondition => {
                    Error::InUse(status.message().to_owned())
                }
                e => e,
            })?;
        Ok(resp.deleted)
    }

    /// Decommissions a datanode for good (its blocks are copied away; it may stop once
    /// drained), or with `cancel` makes it live again.
    pub async fn decommission(&self, id: DatanodeId, cancel: bool) -> Result<Decommission> {
        let r = self
            .namenode_call(
                "DecommissionDatanode",
                Retry::Idempotent,
                pb::DecommissionDatanodeRequest {
                    datanode_id: id.to_string(),
                    cancel,
                },
                |mut c, r| async move { c.decommission_datanode(r).await },
            )
            .await?;
        Ok(Decommission {
            datanode: id.to_string(),
            state: datanode_state(r.state),
            blocks_left: r.blocks_left,
            drained: r.blocks_left == 0,
        })
    }

    /// The cluster's state, as `/info` shows it: node counts, and at most
    /// [`INFO_NODE_LIMIT`] nodes listed.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let r = self
            .namenode_call(
                "ClusterInfo",
                Retry::Idempotent,
                pb::ClusterInfoRequest {
                    node_limit: INFO_NODE_LIMIT,
                },
                |mut c, r| async move { c.cluster_info(r).await },
            )
            .await?;
        let listed_live = r
            .datanodes
            .iter()
            .filter(|d| d.state == pb::DatanodeState::Live as i32)
            .count();
        let counts = DatanodeCounts {
            live: r.live_datanodes as usize,
            registering: r.registering_datanodes as usize,
            stale: r.stale_datanodes as usize,
            dead: r.dead_datanodes as usize,
            decommissioning: r.decommissioning_datanodes as usize,
            maintenance: r.maintenance_datanodes as usize,
        };
        // A namenode from before the counts sends none: count its (full) list.
        let counts = if counts == DatanodeCounts::default() && !r.datanodes.is_empty() {
            DatanodeCounts {
                live: listed_live,
                ..counts
            }
        } else {
            counts
        };
        Ok(ClusterInfo {
            cluster_id: r.cluster_id,
            version: r.version,
            safe_mode: r.safe_mode,
            reported_fraction: r.reported_fraction,
            files: r.files,
            blocks: r.blocks,
            bytes: r.bytes,
            under_replicated: r.under_replicated,
            missing: r.missing,
            replication: r.replication,
            min_replicas: r.min_replicas,
            block_size: r.block_size,
            unconfirmed_replicas: r.unconfirmed_replicas,
            datanode_counts: counts,
            datanodes: r
                .datanodes
                .into_iter()
                .map(|d| DatanodeInfo {
                    state: datanode_state(d.state),
                    id: d.id,
                    address: d.address,
                    zone: d.zone,
                    capacity: d.capacity,
                    used: d.used,
                    available: d.available,
                    blocks: d.blocks,
                    in_flight: d.in_flight,
                    last_heartbeat_secs: d.since_heartbeat_ms as f64 / 1000.0,
                    version: d.version,
                })
                .collect(),
        })
    }

    /// Tells the namenode a replica failed verification (best effort, logged on failure).
    pub(crate) fn report_bad_replica(&self, block: BlockId, node: &Location, reason: String) {
        let client = self.clone();
        let req = pb::ReportBadReplicaRequest {
            block_id: wire::raw(block.as_bytes()),
            datanode_id: node.id.to_string(),
            reason,
        };
        let node = node.id;
        metrics::counter!("kdfs_gateway_bad_replicas_reported_total").increment(1);
        tokio::spawn(async move {
            let reported = client
                .namenode_call(
                    "ReportBadReplica",
                    Retry::Idempotent,
                    req,
                    |mut c, r| async move { c.report_bad_replica(r).await },
                )
                .await;
            if let Err(e) = reported {
                tracing::warn!(block = %block, node = %node, error = %e, "reporting a bad replica failed");
            }
        });
    }
}

fn datanode_state(s: i32) -> &'static str {
    match pb::DatanodeState::try_from(s) {
        Ok(pb::DatanodeState::Live) => "live",
        Ok(pb::DatanodeState::Stale) => "stale",
        Ok(pb::DatanodeState::Dead) => "dead",
        Ok(pb::DatanodeState::Decommissioning) => "decommissioning",
        Ok(pb::DatanodeState::Maintenance) => "maintenance",
        _ => "unknown",
    }
}

/// Turns the namenode's NOT_FOUND for `id` into [`Error::NotFound`]; other errors pass.
fn not_found_as(id: FileId) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Rpc { status, .. } if status.code() == tonic::Code::NotFound => Error::NotFound(id),
        e => e,
    }
}
