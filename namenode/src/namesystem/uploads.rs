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
mod tests {
    use std::time::Duration;

    use super::super::test_fixtures::*;
    use super::{CommittedBlock, FileToCommit};
    use crate::Error;
    use crate::cluster::{Load, Registration};

    /// Placement sees a commit's bytes before the next heartbeat: a node the estimate
    /// says is full gets no pipeline, one with room for a smaller block still does.
    #[tokio::test(start_paused = true)]
    async fn placement_counts_committed_bytes_before_the_next_heartbeat() {
        let mut sim = Sim::new(&[]).with_nodes(2);
        let small = Load {
            capacity: 100,
            available: 100,
            ..Load::default()
        };
        let tiny = sim.register_as(Registration {
            address: "127.0.0.1:1002".into(),
            load: small,
            ..Registration::default()
        });
        sim.tick();
        let lease = sim.ns.begin_upload("next", "", 0).await.unwrap();
        let pick = |room: u64| {
            let p = sim.ns.allocate(&lease.id, &[sim.nodes[0]], 0, room);
            p.map(|p| p.iter().map(|l| l.id).collect::<Vec<_>>())
        };
        assert!(pick(50).unwrap().contains(&tiny));

        sim.upload(&[7; 80], &[0, 2]).await;
        assert!(
            matches!(pick(50), Err(Error::ResourceExhausted(_))),
            "20 bytes left on the small node: {:?}",
            pick(50)
        );
        assert!(pick(20).unwrap().contains(&tiny), "a block that fits");
        // Its heartbeat says the room is back (say the replica was deleted).
        sim.ns.heartbeat(&tiny, small).unwrap();
        assert!(pick(50).unwrap().contains(&tiny));
    }

