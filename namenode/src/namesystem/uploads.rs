//! Uploads: a lease per upload, a pipeline per block, and the commit that makes the
//! file visible (one file, or a batch of small files under one lease). A commit is
//! durable before it returns, and no delete of its blocks goes out while it is in
//! progress ([`CommitGuard`]). Its pipeline acks are trusted as they are: a delete
//! of the same content, wherever it is, cannot remove a replica written after its
//! upload began (`crate::gc`, write generations), so a re-upload is never refused
//! because of a delete.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_proto::transport::MAX_BATCH_FILES;
use tracing::info;

use super::{Location, MAX_CONTENT_TYPE_LEN, MAX_NAME_LEN, NameSystem, location, lock};
use crate::blockmap::{IdBuild, NodeIdx};
use crate::error::{Error, Result};
use crate::file_ids::{check_content_id, check_split};
use crate::meta::{Effect, FileRecord, Lease, Op};
use crate::placement;

/// Datanodes to exclude per allocation request, at most.
pub const MAX_EXCLUDE: usize = 64;

/// One file of a batch commit ([`NameSystem::commit_files`]).
#[derive(Debug, Clone)]
pub struct FileToCommit {
    pub name: String,
    /// Empty means `application/octet-stream`.
    pub content_type: String,
    pub id: FileId,
    /// Bytes; the sum of the block lengths.
    pub size: u64,
    pub blocks: Vec<CommittedBlock>,
    /// Stored for the bucket/key namespace only (CommitFile's `object_content`).
    pub object_content: bool,
}

/// A block acknowledged by an upload's pipeline.
#[derive(Debug, Clone)]
pub struct CommittedBlock {
    pub id: BlockId,
    pub length: u64,
    pub replicas: Vec<DatanodeId>,
}

impl NameSystem {
    /// Opens an upload lease.
    pub async fn begin_upload(
        &self,
        name: &str,
        content_type: &str,
        replication: u32,
    ) -> Result<Lease> {
        check_name(name)?;
        check_content_type(content_type)?;
        let replication = match replication {
            0 => self.settings.replication,
            r if r > 16 => {
                return Err(Error::InvalidArgument(format!(
                    "replication {r} is more than the largest supported, 16"
                )));
            }
            r => r,
        };
        let now = self.clock.now_ms();
        let lease = Lease {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            name: name.to_owned(),
            content_type: content_type_or_default(content_type.to_owned()),
            replication,
            begin_ms: now,
            expires_ms: now + self.settings.lease_ttl.as_millis() as u64,
        };
        lock(&self.leases).insert(lease.id.clone(), lease.clone());
        // The in-memory lease is authoritative while this process lives; the row only
        // lets an upload survive a namenode restart. So it is not waited for: it is
        // written by the next group commit, before the upload's own commit (queue
        // order), and a create costs one fsync wait instead of two.
        if let Err(e) = self.writer.enqueue(Op::PutLease(lease.clone())).await {
            lock(&self.leases).remove(&lease.id);
            return Err(e);
        }
        Ok(lease)
    }

    /// Extends a lease; returns it.
    pub fn renew(&self, upload_id: &str) -> Result<Lease> {
        let now = self.clock.now_ms();
        let mut leases = lock(&self.leases);
        let l = leases
            .get_mut(upload_id)
            .filter(|l| l.expires_ms > now)
            .ok_or_else(|| unknown_upload(upload_id))?;
        l.expires_ms = now + self.settings.lease_ttl.as_millis() as u64;
        Ok(l.clone())
    }

