//! Test fixtures for the namesystem's unit tests: a [`Sim`] (a namesystem on a temp
//! dir with datanodes registered by hand, driven step by step with paused tokio time)
//! and helpers that read the commands a heartbeat hands out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use kdfs_core::{BlockId, DatanodeId, FileId};
use sha2::{Digest, Sha256};

use super::NameSystem;
use super::membership::Outgoing;
use super::reads::FileView;
use super::uploads::{CommittedBlock, FileToCommit};
use crate::Config;
use crate::cluster::{Load, Registration};
use crate::meta::FileRecord;

pub fn block(content: &[u8]) -> BlockId {
    BlockId::from_slice(&Sha256::digest(content)).unwrap()
}

pub fn file(content: &[u8]) -> FileId {
    FileId::from_slice(&Sha256::digest(content)).unwrap()
}

/// A namesystem and the datanodes it knows, driven step by step.
pub struct Sim {
    pub ns: Arc<NameSystem>,
    pub nodes: Vec<DatanodeId>,
    config: Config,
    _dir: tempfile::TempDir,
}

/// A report being built: `sim.report(node).with(b"a").with(b"b").full()`.
pub struct Report<'a> {
    sim: &'a Sim,
    node: usize,
    blocks: Vec<(BlockId, u64)>,
}

impl Report<'_> {
    pub fn with(mut self, content: &[u8]) -> Self {
        self.blocks.push((block(content), content.len() as u64));
        self
    }

    /// Sends it as a full report; returns the blocks the node is told to delete.
    pub fn full(self) -> Vec<BlockId> {
        let id = self.sim.nodes[self.node];
        let deletes = self.sim.ns.full_report(&id, self.blocks).unwrap().1;
        deletes.map(|d| d.blocks).unwrap_or_default()
    }

    /// Sends it as an incremental report of fresh writes; returns the blocks the node
    /// is told to delete.
    pub fn written(self) -> Vec<BlockId> {
        let id = self.sim.nodes[self.node];
        let added: Vec<(BlockId, u64, u64)> = self
            .blocks
            .iter()
            .map(|(b, len)| (*b, *len, Sim::next_generation()))
            .collect();
        let deletes = self
            .sim
            .ns
            .incremental_report(&id, &added, &[], &[])
            .unwrap();
        deletes.map(|d| d.blocks).unwrap_or_default()
    }

    /// Sends it as an incremental report of corrupt replicas.
    pub fn corrupt(self) {
        let id = self.sim.nodes[self.node];
        let ids: Vec<BlockId> = self.blocks.iter().map(|b| b.0).collect();
        self.sim.ns.incremental_report(&id, &[], &[], &ids).unwrap();
    }
}

