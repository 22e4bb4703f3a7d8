//! Wire conversions for the `Namenode` service: checked domain values from request
//! fields (ids, bounded strings, block lists) and wire messages from domain answers
//! (records, locations, commands), kept apart so the rpc bodies read as calls.

use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::pb;
use kdfs_proto::{transport, wire};
use tonic::Status;

use super::{MAX_COPY_TARGETS, MAX_FILE_BLOCKS};
use crate::block_keys::BlockKeys;
use crate::cluster::NodeState;
use crate::gc::Deletes;
use crate::meta::FileRecord;
use crate::namesystem::Location;
use crate::namesystem::membership::Outgoing;
use crate::namesystem::reports::FailedCopy;
use crate::namesystem::uploads::CommittedBlock;

pub(super) fn upload_id(raw: &str) -> Result<&str, Status> {
    if raw.len() == 36 && uuid::Uuid::parse_str(raw).is_ok() {
        Ok(raw)
    } else {
        Err(Status::invalid_argument(
            "upload_id: not an upload id this namenode issued",
        ))
    }
}

/// A datanode's location as the wire carries it.
pub(crate) fn wire_location(l: &Location) -> pb::DatanodeLocation {
    pb::DatanodeLocation {
        id: l.id.to_string(),
        address: l.address.clone(),
    }
}

pub(super) fn raw_block(b: &BlockId) -> bytes::Bytes {
    wire::raw(b.as_bytes())
}

pub(crate) fn record(r: &FileRecord) -> pb::FileRecord {
    pb::FileRecord {
        id: wire::raw(r.id.as_bytes()),
        name: r.name.clone(),
        size: r.size,
        content_type: r.content_type.clone(),
        created_ms: r.created_ms,
        replication: r.replication,
        blocks: r
            .blocks
            .iter()
            .map(|(b, len)| pb::BlockEntry {
                id: raw_block(b),
                length: *len,
                ..pb::BlockEntry::default()
            })
            .collect(),
    }
}

/// Commands for datanode `node`; each replication carries its TRANSFER token.
pub(super) fn commands(out: Vec<Outgoing>, keys: &BlockKeys, node: DatanodeId) -> Vec<pb::Command> {
    out.into_iter()
        .map(|c| pb::Command {
            kind: Some(match c {
                Outgoing::Delete(d) => pb::command::Kind::Delete(delete_blocks(&d)),
                Outgoing::Verify(ids) => pb::command::Kind::Verify(pb::VerifyBlocks {
                    block_ids: ids.iter().map(raw_block).collect(),
                }),
                Outgoing::Replicate {
                    block,
                    length,
                    targets,
                } => pb::command::Kind::Replicate(pb::ReplicateBlock {
                    block_id: raw_block(&block),
                    length,
                    targets: targets.iter().map(wire_location).collect(),
                    token: Some(keys.transfer(block, length, node, &targets)),
                }),
            }),
        })
        .collect()
}

pub(super) fn delete_blocks(d: &Deletes) -> pb::DeleteBlocks {
    pb::DeleteBlocks {
        block_ids: d.blocks.iter().map(raw_block).collect(),
        below_generation: d.below,
    }
}

/// A report's reply: its delete command, if it has blocks.
pub(super) fn deletes(d: Option<Deletes>) -> Vec<pb::Command> {
    match d {
        Some(d) if !d.blocks.is_empty() => vec![pb::Command {
            kind: Some(pb::command::Kind::Delete(delete_blocks(&d))),
        }],
        _ => Vec::new(),
    }
}

/// A heartbeat's failed replications, every id checked (a bad one refuses the beat).
pub(super) fn failed_copies(raw: &[pb::FailedCopy]) -> Result<Vec<FailedCopy>, Status> {
    if raw.len() > transport::MAX_FAILED_COPIES {
        return Err(Status::invalid_argument(format!(
            "failed_copies: at most {} per heartbeat",
            transport::MAX_FAILED_COPIES
        )));
    }
    raw.iter()
        .map(|f| {
            if f.targets.len() > MAX_COPY_TARGETS {
                return Err(Status::invalid_argument(format!(
                    "failed_copies.targets: at most {MAX_COPY_TARGETS}"
                )));
            }
            Ok(FailedCopy {
                block: wire::block_id("failed_copies.block_id", &f.block_id)?,
                targets: f
                    .targets
                    .iter()
                    .map(|t| wire::datanode_id("failed_copies.targets", t))
                    .collect::<Result<_, _>>()?,
                whole: f.whole,
            })
        })
        .collect()
}

/// Reported replicas: block id, length, write generation.
pub(super) fn block_entries(
    field: &str,
    raw: &[pb::BlockEntry],
) -> Result<Vec<(BlockId, u64, u64)>, Status> {
    raw.iter()
        .map(|e| Ok((wire::block_id(field, &e.id)?, e.length, e.generation)))
        .collect()
}

/// A commit's blocks, every id checked.
pub(super) fn committed_blocks(raw: &[pb::CommittedBlock]) -> Result<Vec<CommittedBlock>, Status> {
    if raw.len() > MAX_FILE_BLOCKS {
        return Err(Status::invalid_argument("too many blocks"));
    }
    raw.iter()
        .map(|b| {
            Ok(CommittedBlock {
                id: wire::block_id("blocks.id", &b.id)?,
                length: b.length,
                replicas: b
                    .replicas
                    .iter()
                    .map(|d| wire::datanode_id("blocks.replicas", d))
                    .collect::<Result<_, Status>>()?,
            })
        })
        .collect()
}

/// The block list a commit replaces (`CommitFileRequest.replaces`).
pub(super) fn block_list(raw: &pb::BlockList) -> Result<Vec<(BlockId, u64)>, Status> {
    if raw.blocks.len() > MAX_FILE_BLOCKS {
        return Err(Status::invalid_argument("replaces: too many blocks"));
    }
    raw.blocks
        .iter()
        .map(|b| Ok((wire::block_id("replaces.blocks.id", &b.id)?, b.length)))
        .collect()
}

/// A short free-text field: at most `max` bytes, no control characters.
pub(super) fn bounded(s: &str, field: &str, max: usize) -> Result<String, Status> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {max} bytes without control characters"
        )));
    }
    Ok(s.to_owned())
}

/// A node's state on the wire.
pub(super) fn wire_state(state: NodeState) -> pb::DatanodeState {
    match state {
        NodeState::Live => pb::DatanodeState::Live,
        NodeState::Stale => pb::DatanodeState::Stale,
        NodeState::Dead => pb::DatanodeState::Dead,
        NodeState::Decommissioning => pb::DatanodeState::Decommissioning,
        NodeState::Maintenance => pb::DatanodeState::Maintenance,
    }
}
