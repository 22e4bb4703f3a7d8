//! `/info` right after an upload: the datanodes holding the new blocks show their
//! bytes at once, not only after their next heartbeat (issue 28).

mod common;
mod support;

use common::cluster::{BLOCK, Spec, TestCluster};
use common::http;
use serde_json::Value;
use support::{content, get_json, upload_ok};

/// Heartbeats a minute apart (and liveness timeouts to match), so none falls between
/// the upload and the `/info` that follows it: the `used` shown is the namenode's own
/// count of the committed replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_shows_an_uploads_bytes_before_the_next_heartbeat() {
    let cluster = TestCluster::with(Spec {
        namenode_args: [
            "--heartbeat-interval=60s",
            "--stale-after=600s",
            "--dead-after=900s",
        ]
        .map(String::from)
        .to_vec(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = cluster.gateway.url.clone();
    // Two blocks: the second one shorter.
    let data = content(BLOCK as usize * 3 / 2, 28);
    upload_ok(&c, &url, "new.bin", &data).await;

    let info: Value = get_json(&c, &format!("{url}/info")).await;
    let dns = info["datanodes"].as_array().unwrap();
    let holding = dns
        .iter()
        .filter(|d| d["used"].as_u64().unwrap() >= data.len() as u64)
        .count();
    // The default min_replicas: every block is acknowledged by at least two.
    assert!(holding >= 2, "{holding} datanodes show the upload: {info}");
    for d in dns {
        let (capacity, used, available) = (
            d["capacity"].as_u64().unwrap(),
            d["used"].as_u64().unwrap(),
            d["available"].as_u64().unwrap(),
        );
        assert!(available <= capacity.saturating_sub(used), "{d}");
    }
}
