//! The bucket/key namespace (`ObjectNamespace`) over the wire as the gateway's S3 port
//! uses it: content committed with `object_content`, keys pointing to it, the S3
//! error codes in status metadata, multipart uploads, and a restart.

use kdfs_proto::objects::{CODE_HEADER, Code, Refusal};
use kdfs_proto::pb;
use kdfs_proto::pb::object_namespace_client::ObjectNamespaceClient;
use kdfs_proto::transport;
use tonic::transport::Channel;

use crate::common::*;

type Objects = ObjectNamespaceClient<Channel>;

async fn objects(nn: &TestNamenode) -> Objects {
    let ch = transport::endpoint(&nn.grpc.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    ObjectNamespaceClient::new(ch)
}

/// Commits `content` as one block for the namespace (`object_content`).
async fn store(c: &mut Client, content: &[u8], acks: &[&FakeDatanode]) {
    let lease = c
        .begin_upload(pb::BeginUploadRequest::default())
        .await
        .unwrap()
        .into_inner();
    c.commit_file(pb::CommitFileRequest {
        upload_id: lease.upload_id,
        file_id: raw(file(content).as_bytes()),
        size: content.len() as u64,
        blocks: vec![pb::CommittedBlock {
            id: raw(block(content).as_bytes()),
            length: content.len() as u64,
            replicas: acks.iter().map(|d| d.id.to_string()).collect(),
        }],
        replaces: None,
        object_content: true,
    })
    .await
    .unwrap();
}

fn put(bucket: &str, key: &str, content: &[u8]) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        bucket: bucket.into(),
        key: key.into(),
        file_id: raw(file(content).as_bytes()),
        content_type: "text/plain".into(),
        user_metadata: vec![pb::MetadataEntry {
            name: "color".into(),
            value: "blue".into(),
        }],
        etag: "\"e\"".into(),
        ..Default::default()
    }
}

fn refusal(status: tonic::Status) -> Code {
    Refusal::from_status(&status)
        .unwrap_or_else(|| panic!("no {CODE_HEADER} in {status:?}"))
        .code
}

#[tokio::test]
async fn objects_over_the_wire_refuse_with_s3_codes_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let mut o = objects(&nn).await;
    let dns = datanodes(&nn, 2).await;
    let acks = [&dns[0], &dns[1]];

    o.create_bucket(pb::CreateBucketRequest {
        bucket: "photos".into(),
    })
    .await
    .unwrap();
    let e = o
        .create_bucket(pb::CreateBucketRequest {
            bucket: "photos".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert_eq!(refusal(e), Code::BucketAlreadyOwnedByYou);
    let e = o
        .create_bucket(pb::CreateBucketRequest {
            bucket: "10.0.0.1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refusal(e), Code::InvalidBucketName);

    store(&mut c, b"cat", &acks).await;
    o.put_object(put("photos", "2024/cat.jpg", b"cat"))
        .await
        .unwrap();
    o.put_object(put("photos", "2025/same-cat.jpg", b"cat"))
        .await
        .unwrap();
    let e = o.put_object(put("nope", "k", b"cat")).await.unwrap_err();
    assert_eq!(
        (e.code(), refusal(e)),
        (tonic::Code::NotFound, Code::NoSuchBucket)
    );

    // Read with located blocks and their READ tokens.
    let got = o
        .get_object(pb::GetObjectRequest {
            bucket: "photos".into(),
            key: "2024/cat.jpg".into(),
            locate: true,
        })
        .await
        .unwrap()
        .into_inner();
    let obj = got.object.unwrap();
    assert_eq!((obj.size, obj.etag.as_str()), (3, "\"e\""));
    assert_eq!(obj.user_metadata[0].value, "blue");
    assert_eq!(got.blocks.len(), 1);
    assert!(got.blocks[0].token.is_some());
    assert_eq!(got.blocks[0].replicas.len(), 2);

    // The hash API's delete is refused while a key holds the content.
    let e = c
        .delete_file(pb::DeleteFileRequest {
            file_id: raw(file(b"cat").as_bytes()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("photos"), "{}", e.message());

    let page = o
        .list_objects(pb::ListObjectsRequest {
            bucket: "photos".into(),
            delimiter: "/".into(),
            max_keys: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.common_prefixes, ["2024/"]);
    assert!(page.is_truncated);
    let page = o
        .list_objects(pb::ListObjectsRequest {
            bucket: "photos".into(),
            delimiter: "/".into(),
            continuation_token: page.next_continuation_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.common_prefixes, ["2025/"]);
    assert!(!page.is_truncated);

    // Multipart: two parts of 3 and 4 bytes, completed as one file of 7.
    let up = o
        .create_multipart_upload(pb::CreateMultipartUploadRequest {
            bucket: "photos".into(),
            key: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .upload_id;
    for (n, content) in [(1, &b"abc"[..]), (2, b"defg")] {
        store(&mut c, content, &acks).await;
        o.register_part(pb::RegisterPartRequest {
            bucket: "photos".into(),
            key: "big".into(),
            upload_id: up.clone(),
            part_number: n,
            file_id: raw(file(content).as_bytes()),
            etag: format!("e{n}"),
        })
        .await
        .unwrap();
    }
    let complete = |parts: Vec<(u32, &str)>| pb::CompleteMultipartUploadRequest {
        bucket: "photos".into(),
        key: "big".into(),
        upload_id: up.clone(),
        parts: parts
            .into_iter()
            .map(|(part_number, etag)| pb::CompletedPart {
                part_number,
                etag: etag.into(),
            })
            .collect(),
        file_id: raw(file(b"abcdefg").as_bytes()),
        etag: "\"m-2\"".into(),
        min_part_size: 0,
    };
    let e = o
        .complete_multipart_upload(complete(vec![(2, "e2"), (1, "e1")]))
        .await
        .unwrap_err();
    assert_eq!(refusal(e), Code::InvalidPartOrder);
    let done = o
        .complete_multipart_upload(complete(vec![(1, "e1"), (2, "e2")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.object.unwrap().size, 7);
    let whole = get(&mut c, b"abcdefg").await.unwrap();
    assert_eq!(whole.state, pb::FileState::Live as i32);
    assert_eq!(
        whole.blocks.len(),
        2,
        "the parts' blocks, not block-aligned"
    );
    assert_eq!((whole.blocks[0].length, whole.blocks[1].offset), (3, 3));

    nn.stop().await;
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut o = objects(&nn).await;
    let buckets = o
        .list_buckets(pb::ListBucketsRequest {})
        .await
        .unwrap()
        .into_inner()
        .buckets;
    assert_eq!(buckets.len(), 1);
    let all = o
        .list_objects(pb::ListObjectsRequest {
            bucket: "photos".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["2024/cat.jpg", "2025/same-cat.jpg", "big"]);
    let e = o
        .delete_bucket(pb::DeleteBucketRequest {
            bucket: "photos".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refusal(e), Code::BucketNotEmpty);
    nn.stop().await;
}
