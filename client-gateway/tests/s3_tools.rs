//! The S3 port driven by the AWS CLI, rclone and s3cmd (Debian's), the way people use
//! them: bucket lifecycle, objects of 0 B, 1 B and 5 MiB, a multipart `aws s3 cp` and
//! back with the same SHA-256, `aws s3 sync` and `rclone sync` of a tree up and back
//! (then again, transferring nothing), ranged GETs, awkward keys. Every object's bytes
//! are compared with what was sent, and a stored object is also readable by its
//! SHA-256 through `/download`.
//!
//! Sizes as the issue names them: the multipart file is 200 MiB (40 parts of 5 MiB);
//! the trees hold 500 files.

mod common;
mod support;

use std::path::Path;

use common::cluster::{Spec, TestCluster};
use common::http;
use common::s3::{self, Clients};
use support::{content, sha};

async fn cluster() -> TestCluster {
    TestCluster::with(Spec {
        s3: true,
        gateway_args: s3::key_flags(),
        ..Spec::default()
    })
    .await
}

fn clients(c: &TestCluster) -> Clients {
    Clients::new(c.gateway.s3_url.as_deref().expect("an S3 port"))
}

fn sha_of(path: &Path) -> String {
    sha(&std::fs::read(path).unwrap())
}

/// A tree of `n` files in nested directories with deterministic contents.
fn tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 4)).join(format!("e{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let size = (i * 977) % 70_000;
        std::fs::write(dir.join(format!("file {i}.bin")), content(size, i as u64)).unwrap();
    }
}