impl Sim {
    /// Heartbeats every second, dead after 5 s, replication 2.
    pub fn new(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "kdfs-namenode",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--heartbeat-interval",
            "1s",
            "--dead-after",
            "5s",
            "--replication",
            "2",
            "--safe-mode-timeout",
            "1h",
        ];
        args.extend_from_slice(extra);
        let config = Config::parse_from(args);
        let ns = NameSystem::open(&config).unwrap();
        Self {
            ns,
            nodes: Vec::new(),
            config,
            _dir: dir,
        }
    }

    /// Stops the namesystem (its metadata writer finishes what was queued) and opens
    /// it again on the same directory, as a restarted namenode does. The datanodes
    /// are still known by id but must register again.
    pub async fn restart(self) -> Self {
        let done = self.ns.writer_done().expect("not taken yet");
        drop(self.ns);
        done.await
            .expect("the writer stops once the last handle is gone");
        Self {
            ns: NameSystem::open(&self.config).unwrap(),
            ..self
        }
    }

    /// A heartbeat's figures; its write generation is above every one handed out
    /// before (the simulated datanodes share one counter).
    pub fn load() -> Load {
        Load {
            capacity: 1 << 40,
            available: 1 << 40,
            write_generation: Self::next_generation(),
            ..Load::default()
        }
    }

    /// The next write generation of the simulated datanodes' shared counter.
    pub fn next_generation() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::SeqCst)
    }

    /// Registers `n` more datanodes.
    pub fn with_nodes(mut self, n: usize) -> Self {
        for _ in 0..n {
            let i = self.nodes.len();
            self.register_as(Self::registration(i));
        }
        self
    }

    /// Registers a new datanode as `reg` says; returns its id, also the last of `nodes`.
    pub fn register_as(&mut self, reg: Registration) -> DatanodeId {
        let id = DatanodeId::random();
        self.ns.register(id, &reg).unwrap();
        // As a datanode does: its first heartbeat at once (until then it is pending).
        self.ns.heartbeat(&id, reg.load).expect("just registered");
        self.nodes.push(id);
        id
    }

    /// Registers datanode `node` again, as it does after a restart (its own or the
    /// namenode's).
    pub fn register(&self, node: usize) {
        self.ns
            .register(self.nodes[node], &Self::registration(node))
            .unwrap();
        self.ns
            .heartbeat(&self.nodes[node], Self::load())
            .expect("just registered");
    }

    /// Datanode `i`'s registration: a local address of its own and plenty of room.
    fn registration(i: usize) -> Registration {
        Registration {
            address: format!("127.0.0.1:{}", 1000 + i),
            load: Self::load(),
            ..Registration::default()
        }
    }

    pub fn beat(&self, node: usize) -> Vec<Outgoing> {
        self.ns
            .heartbeat(&self.nodes[node], Self::load())
            .expect("known node")
    }

    /// Datanode `node`'s storage as `ClusterInfo` shows it.
    pub fn load_of(&self, node: usize) -> Load {
        let st = self.ns.status();
        let n = st.nodes.iter().find(|n| n.node.id == self.nodes[node]);
        n.expect("known node").node.load
    }

    pub fn report(&self, node: usize) -> Report<'_> {
        Report {
            sim: self,
            node,
            blocks: Vec::new(),
        }
    }

    /// Uploads `content` as one block acknowledged by `on`.
    pub async fn upload(&self, content: &[u8], on: &[usize]) {
        let lease = self.ns.begin_upload("f", "", 0).await.unwrap();
        self.ns
            .commit(
                &lease.id,
                file(content),
                content.len() as u64,
                vec![CommittedBlock {
                    id: block(content),
                    length: content.len() as u64,
                    replicas: on.iter().map(|i| self.nodes[*i]).collect(),
                }],
            )
            .await
            .unwrap();
    }

    /// A one-block file of a batch, acknowledged by `on`.
    pub fn batched(
        &self,
        name: &str,
        content_type: &str,
        content: &[u8],
        on: &[usize],
    ) -> FileToCommit {
        FileToCommit {
            name: name.into(),
            content_type: content_type.into(),
            id: file(content),
            size: content.len() as u64,
            blocks: vec![CommittedBlock {
                id: block(content),
                length: content.len() as u64,
                replicas: on.iter().map(|i| self.nodes[*i]).collect(),
            }],
            object_content: false,
        }
    }

    /// A live file's record, from the store.
    pub async fn record(&self, content: &[u8]) -> FileRecord {
        match self.ns.get_file(&file(content)).await.unwrap() {
            FileView::Live { record, .. } => record,
            FileView::Deleted { .. } => panic!("deleted"),
        }
    }

    pub async fn locations(&self, content: &[u8]) -> Vec<DatanodeId> {
        match self.ns.get_file(&file(content)).await.unwrap() {
            FileView::Live { blocks, .. } => blocks[0].replicas.iter().map(|l| l.id).collect(),
            FileView::Deleted { .. } => panic!("deleted"),
        }
    }

    /// One round of the background workers.
    pub fn tick(&self) {
        self.ns.liveness_tick();
        self.ns.safe_mode_tick();
        self.ns.replication_tick();
    }
}

pub fn replications(cmds: &[Outgoing]) -> Vec<(BlockId, Vec<DatanodeId>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Outgoing::Replicate { block, targets, .. } => {
                Some((*block, targets.iter().map(|t| t.id).collect()))
            }
            _ => None,
        })
        .collect()
}

pub fn deletes(cmds: &[Outgoing]) -> Vec<BlockId> {
    cmds.iter()
        .filter_map(|c| match c {
            Outgoing::Delete(d) => Some(d.blocks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Advances the clock by whole seconds; `alive` nodes heartbeat every second and
/// their commands are collected.
pub async fn run_for(sim: &Sim, secs: u64, alive: &[usize]) -> Vec<Vec<Outgoing>> {
    let mut got = vec![Vec::new(); sim.nodes.len()];
    for _ in 0..secs {
        tokio::time::advance(Duration::from_secs(1)).await;
        for n in alive {
            got[*n].extend(sim.beat(*n));
        }
        sim.tick();
    }
    got
}
