//! Transfers through a real in-process cluster (namenode, datanodes, gateway on
//! 127.0.0.1 with temp dirs): round trips of every size through HTTP and the library,
//! ranges, concurrent uploads, a client disconnecting, a tiny upload budget, graceful
//! shutdown and lease renewal.

mod common;
mod support;

use std::time::Duration;

use common::cluster::{BLOCK, Spec, TestCluster};
use common::{DEADLINE, assert_json_error, get_error, http, multipart};
use futures::StreamExt;
use kdfs_client_gateway::ByteRange;
use kdfs_core::FileId;
use support::{
    assert_no_files, collect, content, download, list_files, sha, source, spawn_upload, upload_ok,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_of_every_size_through_http_and_the_library() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let b = BLOCK as usize;
    for (i, size) in [0, 1, b - 1, b, b + 1, 5 * b + 12_345]
        .into_iter()
        .enumerate()
    {
        let data = content(size, i as u64);
        let v = upload_ok(&c, url, &format!("f{size}.bin"), &data).await;
        assert_eq!(
            v["hash"],
            sha(&data),
            "file id is the SHA-256 of the content"
        );
        assert_eq!(v["size"], size as u64);
        assert_eq!(v["name"], format!("f{size}.bin"));
        assert_eq!(v["blocks"], size.div_ceil(b) as u64);
        assert!(v["replicas"].as_u64().unwrap() >= 2, "{v}");
        let got = download(&c, url, v["hash"].as_str().unwrap()).await;
        assert!(got == data, "download of {size} bytes equals the upload");
    }

    // The library directly, with small source pieces (coalesced into 1 MiB chunks).
    let client = cluster.client();
    let data = content(3 * b + 7, 99);
    let up = client
        .upload(
            source(data.clone(), 10_000),
            "lib.bin",
            "application/x-test",
        )
        .await
        .unwrap();
    assert_eq!(up.record.id.to_string(), sha(&data));
    assert_eq!(up.record.blocks.len(), 4);
    assert_eq!(up.record.content_type, "application/x-test");
    let (info, body) = client.download(up.record.id, None).await.unwrap();
    assert_eq!(info.record.size, data.len() as u64);
    assert!(collect(body).await == data);

    // A bound of at most a block: one hash pass, the file's id is its block's.
    for (i, size) in [0, 1, b - 1, b, b + 1].into_iter().enumerate() {
        let data = content(size, 50 + i as u64);
        let up = client
            .upload_at_most(
                source(data.clone(), 10_000),
                &format!("bounded-{size}.bin"),
                "",
                Some(size as u64),
            )
            .await
            .unwrap();
        assert_eq!(up.record.id.to_string(), sha(&data), "{size} bytes");
        assert_eq!(up.record.blocks.len(), size.div_ceil(b), "{size} bytes");
        let (_, body) = client.download(up.record.id, None).await.unwrap();
        assert!(collect(body).await == data, "{size} bytes");
    }

    // Same content again: same hash, first name kept, nothing new stored.
    let again = client
        .upload(source(data.clone(), 1 << 20), "other-name.bin", "")
        .await
        .unwrap();
    assert_eq!(again.record.id, up.record.id);
    assert!(again.existed);
    assert_eq!(again.record.name, "lib.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_at_and_inside_block_boundaries() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let b = BLOCK;
    let size = 3 * b + b / 2;
    let data = content(size as usize, 7);
    let hash = upload_ok(&c, url, "ranges.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    // Library: every interesting range, byte for byte.
    let client = cluster.client();
    let id = FileId::parse(&hash).unwrap();
    for (start, end) in [
        (0, 0),
        (0, 1),
        (b - 1, b),
        (b - 1, b + 1),
        (b, 2 * b),
        (b + 10, 2 * b - 10),
        (b / 2, 3 * b + 1),
        (size - 1, size),
        (0, size),
    ] {
        let (_, body) = client
            .download(id, Some(ByteRange { start, end }))
            .await
            .unwrap();
        let got = collect(body).await;
        assert!(
            got == data[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    assert!(
        client
            .download(
                id,
                Some(ByteRange {
                    start: 0,
                    end: size + 1
                })
            )
            .await
            .is_err()
    );

    // HTTP: 206 with Content-Range, suffix ranges, 416.
    for (header, start, end) in [
        (format!("bytes={}-{}", b - 1, b), b - 1, b + 1),
        (format!("bytes={}-", 3 * b), 3 * b, size),
        ("bytes=-100".to_owned(), size - 100, size),
        (format!("bytes={b}-{}", 2 * b - 1), b, 2 * b),
    ] {
        let r = c
            .get(format!("{url}/download?hash={hash}"))
            .header("range", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{header}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{}/{size}", end - 1).as_str()
        );
        assert_eq!(
            r.headers()["content-length"],
            (end - start).to_string().as_str()
        );
        let got = r.bytes().await.unwrap();
        assert!(got[..] == data[start as usize..end as usize], "{header}");
    }
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    assert_json_error(r, 416).await;
    // Several ranges: the whole file, 200.
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len() as u64, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let cluster = TestCluster::start(3).await;
    let c = http();
    let addr = cluster.gateway.url.trim_start_matches("http://").to_owned();
    let data = content(4 << 20, 5);
    let (ct, body) = multipart(&[("file", Some("partial.bin"), &data)]);
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Send 2.5 MiB (two whole blocks reach the datanodes), then vanish.
    s.write_all(&body[..(5 << 19)]).await.unwrap();
    s.flush().await.unwrap();
    let block = BLOCK as usize;
    let sent: Vec<String> = data[..2 * block].chunks(block).map(sha).collect();
    kdfs_testkit::wait_for("the sent blocks reach the datanodes", DEADLINE, || {
        sent.iter()
            .all(|id| (0..3).any(|i| cluster.stored_copy(i, id).is_some()))
    })
    .await;
    drop(s);

    // The upload is abandoned: no file record appears, now or later.
    assert_no_files(&c, &cluster.gateway.url).await;
    get_error(
        &c,
        format!("{}/files/{}", cluster.gateway.url, sha(&data)),
        404,
    )
    .await;

    // A dropped library upload likewise leaves nothing.
    let client = cluster.client();
    let endless = source(content(3 << 20, 6), 1 << 18).chain(futures::stream::pending());
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client.upload(endless, "never.bin", ""),
    )
    .await;
    assert!(r.is_err(), "the endless upload was still running");
    let list = list_files(&c, &cluster.gateway.url).await;
    assert!(list["files"].as_array().unwrap().is_empty(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_uploads_same_and_different_content() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let shared = content(BLOCK as usize * 2 + 99, 1000);
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let data = if i % 2 == 0 {
            shared.clone()
        } else {
            content(BLOCK as usize + 1000 * i as usize, i)
        };
        tasks.push(spawn_upload(&c, &url, format!("c{i}.bin"), data));
    }
    for t in tasks {
        let (hash, data) = t.await.unwrap();
        assert!(download(&c, &url, &hash).await == data, "{hash}");
    }
    let list = list_files(&c, &url).await;
    assert_eq!(
        list["files"].as_array().unwrap().len(),
        9,
        "8 distinct + 1 shared content"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_upload_budget_queues_uploads_without_deadlock() {
    // The budget holds exactly one block: concurrent multi-block uploads must take
    // turns block by block, and all finish.
    let cluster = TestCluster::with(Spec {
        gateway_args: vec!["--upload-budget=1MiB".into()],
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let data = content(3 * BLOCK as usize + 17 * i as usize, 500 + i);
        tasks.push(spawn_upload(&c, &url, format!("b{i}.bin"), data));
    }
    for t in tasks {
        tokio::time::timeout(DEADLINE * 2, t)
            .await
            .expect("no deadlock")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_an_in_flight_download() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let data = content(6 * BLOCK as usize, 9);
    let hash = upload_ok(&c, &url, "drain.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = r.chunk().await.unwrap().expect("a first chunk").to_vec();
    cluster.gateway.shutdown.cancel();
    // New connections are refused once the gateway stops accepting...
    common::wait_until("the listener to close", DEADLINE, || {
        let (c, url) = (http(), url.clone());
        async move { c.get(format!("{url}/healthz")).send().await.is_err() }
    })
    .await;
    // ...while the transfer already under way completes.
    while let Some(b) = r.chunk().await.unwrap() {
        got.extend_from_slice(&b);
    }
    assert!(got == data, "drained download is complete");
    let task = &cluster.gateway.task;
    common::wait_until("the gateway to exit", DEADLINE, || async {
        task.is_finished()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upload_renews_its_lease() {
    // A 1 s lease and an upload that takes about 3 s with over a second between block
    // allocations: only the background renewal keeps the lease alive.
    let cluster = TestCluster::with(Spec {
        namenode_args: vec!["--lease-ttl=1s".into()],
        ..Spec::default()
    })
    .await;
    let client = cluster.client();
    let data = content(2 * BLOCK as usize + 5, 31);
    let slow = source(data.clone(), 64 * 1024).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(90)).await;
        piece
    });
    let started = std::time::Instant::now();
    let up = client
        .upload(slow, "slow.bin", "")
        .await
        .expect("the lease was renewed");
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the upload outlived several leases"
    );
    assert_eq!(up.record.id.to_string(), sha(&data));
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data);
}