/// Every file under `root`, relative, with its SHA-256.
fn listing(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, sha_of(&p)));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_bucket_lifecycle_and_objects_of_every_size() {
    let c = cluster().await;
    let s3 = clients(&c);
    let Some(out) = s3
        .aws(&["s3api", "create-bucket", "--bucket", "life"])
        .await
    else {
        return;
    };
    s3::ok("create-bucket", &out);
    s3::ok(
        "head-bucket",
        &s3.aws(&["s3api", "head-bucket", "--bucket", "life"])
            .await
            .unwrap(),
    );
    let err = s3::failed(
        "create-bucket again",
        &s3.aws(&["s3api", "create-bucket", "--bucket", "life"])
            .await
            .unwrap(),
    );
    assert!(err.contains("BucketAlreadyOwnedByYou"), "{err}");
    let listed = s3::ok("s3 ls", &s3.aws(&["s3", "ls"]).await.unwrap());
    assert!(listed.contains("life"), "{listed}");

    let work = tempfile::tempdir().unwrap();
    for (name, size) in [("empty", 0usize), ("one", 1), ("five", 5 << 20)] {
        let data = content(size, size as u64 + 7);
        let src = work.path().join(name);
        std::fs::write(&src, &data).unwrap();
        let key = format!("s3://life/sizes/{name}");
        s3::ok(
            "cp up",
            &s3.aws(&["s3", "cp", src.to_str().unwrap(), &key])
                .await
                .unwrap(),
        );
        let head = s3::ok(
            "head-object",
            &s3.aws(&[
                "s3api",
                "head-object",
                "--bucket",
                "life",
                "--key",
                &format!("sizes/{name}"),
            ])
            .await
            .unwrap(),
        );
        let v: serde_json::Value = serde_json::from_str(&head).unwrap();
        assert_eq!(v["ContentLength"], size, "{head}");
        // A single PUT's ETag is the content's real MD5.
        let md5 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&data))
        };
        assert_eq!(v["ETag"], format!("\"{md5}\""), "{head}");
        let back = work.path().join(format!("{name}.back"));
        s3::ok(
            "cp down",
            &s3.aws(&["s3", "cp", &key, back.to_str().unwrap()])
                .await
                .unwrap(),
        );
        assert_eq!(sha_of(&back), sha(&data), "{name} round-trips");
        // The same content by its SHA-256 through the HTTP API.
        let r = http()
            .get(c.gateway.at(&format!("/download?hash={}", sha(&data))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name} by hash");
        assert_eq!(sha(&r.bytes().await.unwrap()), sha(&data));
    }
    let err = s3::failed(
        "delete a bucket that holds objects",
        &s3.aws(&["s3api", "delete-bucket", "--bucket", "life"])
            .await
            .unwrap(),
    );
    assert!(err.contains("BucketNotEmpty"), "{err}");
    for name in ["empty", "one", "five"] {
        s3::ok(
            "rm",
            &s3.aws(&["s3", "rm", &format!("s3://life/sizes/{name}")])
                .await
                .unwrap(),
        );
    }
    let err = s3::failed(
        "get a deleted key",
        &s3.aws(&[
            "s3api",
            "head-object",
            "--bucket",
            "life",
            "--key",
            "sizes/one",
        ])
        .await
        .unwrap(),
    );
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");
    s3::ok(
        "delete-bucket",
        &s3.aws(&["s3api", "delete-bucket", "--bucket", "life"])
            .await
            .unwrap(),
    );
    let err = s3::failed(
        "head a deleted bucket",
        &s3.aws(&["s3api", "head-bucket", "--bucket", "life"])
            .await
            .unwrap(),
    );
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");
    let err = s3::failed(
        "put into a missing bucket",
        &s3.aws(&["s3api", "put-object", "--bucket", "nowhere", "--key", "k"])
            .await
            .unwrap(),
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
    // Counted by operation and status.
    let metrics = http()
        .get(c.gateway.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kdfs_gateway_s3_requests_total")
                && l.contains("operation=\"PutObject\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_multipart_copy_ranges_and_awkward_keys() {
    let c = cluster().await;
    let s3 = clients(&c);
    let Some(out) = s3.aws(&["s3", "mb", "s3://big"]).await else {
        return;
    };
    s3::ok("mb", &out);
    let work = tempfile::tempdir().unwrap();
    let data = content(200 << 20, 40);
    let src = work.path().join("big.bin");
    std::fs::write(&src, &data).unwrap();
    s3::ok(
        "cp up (multipart)",
        &s3.aws(&["s3", "cp", src.to_str().unwrap(), "s3://big/x/big.bin"])
            .await
            .unwrap(),
    );
    let head = s3::ok(
        "head-object",
        &s3.aws(&[
            "s3api",
            "head-object",
            "--bucket",
            "big",
            "--key",
            "x/big.bin",
        ])
        .await
        .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert_eq!(v["ContentLength"], 200 << 20);
    let etag = v["ETag"].as_str().unwrap();
    assert!(
        etag.ends_with("-40\""),
        "a multipart ETag of 40 parts: {etag}"
    );
    let back = work.path().join("big.back");
    s3::ok(
        "cp down",
        &s3.aws(&["s3", "cp", "s3://big/x/big.bin", back.to_str().unwrap()])
            .await
            .unwrap(),
    );
    assert_eq!(
        sha_of(&back),
        sha(&data),
        "the multipart object round-trips"
    );
    // The completed object is an ordinary kdfs file named by its SHA-256.
    let r = http()
        .get(c.gateway.at(&format!("/download?hash={}", sha(&data))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha(&r.bytes().await.unwrap()), sha(&data));

    // Ranged GETs across block and part boundaries, and a suffix.
    for (range, start, end) in [
        ("bytes=0-0", 0usize, 1usize),
        ("bytes=1048570-1048600", 1_048_570, 1_048_601),
        ("bytes=5242870-10485770", 5_242_870, 10_485_771),
        ("bytes=-100", (200 << 20) - 100, 200 << 20),
    ] {
        let out_file = work.path().join("range");
        s3::ok(
            "ranged get",
            &s3.aws(&[
                "s3api",
                "get-object",
                "--bucket",
                "big",
                "--key",
                "x/big.bin",
                "--range",
                range,
                out_file.to_str().unwrap(),
            ])
            .await
            .unwrap(),
        );
        assert_eq!(
            std::fs::read(&out_file).unwrap(),
            &data[start..end],
            "{range}"
        );
    }
    let err = s3::failed(
        "a range past the end",
        &s3.aws(&[
            "s3api",
            "get-object",
            "--bucket",
            "big",
            "--key",
            "x/big.bin",
            "--range",
            "bytes=999999999-",
            work.path().join("r2").to_str().unwrap(),
        ])
        .await
        .unwrap(),
    );
    assert!(err.contains("InvalidRange"), "{err}");

    // A metadata-only copy: a second key, the same content.
    s3::ok(
        "cp s3 to s3",
        &s3.aws(&["s3", "cp", "s3://big/x/big.bin", "s3://big/copy.bin"])
            .await
            .unwrap(),
    );
    let back2 = work.path().join("copy.back");
    s3::ok(
        "cp copy down",
        &s3.aws(&["s3", "cp", "s3://big/copy.bin", back2.to_str().unwrap()])
            .await
            .unwrap(),
    );
    assert_eq!(sha_of(&back2), sha(&data));

    // Keys with spaces, unicode, %, + and / round-trip.
    for key in [
        "a key with spaces.txt",
        "ünï cödé/ключ/日本.txt",
        "100% sure+plus/x=y&z.txt",
    ] {
        let small = content(333, key.len() as u64);
        let f = work.path().join("small");
        std::fs::write(&f, &small).unwrap();
        s3::ok(
            "cp awkward key",
            &s3.aws(&["s3", "cp", f.to_str().unwrap(), &format!("s3://big/{key}")])
                .await
                .unwrap(),
        );
        let listed = s3::ok(
            "ls",
            &s3.aws(&["s3api", "list-objects-v2", "--bucket", "big"])
                .await
                .unwrap(),
        );
        let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert!(
            v["Contents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["Key"] == key),
            "{key} listed: {listed}"
        );
        let got = work.path().join("small.back");
        s3::ok(
            "get awkward key",
            &s3.aws(&[
                "s3api",
                "get-object",
                "--bucket",
                "big",
                "--key",
                key,
                got.to_str().unwrap(),
            ])
            .await
            .unwrap(),
        );
        assert_eq!(std::fs::read(&got).unwrap(), small, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sync_and_rclone_sync_a_tree_up_and_back_then_transfer_nothing() {
    let c = cluster().await;
    let s3 = clients(&c);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    tree(&src, 500);
    let want = listing(&src);
    if let Some(out) = s3.aws(&["s3", "mb", "s3://synced"]).await {
        s3::ok("mb", &out);
        let up = s3::ok(
            "sync up",
            &s3.aws(&["s3", "sync", src.to_str().unwrap(), "s3://synced/tree"])
                .await
                .unwrap(),
        );
        assert_eq!(up.matches("upload:").count(), 500, "{up}");
        let down = work.path().join("aws-down");
        s3::ok(
            "sync down",
            &s3.aws(&["s3", "sync", "s3://synced/tree", down.to_str().unwrap()])
                .await
                .unwrap(),
        );
        assert_eq!(listing(&down), want, "aws sync round-trips the tree");
        let again = s3::ok(
            "sync up again",
            &s3.aws(&["s3", "sync", src.to_str().unwrap(), "s3://synced/tree"])
                .await
                .unwrap(),
        );
        assert!(
            !again.contains("upload:"),
            "a second sync transfers nothing: {again}"
        );
    }
    if let Some(out) = s3.rclone(&["mkdir", "kdfs:rcloned"]).await {
        s3::ok("rclone mkdir", &out);
        s3::ok(
            "rclone sync up",
            &s3.rclone(&["sync", src.to_str().unwrap(), "kdfs:rcloned/tree"])
                .await
                .unwrap(),
        );
        let down = work.path().join("rclone-down");
        s3::ok(
            "rclone sync down",
            &s3.rclone(&["sync", "kdfs:rcloned/tree", down.to_str().unwrap()])
                .await
                .unwrap(),
        );
        assert_eq!(listing(&down), want, "rclone sync round-trips the tree");
        let again = s3
            .rclone(&["sync", "-v", src.to_str().unwrap(), "kdfs:rcloned/tree"])
            .await
            .unwrap();
        s3::ok("rclone sync again", &again);
        let log = String::from_utf8_lossy(&again.stderr);
        assert!(
            !log.contains(": Copied"),
            "a second rclone sync copies nothing: {log}"
        );
        let check = s3
            .rclone(&["check", src.to_str().unwrap(), "kdfs:rcloned/tree"])
            .await
            .unwrap();
        s3::ok("rclone check (sizes and MD5s)", &check);
    }
    if let Some(out) = s3.s3cmd(&["mb", "s3://cmd"]).await {
        s3::ok("s3cmd mb", &out);
        let f = work.path().join("s3cmd.bin");
        let data = content(300_000, 3);
        std::fs::write(&f, &data).unwrap();
        s3::ok(
            "s3cmd put",
            &s3.s3cmd(&["put", f.to_str().unwrap(), "s3://cmd/dir/s3cmd.bin"])
                .await
                .unwrap(),
        );
        let ls = s3::ok(
            "s3cmd ls",
            &s3.s3cmd(&["ls", "s3://cmd/dir/"]).await.unwrap(),
        );
        assert!(ls.contains("s3cmd.bin"), "{ls}");
        let back = work.path().join("s3cmd.back");
        s3::ok(
            "s3cmd get",
            &s3.s3cmd(&["get", "s3://cmd/dir/s3cmd.bin", back.to_str().unwrap()])
                .await
                .unwrap(),
        );
        assert_eq!(std::fs::read(&back).unwrap(), data);
        s3::ok(
            "s3cmd del",
            &s3.s3cmd(&["del", "s3://cmd/dir/s3cmd.bin"]).await.unwrap(),
        );
        s3::ok("s3cmd rb", &s3.s3cmd(&["rb", "s3://cmd"]).await.unwrap());
    }
}