    /// A squatted id is refused by a single commit and by one file of a batch, and
    /// nothing is written for it; the content's real upload then makes the record.
    #[tokio::test(start_paused = true)]
    async fn a_commit_claiming_another_contents_id_is_refused() {
        let sim = Sim::new(&[]).with_nodes(2);
        sim.tick();
        let on = vec![sim.nodes[0], sim.nodes[1]];
        let mine = |len| CommittedBlock {
            id: block(b"attacker"),
            length: len,
            replicas: on.clone(),
        };
        let lease = sim.ns.begin_upload("squat", "", 0).await.unwrap();
        let e = sim
            .ns
            .commit(&lease.id, file(b"victim"), 8, vec![mine(8)])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("not its only block's id")),
            "{e:?}"
        );
        let e = sim
            .ns
            .commit(&lease.id, file(b"victim"), 0, vec![])
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(sim.ns.lease_count(), 1, "the lease stays open");

        let mut squat = sim.batched("squat", "", b"attacker", &[0, 1]);
        squat.id = file(b"victim");
        let files = vec![squat, sim.batched("honest", "", b"honest", &[0, 1])];
        let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
        assert!(
            matches!(&results[0], Err(Error::InvalidArgument(m)) if m.contains("not its only block's id")),
            "{:?}",
            results[0]
        );
        assert!(results[1].is_ok(), "{:?}", results[1]);
        assert!(matches!(
            sim.ns.get_file(&file(b"victim")).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(sim.ns.store_counts().unwrap(), (1, 0));

        sim.upload(b"victim", &[0, 1]).await;
        assert_eq!(
            sim.record(b"victim").await.blocks,
            vec![(block(b"victim"), 6)]
        );
    }

    /// A file of several blocks committed under another content's id (which the
    /// namenode cannot check) is a conflict for the content's real upload, not
    /// `existed`; that upload replaces it only by naming its blocks exactly
    /// (compare-and-swap), and the squatter's blocks lose their references.
    #[tokio::test(start_paused = true)]
    async fn a_record_of_other_blocks_is_a_conflict_and_replaced_only_by_name() {
        let sim = Sim::new(&["--block-size", "8B"]).with_nodes(2);
        sim.tick();
        let blocks = |parts: &[&[u8]]| -> Vec<CommittedBlock> {
            parts
                .iter()
                .map(|c| CommittedBlock {
                    id: block(c),
                    length: c.len() as u64,
                    replicas: vec![sim.nodes[0], sim.nodes[1]],
                })
                .collect()
        };
        let entries = |b: &[CommittedBlock]| b.iter().map(|b| (b.id, b.length)).collect::<Vec<_>>();
        let victim = file(b"victim's fifteen");
        let squat = blocks(&[b"squatter", b"!"]);
        let lease = sim.ns.begin_upload("squat", "", 0).await.unwrap();
        sim.ns
            .commit(&lease.id, victim, 9, squat.clone())
            .await
            .unwrap();

        let real = blocks(&[b"victim's", b" fifteen"]);
        let lease = sim.ns.begin_upload("victim", "", 0).await.unwrap();
        let conflict = |e: Error| match e {
            Error::Conflict(r) => r.blocks,
            e => panic!("a conflict: {e:?}"),
        };
        let e = sim
            .ns
            .commit(&lease.id, victim, 16, real.clone())
            .await
            .unwrap_err();
        assert_eq!(
            conflict(e),
            entries(&squat),
            "the conflict names the record's blocks"
        );
        assert_eq!(sim.ns.lease_count(), 1, "the lease stays open");
        // Naming other blocks than the record's replaces nothing.
        let e = sim
            .ns
            .commit_replacing(
                &lease.id,
                victim,
                16,
                real.clone(),
                Some(entries(&real)),
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(conflict(e), entries(&squat));
        let (rec, existed) = sim
            .ns
            .commit_replacing(
                &lease.id,
                victim,
                16,
                real.clone(),
                Some(entries(&squat)),
                false,
            )
            .await
            .unwrap();
        assert!(!existed);
        assert_eq!((rec.size, rec.blocks.clone()), (16, entries(&real)));
        assert_eq!(sim.record(b"victim's fifteen").await.blocks, entries(&real));
        assert_eq!(sim.ns.lease_count(), 0);
        assert_eq!(sim.ns.store_counts().unwrap(), (1, 0));
        assert_eq!(sim.ns.status().files, 1);
        assert!(
            sim.ns.blocks().get(&block(b"squatter")).is_none(),
            "released"
        );
        assert_eq!(sim.ns.blocks().get(&block(b"victim's")).unwrap().refs, 1);
        // The same blocks again are `existed`, as before.
        let lease = sim.ns.begin_upload("again", "", 0).await.unwrap();
        let (_, existed) = sim.ns.commit(&lease.id, victim, 16, real).await.unwrap();
        assert!(existed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_commits_every_file_durably_and_ends_its_lease() {
        // Blocks of 8 bytes, so that a file of two is short.
        let sim = Sim::new(&["--block-size", "8B"]).with_nodes(3);
        sim.tick();
        let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
        let two_blocks = FileToCommit {
            name: "two.bin".into(),
            content_type: "application/x-two".into(),
            id: file(b"one two two"),
            size: 11,
            blocks: [&b"one two "[..], b"two"]
                .iter()
                .map(|c| CommittedBlock {
                    id: block(c),
                    length: c.len() as u64,
                    replicas: vec![sim.nodes[1], sim.nodes[2]],
                })
                .collect(),
            object_content: false,
        };
        let files = vec![
            sim.batched("a.txt", "text/plain", b"alpha", &[0, 1]),
            sim.batched("b", "", b"bravo!", &[1, 2]),
            two_blocks,
        ];
        let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
        assert_eq!(results.len(), 3);
        for r in &results {
            let (rec, existed) = r.as_ref().unwrap();
            assert!(!existed, "{rec:?}");
            assert_eq!(rec.replication, 2, "the lease's replication");
        }
        assert_eq!(sim.ns.lease_count(), 0);
        assert_eq!(sim.ns.store_counts().unwrap(), (3, 0));
        assert_eq!(sim.ns.status().files, 3);

        let a = sim.record(b"alpha").await;
        assert_eq!(
            (a.name.as_str(), a.content_type.as_str(), a.size),
            ("a.txt", "text/plain", 5)
        );
        assert_eq!(a.blocks, vec![(block(b"alpha"), 5)]);
        let b = sim.record(b"bravo!").await;
        assert_eq!(
            (b.name.as_str(), b.content_type.as_str(), b.size),
            ("b", "application/octet-stream", 6)
        );
        let two = sim.record(b"one two two").await;
        assert_eq!((two.name.as_str(), two.size), ("two.bin", 11));
        assert_eq!(
            two.blocks,
            vec![(block(b"one two "), 8), (block(b"two"), 3)]
        );
        // The pipeline acks are located at once, as for a single commit.
        let mut on = sim.locations(b"alpha").await;
        on.sort();
        let mut want = vec![sim.nodes[0], sim.nodes[1]];
        want.sort();
        assert_eq!(on, want);

        // The lease ended with the call.
        let again = sim
            .ns
            .commit_files(&lease.id, vec![sim.batched("c", "", b"charlie", &[0, 1])])
            .await
            .unwrap_err();
        assert!(matches!(again, Error::FailedPrecondition(_)), "{again:?}");
        assert_eq!(sim.ns.store_counts().unwrap(), (3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_fails_in_a_batch_fails_alone() {
        let sim = Sim::new(&[]).with_nodes(2);
        sim.tick();
        let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
        let mut wrong_size = sim.batched("wrong-size", "", b"wrong size", &[0, 1]);
        wrong_size.size += 1;
        let files = vec![
            sim.batched("first", "", b"first", &[0, 1]),
            wrong_size,
            sim.batched("one-replica", "", b"one replica", &[0]),
            sim.batched("bad\nname", "", b"bad name", &[0, 1]),
            sim.batched("bad-type", "text/\u{7}", b"bad type", &[0, 1]),
            sim.batched("last", "", b"last", &[1, 0]),
        ];
        let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
        assert_eq!(results.len(), 6);
        assert_eq!(results[0].as_ref().unwrap().0.name, "first");
        assert!(
            matches!(&results[1], Err(Error::InvalidArgument(m)) if m.contains("sum of the block lengths")),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(&results[2], Err(Error::FailedPrecondition(m)) if m.contains("1 confirmed replicas, 2 needed")),
            "{:?}",
            results[2]
        );
        assert!(matches!(&results[3], Err(Error::InvalidArgument(_))));
        assert!(matches!(&results[4], Err(Error::InvalidArgument(_))));
        assert_eq!(results[5].as_ref().unwrap().0.name, "last");
        assert_eq!(sim.ns.store_counts().unwrap(), (2, 0));
        for failed in [&b"wrong size"[..], b"one replica", b"bad name", b"bad type"] {
            assert!(matches!(
                sim.ns.get_file(&file(failed)).await,
                Err(Error::NotFound(_))
            ));
        }
        assert_eq!(sim.ns.lease_count(), 0);

        // A batch whose every file fails ends its lease all the same.
        let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
        let results = sim
            .ns
            .commit_files(&lease.id, vec![sim.batched("x", "", b"x", &[0])])
            .await
            .unwrap();
        assert!(matches!(results[0], Err(Error::FailedPrecondition(_))));
        assert_eq!(sim.ns.lease_count(), 0);
        assert_eq!(sim.ns.store_counts().unwrap(), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_content_twice_in_a_batch_is_committed_once() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"earlier", &[0, 1]).await;
        let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
        let files = vec![
            sim.batched("copy 1", "", b"twice", &[0, 1]),
            sim.batched("copy 2", "", b"twice", &[1, 2]),
            sim.batched("again", "", b"earlier", &[2, 1]),
        ];
        let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
        let (first, first_existed) = results[0].as_ref().unwrap();
        let (second, second_existed) = results[1].as_ref().unwrap();
        assert!(!first_existed);
        assert!(second_existed, "the second finds the first");
        assert_eq!(first, second, "both answer with the first record");
        assert_eq!(second.name, "copy 1");
        let (earlier, existed) = results[2].as_ref().unwrap();
        assert!(existed);
        assert_eq!(earlier.name, "f");
        assert_eq!(sim.ns.store_counts().unwrap(), (2, 0));
        assert_eq!(sim.ns.status().files, 2);
        // Every ack counts, as for commits of existing content one by one.
        assert_eq!(sim.locations(b"twice").await.len(), 3);
        assert_eq!(sim.locations(b"earlier").await.len(), 3);
        assert_eq!(sim.ns.blocks().get(&block(b"twice")).unwrap().refs, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_batch_commits_nothing() {
        let sim = Sim::new(&["--lease-ttl", "10s"]).with_nodes(2);
        sim.tick();
        let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
        let max = kdfs_proto::transport::MAX_BATCH_FILES;
        let too_many: Vec<FileToCommit> = (0..=max)
            .map(|i| sim.batched("n", "", format!("file {i}").as_bytes(), &[0, 1]))
            .collect();
        let e = sim.ns.commit_files(&lease.id, too_many).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(sim.ns.store_counts().unwrap(), (0, 0));
        assert_eq!(sim.ns.lease_count(), 1, "the lease stays open");
        // The largest batch allowed goes through, under the same lease.
        let most: Vec<FileToCommit> = (0..max)
            .map(|i| sim.batched("n", "", format!("file {i}").as_bytes(), &[0, 1]))
            .collect();
        let results = sim.ns.commit_files(&lease.id, most).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(sim.ns.store_counts().unwrap(), (max as u64, 0));

        let unknown = sim
            .ns
            .commit_files(
                "00000000-0000-0000-0000-000000000000",
                vec![sim.batched("u", "", b"u", &[0, 1])],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(unknown, Error::FailedPrecondition(_)),
            "{unknown:?}"
        );
        let late = sim.ns.begin_upload("late", "", 0).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        let expired = sim
            .ns
            .commit_files(&late.id, vec![sim.batched("l", "", b"l", &[0, 1])])
            .await
            .unwrap_err();
        assert!(
            matches!(expired, Error::FailedPrecondition(_)),
            "{expired:?}"
        );
        assert_eq!(sim.ns.store_counts().unwrap(), (max as u64, 0));
    }
}
