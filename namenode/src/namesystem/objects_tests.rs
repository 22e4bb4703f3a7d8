//! Unit tests of the bucket/key namespace on a simulated namesystem: references from
//! keys and parts to files, overwrites, listings and multipart uploads.

use std::time::Duration;

use kdfs_proto::objects::Code;

use super::super::reads::FileView;
use super::super::test_fixtures::*;
use super::super::uploads::CommittedBlock;
use super::{ListRequest, ObjectMeta};
use crate::error::Error;

/// Stores `content` as one block on nodes 0 and 1, for the namespace
/// (`object_content`) or for the hash API.
async fn store(sim: &Sim, content: &[u8], object_content: bool) {
    let lease = sim.ns.begin_upload("", "", 0).await.unwrap();
    sim.ns
        .commit_replacing(
            &lease.id,
            file(content),
            content.len() as u64,
            vec![CommittedBlock {
                id: block(content),
                length: content.len() as u64,
                replicas: vec![sim.nodes[0], sim.nodes[1]],
            }],
            None,
            object_content,
        )
        .await
        .unwrap();
}

async fn put(sim: &Sim, bucket: &str, key: &str, content: &[u8]) -> bool {
    sim.ns
        .put_object(
            bucket,
            key,
            file(content),
            ObjectMeta::default(),
            "e",
            Default::default(),
        )
        .await
        .unwrap()
        .1
}

async fn live(sim: &Sim, content: &[u8]) -> bool {
    matches!(
        sim.ns.get_file(&file(content)).await,
        Ok(FileView::Live { .. })
    )
}

fn code(e: Error) -> Code {
    match e {
        Error::Namespace(r) => r.code,
        e => panic!("not a namespace refusal: {e}"),
    }
}

async fn sim() -> Sim {
    let sim = Sim::new(&["--object-claim-grace", "10s", "--multipart-expiry", "1h"]).with_nodes(2);
    sim.tick();
    sim.ns.create_bucket("bkt").await.unwrap();
    sim
}

