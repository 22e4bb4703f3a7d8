//! State-machine tests of the namesystem with paused tokio time: no sockets, the
//! clock moved by hand, a real redb store in a temp dir.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_namenode::cluster::{Load, Registration};
use kdfs_namenode::error::Error;
use kdfs_namenode::meta::FileRecord;
use kdfs_namenode::namesystem::{CommittedBlock, FileToCommit, FileView, Outgoing};
use kdfs_namenode::{Config, NameSystem};
use sha2::{Digest, Sha256};

fn block(content: &[u8]) -> BlockId {
    BlockId::from_slice(&Sha256::digest(content)).unwrap()
}

fn file(content: &[u8]) -> FileId {
    FileId::from_slice(&Sha256::digest(content)).unwrap()
}

/// A namesystem and the datanodes it knows, driven step by step.
struct Sim {
    ns: Arc<NameSystem>,
    nodes: Vec<DatanodeId>,
    _dir: tempfile::TempDir,
}

/// A report being built: `sim.report(node).with(b"a").with(b"b").full()`.
struct Report<'a> {
    sim: &'a Sim,
    node: usize,
    blocks: Vec<(BlockId, u64)>,
}

impl Report<'_> {
    fn with(mut self, content: &[u8]) -> Self {
        self.blocks.push((block(content), content.len() as u64));
        self
    }

    /// Sends it as a full report; returns the blocks the node is told to delete.
    fn full(self) -> Vec<BlockId> {
        let id = self.sim.nodes[self.node];
        self.sim.ns.full_report(&id, self.blocks).unwrap().1
    }

    /// Sends it as an incremental report of corrupt replicas.
    fn corrupt(self) {
        let id = self.sim.nodes[self.node];
        let ids: Vec<BlockId> = self.blocks.iter().map(|b| b.0).collect();
        self.sim.ns.incremental_report(&id, &[], &[], &ids).unwrap();
    }
}

impl Sim {
    /// Heartbeats every second, dead after 5 s, replication 2.
    fn new(extra: &[&str]) -> Self {
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
        let ns = NameSystem::open(&Config::parse_from(args)).unwrap();
        Self {
            ns,
            nodes: Vec::new(),
            _dir: dir,
        }
    }

    fn load() -> Load {
        Load {
            capacity: 1 << 40,
            available: 1 << 40,
            ..Load::default()
        }
    }

    /// Registers `n` more datanodes.
    fn with_nodes(mut self, n: usize) -> Self {
        for _ in 0..n {
            let id = DatanodeId::random();
            let reg = Registration {
                address: format!("127.0.0.1:{}", 1000 + self.nodes.len()),
                load: Self::load(),
                ..Registration::default()
            };
            self.ns.register(id, &reg).unwrap();
            self.nodes.push(id);
        }
        self
    }

    fn beat(&self, node: usize) -> Vec<Outgoing> {
        self.ns
            .heartbeat(&self.nodes[node], Self::load())
            .expect("known node")
    }

    fn report(&self, node: usize) -> Report<'_> {
        Report {
            sim: self,
            node,
            blocks: Vec::new(),
        }
    }

    /// Uploads `content` as one block acknowledged by `on`.
    async fn upload(&self, content: &[u8], on: &[usize]) {
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
    fn batched(
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
        }
    }

    /// A live file's record, from the store.
    async fn record(&self, content: &[u8]) -> FileRecord {
        match self.ns.get_file(&file(content)).await.unwrap() {
            FileView::Live { record, .. } => record,
            FileView::Deleted { .. } => panic!("deleted"),
        }
    }

    async fn locations(&self, content: &[u8]) -> Vec<DatanodeId> {
        match self.ns.get_file(&file(content)).await.unwrap() {
            FileView::Live { blocks, .. } => blocks[0].replicas.iter().map(|l| l.id).collect(),
            FileView::Deleted { .. } => panic!("deleted"),
        }
    }

    /// One round of the background workers.
    fn tick(&self) {
        self.ns.liveness_tick();
        self.ns.safe_mode_tick();
        self.ns.replication_tick();
    }
}

fn replications(cmds: &[Outgoing]) -> Vec<(BlockId, Vec<DatanodeId>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Outgoing::Replicate { block, targets, .. } => {
                Some((*block, targets.iter().map(|t| t.id).collect()))
            }
            _ => None,
        })
        .collect()
}

