//! Deletes: a file is tombstoned durably; the replicas of blocks no file references
//! any more are handed to their datanodes with heartbeats and report replies, never
//! in safe mode and never while an upload of the same block is being committed.

use kdfs_core::{BlockId, FileId};

use super::{NameSystem, lock};
use crate::blockmap::NodeIdx;
use crate::error::{Error, Result};
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

    pub(super) fn take_deletes(&self, idx: NodeIdx, now_ms: u64) -> Vec<BlockId> {
        if self.in_safe_mode() {
            return Vec::new();
        }
        let blocks = &self.shared.blocks;
        let committing = &self.committing;
        lock(&self.shared.gc).take_deletes(idx, now_ms, |b| {
            blocks.contains(b) || lock(committing).contains_key(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::*;
    use crate::cluster::Registration;
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

        // A slow re-upload: it writes the block again (node 0 reports the fresh write)
        // and commits only after the grace has passed.
        let lease = sim.ns.begin_upload("again", "", 0).await.unwrap();
        let fresh = [(block(b"same"), 4)];
        sim.ns
            .incremental_report(&sim.nodes[0], &fresh, &[], &[])
            .unwrap();
        sim.ns
            .incremental_report(&sim.nodes[2], &fresh, &[], &[])
            .unwrap();
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
}
