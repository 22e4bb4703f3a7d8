//! Namenode HA (`--peers`): three real namenodes in this process on 127.0.0.1, talking
//! Raft over their gRPC ports. A leader is elected and serves; followers refuse with
//! its address; a commit survives the leader's loss; a wiped follower catches up by
//! snapshot; with two of three down a write fails UNAVAILABLE instead of hanging.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use kdfs_namenode::{Config, run};
use kdfs_proto::pb;
use kdfs_testkit::http_get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
/// The write timeout the group runs with: a write that cannot commit fails by then.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One group at a time: four groups of three namenodes electing at once on a loaded
/// two-core machine see elections where nothing failed.
static ONE_GROUP_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three namenodes on fixed ports, each with its own data dir.
struct Group {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    dirs: Vec<tempfile::TempDir>,
    grpc: Vec<SocketAddr>,
    peers: String,
    nodes: Vec<Option<TestNamenode>>,
}

impl Group {
    async fn start() -> Self {
        let turn = ONE_GROUP_AT_A_TIME.lock().await;
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let grpc: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let peers = grpc
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut group = Self {
            _turn: turn,
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            grpc,
            peers,
            nodes: Vec::new(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let node = group.spawn(i, listener).await;
            group.nodes.push(Some(node));
        }
        group
    }

    async fn spawn(&self, i: usize, grpc: TcpListener) -> TestNamenode {
        let mut args = fast_args(self.dirs[i].path());
        args.extend(
            [
                "--id",
                &i.to_string(),
                "--peers",
                &self.peers,
                // Fast, but slow enough that a loaded test machine does not see
                // elections where nothing failed.
                "--raft-heartbeat-interval",
                "100ms",
                "--raft-election-timeout",
                "2s",
                "--raft-write-timeout",
                "2s",
                "--raft-snapshot-entries",
                "8",
                // One fake datanode acknowledges each commit.
                "--min-replicas",
                "1",
            ]
            .map(String::from),
        );
        let config = Config::parse_from(&args);
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (g, h) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let run = run(config, grpc, http, shutdown.clone());
            async move {
                let result = run.await;
                if let Err(e) = &result {
                    eprintln!("namenode {i} failed: {e}");
                }
                result
            }
        });
        TestNamenode {
            grpc: g,
            http: h,
            shutdown,
            task,
        }
    }

    /// Starts namenode `i` again on its port (its data dir as it is).
    async fn restart(&mut self, i: usize) {
        let listener = TcpListener::bind(self.grpc[i]).await.unwrap();
        self.nodes[i] = Some(self.spawn(i, listener).await);
    }

    async fn stop(&mut self, i: usize) {
        self.nodes[i].take().expect("running").stop().await;
    }

    async fn client(&self, i: usize) -> Client {
        connect(&format!("http://{}", self.grpc[i])).await
    }

    async fn role(&self, i: usize) -> Option<pb::NamenodeRoleResponse> {
        let node = self.nodes[i].as_ref()?;
        assert!(!node.task.is_finished(), "namenode {i} stopped on its own");
        let mut c = self.client(i).await;
        c.namenode_role(pb::NamenodeRoleRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits for a running member that leads and serves; returns its index and term.
    async fn leader(&self) -> (usize, u64) {
        let found = std::sync::Mutex::new(None);
        wait_until("a serving leader", WAIT, || async {
            for i in 0..3 {
                if let Some(r) = self.role(i).await
                    && r.role == pb::RaftRole::Leader as i32
                    && r.ready
                {
                    *found.lock().unwrap() = Some((i, r.term));
                    return true;
                }
            }
            false
        })
        .await;
        found.into_inner().unwrap().expect("waited for")
    }
}

/// Registers a fake datanode with the leader and commits one file acknowledged by it.
async fn commit_one(c: &mut Client, d: &FakeDatanode, content: &[u8]) {
    let r = upload(c, "f", content, &[d]).await.unwrap();
    assert!(r.conflict.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_serves_and_followers_refuse_naming_it() {
    let mut g = Group::start().await;
    let (leader, term) = g.leader().await;
    assert!(term > 0);
    let mut c = g.client(leader).await;
    let mut d = FakeDatanode::new(c.clone(), 31000);
    let reg = d.register("").await.unwrap();
    assert_eq!(reg.leader_term, term, "commands carry the leader's term");
    assert!(
        !reg.cluster_id.is_empty(),
        "the first leader chose a cluster id"
    );
    commit_one(&mut c, &d, b"hello").await;

    for i in (0..3).filter(|i| *i != leader) {
        let mut f = g.client(i).await;
        let refused = get(&mut f, b"hello").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert_eq!(
            kdfs_proto::leader::leader_hint(&refused),
            Some(Some(g.grpc[leader].to_string())),
            "a follower names the leader"
        );
        let role = g.role(i).await.unwrap();
        assert_eq!(role.role, pb::RaftRole::Follower as i32);
        assert_eq!(role.leader_id, Some(leader as u32));
        assert_eq!(role.peers.len(), 3);
        // The commit reached every member.
        wait_until("the follower applied the commit", WAIT, || async {
            let r = g.role(i).await.unwrap();
            r.ready && r.applied_index >= role.commit_index
        })
        .await;
        let http = g.nodes[i].as_ref().unwrap().http;
        assert_eq!(
            http_get(http, "/readyz").await.0,
            200,
            "a caught-up follower"
        );
    }
    let http = g.nodes[leader].as_ref().unwrap().http;
    assert_eq!(http_get(http, "/readyz").await.0, 200);
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    for m in [
        "kdfs_namenode_raft_role 1",
        "kdfs_namenode_raft_term",
        "kdfs_namenode_raft_commit_index",
        "kdfs_namenode_raft_applied_index",
        "kdfs_namenode_commits_total",
    ] {
        assert!(body.contains(m), "{m} missing from\n{body}");
    }
    for i in 0..3 {
        g.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_survives_the_leaders_loss_and_the_term_grows() {
    let mut g = Group::start().await;
    let (old, old_term) = g.leader().await;
    let mut c = g.client(old).await;
    let mut d = FakeDatanode::new(c.clone(), 31100);
    d.register("").await.unwrap();
    for n in 0..20u32 {
        commit_one(&mut c, &d, format!("file {n}").as_bytes()).await;
    }
    g.stop(old).await;

    let (new, new_term) = g.leader().await;
    assert_ne!(new, old);
    assert!(new_term > old_term, "{new_term} > {old_term}");
    let mut c = g.client(new).await;
    for n in 0..20u32 {
        let f = get(&mut c, format!("file {n}").as_bytes()).await.unwrap();
        assert_eq!(f.state, pb::FileState::Live as i32, "file {n}");
    }
    // The new leader takes writes, stamped with its term.
    let mut d = FakeDatanode::new(c.clone(), 31101);
    assert_eq!(d.register("").await.unwrap().leader_term, new_term);
    commit_one(&mut c, &d, b"after the failover").await;
    for i in (0..3).filter(|i| *i != old) {
        g.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_follower_catches_up_by_snapshot_and_keeps_every_file() {
    let mut g = Group::start().await;
    let (leader, _) = g.leader().await;
    // The lowest id when it is a follower: the one that formed the group, which must
    // not form a second one now that its log is empty (the bootstrap rule).
    let wiped = usize::from(leader == 0);
    g.stop(wiped).await;
    std::fs::remove_dir_all(g.dirs[wiped].path()).unwrap();

    let mut c = g.client(leader).await;
    let mut d = FakeDatanode::new(c.clone(), 31200);
    d.register("").await.unwrap();
    // Far more entries than a snapshot spans: the log the wiped member would need is
    // gone, so it can only catch up by snapshot.
    for n in 0..40u32 {
        commit_one(&mut c, &d, format!("file {n}").as_bytes()).await;
    }
    let commit = g.role(leader).await.unwrap().commit_index;
    g.restart(wiped).await;
    wait_until("the wiped member caught up", WAIT, || async {
        g.role(wiped)
            .await
            .is_some_and(|r| r.ready && r.applied_index >= commit)
    })
    .await;

    // Now lose the leader: the wiped member and the third hold every file.
    g.stop(leader).await;
    let (new, _) = g.leader().await;
    let mut c = g.client(new).await;
    for n in 0..40u32 {
        let f = get(&mut c, format!("file {n}").as_bytes()).await.unwrap();
        assert_eq!(f.state, pb::FileState::Live as i32, "file {n}");
    }
    for i in (0..3).filter(|i| *i != leader) {
        g.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_of_three_down_a_write_fails_unavailable_within_the_timeout() {
    let mut g = Group::start().await;
    let (leader, _) = g.leader().await;
    let mut c = g.client(leader).await;
    let mut d = FakeDatanode::new(c.clone(), 31300);
    d.register("").await.unwrap();
    commit_one(&mut c, &d, b"before").await;
    for i in (0..3).filter(|i| *i != leader) {
        g.stop(i).await;
    }
    let started = Instant::now();
    let failed = upload(&mut c, "f", b"after", &[&d]).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
    assert!(
        took < WRITE_TIMEOUT * 4,
        "failed after {took:?}, not within the write timeout"
    );
    // Cut off from the majority, the old leader stops serving reads too (no stale
    // read served as current) and is not ready.
    let http = g.nodes[leader].as_ref().unwrap().http;
    wait_until("the lone leader stops serving", WAIT, || async {
        http_get(http, "/readyz").await.0 == 503
    })
    .await;
    let refused = get(&mut c, b"before").await.unwrap_err();
    assert!(
        kdfs_proto::leader::leader_hint(&refused).is_some(),
        "{refused:?}"
    );
    g.stop(leader).await;
}
