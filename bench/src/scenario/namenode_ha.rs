//! The `namenode` scenario's durable creates through an HA group of three namenodes in
//! this process (`--id i --peers …` on 127.0.0.1, Raft over gRPC between them), beside
//! the single namenode's: a create is acknowledged only once its group commit is in a
//! majority's log and applied, so this is what replication costs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kdfs_proto::{pb, transport};
use serde_json::{Value, json};

use super::namenode::{NnClient, fake_datanodes, nn_creates};
use crate::report::progress;

/// Namenodes of the group.
const GROUP: usize = 3;
/// How long the group may take to elect a leader that serves.
const ELECTION_PATIENCE: Duration = Duration::from_secs(60);

/// Starts three namenodes with their data under `data_parent`, waits for a leader,
/// and runs `creates` creates by `concurrency` clients against it (with three fake
/// datanodes registered there). Returns the figures, each key prefixed `ha_`.
pub(crate) async fn ha_creates(
    creates: usize,
    concurrency: usize,
    nonce: u64,
    data_parent: &std::path::Path,
) -> anyhow::Result<Value> {
    progress(format!(
        "namenode: starting {GROUP} namenodes (HA) on 127.0.0.1"
    ));
    let dir = tempfile::Builder::new()
        .prefix("kdfs-bench-namenode-ha-")
        .tempdir_in(data_parent)?;
    let mut listeners = Vec::new();
    for _ in 0..GROUP {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        listeners.push((grpc, http));
    }
    let addrs = listeners
        .iter()
        .map(|(g, _)| Ok(g.local_addr()?.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}={a}"))
        .collect::<Vec<_>>()
        .join(",");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut servers = Vec::new();
    for (i, (grpc, http)) in listeners.into_iter().enumerate() {
        let config = <kdfs_namenode::Config as clap::Parser>::try_parse_from([
            "kdfs-namenode".to_owned(),
            format!(
                "--data-dir={}",
                dir.path().join(format!("nn-{i}")).display()
            ),
            format!("--replication={}", super::namenode::NN_REPLICAS),
            "--kubernetes=off".to_owned(),
            format!("--id={i}"),
            format!("--peers={peers}"),
        ])?;
        servers.push(tokio::spawn(kdfs_namenode::run(
            config,
            grpc,
            http,
            stop.clone(),
        )));
    }
    let result = async {
        let (leader, elected) = wait_for_leader(&addrs).await?;
        progress(format!(
            "namenode: namenode {leader} leads after {:.2}s",
            elected.as_secs_f64()
        ));
        let client = client(&addrs[leader])?;
        let nodes = fake_datanodes(&client, &stop).await?;
        let created = nn_creates(&client, &nodes, nonce, creates, concurrency).await?;
        anyhow::Ok((elected, created))
    }
    .await;
    stop.cancel();
    for s in servers {
        s.await?.context("an HA namenode")?;
    }
    let (elected, created) = result?;
    let mut out = json!({
        "ha_namenodes": GROUP,
        "ha_first_election_s": elected.as_secs_f64(),
    });
    for key in ["creates_s", "create_p50_ms", "create_p99_ms", "get_file_s"] {
        out[format!("ha_{key}")] = created[key].clone();
    }
    Ok(out)
}

fn client(addr: &str) -> anyhow::Result<NnClient> {
    let channel = transport::endpoint(addr)?.connect_lazy();
    Ok(pb::namenode_client::NamenodeClient::new(channel)
        .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
}

/// The index of the namenode that says it leads and is ready, and how long that took.
async fn wait_for_leader(addrs: &[String]) -> anyhow::Result<(usize, Duration)> {
    let t0 = Instant::now();
    let clients = addrs
        .iter()
        .map(|a| client(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    loop {
        for (i, c) in clients.iter().enumerate() {
            let role = c.clone().namenode_role(pb::NamenodeRoleRequest {}).await;
            if let Ok(r) = role.map(tonic::Response::into_inner)
                && r.role == pb::RaftRole::Leader as i32
                && r.ready
            {
                return Ok((i, t0.elapsed()));
            }
        }
        if t0.elapsed() > ELECTION_PATIENCE {
            bail!("no namenode of the group led within {ELECTION_PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
