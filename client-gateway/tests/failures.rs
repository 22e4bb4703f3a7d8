//! Failures against a real in-process cluster: datanodes killed mid-upload (pipeline
//! recovery), corrupt replicas never served and failed over, and the statuses of a
//! cluster out of space (507) or short of datanodes (503).

mod common;
mod support;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{BLOCK, Spec, TestCluster};
use common::{DEADLINE, assert_json_error, get_error, http};
use kdfs_client_gateway::{ByteRange, Client};
use kdfs_core::FileId;
use serde_json::Value;
use support::{collect, content, download, list_files, sha, upload, upload_ok};

/// Uploads 12 MiB from a slow source and kills datanode `victim` after `after`.
async fn kill_mid_upload(datanodes: usize, victim: usize, after: Duration) {
    let mut cluster = TestCluster::start(datanodes).await;
    let client = cluster.client();
    let data = content(12 * BLOCK as usize + 321, 42 + victim as u64);
    // A slow source (256 KiB every 20 ms) so the kill lands mid-upload.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let feed = {
        let data = Bytes::from(data.clone());
        tokio::spawn(async move {
            for i in (0..data.len()).step_by(1 << 18) {
                let piece = data.slice(i..(i + (1 << 18)).min(data.len()));
                if tx.send(Ok(piece)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let up = {
        let client: Client = client.clone();
        tokio::spawn(async move {
            client
                .upload(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                    "survivor.bin",
                    "",
                )
                .await
        })
    };
    tokio::time::sleep(after).await;
    assert!(!up.is_finished(), "the kill must land mid-upload");
    cluster.kill(victim);
    let up = tokio::time::timeout(DEADLINE * 2, up)
        .await
        .expect("upload finishes")
        .unwrap();
    feed.await.unwrap();
    let up = up.expect("the upload survives a killed datanode");
    assert_eq!(up.record.id.to_string(), sha(&data));
    assert!(up.replicas >= 2);
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data, "content intact");
    // Once the node is declared dead, reads still work from the survivors.
    cluster.wait_live(datanodes - 1).await;
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data);
}

/// With 3 datanodes and replication 3 every pipeline holds every node, so the victim
/// is in the pipeline of each block in flight (as head, middle or tail, depending on
/// the block): blocks must finish on the survivors or be re-sent to a new pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_datanode_of_three_mid_upload_does_not_fail_it() {
    for victim in 0..3 {
        kill_mid_upload(3, victim, Duration::from_millis(500)).await;
    }
}

/// With 4 datanodes the namenode can also route later blocks around the dead node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_datanode_mid_upload_of_four_does_not_fail_it() {
    kill_mid_upload(4, 1, Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_replicas_are_never_served_and_reads_fail_over() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let data = content(2 * BLOCK as usize + 4321, 77);
    let hash = upload_ok(&c, &url, "fragile.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // Corrupt two of the three replicas of the middle block, and read with those two
    // ranked first: the reader must fail over twice, mid-file, and still deliver every
    // byte intact (whole-block reads and ranged reads inside the block).
    let client = cluster.client();
    // `info` keeps the order of this lookup: the two damaged replicas come first.
    let info = client.get(FileId::parse(&hash).unwrap()).await.unwrap();
    let block = info.blocks[1].clone();
    assert_eq!(block.replicas.len(), 3, "{block:?}");
    let id = block.id.to_string();
    let id = id.as_str();
    let bad: Vec<usize> = block.replicas[..2]
        .iter()
        .map(|r| {
            cluster
                .datanode_index(&r.address)
                .expect("a cluster datanode")
        })
        .collect();
    for &i in &bad {
        cluster.corrupt(i, id);
    }
    let whole = ByteRange {
        start: 0,
        end: data.len() as u64,
    };
    assert!(
        collect(client.read(&info, whole)).await == data,
        "failover delivers intact bytes"
    );
    let inside = ByteRange {
        start: BLOCK + 10,
        end: BLOCK + 70_001,
    };
    assert!(
        collect(client.read(&info, inside)).await
            == data[BLOCK as usize + 10..BLOCK as usize + 70_001],
        "ranged read inside the damaged block"
    );
    assert!(download(&c, &url, &hash).await == data);
    // The corrupt copies are quarantined (by the datanode on its failed read, and on
    // our report): no servable copy with wrong content remains anywhere, and the
    // namenode heals the block back to three replicas.
    let cluster = &cluster;
    common::wait_until(
        "corrupt copies quarantined and the block healed",
        DEADLINE,
        || {
            let (c, url, hash, bad) = (c.clone(), url.clone(), hash.clone(), bad.clone());
            async move {
                let clean = bad
                    .iter()
                    .all(|&i| cluster.stored_copy(i, id).is_none_or(|b| sha(&b) == id));
                let Ok(r) = c.get(format!("{url}/files/{hash}")).send().await else {
                    return false;
                };
                let Ok(v) = r.json::<Value>().await else {
                    return false;
                };
                clean
                    && v["blocks"][1]["replicas"]
                        .as_array()
                        .is_some_and(|l| l.len() == 3)
            }
        },
    )
    .await;
    assert!(download(&c, &url, &hash).await == data);
}

/// A small file is read whole before its answer starts: a corrupt replica (its bytes
/// do not hash to the block's id) is failed over like a missing one, for a range
/// too, and a file whose every replica is corrupt is a 503, never a 200 with a body
/// broken off or wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_fail_over_corrupt_replicas_and_are_503_when_none_is_good() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let client = cluster.client();
    let replicas_of = |info: &kdfs_client_gateway::FileInfo| -> Vec<usize> {
        info.blocks[0]
            .replicas
            .iter()
            .map(|r| {
                cluster
                    .datanode_index(&r.address)
                    .expect("a cluster datanode")
            })
            .collect()
    };

    let data = content(4096, 91);
    let hash = upload_ok(&c, &url, "small.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = client.get(FileId::parse(&hash).unwrap()).await.unwrap();
    let nodes = replicas_of(&info);
    assert_eq!(nodes.len(), 3);
    // The two replicas this lookup ranks first are corrupt: the third serves.
    for &i in &nodes[..2] {
        cluster.corrupt(i, &hash);
    }
    let whole = ByteRange {
        start: 0,
        end: 4096,
    };
    let got = client.read_small(&info, whole).await.expect("a small file");
    assert!(got.unwrap() == data, "failed over to the good replica");
    let inside = ByteRange {
        start: 100,
        end: 2_100,
    };
    let got = client
        .read_small(&info, inside)
        .await
        .expect("a small file");
    assert!(got.unwrap() == data[100..2_100], "a range, verified whole");
    assert!(download(&c, &url, &hash).await == data);

    // Every replica corrupt: a 503 before any byte.
    let data = content(3000, 92);
    let hash = upload_ok(&c, &url, "doomed.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = client.get(FileId::parse(&hash).unwrap()).await.unwrap();
    for i in replicas_of(&info) {
        cluster.corrupt(i, &hash);
    }
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    let msg = assert_json_error(r, 503).await;
    assert!(msg.contains("every replica failed"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_space_is_507_and_too_few_datanodes_503() {
    // Datanodes with less room than the file: the namenode cannot place it, and
    // nothing is left behind.
    let full = TestCluster::with(Spec {
        capacity: "512KiB".into(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let r = upload(&c, &full.gateway.url, "big.bin", &content(600 << 10, 1)).await;
    let m = assert_json_error(r, 507).await;
    assert!(m.contains("space"), "{m}");
    let list = list_files(&c, &full.gateway.url).await;
    assert!(list["files"].as_array().unwrap().is_empty(), "{list}");
    drop(full);

    // One datanode, replication 3 (so at least 2 replicas): not enough live datanodes.
    let lonely = TestCluster::with(Spec {
        datanodes: 1,
        ..Spec::default()
    })
    .await;
    let r = upload(&c, &lonely.gateway.url, "a.bin", b"abc").await;
    let m = assert_json_error(r, 503).await;
    assert!(m.contains("not enough live datanodes"), "{m}");
    get_error(&c, format!("{}/readyz", lonely.gateway.url), 503).await;
    let list = list_files(&c, &lonely.gateway.url).await;
    assert!(list["files"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanodes_refusing_for_room_the_namenode_thought_they_had_is_507() {
    // Heartbeats an hour apart: the namenode's view of free space stays what the
    // datanodes registered with (1 MiB each), so after a first 600 KiB file it still
    // places a second one on nodes that have 424 KiB left, and every pipeline the
    // gateway tries is refused by its datanodes for lack of room.
    let c = TestCluster::with(Spec {
        capacity: "1MiB".into(),
        namenode_args: vec![
            "--heartbeat-interval=1h".into(),
            "--stale-after=2h".into(),
            "--dead-after=3h".into(),
        ],
        ..Spec::default()
    })
    .await;
    let http = http();
    upload_ok(&http, &c.gateway.url, "first.bin", &content(600 << 10, 1)).await;
    let r = upload(&http, &c.gateway.url, "second.bin", &content(600 << 10, 2)).await;
    let m = assert_json_error(r, 507).await;
    assert!(m.contains("room"), "{m}");
    let list = list_files(&http, &c.gateway.url).await;
    assert_eq!(list["files"].as_array().unwrap().len(), 1, "{list}");
}