#[tokio::test(start_paused = true)]
async fn content_is_stored_once_for_many_keys_and_kept_while_a_key_refers_to_it() {
    let sim = sim().await;
    store(&sim, b"shared", true).await;
    assert!(!put(&sim, "bkt", "a/x", b"shared").await);
    assert!(!put(&sim, "bkt", "b/y", b"shared").await);
    assert_eq!(
        sim.ns.store_counts().unwrap(),
        (1, 0),
        "one file for two keys"
    );

    // The hash API may not delete what a key holds, and says which key.
    match sim.ns.delete(file(b"shared")).await {
        Err(Error::InUse(m)) => assert!(m.contains("bkt") && m.contains("a/x"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(live(&sim, b"shared").await);

    // The first key's delete keeps the file for the second; the last one frees it.
    let gone = sim.ns.delete_objects("bkt", vec!["a/x".into()]).await;
    assert_eq!(gone.unwrap(), vec![Ok(true)]);
    assert!(live(&sim, b"shared").await);
    let again = sim
        .ns
        .delete_objects("bkt", vec!["a/x".into(), "b/y".into()]);
    assert_eq!(again.await.unwrap(), vec![Ok(false), Ok(true)]);
    assert!(!live(&sim, b"shared").await, "no referrer left: tombstoned");
    assert!(
        !sim.ns.blocks().contains(&block(b"shared")),
        "its block released"
    );
}

#[tokio::test(start_paused = true)]
async fn an_overwrite_frees_the_old_content_but_never_the_hash_api_s() {
    let sim = sim().await;
    store(&sim, b"old", true).await;
    store(&sim, b"new", true).await;
    assert!(!put(&sim, "bkt", "k", b"old").await);
    assert!(put(&sim, "bkt", "k", b"new").await, "replaced");
    assert!(
        !live(&sim, b"old").await,
        "the old object's content is garbage"
    );
    let read = sim.ns.get_object("bkt", "k", true).await.unwrap();
    assert_eq!(read.object.file_id, file(b"new"), "read after write");
    assert_eq!(read.blocks.len(), 1);
    assert_eq!(read.blocks[0].replicas.len(), 2);

    // Content the hash API stored stays when its last key goes, and a namespace
    // commit of it does not take it from the hash API.
    sim.upload(b"mine", &[0, 1]).await;
    store(&sim, b"mine", true).await;
    put(&sim, "bkt", "k", b"mine").await;
    assert!(!live(&sim, b"new").await);
    sim.ns
        .delete_objects("bkt", vec!["k".into()])
        .await
        .unwrap();
    assert!(live(&sim, b"mine").await, "the hash API still holds it");
    assert!(sim.ns.delete(file(b"mine")).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn unclaimed_content_is_collected_and_claimed_content_never_is() {
    let sim = sim().await;
    store(&sim, b"orphan", true).await;
    store(&sim, b"claimed", true).await;
    store(&sim, b"part", true).await;
    put(&sim, "bkt", "k", b"claimed").await;
    let up = sim
        .ns
        .create_upload("bkt", "m", ObjectMeta::default())
        .await
        .unwrap();
    sim.ns
        .register_part(("bkt", "m", &up), 1, file(b"part"), "p1")
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    sim.ns.gc_tick(true).await.unwrap();
    assert!(live(&sim, b"orphan").await, "within the grace");
    tokio::time::advance(Duration::from_secs(6)).await;
    sim.ns.gc_tick(true).await.unwrap();
    assert!(!live(&sim, b"orphan").await, "unclaimed past the grace");
    assert!(live(&sim, b"claimed").await, "a key holds it");
    assert!(live(&sim, b"part").await, "a part holds it");

    // An upload older than --multipart-expiry is aborted and its parts freed.
    tokio::time::advance(Duration::from_secs(3600)).await;
    sim.ns.gc_tick(true).await.unwrap();
    assert!(!live(&sim, b"part").await);
    let e = sim.ns.list_parts(("bkt", "m", &up), 0, 0).unwrap_err();
    assert_eq!(code(e), Code::NoSuchUpload);
    assert!(live(&sim, b"claimed").await);
}

#[tokio::test(start_paused = true)]
async fn buckets_are_checked_and_deleted_only_when_empty() {
    let sim = sim().await;
    let e = sim.ns.create_bucket("bkt").await.unwrap_err();
    assert_eq!(code(e), Code::BucketAlreadyOwnedByYou);
    assert_eq!(
        code(sim.ns.create_bucket("Bad_Name").await.unwrap_err()),
        Code::InvalidBucketName
    );
    assert_eq!(
        code(sim.ns.head_bucket("nope").unwrap_err()),
        Code::NoSuchBucket
    );
    store(&sim, b"x", true).await;
    assert_eq!(
        code(
            sim.ns
                .put_object(
                    "nope",
                    "k",
                    file(b"x"),
                    ObjectMeta::default(),
                    "",
                    Default::default()
                )
                .await
                .unwrap_err()
        ),
        Code::NoSuchBucket
    );
    let long = "k".repeat(1025);
    assert_eq!(
        code(
            sim.ns
                .put_object(
                    "bkt",
                    &long,
                    file(b"x"),
                    ObjectMeta::default(),
                    "",
                    Default::default()
                )
                .await
                .unwrap_err()
        ),
        Code::KeyTooLongError
    );
    assert_eq!(
        code(
            sim.ns
                .put_object(
                    "bkt",
                    "k",
                    file(b"never"),
                    ObjectMeta::default(),
                    "",
                    Default::default()
                )
                .await
                .unwrap_err()
        ),
        Code::NoSuchContent
    );
    put(&sim, "bkt", "k", b"x").await;
    let up = sim
        .ns
        .create_upload("bkt", "m", ObjectMeta::default())
        .await
        .unwrap();
    assert_eq!(
        code(sim.ns.delete_bucket("bkt").await.unwrap_err()),
        Code::BucketNotEmpty
    );
    sim.ns
        .delete_objects("bkt", vec!["k".into()])
        .await
        .unwrap();
    assert_eq!(
        sim.ns.delete_bucket("bkt").await.unwrap(),
        1,
        "one upload aborted"
    );
    let e = sim.ns.list_parts(("bkt", "m", &up), 0, 0).unwrap_err();
    assert_eq!(code(e), Code::NoSuchBucket);
    assert!(sim.ns.list_buckets().unwrap().is_empty());
}

/// Every page of a listing, each as its entries (common prefixes end with the
/// delimiter), following the continuation tokens.
fn pages(sim: &Sim, prefix: &str, delimiter: &str, max: u32) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut req = ListRequest {
        prefix: prefix.into(),
        delimiter: delimiter.into(),
        max_keys: Some(max),
        ..ListRequest::default()
    };
    loop {
        let (listing, token) = sim.ns.list_objects("bkt", &req).unwrap();
        let mut page: Vec<String> = listing.objects.into_iter().map(|(k, _)| k).collect();
        page.extend(listing.common_prefixes);
        page.sort();
        out.push(page);
        match token {
            Some(t) => req.continuation_token = t,
            None => return out,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn listings_by_prefix_delimiter_and_continuation() {
    let sim = sim().await;
    store(&sim, b"c", true).await;
    for key in ["a", "a/1", "a/2", "a/b/3", "b", "b/1", "c/d/e", "ü/1"] {
        put(&sim, "bkt", key, b"c").await;
    }
    let table: &[(&str, &str, u32, &[&[&str]])] = &[
        (
            "",
            "",
            1000,
            &[&["a", "a/1", "a/2", "a/b/3", "b", "b/1", "c/d/e", "ü/1"]],
        ),
        ("", "/", 1000, &[&["a", "a/", "b", "b/", "c/", "ü/"]]),
        ("", "/", 2, &[&["a", "a/"], &["b", "b/"], &["c/", "ü/"]]),
        ("a/", "/", 1000, &[&["a/1", "a/2", "a/b/"]]),
        ("a/", "", 2, &[&["a/1", "a/2"], &["a/b/3"]]),
        ("c/", "/", 1000, &[&["c/d/"]]),
        ("c/d/", "/", 1000, &[&["c/d/e"]]),
        ("nothing", "/", 1000, &[&[]]),
        (
            "",
            "1",
            1000,
            // "a/1", "b/1" and "ü/1" are common prefixes here, ending with "1".
            &[&["a", "a/1", "a/2", "a/b/3", "b", "b/1", "c/d/e", "ü/1"]],
        ),
        (
            "",
            "/",
            1,
            &[&["a"], &["a/"], &["b"], &["b/"], &["c/"], &["ü/"]],
        ),
    ];
    for (prefix, delimiter, max, want) in table {
        let got = pages(&sim, prefix, delimiter, *max);
        let want: Vec<Vec<String>> = want
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(
            got, want,
            "prefix {prefix:?} delimiter {delimiter:?} max {max}"
        );
    }
    // max-keys 0 answers nothing, untruncated; start-after skips; bad tokens refused.
    let req = |max_keys, start_after: &str, token: &str| ListRequest {
        max_keys,
        start_after: start_after.into(),
        continuation_token: token.into(),
        delimiter: "/".into(),
        ..ListRequest::default()
    };
    let (l, t) = sim.ns.list_objects("bkt", &req(Some(0), "", "")).unwrap();
    assert!(l.objects.is_empty() && l.common_prefixes.is_empty() && t.is_none());
    let (l, _) = sim.ns.list_objects("bkt", &req(None, "a/1", "")).unwrap();
    assert_eq!(
        l.objects[0].0, "b",
        "after a/1 with '/' skips the whole a/ prefix"
    );
    let (l, t) = sim.ns.list_objects("bkt", &req(None, "zzz", "")).unwrap();
    assert_eq!(l.common_prefixes, ["ü/"], "after every ASCII key");
    assert!(t.is_none());
    let (l, t) = sim
        .ns
        .list_objects("bkt", &req(None, "\u{10FFFF}", ""))
        .unwrap();
    assert!(l.objects.is_empty() && l.common_prefixes.is_empty() && t.is_none());
    let e = sim
        .ns
        .list_objects("bkt", &req(None, "", "not-a-token"))
        .unwrap_err();
    assert_eq!(code(e), Code::InvalidArgument);
}

#[tokio::test(start_paused = true)]
async fn multipart_completion_checks_the_parts_and_commits_their_concatenation() {
    let sim = sim().await;
    let meta = ObjectMeta {
        content_type: "text/plain".into(),
        user_metadata: vec![("color".into(), "blue".into())],
    };
    let up = sim
        .ns
        .create_upload("bkt", "big", meta.clone())
        .await
        .unwrap();
    let id = ("bkt", "big", up.as_str());
    // Parts of sizes no block size divides.
    store(&sim, b"one", true).await;
    store(&sim, b"three", true).await;
    store(&sim, b"wrong", true).await;
    sim.ns
        .register_part(id, 2, file(b"wrong"), "w")
        .await
        .unwrap();
    sim.ns
        .register_part(id, 1, file(b"one"), "\"e1\"")
        .await
        .unwrap();
    sim.ns
        .register_part(id, 2, file(b"three"), "e2")
        .await
        .unwrap();
    assert!(
        !live(&sim, b"wrong").await,
        "a replaced part's content is freed"
    );
    let (_, parts, more) = sim.ns.list_parts(id, 0, 0).unwrap();
    assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
    assert!(!more);

    let whole = file(b"onethree");
    let complete = |parts: Vec<(u32, &str)>, min: u64| {
        let parts = parts.into_iter().map(|(n, e)| (n, e.to_owned())).collect();
        sim.ns.complete_upload(id, parts, whole, "\"etag-2\"", min)
    };
    for (parts, min, want) in [
        (vec![(2, "e2"), (1, "e1")], 0, Code::InvalidPartOrder),
        (vec![(1, "e1"), (1, "e1")], 0, Code::InvalidPartOrder),
        (vec![(1, "e1"), (2, "nope")], 0, Code::InvalidPart),
        (vec![(1, "e1"), (3, "e3")], 0, Code::InvalidPart),
        (vec![(1, "e1"), (2, "e2")], 4, Code::EntityTooSmall),
        (vec![], 0, Code::InvalidArgument),
    ] {
        assert_eq!(
            code(complete(parts.clone(), min).await.unwrap_err()),
            want,
            "{parts:?}"
        );
    }
    let bad = sim
        .ns
        .complete_upload(
            ("bkt", "big", "0123456789abcdef0123456789abcdef"),
            vec![],
            whole,
            "",
            0,
        )
        .await;
    assert_eq!(code(bad.unwrap_err()), Code::NoSuchUpload);

    // Quotes around etags do not matter; the object is the parts' blocks in order.
    let row = complete(vec![(1, "e1"), (2, "\"e2\"")], 3).await.unwrap();
    assert_eq!(
        (row.size, row.file_id, row.etag.as_str()),
        (8, whole, "\"etag-2\"")
    );
    let read = sim.ns.get_object("bkt", "big", true).await.unwrap();
    assert_eq!(read.object.user_metadata, meta.user_metadata);
    assert_eq!(read.object.content_type, "text/plain");
    assert_eq!(
        read.file.blocks,
        vec![(block(b"one"), 3), (block(b"three"), 5)]
    );
    assert_eq!(read.blocks[1].offset, 3);
    assert!(read.blocks.iter().all(|b| b.replicas.len() == 2));
    // The parts' files are gone, their blocks live on in the new file.
    assert!(!live(&sim, b"one").await && !live(&sim, b"three").await);
    assert!(sim.ns.blocks().contains(&block(b"one")));
    assert_eq!(
        code(sim.ns.list_parts(id, 0, 0).unwrap_err()),
        Code::NoSuchUpload
    );
    // The completed file is the namespace's: deleting the key frees its blocks.
    sim.ns
        .delete_objects("bkt", vec!["big".into()])
        .await
        .unwrap();
    assert!(!live(&sim, b"onethree").await);
    assert!(!sim.ns.blocks().contains(&block(b"three")));
}

#[tokio::test(start_paused = true)]
async fn an_aborted_upload_leaves_nothing_and_copies_move_no_bytes() {
    let sim = sim().await;
    let up = sim
        .ns
        .create_upload("bkt", "m", ObjectMeta::default())
        .await
        .unwrap();
    store(&sim, b"p1", true).await;
    sim.ns
        .register_part(("bkt", "m", &up), 1, file(b"p1"), "e")
        .await
        .unwrap();
    let e = sim
        .ns
        .abort_upload(("bkt", "other", &up))
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::NoSuchUpload, "an upload id of another key");
    sim.ns.abort_upload(("bkt", "m", &up)).await.unwrap();
    assert!(!live(&sim, b"p1").await);
    let (uploads, _) = sim.ns.list_uploads("bkt", "", 0, ("", "")).unwrap();
    assert!(uploads.is_empty());

    store(&sim, b"src", true).await;
    put(&sim, "bkt", "src", b"src").await;
    let meta = ObjectMeta {
        content_type: "image/png".into(),
        user_metadata: vec![],
    };
    let row = sim
        .ns
        .copy_object(("bkt", "src"), ("bkt", "dst"), Some(meta), None)
        .await
        .unwrap();
    assert_eq!(
        (row.file_id, row.content_type.as_str()),
        (file(b"src"), "image/png")
    );
    assert_eq!(
        sim.ns.store_counts().unwrap().0,
        1,
        "one file for both keys"
    );
    sim.ns
        .delete_objects("bkt", vec!["src".into()])
        .await
        .unwrap();
    assert!(live(&sim, b"src").await, "the copy holds it");
    let e = sim
        .ns
        .copy_object(("bkt", "src"), ("bkt", "x"), None, None)
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::NoSuchKey);
}

#[tokio::test(start_paused = true)]
async fn objects_survive_a_restart() {
    let sim = sim().await;
    store(&sim, b"kept", true).await;
    put(&sim, "bkt", "k", b"kept").await;
    let up = sim
        .ns
        .create_upload("bkt", "m", ObjectMeta::default())
        .await
        .unwrap();
    let sim = sim.restart().await;
    assert_eq!(sim.ns.list_buckets().unwrap().len(), 1);
    let read = sim.ns.get_object("bkt", "k", false).await.unwrap();
    assert_eq!(read.file.id, file(b"kept"));
    assert!(sim.ns.list_parts(("bkt", "m", &up), 0, 0).is_ok());
    // References survive too: the key still keeps the content from the hash API.
    assert!(matches!(
        sim.ns.delete(file(b"kept")).await,
        Err(Error::InUse(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn uploads_in_progress_list_by_key_then_id_with_markers() {
    let sim = sim().await;
    let mut ids = Vec::new();
    for key in ["b", "a", "a", "c/x"] {
        let up = sim
            .ns
            .create_upload("bkt", key, ObjectMeta::default())
            .await
            .unwrap();
        ids.push((key.to_owned(), up));
    }
    ids.sort();
    let (all, more) = sim.ns.list_uploads("bkt", "", 0, ("", "")).unwrap();
    assert!(!more);
    let got: Vec<_> = all
        .iter()
        .map(|(id, r)| (r.key.clone(), id.clone()))
        .collect();
    assert_eq!(got, ids, "by key, then upload id");
    // Page by page with both markers; a key marker alone skips that key's uploads.
    let (first, more) = sim.ns.list_uploads("bkt", "", 2, ("", "")).unwrap();
    assert!(more);
    let (id, row) = first.last().unwrap();
    let (rest, more) = sim.ns.list_uploads("bkt", "", 2, (&row.key, id)).unwrap();
    assert!(!more);
    assert_eq!(first.len() + rest.len(), 4);
    let (after_a, _) = sim.ns.list_uploads("bkt", "", 0, ("a", "")).unwrap();
    assert_eq!(after_a.len(), 2);
    let (only_c, _) = sim.ns.list_uploads("bkt", "c/", 0, ("", "")).unwrap();
    assert_eq!(only_c.len(), 1);
    let e = sim
        .ns
        .list_uploads("bkt", "", 0, ("a", "../x"))
        .unwrap_err();
    assert_eq!(code(e), Code::NoSuchUpload);
}

#[tokio::test(start_paused = true)]
async fn storing_unclaimed_content_again_restarts_its_grace() {
    let sim = sim().await;
    store(&sim, b"again", true).await;
    tokio::time::advance(Duration::from_secs(8)).await;
    store(&sim, b"again", true).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    sim.ns.gc_tick(true).await.unwrap();
    assert!(
        live(&sim, b"again").await,
        "13 s after the first commit, 5 s after the last"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    sim.ns.gc_tick(true).await.unwrap();
    assert!(!live(&sim, b"again").await);
}
