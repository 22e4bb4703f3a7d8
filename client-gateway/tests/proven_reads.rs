//! A multi-block file is hashed as a whole on a whole download (issue 24, finding 7),
//! unless this gateway proved its block list before: by uploading those bytes itself,
//! or by a whole download that passed. Alone in its binary: it reads the process-wide
//! `kdfs_gateway_whole_file_checks_total` counter.

mod common;
mod support;

use common::cluster::{BLOCK, TestCluster};
use common::http;
use support::{content, metric, sha, upload_ok};

const HASHED: &str = "kdfs_gateway_whole_file_checks_total{check=\"hashed\"}";
const PROVEN: &str = "kdfs_gateway_whole_file_checks_total{check=\"proven\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_upload_is_not_hashed_twice_and_a_range_is_not_whole() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let data = content(2 * BLOCK as usize + 1_000, 11);
    let hash = upload_ok(&c, url, "proven.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let counts = || async { (metric(&c, url, HASHED).await, metric(&c, url, PROVEN).await) };
    let before = counts().await;

    let body = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha(&body), hash, "the whole download is the content");
    let after = counts().await;
    assert_eq!(
        after.0, before.0,
        "no second whole-file pass for our own upload"
    );
    assert_eq!(after.1, before.1 + 1.0, "the proven block list was used");

    // A range never takes the whole-file check, proven or not.
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &data[10..20]);
    assert_eq!(counts().await, after);
}