    /// A pipeline for the next block of an upload, of nodes with room for
    /// `max_length` bytes (0, or more than a block: a whole block).
    pub fn allocate(
        &self,
        upload_id: &str,
        exclude: &[DatanodeId],
        replicas: u32,
        max_length: u64,
    ) -> Result<Vec<Location>> {
        let lease = self.renew(upload_id)?;
        if exclude.len() > MAX_EXCLUDE {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_EXCLUDE} datanodes may be excluded"
            )));
        }
        let wanted = match replicas {
            0 => lease.replication,
            r => r.min(lease.replication),
        } as usize;
        let mut cluster = self.cluster();
        let request = placement::Request {
            wanted,
            min: (self.settings.min_replicas.min(lease.replication) as usize).min(wanted),
            room: match max_length {
                0 => self.settings.block_size,
                n => n.min(self.settings.block_size),
            },
            exclude: exclude.iter().filter_map(|d| cluster.index_of(d)).collect(),
        };
        let candidates = cluster.candidates(&lock(&self.shared.usage));
        let pipeline = placement::choose_pipeline(&candidates, &request)?;
        let mut out = Vec::with_capacity(pipeline.len());
        for idx in pipeline {
            if let Some(n) = cluster.node_mut(idx) {
                n.allocated += 1;
                out.push(location(n));
            }
        }
        metrics::counter!("kdfs_namenode_blocks_allocated_total").increment(1);
        Ok(out)
    }

    /// Makes an upload's file visible (durable before it returns). A live record of
    /// the same id with other blocks fails it with [`Error::Conflict`] and leaves the
    /// lease open (see [`NameSystem::commit_replacing`]). The tests' shorthand.
    #[cfg(test)]
    pub async fn commit(
        &self,
        upload_id: &str,
        file_id: FileId,
        size: u64,
        blocks: Vec<CommittedBlock>,
    ) -> Result<(FileRecord, bool)> {
        self.commit_replacing(upload_id, file_id, size, blocks, None, false)
            .await
    }

    /// As [`NameSystem::commit`]; with `replaces`, a live record of the same id whose
    /// blocks are still exactly `replaces` is replaced, in the same transaction
    /// (compare-and-swap): the caller read those blocks and proved that their bytes do
    /// not hash to the id, while its own blocks do (issue 24 finding 3,
    /// docs/security.md). The old record's blocks lose its references and go to the
    /// garbage collector if nothing else holds them.
    pub async fn commit_replacing(
        &self,
        upload_id: &str,
        file_id: FileId,
        size: u64,
        blocks: Vec<CommittedBlock>,
        replaces: Option<Vec<(BlockId, u64)>>,
        object_content: bool,
    ) -> Result<(FileRecord, bool)> {
        let lease = self.open_lease(upload_id)?;
        // Until the commit is durable no delete of these blocks goes out (they are not
        // referenced yet, so GC would still think them garbage). Not needed for
        // safety (a delete could not touch this upload's replicas), it spares the
        // datanodes deletes they would refuse.
        let _committing = CommitGuard::new(&self.committing, blocks.iter().map(|b| b.id));
        let op = self.commit_op(
            &lease,
            FileToCommit {
                name: lease.name.clone(),
                content_type: lease.content_type.clone(),
                id: file_id,
                size,
                blocks,
                object_content,
            },
            replaces,
        )?;
        let effect = self.writer.submit(op).await?;
        lock(&self.leases).remove(upload_id);
        if let Effect::Replaced { record, old } = &effect {
            info!(
                target: AUDIT_TARGET,
                action = "replace",
                file = %record.id,
                upload = upload_id,
                old_size = old.size,
                old_blocks = old.blocks.len(),
                size = record.size,
                blocks = record.blocks.len(),
                result = "ok",
                "a record whose blocks do not hash to its id was replaced"
            );
            metrics::counter!("kdfs_namenode_records_replaced_total").increment(1);
        }
        committed(effect)
    }

    /// Commits a batch of files written under one lease, each checked and committed
    /// as [`NameSystem::commit`] commits one, with its own name and content type and
    /// the lease's replication. The commits go to the metadata writer together (one
    /// group commit) and are durable before it returns; one file's failure leaves the
    /// others alone. One result per file, in order. Fails as a whole, committing
    /// nothing and leaving the lease open, for more than [`MAX_BATCH_FILES`] files, an
    /// unknown or expired lease, or a metadata writer failure. The lease ends with it.
    pub async fn commit_files(
        &self,
        upload_id: &str,
        files: Vec<FileToCommit>,
    ) -> Result<Vec<Result<(FileRecord, bool)>>> {
        if files.len() > MAX_BATCH_FILES {
            return Err(Error::InvalidArgument(format!(
                "{} files, at most {MAX_BATCH_FILES} in one batch",
                files.len()
            )));
        }
        let lease = self.open_lease(upload_id)?;
        // As in `commit`: no delete of the batch's blocks goes out until it is durable.
        let _committing = CommitGuard::new(
            &self.committing,
            files.iter().flat_map(|f| f.blocks.iter().map(|b| b.id)),
        );
        // Per file, the error that refused it, or `None` for a commit submitted.
        let mut refused = Vec::with_capacity(files.len());
        let mut ops = Vec::with_capacity(files.len());
        for f in files {
            match self.commit_op(&lease, f, None) {
                Ok(op) => {
                    ops.push(op);
                    refused.push(None);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let effects = if ops.is_empty() {
            Vec::new()
        } else {
            // One group commit: either every op of it is durable or none is. A file
            // that met a record of other blocks (a conflict) fails alone.
            self.writer
                .submit_all(ops)
                .await?
                .into_iter()
                .map(|e| match e {
                    Err(c @ Error::Conflict(_)) => Ok(Err(c)),
                    e => e.and_then(committed).map(Ok),
                })
                .collect::<Result<Vec<_>>>()?
        };
        // A commit ends the lease row; with nothing committed (every file refused or
        // in conflict, which leaves it) it is ended on its own.
        if !effects.iter().any(Result::is_ok) {
            self.writer
                .submit(Op::EndLease(upload_id.to_owned()))
                .await?;
        }
        lock(&self.leases).remove(upload_id);
        let mut effects = effects.into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => effects.next().expect("an effect per op submitted"),
            })
            .collect())
    }

    /// An upload's lease, if it is open.
    fn open_lease(&self, upload_id: &str) -> Result<Lease> {
        let now = self.clock.now_ms();
        lock(&self.leases)
            .get(upload_id)
            .filter(|l| l.expires_ms > now)
            .cloned()
            .ok_or_else(|| unknown_upload(upload_id))
    }

    /// A file's commit under `lease`, checked: name and content type, block lengths
    /// against the block size and the file's size, enough trusted acks per block. The
    /// caller holds a [`CommitGuard`] on its blocks.
    fn commit_op(
        &self,
        lease: &Lease,
        file: FileToCommit,
        replaces: Option<Vec<(BlockId, u64)>>,
    ) -> Result<Op> {
        check_name(&file.name)?;
        check_content_type(&file.content_type)?;
        let FileToCommit {
            name,
            content_type,
            id,
            size,
            blocks,
            object_content,
        } = file;
        let mut total: u64 = 0;
        for (i, b) in blocks.iter().enumerate() {
            if b.length > self.settings.block_size {
                return Err(Error::InvalidArgument(format!(
                    "block {i} is {} bytes, more than the block size {}",
                    b.length, self.settings.block_size
                )));
            }
            total = total
                .checked_add(b.length)
                .ok_or_else(|| Error::InvalidArgument("block lengths overflow".into()))?;
        }
        if total != size {
            return Err(Error::InvalidArgument(format!(
                "size {size} is not the sum of the block lengths {total}"
            )));
        }
        let entries: Vec<(BlockId, u64)> = blocks.iter().map(|b| (b.id, b.length)).collect();
        check_content_id(&id, &entries)?;
        check_split(&entries, self.settings.block_size)?;
        let need = self.settings.min_replicas.min(lease.replication) as usize;
        let acks = self.live_acks(&blocks, need)?;
        let record = FileRecord {
            id,
            name,
            size,
            content_type: content_type_or_default(content_type),
            created_ms: self.clock.now_ms() as i64,
            replication: lease.replication,
            blocks: entries,
        };
        Ok(Op::Commit {
            record,
            replaces,
            replicas: acks,
            upload_id: lease.id.clone(),
            object_content,
        })
    }

    /// The pipeline acks that count (live, known nodes), checked against `need`
    /// together with the confirmed replicas already known (a report alone, from a node
    /// the pipeline did not name, is not enough: it could be forged).
    fn live_acks(&self, blocks: &[CommittedBlock], need: usize) -> Result<Vec<Vec<NodeIdx>>> {
        let cluster = self.cluster();
        let mut out = Vec::with_capacity(blocks.len());
        for (i, b) in blocks.iter().enumerate() {
            let mut known: HashSet<NodeIdx> = HashSet::new();
            if let Some(info) = self.shared.blocks.get(&b.id) {
                known.extend(info.locs.iter().copied());
            }
            let mut acks = Vec::new();
            for d in &b.replicas {
                let Some(idx) = cluster.live_index(d) else {
                    continue;
                };
                acks.push(idx);
                known.insert(idx);
            }
            if known.len() < need {
                return Err(Error::FailedPrecondition(format!(
                    "block {i} ({}) has {} confirmed replicas, {need} needed",
                    b.id,
                    known.len(),
                )));
            }
            out.push(acks);
        }
        Ok(out)
    }

    /// Gives up an upload: its lease ends now; its blocks become orphans.
    pub async fn abandon(&self, upload_id: &str) -> Result<()> {
        if lock(&self.leases).remove(upload_id).is_none() {
            return Err(unknown_upload(upload_id));
        }
        self.writer
            .submit(Op::EndLease(upload_id.to_owned()))
            .await?;
        Ok(())
    }

    /// Oldest open upload's start, for the garbage collector.
    pub(super) fn oldest_lease_begin(&self) -> Option<u64> {
        lock(&self.leases).values().map(|l| l.begin_ms).min()
    }

    pub fn lease_count(&self) -> usize {
        lock(&self.leases).len()
    }
}

