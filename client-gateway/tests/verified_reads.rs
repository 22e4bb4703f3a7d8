//! What the gateway serves (issue 24, finding 7) against a real in-process cluster: a
//! datanode whose copy of a block was changed on disk with its chunk CRCs rewritten to
//! match (`TestCluster::forge`) serves wrong bytes that pass every CRC. A download
//! then either returns the right bytes (another replica, compared by hash) or is
//! broken off; it never completes with wrong bytes, for a whole file or for a range.

mod common;
mod support;

use common::cluster::{BLOCK, Spec, TestCluster};
use common::http;
use kdfs_core::FileId;
use support::{content, sha, upload_ok};

/// The outcome of a GET: its status, and its body if it arrived complete (a body
/// broken off short of its Content-Length is an error for the HTTP client).
async fn get(c: &reqwest::Client, url: &str, range: Option<(u64, u64)>) -> (u16, Option<Vec<u8>>) {
    let mut req = c.get(url);
    if let Some((a, b)) = range {
        req = req.header("range", format!("bytes={a}-{}", b - 1));
    }
    let r = req.send().await.expect("the gateway answers");
    let status = r.status().as_u16();
    (status, r.bytes().await.ok().map(|b| b.to_vec()))
}

/// Datanode indexes holding block `index` of file `hash`.
async fn holders(cluster: &TestCluster, hash: &str, index: usize) -> (String, Vec<usize>) {
    let info = cluster
        .client()
        .get(FileId::parse(hash).unwrap())
        .await
        .unwrap();
    let block = &info.blocks[index];
    let nodes = block
        .replicas
        .iter()
        .map(|r| {
            cluster
                .datanode_index(&r.address)
                .expect("a cluster datanode")
        })
        .collect();
    (block.id.to_string(), nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bytes_never_complete_a_download_or_a_range() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    // Three blocks; the last (300,000 bytes) has a checksum sidecar, so it can be forged.
    let data = content(2 * BLOCK as usize + 300_000, 7);
    let hash = upload_ok(&c, url, "forged.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let download = format!("{url}/download?hash={hash}");

    // Every replica of the last block forged: nothing can verify it.
    let (last, nodes) = holders(&cluster, &hash, 2).await;
    assert_eq!(nodes.len(), 3);
    let at = 200_000;
    for &i in &nodes {
        cluster.forge(i, &last, at);
    }
    let (status, body) = get(&c, &download, None).await;
    if let Some(body) = &body {
        panic!(
            "status {status}: a complete body of {} bytes (sha256 {}, content's {hash})",
            body.len(),
            sha(body)
        );
    }
    // A range around the forged byte: never served, even though only 21 bytes are asked.
    let flipped = 2 * BLOCK + at;
    let (status, body) = get(&c, &download, Some((flipped - 10, flipped + 11))).await;
    if let Some(body) = body {
        assert_ne!(
            status, 206,
            "a complete range of the forged block: {body:?}"
        );
    }
    // A range of the intact first block is still served.
    let (status, body) = get(&c, &download, Some((10, 1000))).await;
    assert_eq!(status, 206);
    assert!(body.expect("complete") == data[10..1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replicas_are_failed_over() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let data = content(2 * BLOCK as usize + 300_000, 8);
    let hash = upload_ok(&c, url, "forged.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let download = format!("{url}/download?hash={hash}");
    // Two of three replicas of the middle and of the last block forged: whichever
    // replica a read tries first, one intact copy of each is left.
    for index in [1, 2] {
        let (id, nodes) = holders(&cluster, &hash, index).await;
        for &i in &nodes[..2] {
            cluster.forge(i, &id, 100_000);
        }
    }
    for _ in 0..3 {
        let (status, body) = get(&c, &download, None).await;
        assert_eq!(status, 200);
        let body = body.expect("a complete body");
        assert_eq!(sha(&body), hash, "failover delivers the content");
        let (a, b) = (BLOCK + 99_990, 2 * BLOCK + 100_010);
        let (status, body) = get(&c, &download, Some((a, b))).await;
        assert_eq!(status, 206);
        assert!(body.expect("a complete range") == data[a as usize..b as usize]);
    }
}

/// Blocks of three pieces: a forged replica read first sends two pieces before its
/// block can be verified, so that download is broken off (never completed) and the
/// replica reported; later downloads read the intact replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_found_after_bytes_went_out_breaks_the_download_off() {
    let cluster = TestCluster::with(Spec {
        namenode_args: vec![format!("--block-size={}", 3 * BLOCK)],
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = &cluster.gateway.url;
    let data = content(3 * BLOCK as usize + 300_000, 9);
    let hash = upload_ok(&c, url, "forged.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let download = format!("{url}/download?hash={hash}");
    let (id, nodes) = holders(&cluster, &hash, 0).await;
    // The third piece of every replica but one is forged.
    for &i in &nodes[..2] {
        cluster.forge(i, &id, 2 * BLOCK + 5);
    }
    // Whichever replica a download reads first, a body that completes is the content.
    common::wait_until("a download that completes", common::DEADLINE, || {
        let (c, download, hash) = (c.clone(), download.clone(), hash.clone());
        async move {
            let (status, body) = get(&c, &download, None).await;
            assert_eq!(status, 200);
            body.is_some_and(|body| {
                assert_eq!(sha(&body), hash, "a complete body is the content");
                true
            })
        }
    })
    .await;
}
