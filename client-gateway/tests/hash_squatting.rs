//! Hash squatting (issue 24, finding 3) against a real in-process cluster: a caller
//! that reaches the namenode commits the SHA-256 of someone else's content as the id of
//! its own block, by `CommitFile` and by one file of a `CommitFiles` batch. The
//! namenode refuses both, and the victim's later upload through the gateway makes the
//! record and downloads as the victim's bytes. A file of several blocks cannot claim
//! a small content's id; one of content longer than a block can be committed (its id
//! is not checked by the namenode, docs/security.md), but is never served as that
//! content, and the victim's upload replaces it.

mod common;
mod support;

use common::cluster::{BLOCK, TestCluster};
use common::http;
use kdfs_proto::pb::namenode_client::NamenodeClient;
use kdfs_proto::{pb, transport};
use sha2::{Digest, Sha256};
use support::{content, download, sha, upload_ok};
use tonic::Code;
use tonic::transport::Channel;

async fn namenode(cluster: &TestCluster) -> NamenodeClient<Channel> {
    let ch = transport::endpoint(&cluster.namenode_url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    NamenodeClient::new(ch).max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
}

fn digest(data: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&Sha256::digest(data))
}

/// The attacker's own block, uploaded honestly through the gateway, as a commit names
/// it: its id, length and the datanodes holding it.
async fn attackers_block(
    cluster: &TestCluster,
    nn: &mut NamenodeClient<Channel>,
    data: &[u8],
) -> pb::CommittedBlock {
    let blocks = attackers_blocks(cluster, nn, data).await;
    let [b] = &blocks[..] else {
        panic!("one block: {blocks:?}");
    };
    b.clone()
}

/// The attacker's own file, uploaded honestly through the gateway: its blocks.
async fn attackers_blocks(
    cluster: &TestCluster,
    nn: &mut NamenodeClient<Channel>,
    data: &[u8],
) -> Vec<pb::CommittedBlock> {
    upload_ok(&http(), &cluster.gateway.url, "mine.bin", data).await;
    let f = nn
        .get_file(pb::GetFileRequest {
            file_id: digest(data),
        })
        .await
        .unwrap()
        .into_inner();
    f.blocks
        .iter()
        .map(|b| pb::CommittedBlock {
            id: b.id.clone(),
            length: b.length,
            replicas: b.replicas.iter().map(|l| l.id.clone()).collect(),
        })
        .collect()
}

