//! A gateway given several namenodes (`--namenode A,B,C`): its calls follow the leader
//! past a namenode that refuses as "not the leader" and one that is down, `/info` lists
//! each with its role, and with no leader at all uploads and reads fail fast with 503.
//! The leader here is the real in-process namenode of a `TestCluster`; the others are
//! real gRPC servers refusing as HA followers do (`common::follower`).

mod common;
mod support;

use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::follower::Follower;
use common::{Gateway, assert_json_error, http};
use serde_json::{Value, json};
use support::{content, download, get_json, upload, upload_ok};

/// `host:port` nothing listens on (the port was bound, then released).
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_the_leader_and_info_lists_every_namenode_with_its_role() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster
        .namenode_url
        .trim_start_matches("http://")
        .to_owned();
    let follower = Follower::start(1, Some(&leader)).await;
    let dead = dead_address().await;
    // The follower first: every call starts there until it points to the leader.
    let list = format!("{}, http://{dead},{}", follower.url, cluster.namenode_url);
    let gw = Gateway::start(&list, &[]).await;
    let c = http();

    let small = content(1000, 1);
    let large = content(3 * common::cluster::BLOCK as usize + 17, 2);
    for (name, data) in [("small.bin", &small), ("large.bin", &large)] {
        let v = upload_ok(&c, &gw.url, name, data).await;
        let hash = v["hash"].as_str().unwrap();
        assert_eq!(&download(&c, &gw.url, hash).await, data, "{name}");
    }
    assert!(
        follower.refused() >= 1,
        "the first call went to the follower"
    );
    let refused = follower.refused();
    upload_ok(&c, &gw.url, "again.bin", &content(500, 3)).await;
    assert_eq!(
        follower.refused(),
        refused,
        "once found, calls go straight to the leader"
    );

    let info = get_json(&c, &gw.at("/info")).await;
    assert_eq!(info["status"], "ok", "{info}");
    assert_eq!(info["namenode"], list.as_str());
    assert_eq!(
        info["namenodes"],
        json!([
            {"id": 1, "address": follower.address(), "role": "follower"},
            {"id": null, "address": dead, "role": "unreachable"},
            {"id": 0, "address": leader, "role": "leader"},
        ]),
        "{info}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_leader_uploads_and_reads_fail_fast_with_503() {
    let follower = Follower::start(2, None).await;
    let dead = dead_address().await;
    let gw = Gateway::start(&format!("{},http://{dead}", follower.url), &[]).await;
    let c = http();

    let started = Instant::now();
    let r = upload(&c, &gw.url, "a.bin", &content(1000, 4)).await;
    let m = assert_json_error(r, 503).await;
    let took = started.elapsed();
    assert!(m.contains("no namenode leader"), "{m}");
    // One search for a leader (10 s), not one per step of the upload.
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(follower.refused() >= 2, "asked again while it looked");

    let hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let r = c
        .get(gw.at(&format!("/download?hash={hash}")))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 503).await;

    let r = c.get(gw.at("/info")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let info: Value = r.json().await.unwrap();
    assert_eq!(
        info["namenodes"],
        json!([
            {"id": 2, "address": follower.address(), "role": "follower"},
            {"id": null, "address": dead, "role": "unreachable"},
        ]),
        "{info}"
    );
    gw.stop().await;
}
