//! `POST /datanodes/{id}/decommission` (and `DELETE` to cancel) against an in-process
//! cluster: guarded by the bearer token, ids validated, the drain reported until the
//! node's blocks are at full replication elsewhere.

mod common;

use common::cluster::{Spec, TestCluster};
use common::{DEADLINE, assert_json_error, http, multipart, wait_until};
use serde_json::Value;

const TOKEN: &str = "operator-token";

async fn info(c: &reqwest::Client, cluster: &TestCluster) -> Value {
    c.get(cluster.gateway.at("/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn state_of(info: &Value, id: &str) -> String {
    info["datanodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .map(|d| d["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_decommissions_a_datanode_and_sees_it_drained() {
    let cluster = TestCluster::with(Spec {
        datanodes: 4,
        gateway_args: vec![format!("--auth-token={TOKEN}")],
        ..Spec::default()
    })
    .await;
    let c = http();
    let (ct, body) = multipart(&[("file", Some("a.bin"), &[7u8; 300 << 10])]);
    let up: Value = c
        .post(cluster.gateway.at("/upload"))
        .bearer_auth(TOKEN)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hash = up["hash"].as_str().expect("uploaded").to_owned();
    // A node holding the file (replication 3 of 4 nodes).
    let file: Value = c
        .get(cluster.gateway.at(&format!("/files/{hash}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = file["blocks"][0]["replicas"][0]["id"]
        .as_str()
        .expect("a replica")
        .to_owned();
    let at = |id: &str| cluster.gateway.at(&format!("/datanodes/{id}/decommission"));

    // Guarded: no token, no decommission.
    let r = c.post(at(&id)).send().await.unwrap();
    assert_json_error(r, 401).await;
    assert_eq!(state_of(&info(&c, &cluster).await, &id), "live");
    // Ids are validated before anything else.
    for bad in ["not-a-uuid", "..%2F..%2Fetc", &"a".repeat(36)] {
        let r = c.post(at(bad)).bearer_auth(TOKEN).send().await.unwrap();
        assert_json_error(r, 400).await;
    }
    let unknown = "00000000-0000-4000-8000-000000000000";
    let r = c.post(at(unknown)).bearer_auth(TOKEN).send().await.unwrap();
    assert_json_error(r, 404).await;

    let r: Value = c
        .post(at(&id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "decommissioning", "{r}");
    assert_eq!(r["datanode"], id.as_str());
    // The file's one block is held there and not yet anywhere else but two nodes.
    assert!(r["blocks_left"] == 1 || r["drained"] == true, "{r}");
    assert_eq!(state_of(&info(&c, &cluster).await, &id), "decommissioning");
    // Asking again reports the drain; it ends once the copy to the fourth node landed.
    wait_until("drained", DEADLINE, || {
        let (c, url) = (c.clone(), at(&id));
        async move {
            let r: Value = c
                .post(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["drained"] == true && r["blocks_left"] == 0
        }
    })
    .await;

    // Cancelled: live again.
    let r: Value = c
        .delete(at(&id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "live", "{r}");
    assert_eq!(state_of(&info(&c, &cluster).await, &id), "live");
}