fn deletes(cmds: &[Outgoing]) -> Vec<BlockId> {
    cmds.iter()
        .filter_map(|c| match c {
            Outgoing::Delete(ids) => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_dead_nodes_blocks_are_scheduled_within_one_heartbeat() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    sim.upload(b"data", &[0, 1]).await;

    // Nodes 1 and 2 beat every second; node 0 is silent.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(1)).await;
        sim.tick();
        assert!(
            replications(&sim.beat(1)).is_empty(),
            "nothing to do while 0 lives"
        );
        sim.beat(2);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    sim.tick(); // node 0 silent for 5 s: dead, its replica dropped, copy scheduled
    assert_eq!(sim.locations(b"data").await, vec![sim.nodes[1]]);
    let cmds = sim.beat(1);
    assert_eq!(
        replications(&cmds),
        vec![(block(b"data"), vec![sim.nodes[2]])]
    );

    // The target reports the copy: nothing more is scheduled.
    sim.report(2).with(b"data").full();
    sim.tick();
    assert!(sim.beat(1).is_empty());
    assert_eq!(sim.ns.status().stats.under_replicated, 0);
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_copy_is_retried_from_another_source_or_target() {
    let sim = Sim::new(&["--replication-timeout", "10s", "--replication", "3"]).with_nodes(4);
    sim.tick();
    sim.upload(b"data", &[0, 1]).await;
    sim.tick();
    let first = [0, 1]
        .iter()
        .flat_map(|n| replications(&sim.beat(*n)))
        .collect::<Vec<_>>();
    assert_eq!(first.len(), 1, "one copy for the one missing replica");
    let first_target = first[0].1[0];
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        for n in 0..4 {
            sim.beat(n);
        }
        sim.tick();
    }
    let retry = [0, 1]
        .iter()
        .flat_map(|n| replications(&sim.beat(*n)))
        .collect::<Vec<_>>();
    assert_eq!(retry.len(), 1, "retried after the timeout");
    assert_ne!(retry[0].1[0], first_target, "to another target");
}

/// Advances the clock by whole seconds; `alive` nodes heartbeat every second and
/// their commands are collected.
async fn run_for(sim: &Sim, secs: u64, alive: &[usize]) -> Vec<Vec<Outgoing>> {
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

#[tokio::test(start_paused = true)]
async fn unknown_replicas_wait_for_uploads_that_began_before_them() {
    let sim = Sim::new(&["--lease-ttl", "30s"]).with_nodes(2);
    sim.tick();
    let lease = sim.ns.begin_upload("slow", "", 0).await.unwrap();
    // A block of the upload lands on node 0 and is reported before the commit.
    assert!(sim.report(0).with(b"in progress").full().is_empty());
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(5)).await;
        sim.ns.renew(&lease.id).unwrap();
        sim.beat(0);
        sim.beat(1);
        sim.ns.gc_tick(false).await.unwrap();
        assert!(
            deletes(&sim.beat(0)).is_empty(),
            "an older upload may still claim it"
        );
    }
    // The upload gives up: after the grace, the orphan goes.
    sim.ns.abandon(&lease.id).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    sim.ns.gc_tick(false).await.unwrap();
    assert_eq!(deletes(&sim.beat(0)), vec![block(b"in progress")]);
}

#[tokio::test(start_paused = true)]
async fn corrupt_replicas_are_healed_then_removed() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    sim.upload(b"data", &[0, 1]).await;
    sim.report(1).with(b"data").corrupt();
    assert_eq!(sim.locations(b"data").await, vec![sim.nodes[0]]);
    sim.tick();
    let copies = replications(&sim.beat(0));
    assert_eq!(
        copies,
        vec![(block(b"data"), vec![sim.nodes[2]])],
        "not back to the bad disk"
    );
    // Healed: the corrupt copy is deleted.
    sim.report(2).with(b"data").full();
    sim.tick();
    assert_eq!(deletes(&sim.beat(1)), vec![block(b"data")]);
    assert_eq!(sim.locations(b"data").await.len(), 2);
}

/// Two of three replicas are bad and readers report them one at a time: a copy planned
/// between the two reports may take the second bad replica as its source. That copy
/// cannot succeed (and no datanode says so), so it is planned again from the good
/// replica at the next tick, not after the replication timeout.
#[tokio::test(start_paused = true)]
async fn a_copy_whose_source_is_reported_bad_meanwhile_is_replanned_at_once() {
    let sim = Sim::new(&["--replication", "3"]).with_nodes(3);
    sim.tick();
    sim.upload(b"data", &[0, 1, 2]).await;
    sim.ns
        .bad_replica(&block(b"data"), &sim.nodes[0], "checksum mismatch");
    sim.tick();
    let first: Vec<_> = [1, 2]
        .into_iter()
        .map(|n| (n, replications(&sim.beat(n))))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let [(source, copies)] = first.as_slice() else {
        panic!("one copy expected, got {first:?}");
    };
    assert_eq!(copies, &vec![(block(b"data"), vec![sim.nodes[0]])]);
    // The source's replica is bad too (the reader's failover reports it a moment later).
    let (source, good) = (*source, 3 - *source);
    sim.ns
        .bad_replica(&block(b"data"), &sim.nodes[source], "checksum mismatch");
    sim.tick();
    let copies = replications(&sim.beat(good));
    let [(b, targets)] = copies.as_slice() else {
        panic!("a copy from the good replica at once expected, got {copies:?}");
    };
    assert_eq!(*b, block(b"data"));
    let mut targets = targets.clone();
    targets.sort();
    let mut want = vec![sim.nodes[0], sim.nodes[source]];
    want.sort();
    assert_eq!(targets, want, "both bad nodes get a good copy");
}

