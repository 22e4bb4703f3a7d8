//! Small files against a real in-process cluster: reservations of their own size
//! rather than a block, batches of concurrent uploads (lingering for returning
//! clients), and batches surviving a datanode that dies under them.

mod common;
mod support;

use std::time::Duration;

use common::cluster::{BLOCK, Spec, TestCluster};
use common::http;
use kdfs_client_gateway::Client;
use support::{collect, content, download, list_files, sha, source, spawn_upload, upload_ok};

/// A file known to be small reserves its own size, not a whole block, from the
/// gateway's budget and on each datanode. On datanodes with room for two blocks, 16
/// small files uploaded at once all fit (reserving a block each, a node could take two
/// at a time and would report itself full meanwhile). A library source longer than the
/// length it announced fails and leaves no file; an exact bound over several blocks
/// round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_uploads_reserve_their_size_not_a_block() {
    let cluster = TestCluster::with(Spec {
        capacity: "2MiB".into(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let data = content(4096, 7_000 + i);
        tasks.push(spawn_upload(&c, &url, format!("s{i}.bin"), data));
    }
    for t in tasks {
        let (hash, data) = t.await.unwrap();
        assert!(download(&c, &url, &hash).await == data, "{hash}");
    }

    let client = cluster.client();
    let long = content(10_000, 7_100);
    // In pieces of 1000 bytes, and with a first piece that fills the bound exactly
    // (the bytes after it must still fail the upload).
    for piece in [1000, 4096] {
        let e = client
            .upload_at_most(source(long.clone(), piece), "long.bin", "", Some(4096))
            .await
            .expect_err("a source longer than its bound");
        assert!(
            matches!(e, kdfs_client_gateway::Error::Source(_)) && e.to_string().contains("longer"),
            "{piece}: {e}"
        );
    }
    let list = list_files(&c, &url).await;
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 16, "{list}");
    assert!(files.iter().all(|f| f["hash"] != sha(&long).as_str()));

    // On roomier datanodes: a bound equal to the length, over three blocks.
    drop(cluster);
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let data = content(2 * BLOCK as usize + BLOCK as usize / 2, 7_200);
    let up = client
        .upload_at_most(
            source(data.clone(), 100_000),
            "bounded.bin",
            "",
            Some(data.len() as u64),
        )
        .await
        .unwrap();
    assert_eq!(up.record.id.to_string(), sha(&data));
    assert_eq!(up.record.blocks.len(), 3);
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data);
}

/// Datanodes with less room than a block still take files that fit: `/upload` tells
/// the namenode the body's length, and placement asks for that much room, not a block
/// (a larger file on the same datanodes: `failures.rs`,
/// `out_of_space_is_507_and_too_few_datanodes_503`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_fit_on_datanodes_with_less_room_than_a_block() {
    let cluster = TestCluster::with(Spec {
        capacity: "512KiB".into(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let small = content(4096, 7_300);
    let up = upload_ok(&c, &url, "small.bin", &small).await;
    assert_eq!(up["replicas"], 3, "{up}");
    let hash = up["hash"].as_str().unwrap().to_owned();
    assert!(download(&c, &url, &hash).await == small);
    let list = list_files(&c, &url).await;
    assert_eq!(list["files"][0]["hash"], hash.as_str(), "{list}");
}

/// Uploads `files` at once through one client, each bounded by its length (as
/// `/upload` bounds a file by its body), and checks every answer and every download.
/// Returns how many answers said the content already existed.
async fn upload_all_at_once(client: &Client, files: Vec<(String, Vec<u8>)>) -> usize {
    let mut tasks = Vec::new();
    for (name, data) in files {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let len = data.len() as u64;
            let up = client
                .upload_at_most(source(data.clone(), 1000), &name, "text/plain", Some(len))
                .await
                .unwrap_or_else(|e| panic!("upload of {name}: {e}"));
            assert_eq!(up.record.id.to_string(), sha(&data), "{name}");
            assert_eq!(up.record.size, len, "{name}");
            assert_eq!(up.record.content_type, "text/plain", "{name}");
            assert!(up.replicas >= 2, "{name}: {} replicas", up.replicas);
            if !up.existed {
                assert_eq!(up.record.name, name);
            }
            (up, data)
        }));
    }
    let mut existed = 0;
    for t in tasks {
        let (up, data) = t.await.unwrap();
        existed += usize::from(up.existed);
        let (_, body) = client.download(up.record.id, None).await.unwrap();
        assert!(collect(body).await == data, "{}", up.record.name);
    }
    existed
}

