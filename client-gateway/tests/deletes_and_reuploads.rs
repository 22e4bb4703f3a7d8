//! Deletes never refuse a re-upload (issue 25): content deleted and uploaded again, at
//! every moment around its delete grace and around a returning datanode's deletes,
//! hundreds of times. Every re-upload is accepted at the first try, reads back with its
//! hash, and content that stays deleted leaves every disk (block files counted on
//! every datanode at the end).

mod common;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{BLOCK, Spec, TestCluster};
use common::{DEADLINE, http, wait_until};
use support::{content, download, get_json, metric, sha, upload};

/// The namenode's counters are the process's: the test that reads one runs alone.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REPLICATION_COMMANDS: &str = "kdfs_namenode_replication_commands_total";

/// Delays between a delete and the re-upload of the same content: before, at and
/// after the 50 ms grace, and over the 300 ms heartbeats that carry the deletes out.
const DELAYS_MS: [u64; 12] = [0, 10, 25, 45, 50, 60, 100, 200, 300, 350, 500, 700];

fn cluster_spec(grace: &str) -> Spec {
    Spec {
        namenode_args: vec![
            format!("--delete-grace={grace}"),
            // Replicas of deleted content written again are also remembered as
            // orphans until no upload older than them is open: keep that short.
            "--lease-ttl=3s".to_owned(),
        ],
        ..Spec::default()
    }
}

/// Sizes that take every write path: a batched small file, one block alone, and a
/// file of two blocks.
fn sized(i: usize, seed: u64) -> Vec<u8> {
    let len = match i % 3 {
        0 => 3_000 + i,
        1 => 300_000 + i,
        _ => BLOCK as usize + 50_000 + i,
    };
    content(len, seed)
}

/// Uploads `data`, which must be accepted at once; returns its hash.
async fn upload_accepted(c: &reqwest::Client, url: &str, data: &[u8], what: &str) -> String {
    let r = upload(c, url, "again.bin", data).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{what}: the upload was refused: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["hash"], sha(data), "{what}");
    sha(data)
}

async fn delete(c: &reqwest::Client, url: &str, hash: &str) {
    let r = c
        .delete(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "delete of {hash}");
}

/// The block ids of a live file.
async fn blocks_of(c: &reqwest::Client, url: &str, hash: &str) -> BTreeSet<String> {
    let v = get_json(c, &format!("{url}/files/{hash}")).await;
    v["blocks"]
        .as_array()
        .unwrap_or_else(|| panic!("no blocks in {v}"))
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until every datanode holds exactly the blocks of the `live` files (every one
/// of them: replication 3 on 3 datanodes), then reads each back.
async fn settled(cluster: &TestCluster, live: &[(String, Vec<u8>)]) {
    let (c, url) = (http(), cluster.gateway.url.clone());
    let mut want = BTreeSet::new();
    for (hash, _) in live {
        want.extend(blocks_of(&c, &url, hash).await);
    }
    let took = Instant::now();
    wait_until(
        "every datanode holding exactly the live files' blocks",
        DEADLINE,
        || {
            let ok = (0..3).all(|i| cluster.block_files(i) == want);
            async move { ok }
        },
    )
    .await;
    eprintln!(
        "{} live blocks on each datanode, nothing else, {:.2}s after the last upload",
        want.len(),
        took.elapsed().as_secs_f64()
    );
    for (hash, data) in live {
        assert!(download(&c, &url, hash).await == *data, "{hash} reads back");
    }
}

/// Workers each upload, delete and re-upload their own contents, the re-upload after
/// every delay of `DELAYS_MS`; the last content of each stays deleted, the one before
/// it stays live. No replica a re-upload wrote is lost to a delete: with every node up
/// the namenode never has anything to copy or drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reuploads_at_every_moment_around_the_delete_grace_are_accepted() {
    const WORKERS: usize = 3;
    const CYCLES: usize = 72;
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::with(cluster_spec("50ms")).await;
    let url = cluster.gateway.url.clone();
    let commands_before = metric(&http(), &cluster.namenode_http, REPLICATION_COMMANDS).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = http();
            let contents: Vec<Vec<u8>> =
                (0..4).map(|i| sized(i + w, (w * 10 + i) as u64)).collect();
            for cycle in 0..CYCLES {
                let data = &contents[cycle % contents.len()];
                let delay = DELAYS_MS[(cycle + w) % DELAYS_MS.len()];
                let what = format!(
                    "worker {w} cycle {cycle} ({} bytes, {delay} ms)",
                    data.len()
                );
                let hash = upload_accepted(&c, &url, data, &what).await;
                delete(&c, &url, &hash).await;
                tokio::time::sleep(Duration::from_millis(delay)).await;
                upload_accepted(&c, &url, data, &what).await;
                assert!(
                    download(&c, &url, &hash).await == *data,
                    "{what}: reads back"
                );
                delete(&c, &url, &hash).await;
            }
            // One content uploaded again for good, one deleted for good (above).
            let kept = contents[CYCLES % contents.len()].clone();
            let hash = upload_accepted(&c, &url, &kept, "the kept one").await;
            (hash, kept)
        }));
    }
    let mut live = Vec::new();
    for t in tasks {
        live.push(t.await.expect("worker"));
    }
    eprintln!(
        "{} delete-and-re-upload cycles in {:.1}s, none refused",
        WORKERS * CYCLES,
        started.elapsed().as_secs_f64()
    );
    settled(&cluster, &live).await;
    let commands = metric(&http(), &cluster.namenode_http, REPLICATION_COMMANDS).await;
    assert_eq!(
        commands - commands_before,
        0.0,
        "replicas were lost and copied again (a delete removed a re-upload's replica?)"
    );
}