#[tokio::test(start_paused = true)]
async fn safe_mode_holds_back_deletes_and_copies_until_blocks_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let args = |timeout: &str| {
        Config::parse_from([
            "kdfs-namenode",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--replication",
            "2",
            "--safe-mode-timeout",
            timeout,
            "--safe-mode-extension",
            "2s",
        ])
    };
    let (a, b) = (DatanodeId::random(), DatanodeId::random());
    let reg = Registration {
        address: "127.0.0.1:1".into(),
        load: Sim::load(),
        ..Registration::default()
    };
    {
        let ns = NameSystem::open(&args("1h")).unwrap();
        assert!(
            !ns.safe_mode_tick(),
            "nothing known: safe mode ends at once"
        );
        ns.register(a, &reg).unwrap();
        ns.register(b, &reg).unwrap();
        for c in [&b"one"[..], b"two"] {
            let lease = ns.begin_upload("f", "", 0).await.unwrap();
            ns.commit(
                &lease.id,
                file(c),
                c.len() as u64,
                vec![CommittedBlock {
                    id: block(c),
                    length: c.len() as u64,
                    replicas: vec![a, b],
                }],
            )
            .await
            .unwrap();
        }
        let done = ns.writer_done().unwrap();
        drop(ns);
        done.await.unwrap();
    }
    let ns = NameSystem::open(&args("1h")).unwrap();
    assert!(ns.safe_mode_tick());
    assert!(ns.in_safe_mode());
    ns.register(a, &reg).unwrap();
    ns.full_report(&a, vec![(block(b"one"), 3)]).unwrap();
    assert!(ns.safe_mode_tick(), "half the blocks reported");
    assert_eq!(ns.status().reported_fraction, 0.5);
    assert_eq!(ns.replication_tick(), 0, "no re-replication in safe mode");
    ns.full_report(&a, vec![(block(b"one"), 3), (block(b"two"), 3)])
        .unwrap();
    assert!(ns.safe_mode_tick(), "all reported: the extension starts");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!ns.safe_mode_tick(), "extension over");
    // Out of safe mode, the under-replicated blocks are queued at once.
    ns.register(b, &reg).unwrap();
    assert_eq!(ns.replication_tick(), 2);
}

#[tokio::test(start_paused = true)]
async fn surplus_replicas_are_trimmed_unless_another_was_lost_meanwhile() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    sim.upload(b"twice", &[0, 1]).await;
    sim.upload(b"thrice", &[0, 1]).await;
    sim.report(2).with(b"twice").with(b"thrice").full();
    sim.tick();
    // Node 0 loses its copy of "thrice" before node 2 picks up its trims.
    sim.ns
        .incremental_report(&sim.nodes[0], &[], &[block(b"thrice")], &[])
        .unwrap();
    let trimmed = deletes(&sim.beat(2));
    assert_eq!(
        trimmed,
        vec![block(b"twice")],
        "only the still-surplus copy goes"
    );
    assert_eq!(sim.locations(b"twice").await.len(), 2);
    assert_eq!(
        sim.locations(b"thrice").await.len(),
        2,
        "node 2's copy was kept"
    );
}

