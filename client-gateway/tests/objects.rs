//! The client library's bucket/key calls against a real in-process cluster: an
//! object's content stored once and read back by key and by hash, a multipart upload
//! of parts no block size divides completed into one verified file, and the hash
//! API's delete refused (409, naming the key) while a key holds the content.

mod common;
mod support;

use common::cluster::{BLOCK, TestCluster};
use common::http;
use kdfs_client_gateway::Error;
use kdfs_client_gateway::client::ByteRange;
use kdfs_client_gateway::client::objects::{CompletedPart, Completion, ListQuery, ObjectMetadata};
use kdfs_core::FileId;
use kdfs_proto::objects::Code;
use support::{collect, content, sha, source};

fn code(e: Error) -> Code {
    match e {
        Error::Namespace(r) => r.code,
        e => panic!("not a namespace refusal: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_multipart_uploads_through_the_client_library() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client.create_bucket("docs").await.unwrap();
    assert_eq!(
        code(client.head_bucket("nope").await.unwrap_err()),
        Code::NoSuchBucket
    );

    // One object of two blocks under two keys: stored once.
    let data = content(BLOCK as usize + 1234, 3);
    let stored = client
        .upload_object_content(
            source(data.clone(), 64 * 1024),
            "text/plain",
            Some(data.len() as u64),
        )
        .await
        .unwrap();
    let meta = ObjectMetadata {
        content_type: "text/plain".into(),
        user_metadata: vec![("owner".into(), "ana".into())],
    };
    for key in ["a/report.txt", "b/copy.txt"] {
        client
            .put_object(
                "docs",
                key,
                stored.record.id,
                &meta,
                "\"v1\"",
                &Default::default(),
            )
            .await
            .unwrap();
    }
    let read = client
        .get_object("docs", "a/report.txt", true)
        .await
        .unwrap();
    assert_eq!(read.object.metadata, meta);
    let info = read.file_info().unwrap();
    assert_eq!(info.blocks.len(), 2);
    let (_, body) = client.download(read.object.file_id, None).await.unwrap();
    assert_eq!(
        sha(&collect(body).await),
        sha(&data),
        "read back by its hash"
    );

    // The hash API's delete is refused while a key holds the content: 409 naming it.
    let url = &cluster.gateway.url;
    let r = http()
        .delete(format!("{url}/files/{}", stored.record.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("docs") && body.contains("report.txt"),
        "{body}"
    );

    let listing = client
        .list_objects(
            "docs",
            &ListQuery {
                delimiter: "/".into(),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listing.common_prefixes, ["a/", "b/"]);

    // Multipart: parts of BLOCK + 1000 and 5000 bytes, so the file's blocks are
    // 1 MiB, 1000 and 5000 bytes long: not aligned to the block size.
    let up = client
        .create_multipart_upload("docs", "big.bin", &ObjectMetadata::default())
        .await
        .unwrap();
    let id = ("docs", "big.bin", up.as_str());
    let parts = [content(BLOCK as usize + 1000, 5), content(5000, 6)];
    let mut completed = Vec::new();
    let mut part_files = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let stored = client
            .upload_object_content(source(part.clone(), 64 * 1024), "", Some(part.len() as u64))
            .await
            .unwrap();
        let n = i as u32 + 1;
        let etag = format!("\"p{n}\"");
        part_files.push(stored.record.id);
        client
            .register_part(id, n, stored.record.id, &etag)
            .await
            .unwrap();
        completed.push(CompletedPart {
            part_number: n,
            etag,
        });
    }
    let listed = client.list_parts(id, 0, 0).await.unwrap();
    assert_eq!(listed.parts.len(), 2);
    let whole: Vec<u8> = parts.concat();
    let completion = Completion {
        parts: completed,
        file_id: FileId::parse(&sha(&whole)).unwrap(),
        etag: "\"m-2\"".into(),
        min_part_size: 5 * 1024,
    };
    let done = client
        .complete_multipart_upload(id, &completion)
        .await
        .unwrap();
    assert_eq!(done.size, whole.len() as u64);
    let (info, body) = client.download(done.file_id, None).await.unwrap();
    let lengths: Vec<u64> = info.blocks.iter().map(|b| b.length).collect();
    assert_eq!(lengths, [BLOCK, 1000, 5000]);
    assert_eq!(
        sha(&collect(body).await),
        sha(&whole),
        "the whole file verified"
    );
    // A range across the parts' boundary.
    let cut = ByteRange {
        start: BLOCK + 500,
        end: BLOCK + 3000,
    };
    let (_, body) = client.download(done.file_id, Some(cut)).await.unwrap();
    assert_eq!(
        collect(body).await,
        whole[cut.start as usize..cut.end as usize]
    );
    let e = client.list_parts(id, 0, 0).await.unwrap_err();
    assert_eq!(code(e), Code::NoSuchUpload, "completed uploads are gone");
    // The parts' files (one uploaded alone, one in a small-file batch) went with it.
    for f in part_files {
        assert!(matches!(client.get(f).await, Err(Error::Deleted(_))));
    }

    // Removing every key frees the content: the hash API then finds it deleted.
    let results = client
        .delete_objects(
            "docs",
            &["a/report.txt".into(), "b/copy.txt".into(), "big.bin".into()],
        )
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.outcome == Ok(true)));
    assert!(matches!(
        client.get(stored.record.id).await,
        Err(Error::Deleted(_))
    ));
    assert_eq!(client.delete_bucket("docs").await.unwrap(), 0);
}