/// Concurrent small uploads of one client share batches (one lease, one WriteBlocks
/// stream per hop and one CommitFiles for many files), and each file keeps its own
/// name, type and content; the same content twice is stored once. With batching off
/// every upload goes alone, and files that cannot be batched (empty, over a batched
/// block) go alone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_uploads_are_batched_and_each_round_trips() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let shared = content(5000, 8_000);
    let mut files: Vec<(String, Vec<u8>)> = (0..38u64)
        .map(|i| {
            let len = match i {
                0 => 1,
                1 => BLOCK as usize,
                _ => 100 + 997 * i as usize,
            };
            (format!("b{i}.txt"), content(len, 8_001 + i))
        })
        .collect();
    files.push(("twin-a.txt".into(), shared.clone()));
    files.push(("twin-b.txt".into(), shared.clone()));
    let existed = upload_all_at_once(&client, files).await;
    assert_eq!(existed, 1, "the shared content is stored once");
    let stats = client.batch_stats();
    assert_eq!(stats.files, 40, "{stats:?}");
    assert!(stats.batches < 40, "uploads were not batched: {stats:?}");
    let listing = client.list(100, "", "").await.unwrap();
    assert_eq!(listing.files.len(), 39);

    // Not batched: an empty file, one over a batched block, and everything with
    // batching off.
    let empty = upload_all_at_once(&client, vec![("empty.txt".into(), Vec::new())]).await;
    let big = vec![("big.txt".into(), content(BLOCK as usize + 1, 8_100))];
    upload_all_at_once(&client, big).await;
    assert_eq!(client.batch_stats(), stats);
    let alone = Client::new(
        &cluster.namenode_url,
        kdfs_client_gateway::ClientOptions {
            batch_small_files: false,
            ..Default::default()
        },
    )
    .unwrap();
    let files = (0..8u64)
        .map(|i| (format!("alone{i}.txt"), content(4096, 8_200 + i)))
        .collect();
    assert_eq!(upload_all_at_once(&alone, files).await + empty, 0);
    assert_eq!(alone.batch_stats().batches, 0);
    assert_eq!(client.list(100, "", "").await.unwrap().files.len(), 49);
}

/// A batch lingers for as many files as the last one carried (`batch_linger`), so
/// clients that send their next file once answered share one batch; but a lone upload
/// never waits for files that are not coming (a client alone: at once; after a burst:
/// at most the linger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_batches_gather_returning_clients_and_never_hold_a_lone_upload() {
    let cluster = TestCluster::start(3).await;
    let with_linger = |linger: Duration| {
        Client::new(
            &cluster.namenode_url,
            kdfs_client_gateway::ClientOptions {
                batch_linger: linger,
                ..Default::default()
            },
        )
        .unwrap()
    };
    // One client alone, one file after the other: each batch carries one file and the
    // next one expects one, so none waits out the (minute-long) linger.
    let alone = with_linger(Duration::from_secs(60));
    let sequential = async {
        for i in 0..5u64 {
            let file = vec![(format!("seq{i}.txt"), content(3000, 8_500 + i))];
            upload_all_at_once(&alone, file).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), sequential)
        .await
        .expect("a lone upload waited for files that were not coming");
    assert_eq!(alone.batch_stats().files, 5);

    // After a burst, a lone file waits at most the linger for the burst's size.
    let bursty = with_linger(Duration::from_millis(300));
    let burst = (0..8u64)
        .map(|i| (format!("burst{i}.txt"), content(2000, 8_600 + i)))
        .collect();
    upload_all_at_once(&bursty, burst).await;
    let late = vec![("late.txt".into(), content(2000, 8_700))];
    tokio::time::timeout(Duration::from_secs(30), upload_all_at_once(&bursty, late))
        .await
        .expect("a lone upload after a burst waited past the linger");

    // Eight clients, each sending its next file once answered: all stored, in batches.
    let looping = with_linger(Duration::from_millis(500));
    let clients: Vec<_> = (0..8u64)
        .map(|c| {
            let client = looping.clone();
            tokio::spawn(async move {
                for round in 0..4u64 {
                    let seed = 8_800 + c * 10 + round;
                    let file = vec![(format!("loop{c}-{round}.txt"), content(1500, seed))];
                    upload_all_at_once(&client, file).await;
                }
            })
        })
        .collect();
    let all = async {
        for c in clients {
            c.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("looping clients stalled");
    let stats = looping.batch_stats();
    assert_eq!(stats.files, 32, "{stats:?}");
    assert!(stats.batches < 32, "uploads were not batched: {stats:?}");
    let listing = alone.list(100, "", "").await.unwrap();
    assert_eq!(listing.files.len(), 5 + 9 + 32);
}

/// A datanode dies and the namenode does not know yet, so it stays in the pipelines:
/// a batch whose head is the dead node fails and its files go alone (the pipeline with
/// recovery leaves the node out); a batch that only lost a later node commits its files
/// with the two replicas it got. Every file is stored and reads back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_uploads_survive_a_datanode_dying_under_their_batches() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let warm = vec![("warm.txt".into(), content(4096, 8_300))];
    upload_all_at_once(&client, warm).await;
    cluster.kill(0);
    for round in 0..3u64 {
        let files = (0..16u64)
            .map(|i| {
                let seed = 8_400 + round * 100 + i;
                (
                    format!("r{round}-{i}.txt"),
                    content(4096 + i as usize, seed),
                )
            })
            .collect();
        upload_all_at_once(&client, files).await;
    }
    assert_eq!(client.list(100, "", "").await.unwrap().files.len(), 49);
}
