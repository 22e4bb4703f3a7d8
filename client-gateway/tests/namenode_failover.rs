//! Three real namenodes in an HA group (`--id`, `--peers`), three datanodes and a
//! gateway given all three (`--namenode A,B,C`), in this process, each namenode and
//! datanode on its own runtime so a kill drops it like SIGKILL. Uploads succeed, the
//! leader is killed, uploads succeed again within 15 s (the datanodes register with the
//! new leader and report in full, which ends its safe mode), every file stored before
//! and after reads back intact, and `/info` shows the roles.

mod common;
mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use common::cluster::{BLOCK, Datanode, start_datanode};
use common::{DEADLINE, Gateway, http, wait_until};
use serde_json::Value;
use support::{content, download, get_json, upload};
use tokio_util::sync::CancellationToken;

/// Kill to first successful upload, at most (issue 27).
const FAILOVER: Duration = Duration::from_secs(15);

/// A namenode on its own runtime.
struct Namenode {
    runtime: Option<tokio::runtime::Runtime>,
    /// `host:port` of its gRPC server.
    grpc: String,
}

struct Group {
    _dir: tempfile::TempDir,
    namenodes: Vec<Namenode>,
    datanodes: Vec<Datanode>,
    gateway: Gateway,
}

impl Group {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listeners: Vec<(std::net::TcpListener, std::net::TcpListener)> = (0..3)
            .map(|_| {
                let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                grpc.set_nonblocking(true).unwrap();
                http.set_nonblocking(true).unwrap();
                (grpc, http)
            })
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|(g, _)| g.local_addr().unwrap().to_string())
            .collect();
        let peers = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut namenodes = Vec::new();
        for (i, (grpc, http)) in listeners.into_iter().enumerate() {
            let data = dir.path().join(format!("namenode-{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let cfg = kdfs_namenode::Config::parse_from([
                "kdfs-namenode".to_owned(),
                format!("--listen={}", addresses[i]),
                format!("--http={}", http.local_addr().unwrap()),
                format!("--data-dir={}", data.display()),
                format!("--block-size={BLOCK}"),
                "--heartbeat-interval=300ms".to_owned(),
                "--stale-after=3s".to_owned(),
                "--dead-after=6s".to_owned(),
                "--kubernetes=off".to_owned(),
                format!("--id={i}"),
                format!("--peers={peers}"),
                "--raft-heartbeat-interval=100ms".to_owned(),
                "--raft-election-timeout=1s".to_owned(),
            ]);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(format!("namenode-{i}"))
                .enable_all()
                .build()
                .unwrap();
            runtime.spawn(async move {
                let grpc = tokio::net::TcpListener::from_std(grpc).unwrap();
                let http = tokio::net::TcpListener::from_std(http).unwrap();
                if let Err(e) = kdfs_namenode::run(cfg, grpc, http, CancellationToken::new()).await
                {
                    eprintln!("namenode {i} stopped: {e}");
                }
            });
            namenodes.push(Namenode {
                runtime: Some(runtime),
                grpc: addresses[i].clone(),
            });
        }
        let list = addresses
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let datanodes = (0..3)
            .map(|i| start_datanode(&dir, i, &list, "4GiB"))
            .collect();
        let gateway = Gateway::start(&list, &[]).await;
        let ready = gateway.at("/readyz");
        kdfs_testkit::wait_http_ok(&http(), &ready, "gateway /readyz", DEADLINE).await;
        Self {
            _dir: dir,
            namenodes,
            datanodes,
            gateway,
        }
    }

    /// `/info`'s `namenodes`, by address: (id, role).
    async fn roles(&self) -> Vec<(String, Value, String)> {
        let r = http().get(self.gateway.at("/info")).send().await.unwrap();
        let info: Value = r.json().await.unwrap();
        info["namenodes"]
            .as_array()
            .unwrap_or_else(|| panic!("no namenodes in {info}"))
            .iter()
            .map(|n| {
                (
                    n["address"].as_str().unwrap().to_owned(),
                    n["id"].clone(),
                    n["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The index of the namenode `/info` shows as leader, once one does.
    async fn leader(&self) -> usize {
        let found = std::sync::Mutex::new(None);
        wait_until("a leader in /info", DEADLINE, || async {
            let roles = self.roles().await;
            let leader = roles.iter().find(|(_, _, role)| role == "leader");
            *found.lock().unwrap() = leader
                .and_then(|(address, _, _)| self.namenodes.iter().position(|n| n.grpc == *address));
            found.lock().unwrap().is_some()
        })
        .await;
        found.into_inner().unwrap().expect("waited for")
    }

    fn kill(&mut self, i: usize) {
        if let Some(rt) = self.namenodes[i].runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.gateway.shutdown.cancel();
        for i in 0..self.namenodes.len() {
            self.kill(i);
        }
        // Runtimes cannot be dropped inside the test's: shut down in the background.
        for d in &mut self.datanodes {
            if let Some(rt) = d.runtime.take() {
                rt.shutdown_background();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_within_15s_of_killing_the_leader_and_nothing_is_lost() {
    let mut g = Group::start().await;
    let c = http();
    let url = g.gateway.url.clone();
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, len) in [1000, 2 * BLOCK as usize + 3].into_iter().enumerate() {
        let data = content(len, n as u64);
        let r = upload(&c, &url, &format!("before-{n}"), &data).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        stored.push((v["hash"].as_str().unwrap().to_owned(), data));
    }

    let old = g.leader().await;
    let roles = g.roles().await;
    assert_eq!(roles.len(), 3, "{roles:?}");
    for (i, n) in g.namenodes.iter().enumerate() {
        let (_, id, role) = roles.iter().find(|(a, _, _)| *a == n.grpc).unwrap();
        assert_eq!(*id, i as u64, "{roles:?}");
        assert_eq!(role, if i == old { "leader" } else { "follower" });
    }

    g.kill(old);
    let killed = Instant::now();
    // Upload until one succeeds: each attempt either succeeds or fails (503) within
    // the gateway's leader search; none may hang.
    let mut n = 0u8;
    let took = loop {
        n += 1;
        let data = content(1500 + n as usize, 100 + u64::from(n));
        let attempt = Instant::now();
        let r = upload(&c, &url, &format!("after-{n}"), &data).await;
        assert!(
            attempt.elapsed() < Duration::from_secs(20),
            "an upload hung"
        );
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            stored.push((v["hash"].as_str().unwrap().to_owned(), data));
            break killed.elapsed();
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(
            killed.elapsed() < FAILOVER,
            "no upload succeeded within {FAILOVER:?}"
        );
    };
    eprintln!("first upload after killing the leader: {took:?}");
    assert!(took < FAILOVER, "{took:?}");

    // A multi-block upload too, then every file reads back intact.
    let data = content(3 * BLOCK as usize + 11, 200);
    let r = upload(&c, &url, "after-large", &data).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    stored.push((v["hash"].as_str().unwrap().to_owned(), data));
    for (hash, data) in &stored {
        assert_eq!(&download(&c, &url, hash).await, data, "{hash}");
    }
    let listed = get_json(&c, &format!("{url}/files?limit=100")).await;
    assert_eq!(
        listed["files"].as_array().unwrap().len(),
        stored.len(),
        "{listed}"
    );

    let new = g.leader().await;
    assert_ne!(new, old);
    let roles = g.roles().await;
    for (i, n) in g.namenodes.iter().enumerate() {
        let (_, _, role) = roles.iter().find(|(a, _, _)| *a == n.grpc).unwrap();
        let expected = match i {
            _ if i == old => "unreachable",
            _ if i == new => "leader",
            _ => "follower",
        };
        assert_eq!(role, expected, "{roles:?}");
    }
}