/// A datanode is down while content is deleted; it comes back holding the replicas,
/// and its full report earns it their deletes while the same content is uploaded
/// again, some of it at once and some while those deletes go out (and replication
/// copies the re-uploads onto it). Twice, each time another node away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reuploads_while_a_returning_datanode_deletes_are_accepted() {
    const FILES: usize = 24;
    const REUPLOADED: usize = 16;
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::with(cluster_spec("0s")).await;
    let (c, url) = (http(), cluster.gateway.url.clone());
    let mut live: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..2usize {
        let away = 1 + round;
        let contents: Vec<Vec<u8>> = (0..FILES)
            .map(|i| sized(i, 1_000 + (round * FILES + i) as u64))
            .collect();
        let mut hashes = Vec::new();
        for (i, data) in contents.iter().enumerate() {
            hashes.push(upload_accepted(&c, &url, data, &format!("round {round} file {i}")).await);
        }
        let mut doomed = BTreeSet::new();
        for h in &hashes {
            doomed.extend(blocks_of(&c, &url, h).await);
        }
        wait_until("the node going away holds every block", DEADLINE, || {
            let ok = cluster.block_files(away).is_superset(&doomed);
            async move { ok }
        })
        .await;

        cluster.kill(away);
        cluster.wait_live(2).await;
        for h in &hashes {
            delete(&c, &url, h).await;
        }
        wait_until(
            "the deleted blocks gone from the live nodes",
            DEADLINE,
            || {
                let ok = (0..3)
                    .filter(|i| *i != away)
                    .all(|i| cluster.block_files(i).is_disjoint(&doomed));
                async move { ok }
            },
        )
        .await;
        assert!(
            cluster.block_files(away).is_superset(&doomed),
            "away during the delete"
        );

        cluster.restart(away).await;
        let mut tasks = Vec::new();
        for (i, data) in contents.iter().take(REUPLOADED).enumerate() {
            let (c, url, data) = (c.clone(), url.clone(), data.clone());
            let delay = Duration::from_millis(60 * i as u64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let what = format!("round {round} re-upload {i} after {delay:?}");
                let hash = upload_accepted(&c, &url, &data, &what).await;
                assert!(
                    download(&c, &url, &hash).await == data,
                    "{what}: reads back"
                );
                (hash, data)
            }));
        }
        for t in tasks {
            live.push(t.await.expect("re-upload"));
        }
        cluster.wait_live(3).await;
        settled(&cluster, &live).await;
    }
}