/// Marks blocks as being committed for as long as it lives.
struct CommitGuard<'a> {
    set: &'a Mutex<HashMap<BlockId, u32, IdBuild>>,
    ids: Vec<BlockId>,
}

impl<'a> CommitGuard<'a> {
    fn new(
        set: &'a Mutex<HashMap<BlockId, u32, IdBuild>>,
        ids: impl IntoIterator<Item = BlockId>,
    ) -> Self {
        let ids: Vec<BlockId> = ids.into_iter().collect();
        let mut m = lock(set);
        for id in &ids {
            *m.entry(*id).or_default() += 1;
        }
        Self { set, ids }
    }
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        let mut m = lock(self.set);
        for id in &self.ids {
            if let Some(n) = m.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(id);
                }
            }
        }
    }
}

fn unknown_upload(id: &str) -> Error {
    Error::FailedPrecondition(format!(
        "upload {id:?} is unknown or its lease expired: begin the upload again"
    ))
}

/// A file name: at most [`MAX_NAME_LEN`] bytes, no control characters.
fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "name is {} bytes, at most {MAX_NAME_LEN} allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "name contains control characters".into(),
        ));
    }
    Ok(())
}

fn check_content_type(ct: &str) -> Result<()> {
    if ct.len() > MAX_CONTENT_TYPE_LEN || ct.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(
            "content_type must be at most 255 bytes without control characters".into(),
        ));
    }
    Ok(())
}

/// A content type as stored: none given means `application/octet-stream`.
fn content_type_or_default(ct: String) -> String {
    if ct.is_empty() {
        "application/octet-stream".into()
    } else {
        ct
    }
}

/// A commit's answer from its durable effect.
fn committed(effect: Effect) -> Result<(FileRecord, bool)> {
    match effect {
        Effect::Committed { record, existed } => Ok((record, existed)),
        Effect::Replaced { record, .. } => Ok((record, false)),
        other => Err(Error::Corrupt(format!(
            "unexpected commit effect {other:?}"
        ))),
    }
}

#[cfg(test)]
#[path = "uploads_tests.rs"]
mod tests;