async fn lease(nn: &mut NamenodeClient<Channel>) -> String {
    nn.begin_upload(pb::BeginUploadRequest {
        name: "victim.txt".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .upload_id
}

/// The victim uploads through the gateway: a new file, downloaded as its own bytes.
async fn victim_is_served_its_own_bytes(cluster: &TestCluster, victim: &[u8]) {
    let c = http();
    let url = &cluster.gateway.url;
    let up = upload_ok(&c, url, "victim.txt", victim).await;
    assert_eq!(up["hash"], sha(victim), "{up}");
    assert_eq!(
        up["existed"], false,
        "nobody stored this content before: {up}"
    );
    assert!(download(&c, url, &sha(victim)).await == victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_file_cannot_claim_another_contents_id() {
    let cluster = TestCluster::start(3).await;
    let mut nn = namenode(&cluster).await;
    let victim = b"the victim's document, not yet uploaded";
    let mine = attackers_block(&cluster, &mut nn, b"the attacker's bytes").await;

    let upload_id = lease(&mut nn).await;
    let squat = nn
        .commit_file(pb::CommitFileRequest {
            replaces: None,
            object_content: false,
            upload_id: upload_id.clone(),
            file_id: digest(victim),
            size: mine.length,
            blocks: vec![mine.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(squat.code(), Code::InvalidArgument, "{squat:?}");
    assert!(
        squat.message().contains("not its only block's id"),
        "{squat:?}"
    );
    // An empty file's block list cannot claim it either.
    let empty = nn
        .commit_file(pb::CommitFileRequest {
            replaces: None,
            object_content: false,
            upload_id,
            file_id: digest(victim),
            size: 0,
            blocks: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let nothing = nn
        .get_file(pb::GetFileRequest {
            file_id: digest(victim),
        })
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), Code::NotFound, "{nothing:?}");

    victim_is_served_its_own_bytes(&cluster, victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_files_refuses_the_squatting_file_alone() {
    let cluster = TestCluster::start(3).await;
    let mut nn = namenode(&cluster).await;
    let victim = b"the victim's batch-sized note";
    let mine = attackers_block(&cluster, &mut nn, b"the attacker's small bytes").await;

    let upload_id = lease(&mut nn).await;
    let r = nn
        .commit_files(pb::CommitFilesRequest {
            upload_id,
            files: vec![pb::FileToCommit {
                name: "victim.txt".into(),
                content_type: String::new(),
                file_id: digest(victim),
                size: mine.length,
                blocks: vec![mine],
                object_content: false,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let [one] = &r.results[..] else {
        panic!("one result: {r:?}");
    };
    assert_eq!(one.code, Code::InvalidArgument as i32, "{one:?}");
    assert!(one.message.contains("not its only block's id"), "{one:?}");
    assert!(one.file.is_none(), "{one:?}");
    let nothing = nn
        .get_file(pb::GetFileRequest {
            file_id: digest(victim),
        })
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), Code::NotFound, "{nothing:?}");

    victim_is_served_its_own_bytes(&cluster, victim).await;
}

/// Several short blocks cannot make up a small content's id: a file of several blocks
/// must be cut into whole blocks, so it is longer than any one-block content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_short_blocks_cannot_claim_a_small_contents_id() {
    let cluster = TestCluster::start(3).await;
    let mut nn = namenode(&cluster).await;
    let victim = b"a small victim";
    let mine = attackers_block(&cluster, &mut nn, b"short").await;
    let upload_id = lease(&mut nn).await;
    let squat = nn
        .commit_file(pb::CommitFileRequest {
            replaces: None,
            object_content: false,
            upload_id,
            file_id: digest(victim),
            size: 2 * mine.length,
            blocks: vec![mine.clone(), mine],
        })
        .await
        .unwrap_err();
    assert_eq!(squat.code(), Code::InvalidArgument, "{squat:?}");
    assert!(squat.message().contains("must be whole"), "{squat:?}");
    victim_is_served_its_own_bytes(&cluster, victim).await;
}

/// A file of several blocks committed under the id of other content longer than a
/// block (its id is the SHA-256 of all its bytes, which the namenode cannot check):
/// until the content's owner uploads it, a download of that id is broken off (its
/// blocks are intact but not that content) and never completes with the claimant's
/// bytes; the owner's upload then meets the record as a conflict, proves it false and
/// replaces it, and the id serves the owner's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_id_of_several_blocks_is_replaced_by_the_victims_upload() {
    let cluster = TestCluster::start(3).await;
    let mut nn = namenode(&cluster).await;
    let len = 2 * BLOCK as usize + 100;
    let victim = content(len, 1);
    let mine = attackers_blocks(&cluster, &mut nn, &content(len, 2)).await;
    assert_eq!(mine.len(), 3);
    let upload_id = lease(&mut nn).await;
    let squat = nn
        .commit_file(pb::CommitFileRequest {
            replaces: None,
            object_content: false,
            upload_id,
            file_id: digest(&victim),
            size: len as u64,
            blocks: mine.clone(),
        })
        .await
        .expect("a file of several blocks' id is not checked by the namenode")
        .into_inner();
    assert!(squat.conflict.is_none() && !squat.existed, "{squat:?}");

    let c = http();
    let url = &cluster.gateway.url;
    let r = c
        .get(format!("{url}/download?hash={}", sha(&victim)))
        .send()
        .await
        .unwrap();
    if let Ok(body) = r.bytes().await {
        panic!(
            "a complete body of {} bytes under the victim's id (sha256 {})",
            body.len(),
            sha(&body)
        );
    }

    victim_is_served_its_own_bytes(&cluster, &victim).await;
    let stored = nn
        .get_file(pb::GetFileRequest {
            file_id: digest(&victim),
        })
        .await
        .unwrap()
        .into_inner();
    let stored: Vec<_> = stored.blocks.iter().map(|b| b.id.clone()).collect();
    assert!(
        mine.iter().all(|b| !stored.contains(&b.id)),
        "the squatter's record is gone"
    );
}
