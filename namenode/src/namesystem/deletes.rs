//! Deletes: a file is tombstoned durably; the replicas of blocks no file references
//! any more are handed to their datanodes with heartbeats and report replies, never
//! in safe mode and never while an upload of the same block is being committed, each
//! command naming the write generation below which its replicas may go (`crate::gc`).

use kdfs_core::FileId;

use super::{NameSystem, lock};
use crate::blockmap::NodeIdx;
use crate::error::{Error, Result};
use crate::gc::Deletes;
use crate::meta::{Effect, Op};

impl NameSystem {
    /// Tombstones a file (durable before it returns). False if already deleted.
    pub async fn delete(&self, id: FileId) -> Result<bool> {
        let now_ms = self.clock.now_ms();
        match self.writer.submit(Op::Delete { id, now_ms }).await? {
            Effect::Deleted { record, .. } => Ok(record.is_some()),
            other => Err(Error::Corrupt(format!(
                "unexpected delete effect {other:?}"
            ))),
        }
    }

    /// The delete command for `idx` in a report's reply: its due deletes, under the
    /// generation it may name now (none in safe mode, or with nothing to name yet).
    pub(super) fn take_deletes(&self, idx: NodeIdx, now_ms: u64) -> Option<Deletes> {
        if self.in_safe_mode() {
            return None;
        }
        // Leases alone, before the collector's lock.
        let oldest_upload = self.oldest_lease_begin();
        let below = lock(&self.shared.gc).delete_below(idx, oldest_upload)?;
        Some(self.take_deletes_below(idx, now_ms, below))
    }

    /// `idx`'s due deletes under a command naming `below` (none in safe mode). Not
    /// those of blocks referenced again, or being committed.
    pub(super) fn take_deletes_below(&self, idx: NodeIdx, now_ms: u64, below: u64) -> Deletes {
        if self.in_safe_mode() {
            return Deletes {
                below,
                blocks: Vec::new(),
            };
        }
        let blocks = &self.shared.blocks;
        let committing = &self.committing;
        lock(&self.shared.gc).take_deletes(idx, now_ms, below, |b| {
            blocks.contains(b) || lock(committing).contains_key(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::*;
    use crate::cluster::Registration;
    use crate::namesystem::membership::Outgoing;
    use crate::namesystem::uploads::CommittedBlock;

    #[tokio::test(start_paused = true)]
    async fn tombstones_are_honoured_for_a_node_returning_after_the_delete() {
        let sim = Sim::new(&["--delete-grace", "3s"]).with_nodes(3);
        sim.tick();
        sim.upload(b"old", &[0, 1]).await;
        sim.report(2).with(b"old").full(); // a surplus third replica

        // Node 2 goes away; the file is deleted meanwhile.
        run_for(&sim, 6, &[0, 1]).await;
        assert!(
            sim.ns.heartbeat(&sim.nodes[2], Sim::load()).is_none(),
            "dead"
        );
        assert!(sim.ns.delete(file(b"old")).await.unwrap());
        // The holders are told after the delete grace, not before.
        let early = run_for(&sim, 2, &[0, 1]).await;
        assert!(deletes(&early[0]).is_empty() && deletes(&early[1]).is_empty());
        let late = run_for(&sim, 1, &[0, 1]).await;
        assert_eq!(deletes(&late[0]), vec![block(b"old")]);
        assert_eq!(deletes(&late[1]), vec![block(b"old")]);

        // Node 2 returns still holding the block: told to delete it at once.
        let reg = Registration {
            address: "127.0.0.1:1002".into(),
            load: Sim::load(),
            ..Registration::default()
        };
        sim.ns.register(sim.nodes[2], &reg).unwrap();
        assert_eq!(sim.report(2).with(b"old").full(), vec![block(b"old")]);
    }

    #[tokio::test(start_paused = true)]
    async fn deleting_then_uploading_the_same_content_again_keeps_it() {
        let sim = Sim::new(&["--delete-grace", "3s"]).with_nodes(3);
        sim.tick();
        sim.upload(b"same", &[0, 1]).await;
        assert!(sim.ns.delete(file(b"same")).await.unwrap());

        run_for(&sim, 1, &[0, 1, 2]).await;

        // A slow re-upload: it writes the block again (nodes 0 and 2 report the fresh
        // writes) and commits only after the grace has passed.
        let lease = sim.ns.begin_upload("again", "", 0).await.unwrap();
        assert!(sim.report(0).with(b"same").written().is_empty());
        assert!(sim.report(2).with(b"same").written().is_empty());
        let got = run_for(&sim, 5, &[0, 1, 2]).await;
        assert!(
            deletes(&got[0]).is_empty(),
            "the fresh replica on 0 is spared"
        );
        assert!(
            deletes(&got[2]).is_empty(),
            "the fresh replica on 2 is spared"
        );
        assert_eq!(
            deletes(&got[1]),
            vec![block(b"same")],
            "the old one on 1 goes"
        );
        sim.ns
            .commit(
                &lease.id,
                file(b"same"),
                4,
                vec![CommittedBlock {
                    id: block(b"same"),
                    length: 4,
                    replicas: vec![sim.nodes[0], sim.nodes[2]],
                }],
            )
            .await
            .unwrap();
        let mut at = sim.locations(b"same").await;
        at.sort();
        let mut want = vec![sim.nodes[0], sim.nodes[2]];
        want.sort();
        assert_eq!(at, want);
    }

    /// The race the generations make harmless: the deletes of the old replicas went
    /// out, and the same content is uploaded to the same nodes at once. The commit
    /// takes every ack (nothing is refused); the nodes' generations keep the fresh
    /// replicas whenever the deletes run.
    #[tokio::test(start_paused = true)]
    async fn a_reupload_right_after_the_deletes_went_out_commits_with_every_ack() {
        let sim = Sim::new(&["--delete-grace", "1s"]).with_nodes(2);
        sim.tick();
        sim.upload(b"again", &[0, 1]).await;
        assert!(sim.ns.delete(file(b"again")).await.unwrap());
        let got = run_for(&sim, 2, &[0, 1]).await;
        let sent: Vec<_> = got[0]
            .iter()
            .filter_map(|c| match c {
                Outgoing::Delete(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].blocks, vec![block(b"again")]);
        assert!(sent[0].below > 0, "a delete names a generation");
        assert_eq!(deletes(&got[1]), vec![block(b"again")]);

        sim.upload(b"again", &[0, 1]).await;
        let mut at = sim.locations(b"again").await;
        at.sort();
        let mut want = sim.nodes.clone();
        want.sort();
        assert_eq!(at, want);
        // Nothing more is sent for the live block.
        let later = run_for(&sim, 3, &[0, 1]).await;
        assert!(deletes(&later[0]).is_empty() && deletes(&later[1]).is_empty());
    }
}