#[tokio::test(start_paused = true)]
async fn tombstones_are_purged_after_the_retention() {
    let sim = Sim::new(&["--tombstone-retention", "10s"]).with_nodes(2);
    sim.tick();
    sim.upload(b"short-lived", &[0, 1]).await;
    assert!(sim.ns.delete(file(b"short-lived")).await.unwrap());
    sim.ns.gc_tick(true).await.unwrap();
    assert!(matches!(
        sim.ns.get_file(&file(b"short-lived")).await.unwrap(),
        FileView::Deleted { .. }
    ));
    assert_eq!(sim.ns.store_counts().unwrap(), (0, 1));

    tokio::time::advance(Duration::from_secs(11)).await;
    sim.ns.gc_tick(true).await.unwrap();
    assert!(matches!(
        sim.ns.get_file(&file(b"short-lived")).await,
        Err(kdfs_namenode::Error::NotFound(_))
    ));
    assert_eq!(sim.ns.store_counts().unwrap(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_orchestrator_can_declare_a_node_dead_and_set_zones() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    sim.upload(b"data", &[0, 1]).await;
    assert!(sim.ns.declare_dead(&sim.nodes[0], "pod deleted"));
    assert!(!sim.ns.declare_dead(&sim.nodes[0], "again"));
    sim.ns.replication_tick();
    assert_eq!(
        replications(&sim.beat(1)),
        vec![(block(b"data"), vec![sim.nodes[2]])]
    );
    assert!(sim.ns.set_zone(&sim.nodes[2], "zone-b"));
    let st = sim.ns.status();
    assert_eq!(st.nodes[2].node.zone, "zone-b");
    assert!(!sim.ns.set_zone(&DatanodeId::random(), "z"));
}

#[tokio::test(start_paused = true)]
async fn a_decommissioning_node_gets_no_writes_and_its_blocks_are_copied_away() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    sim.upload(b"data", &[0, 1]).await;
    assert!(sim.ns.decommission(&sim.nodes[0]));
    assert!(!sim.ns.decommission(&sim.nodes[0]));
    sim.beat(0); // heartbeats do not bring it back to live
    sim.tick();
    let copies: Vec<_> = [0, 1]
        .iter()
        .flat_map(|n| replications(&sim.beat(*n)))
        .collect();
    assert_eq!(copies, vec![(block(b"data"), vec![sim.nodes[2]])]);
    let lease = sim.ns.begin_upload("x", "", 0).await.unwrap();
    let pipeline = sim.ns.allocate(&lease.id, &[], 0, 0).unwrap();
    assert!(
        pipeline.iter().all(|l| l.id != sim.nodes[0]),
        "no writes to it"
    );
    assert_eq!(pipeline.len(), 2);
    let st = sim.ns.status();
    assert_eq!(
        st.nodes[0].node.state,
        kdfs_namenode::cluster::NodeState::Decommissioning
    );
}

/// Stores 150 one-block files on two nodes, then deletes them one by one, each while
/// `observer(sim, id)` runs in a task of its own; returns the sum of what the observers
/// return (how many of their looks found the file still there).
async fn delete_each_while<F, Fut>(tag: &str, observer: F) -> u64
where
    F: Fn(Arc<Sim>, FileId) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let sim = Arc::new(Sim::new(&[]).with_nodes(2));
    sim.tick();
    let contents: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("{tag} {i}").into_bytes())
        .collect();
    for c in &contents {
        sim.upload(c, &[0, 1]).await;
    }
    let mut seen = 0u64;
    for c in &contents {
        let id = file(c);
        let observer = tokio::spawn(observer(sim.clone(), id));
        tokio::task::yield_now().await;
        assert!(sim.ns.delete(id).await.unwrap());
        seen += observer.await.unwrap();
    }
    seen
}

/// A file being deleted is read as live with its replicas, or as deleted: never as a
/// live record whose blocks are already gone from the block map (the tombstone is in
/// the store a moment before the writer releases the blocks in memory; a reader in
/// between saw "no live replica" and the gateway answered 503 instead of 410).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_being_deleted_reads_as_live_with_replicas_or_as_deleted() {
    let live_reads = delete_each_while("being deleted", |sim, id| async move {
        let mut live = 0u64;
        loop {
            match sim.ns.get_file(&id).await.unwrap() {
                FileView::Live { blocks, .. } => {
                    assert!(
                        blocks.iter().all(|b| !b.replicas.is_empty()),
                        "a live view of {id} with a block without replicas"
                    );
                    live += 1;
                }
                FileView::Deleted { .. } => return live,
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(live_reads > 0, "the reads overlapped the deletes");
}

/// The listing's side of the same moment: a file being deleted is listed with its
/// replicas or not at all, never with none (the browser page showed such a file as
/// having lost every replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_being_deleted_is_listed_with_replicas_or_not_at_all() {
    let listed = delete_each_while("listed while deleted", |sim, id| async move {
        let mut seen = 0u64;
        loop {
            let (page, _) = sim.ns.list_with_replicas(1000, "", "").await.unwrap();
            match page.iter().find(|(f, _)| f.id == id) {
                Some((_, replicas)) => {
                    assert!(*replicas > 0, "{id} listed without replicas");
                    seen += 1;
                }
                None => return seen,
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(listed > 0, "the listings overlapped the deletes");
}

#[tokio::test(start_paused = true)]
async fn a_batch_commits_every_file_durably_and_ends_its_lease() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
    let two_blocks = FileToCommit {
        name: "two.bin".into(),
        content_type: "application/x-two".into(),
        id: file(b"onetwo"),
        size: 6,
        blocks: [&b"one"[..], b"two"]
            .iter()
            .map(|c| CommittedBlock {
                id: block(c),
                length: 3,
                replicas: vec![sim.nodes[1], sim.nodes[2]],
            })
            .collect(),
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
    let two = sim.record(b"onetwo").await;
    assert_eq!((two.name.as_str(), two.size), ("two.bin", 6));
    assert_eq!(two.blocks, vec![(block(b"one"), 3), (block(b"two"), 3)]);
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
