//! Uploads through the gRPC API as the gateway makes them: begin, allocate, commit
//! (one file or a batch), read, list, delete, and the errors on the way.

use std::time::Duration;

use kdfs_proto::{pb, transport};
use kdfs_testkit::http_get;
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn upload_get_list_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 3).await;
    for d in &mut dns.clone() {
        d.heartbeat().await;
    }

    let lease = c
        .begin_upload(pb::BeginUploadRequest {
            name: "hello.txt".into(),
            content_type: String::new(),
            replication: 0,
            max_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (lease.replication, lease.min_replicas, lease.block_size),
        (3, 2, 1 << 20)
    );
    // Block 0's pipeline rides on BeginUpload.
    let mut first: Vec<_> = lease.pipeline.iter().map(|l| l.id.clone()).collect();
    first.sort();
    first.dedup();
    assert_eq!(
        first.len(),
        3,
        "BeginUpload's pipeline: {:?}",
        lease.pipeline
    );
    let pipeline = c
        .allocate_block(pb::AllocateBlockRequest {
            upload_id: lease.upload_id.clone(),
            block_index: 0,
            exclude: vec![],
            replicas: 0,
            max_length: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .pipeline;
    assert_eq!(pipeline.len(), 3);
    let mut ids: Vec<_> = pipeline.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct nodes");

    // Too few acks: refused, and the lease stays usable.
    let short = commit(&mut c, &lease.upload_id, b"hello", &[&dns[0]])
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition, "{short:?}");
    let done = commit(&mut c, &lease.upload_id, b"hello", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    assert!(!done.existed);
    let rec = done.file.unwrap();
    assert_eq!((rec.name.as_str(), rec.size), ("hello.txt", 5));
    assert_eq!(rec.content_type, "application/octet-stream");

    // Read-your-writes: the pipeline's replicas are located at once.
    let got = get(&mut c, b"hello").await.unwrap();
    assert_eq!(got.state, pb::FileState::Live as i32);
    assert_eq!(got.blocks.len(), 1);
    assert_eq!(got.blocks[0].replicas.len(), 2);

    // The same content again: existed, first name kept.
    let again = upload(&mut c, "other-name", b"hello", &[&dns[2], &dns[1]])
        .await
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.file.unwrap().name, "hello.txt");
    // Its acks are real replicas too.
    assert_eq!(
        get(&mut c, b"hello").await.unwrap().blocks[0]
            .replicas
            .len(),
        3
    );

    upload(&mut c, "second.bin", b"second", &[&dns[0], &dns[2]])
        .await
        .unwrap();
    let list = c
        .list_files(pb::ListFilesRequest {
            limit: 0,
            after: String::new(),
            name_contains: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list
        .files
        .iter()
        .map(|f| f.file.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, vec!["second.bin", "hello.txt"], "newest first");
    assert_eq!(list.files[1].min_live_replicas, 3);

    let del = c
        .delete_file(pb::DeleteFileRequest {
            file_id: raw(file(b"hello").as_bytes()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.deleted);
    let gone = get(&mut c, b"hello").await.unwrap();
    assert_eq!(gone.state, pb::FileState::Deleted as i32);
    assert!(gone.deleted_ms > 0);
    assert!(gone.blocks.is_empty());
    let again = c
        .delete_file(pb::DeleteFileRequest {
            file_id: raw(file(b"hello").as_bytes()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.deleted, "idempotent");
    let list = c
        .list_files(pb::ListFilesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.files.len(), 1);

    // Every holder of the dead block is told to delete it on its next heartbeat.
    let b = block(b"hello");
    for d in &dns {
        let mut d = d.clone();
        d.heartbeat().await;
        assert_eq!(d.deletes(), vec![b], "node {}", d.id);
    }

    let unknown = get(&mut c, b"never stored").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unknown = c
        .delete_file(pb::DeleteFileRequest {
            file_id: raw(file(b"never stored").as_bytes()),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = c
        .get_file(pb::GetFileRequest {
            file_id: bytes::Bytes::from_static(b"abc"),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let i = info(&mut c).await;
    assert_eq!((i.files, i.blocks, i.bytes), (1, 1, 6));
    assert!(!i.safe_mode);
    assert_eq!(i.datanodes.len(), 3);
    assert_eq!(i.replication, 3);
    nn.stop().await;
}

#[tokio::test]
async fn pagination_and_name_filter() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 2).await;
    for i in 0..5 {
        let name = format!("{}-{i}.txt", if i % 2 == 0 { "Even" } else { "odd" });
        upload(
            &mut c,
            &name,
            format!("content {i}").as_bytes(),
            &[&dns[0], &dns[1]],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let page = c
            .list_files(pb::ListFilesRequest {
                limit: 2,
                after: after.clone(),
                name_contains: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.files.len() <= 2);
        seen.extend(
            page.files
                .iter()
                .map(|f| f.file.as_ref().unwrap().name.clone()),
        );
        if page.next.is_empty() {
            break;
        }
        after = page.next;
    }
    assert_eq!(
        seen,
        vec![
            "Even-4.txt",
            "odd-3.txt",
            "Even-2.txt",
            "odd-1.txt",
            "Even-0.txt"
        ]
    );
    let even = c
        .list_files(pb::ListFilesRequest {
            limit: 10,
            after: String::new(),
            name_contains: "even".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(even.files.len(), 3);
    let bad = c
        .list_files(pb::ListFilesRequest {
            limit: 10,
            after: "zz".into(),
            name_contains: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    nn.stop().await;
}

#[tokio::test]
async fn allocation_errors_map_to_unavailable_and_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let alloc = |c: &Client, up: String| {
        let mut c = c.clone();
        async move {
            c.allocate_block(pb::AllocateBlockRequest {
                upload_id: up,
                ..Default::default()
            })
            .await
        }
    };
    let given = c
        .begin_upload(pb::BeginUploadRequest {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(given.pipeline.is_empty(), "no datanodes, yet a pipeline");
    let up = given.upload_id;
    let e = alloc(&c, up.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "no datanodes: {e:?}");

    let mut full = Vec::new();
    for p in 0..2 {
        let mut d = FakeDatanode::new(c.clone(), 100 + p);
        d.available = 10;
        d.register("").await.unwrap();
        full.push(d);
    }
    let e = alloc(&c, up.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // 10 bytes of room take a block known to hold at most 10 bytes (a small file),
    // from AllocateBlock and from BeginUpload; 11 bytes are still refused.
    let small = |up: String, max_length: u64| {
        let mut c = c.clone();
        async move {
            c.allocate_block(pb::AllocateBlockRequest {
                upload_id: up,
                max_length,
                ..Default::default()
            })
            .await
        }
    };
    let p = small(up.clone(), 10).await.unwrap().into_inner().pipeline;
    assert_eq!(p.len(), 2, "{p:?}");
    let e = small(up.clone(), 11).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for (max_size, pipeline) in [(10, 2), (11, 0), (0, 0)] {
        let given = c
            .begin_upload(pb::BeginUploadRequest {
                name: "small".into(),
                max_size,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(given.pipeline.len(), pipeline, "max_size {max_size}");
    }

    // Names are checked.
    let e = c
        .begin_upload(pb::BeginUploadRequest {
            name: "a\nb".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .begin_upload(pb::BeginUploadRequest {
            name: "x".repeat(1025),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Upload ids are checked, unknown ones refused.
    let e = alloc(&c, "nope".into()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = alloc(&c, uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Abandoned uploads are gone.
    c.abandon_upload(pb::AbandonUploadRequest {
        upload_id: up.clone(),
    })
    .await
    .unwrap();
    let e = c
        .renew_lease(pb::RenewLeaseRequest { upload_id: up })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    nn.stop().await;
}

#[tokio::test]
async fn expired_leases_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fast_args(dir.path());
    args.extend(["--lease-ttl".into(), "300ms".into()]);
    let nn = TestNamenode::start(&args).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 2).await;
    let lease = c
        .begin_upload(pb::BeginUploadRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lease.lease_ttl_ms, 300);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = commit(&mut c, &lease.upload_id, b"late", &[&dns[0], &dns[1]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    nn.stop().await;
}

/// A counter's value in a Prometheus text page (0 when absent).
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn commit_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 3).await;
    let commits = || async {
        counter(
            &http_get(nn.http, "/metrics").await.1,
            "kdfs_namenode_commits_total",
        )
    };
    let before = commits().await;

    let mut no_type = batched("no-type", b"no type", &[&dns[1], &dns[2]]);
    no_type.content_type = String::new();
    let (upload_id, r) = commit_batch(
        &mut c,
        vec![
            batched("a.txt", b"alpha", &[&dns[0], &dns[1]]),
            batched("short", b"too few acks", &[&dns[0]]),
            no_type,
            batched("a-again.txt", b"alpha", &[&dns[2], &dns[0]]),
        ],
    )
    .await
    .unwrap();
    let codes: Vec<_> = r.results.iter().map(|f| f.code).collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok as i32,
            Code::FailedPrecondition as i32,
            Code::Ok as i32,
            Code::Ok as i32
        ],
        "{:?}",
        r.results
    );
    assert!(r.results[1].message.contains("confirmed replicas"));
    assert!(r.results[1].file.is_none());
    let a = r.results[0].file.as_ref().unwrap();
    assert_eq!((a.name.as_str(), a.size), ("a.txt", 5));
    assert!(!r.results[0].existed);
    assert!(r.results[3].existed, "the same content twice");
    assert_eq!(r.results[3].file.as_ref().unwrap().name, "a.txt");

    let got = get(&mut c, b"alpha").await.unwrap();
    assert_eq!(got.state, pb::FileState::Live as i32);
    assert_eq!(got.blocks[0].replicas.len(), 3, "both copies' acks count");
    let got = get(&mut c, b"no type").await.unwrap().file.unwrap();
    assert_eq!(
        (got.name.as_str(), got.content_type.as_str()),
        ("no-type", "application/octet-stream")
    );
    assert_eq!(
        get(&mut c, b"too few acks").await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(commits().await - before >= 3.0, "counted per file");

    // The lease ended with the call.
    let again = c
        .commit_files(pb::CommitFilesRequest {
            upload_id,
            files: vec![batched("late", b"late", &[&dns[0], &dns[1]])],
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Malformed batches fail as a whole.
    let too_many = (0..=transport::MAX_BATCH_FILES)
        .map(|i| batched("n", format!("{i}").as_bytes(), &[&dns[0], &dns[1]]))
        .collect();
    let e = commit_batch(&mut c, too_many).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut bad_id = batched("bad-id", b"bad id", &[&dns[0], &dns[1]]);
    bad_id.file_id = bytes::Bytes::from_static(b"short");
    let e = commit_batch(
        &mut c,
        vec![batched("ok", b"ok", &[&dns[0], &dns[1]]), bad_id],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        get(&mut c, b"ok").await.unwrap_err().code(),
        Code::NotFound,
        "nothing of a refused batch is committed"
    );
    let e = c
        .commit_files(pb::CommitFilesRequest {
            upload_id: "not-a-lease".into(),
            files: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(info(&mut c).await.files, 2);
    nn.stop().await;
}
