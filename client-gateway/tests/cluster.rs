//! The client library and the gateway against a real in-process cluster (namenode,
//! datanodes, gateway on 127.0.0.1 with temp dirs): round trips, ranges, the whole
//! HTTP contract of DESIGN.md §8, concurrency, disconnects and pipeline recovery.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{BLOCK, Spec, TestCluster};
use common::{DEADLINE, assert_json_error, http, multipart};
use futures::StreamExt;
use kdfs_client_gateway::{ByteRange, Client};
use kdfs_core::FileId;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Deterministic, non-repeating test content (so a misplaced block is detected).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn upload(c: &reqwest::Client, url: &str, name: &str, data: &[u8]) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(data.to_vec())
        .file_name(name.to_owned())
        .mime_str("text/plain")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    c.post(format!("{url}/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn upload_ok(c: &reqwest::Client, url: &str, name: &str, data: &[u8]) -> Value {
    let r = upload(c, url, name, data).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "upload of {name}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Uploads `data` as `name` in a task; the task checks the answered hash and returns
/// it with the data.
fn spawn_upload(
    c: &reqwest::Client,
    url: &str,
    name: String,
    data: Vec<u8>,
) -> tokio::task::JoinHandle<(String, Vec<u8>)> {
    let (c, url) = (c.clone(), url.to_owned());
    tokio::spawn(async move {
        let v = upload_ok(&c, &url, &name, &data).await;
        assert_eq!(v["hash"], sha(&data));
        (v["hash"].as_str().unwrap().to_owned(), data)
    })
}

/// `GET /files` (the first page, newest first).
async fn list_files(c: &reqwest::Client, url: &str) -> Value {
    c.get(format!("{url}/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn download(c: &reqwest::Client, url: &str, hash: &str) -> Vec<u8> {
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// A source that yields `data` in pieces of `piece` bytes.
fn source(
    data: Vec<u8>,
    piece: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let data = Bytes::from(data);
    let n = data.len().div_ceil(piece.max(1));
    futures::stream::iter(
        (0..n).map(move |i| Ok(data.slice(i * piece..((i + 1) * piece).min(data.len())))),
    )
}

async fn collect(mut s: kdfs_client_gateway::Download) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.expect("verified bytes"));
    }
    out
}

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
async fn http_contract_routes_statuses_headers_and_shapes() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();

    // /info, /readyz, /healthz, /metrics.
    let info: Value = c
        .get(format!("{url}/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["service"], "kdfs-gateway");
    assert_eq!(info["status"], "ok");
    assert_eq!(info["namenode"], cluster.namenode_url.as_str());
    assert!(info["version"].is_string());
    assert_eq!(info["safe_mode"], false);
    for k in ["files", "blocks", "bytes", "under_replicated"] {
        assert!(info[k].is_u64(), "{k} in {info}");
    }
    let dns = info["datanodes"].as_array().unwrap();
    assert_eq!(dns.len(), 3);
    for d in dns {
        for k in ["id", "address", "zone", "state"] {
            assert!(d[k].is_string(), "{k} in {d}");
        }
        for k in ["capacity", "used", "blocks"] {
            assert!(d[k].is_u64(), "{k} in {d}");
        }
        assert!(d["last_heartbeat_secs"].is_number());
        assert_eq!(d["state"], "live");
    }
    assert_eq!(
        c.get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Upload with a non-ASCII name; download headers.
    let data = content(2 * BLOCK as usize + 5, 3);
    let name = "résumé ü;2.txt";
    let v = upload_ok(&c, &url, name, &data).await;
    let hash = v["hash"].as_str().unwrap().to_owned();
    assert_eq!(v["name"], name);
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"r_sum_ _;2.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%C3%BC%3B2.txt"
    );
    assert!(r.bytes().await.unwrap()[..] == data[..]);

    // A hostile name (quote, backslash, header syntax) stored through the library
    // cannot break out of Content-Disposition.
    let hostile = "x\"; filename=evil.exe\\ Set-Cookie: a=b";
    let client = cluster.client();
    let evil = client
        .upload(source(b"evil".to_vec(), 4), hostile, "")
        .await
        .unwrap();
    let r = c
        .get(format!("{url}/download?hash={}", evil.record.id))
        .send()
        .await
        .unwrap();
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(cd.matches('"').count(), 2, "{cd}");
    assert!(
        cd.starts_with(
            "attachment; filename=\"x_; filename=evil.exe_ Set-Cookie: a=b\"; filename*=UTF-8''"
        ),
        "{cd}"
    );
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(r.headers()["content-type"], "application/octet-stream");

    // The same through a browser-style multipart filename (`"` sent as %22, CR LF
    // as %0D%0A): the name is kept with its quote, and still cannot inject anything.
    let (ct, body) = multipart(&[(
        "file",
        Some("q%22; filename=evil.exe%0D%0ASet-Cookie: a=b"),
        b"browser",
    )]);
    let r = c
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "q\"; filename=evil.exeSet-Cookie: a=b");
    let r = c
        .get(format!("{url}/download?hash={}", sha(b"browser")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"q_; filename=evil.exeSet-Cookie: a=b\"; \
         filename*=UTF-8''q%22%3B%20filename%3Devil.exeSet-Cookie%3A%20a%3Db"
    );
    assert!(r.headers().get("set-cookie").is_none());

    // HEAD: the same headers, no body.
    let r = c
        .head(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());

    // ETag and If-None-Match.
    for inm in [
        format!("\"{hash}\""),
        format!("W/\"{hash}\""),
        "*".to_owned(),
    ] {
        let r = c
            .get(format!("{url}/download?hash={hash}"))
            .header("if-none-match", &inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{inm}");
        assert_eq!(r.headers()["etag"], format!("\"{hash}\"").as_str());
    }
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // /files: newest first, pagination, search.
    let second = upload_ok(&c, &url, "second.txt", b"second file").await;
    let list = list_files(&c, &url).await;
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(files[0]["hash"], second["hash"], "newest first");
    for f in files {
        for k in ["hash", "name", "content_type", "created"] {
            assert!(f[k].is_string(), "{k} in {f}");
        }
        for k in ["size", "created_ms", "replicas", "blocks"] {
            assert!(f[k].is_number(), "{k} in {f}");
        }
    }
    assert!(list["next"].is_null());
    let page1: Value = c
        .get(format!("{url}/files?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page1["files"].as_array().unwrap().len(), 2);
    let next = page1["next"].as_str().expect("a next cursor").to_owned();
    let page2: Value = c
        .get(format!("{url}/files"))
        .query(&[("limit", "2"), ("after", next.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["files"].as_array().unwrap().len(), 2);
    assert_eq!(page2["files"][1]["hash"], hash.as_str());
    let found: Value = c
        .get(format!("{url}/files"))
        .query(&[("q", "RÉSUMÉ")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = found["files"].as_array().unwrap();
    assert!(
        found.iter().any(|f| f["hash"] == hash.as_str()),
        "search finds résumé"
    );
    assert!(found.iter().all(|f| f["hash"] != second["hash"]));

    // /files/{hash}: record, blocks and live locations.
    let one: Value = c
        .get(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["hash"], hash.as_str());
    assert_eq!(one["size"], data.len() as u64);
    let blocks = one["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[1]["offset"], BLOCK);
    for b in blocks {
        assert!(b["replicas"].as_array().unwrap().len() >= 2, "{b}");
        assert!(b["replicas"][0]["address"].is_string());
    }

    // Unknown: 404. Delete: 200, then 410 for reads, gone from listings.
    let unknown = sha(b"never stored");
    assert_json_error(
        c.get(format!("{url}/download?hash={unknown}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_json_error(
        c.get(format!("{url}/files/{unknown}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let r = c
        .delete(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["deleted"], true);
    // Deleting again is idempotent; deleting what never existed is 404.
    let r = c
        .delete(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], false);
    assert_json_error(
        c.delete(format!("{url}/files/{unknown}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_json_error(
        c.get(format!("{url}/download?hash={hash}"))
            .send()
            .await
            .unwrap(),
        410,
    )
    .await;
    assert_json_error(
        c.get(format!("{url}/files/{hash}")).send().await.unwrap(),
        410,
    )
    .await;
    let list = list_files(&c, &url).await;
    assert!(
        list["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["hash"] != hash.as_str())
    );

    // Uploading the same content again after a delete works and is readable. While
    // the datanodes may still execute the delete, the namenode refuses to trust their
    // acks (its delete fence, 10 s after a delete command was delivered) and the
    // gateway answers 409 asking for a retry. A refused upload is abandoned, and its
    // blocks' GC re-arms the fence, so retries are spaced by more than the fence.
    let deadline = std::time::Instant::now() + DEADLINE * 3;
    loop {
        let r = upload(&c, &url, "back.txt", &data).await;
        if r.status() == 200 {
            let back: Value = r.json().await.unwrap();
            assert_eq!(back["hash"], hash.as_str());
            break;
        }
        let m = assert_json_error(r, 409).await;
        assert!(m.contains("retry"), "{m}");
        assert!(
            std::time::Instant::now() < deadline,
            "re-upload after delete never succeeded"
        );
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    assert!(download(&c, &url, &hash).await == data);

    // Duplicate file field: 400, nothing stored.
    let (ct, body) = multipart(&[("file", Some("a"), b"one"), ("file", Some("b"), b"two")]);
    let r = c
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let m = assert_json_error(r, 400).await;
    assert!(m.contains("more than one"), "{m}");
    assert_json_error(
        c.get(format!("{url}/files/{}", sha(b"one")))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    // Other form fields are ignored; the file part's name and type are kept.
    let (ct, body) = multipart(&[
        ("note", None, b"hi"),
        ("file", Some("c.bin"), b"three"),
        ("x", None, b"y"),
    ]);
    let r = c
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["hash"], sha(b"three"));
    assert_eq!(v["name"], "c.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_upload_and_auth_token_on_a_cluster() {
    let cluster = TestCluster::with(Spec {
        gateway_args: vec!["--max-upload=1MiB".into(), "--auth-token=tok".into()],
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = &cluster.gateway.url;
    let big = content(3 << 20, 1);
    let part = reqwest::multipart::Part::bytes(big.clone()).file_name("big.bin");
    let r = c
        .post(format!("{url}/upload"))
        .bearer_auth("tok")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await;
    // The gateway answers 413 as soon as the limit is crossed; it may close the
    // connection before the client finished sending.
    if let Ok(r) = r {
        assert_json_error(r, 413).await;
    }
    // Deterministically: send half of the body (past the limit) and read the answer
    // while the rest is still owed.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ct, body) = multipart(&[("file", Some("big.bin"), &big)]);
        let addr = url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer tok\r\n\
             Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body[..body.len() / 2]).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut answer))
            .await
            .expect("413 arrives before the body is complete")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // That connection may be half-closed now: use a fresh client (and pool).
    let c = http();
    assert_json_error(
        c.get(format!("{url}/files/{}", sha(&big)))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    let small = content(1 << 20, 2);
    let part = reqwest::multipart::Part::bytes(small.clone()).file_name("ok.bin");
    let r = c
        .post(format!("{url}/upload"))
        .bearer_auth("tok")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "exactly the limit is accepted");
    let r = upload(&c, url, "noauth.bin", b"x").await;
    assert_json_error(r, 401).await;
    // Reads stay open.
    assert!(download(&c, url, &sha(&small)).await == small);
    let r = c
        .delete(format!("{url}/files/{}", sha(&small)))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 401).await;
    let r = c
        .delete(format!("{url}/files/{}", sha(&small)))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);

    // The upload is abandoned: no file record appears, now or later.
    let files = format!("{}/files", cluster.gateway.url);
    for _ in 0..10 {
        let list: Value = c.get(&files).send().await.unwrap().json().await.unwrap();
        assert!(list["files"].as_array().unwrap().is_empty(), "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .get(format!("{}/files/{}", cluster.gateway.url, sha(&data)))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 404).await;

    // A dropped library upload likewise leaves nothing.
    let client = cluster.client();
    let endless = source(content(3 << 20, 6), 1 << 18).chain(futures::stream::pending());
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client.upload(endless, "never.bin", ""),
    )
    .await;
    assert!(r.is_err(), "the endless upload was still running");
    let list: Value = c.get(&files).send().await.unwrap().json().await.unwrap();
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

/// A file known to be small reserves its own size, not a whole block, from the
/// gateway's budget and on each datanode. On datanodes with room for two blocks, 16
/// small files uploaded at once all fit (reserving a block each, a node could take two
/// at a time and would report itself full meanwhile). A library source longer than the
/// length it announced fails and leaves no file; an exact bound over several blocks
/// round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_uploads_reserve_their_size_not_a_block() {
    let cluster = TestCluster::with(Spec {
        capacity: "2MiB".into(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let data = content(4096, 7_000 + i);
        tasks.push(spawn_upload(&c, &url, format!("s{i}.bin"), data));
    }
    for t in tasks {
        let (hash, data) = t.await.unwrap();
        assert!(download(&c, &url, &hash).await == data, "{hash}");
    }

    let client = cluster.client();
    let long = content(10_000, 7_100);
    // In pieces of 1000 bytes, and with a first piece that fills the bound exactly
    // (the bytes after it must still fail the upload).
    for piece in [1000, 4096] {
        let e = client
            .upload_at_most(source(long.clone(), piece), "long.bin", "", Some(4096))
            .await
            .expect_err("a source longer than its bound");
        assert!(
            matches!(e, kdfs_client_gateway::Error::Source(_)) && e.to_string().contains("longer"),
            "{piece}: {e}"
        );
    }
    let list = list_files(&c, &url).await;
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 16, "{list}");
    assert!(files.iter().all(|f| f["hash"] != sha(&long).as_str()));

    // On roomier datanodes: a bound equal to the length, over three blocks.
    drop(cluster);
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let data = content(2 * BLOCK as usize + BLOCK as usize / 2, 7_200);
    let up = client
        .upload_at_most(
            source(data.clone(), 100_000),
            "bounded.bin",
            "",
            Some(data.len() as u64),
        )
        .await
        .unwrap();
    assert_eq!(up.record.id.to_string(), sha(&data));
    assert_eq!(up.record.blocks.len(), 3);
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data);
}

/// Datanodes with less room than a block still take files that fit: `/upload` tells
/// the namenode the body's length, and placement asks for that much room, not a block
/// (a larger file on the same datanodes: `out_of_space_is_507_and_too_few_datanodes_503`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_fit_on_datanodes_with_less_room_than_a_block() {
    let cluster = TestCluster::with(Spec {
        capacity: "512KiB".into(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let small = content(4096, 7_300);
    let up = upload_ok(&c, &url, "small.bin", &small).await;
    assert_eq!(up["replicas"], 3, "{up}");
    let hash = up["hash"].as_str().unwrap().to_owned();
    assert!(download(&c, &url, &hash).await == small);
    let list = list_files(&c, &url).await;
    assert_eq!(list["files"][0]["hash"], hash.as_str(), "{list}");
}

/// Uploads 12 MiB from a slow source and kills datanode `victim` after `after`.
async fn kill_mid_upload(datanodes: usize, victim: usize, after: Duration) {
    let mut cluster = TestCluster::start(datanodes).await;
    let client = cluster.client();
    let data = content(12 * BLOCK as usize + 321, 42 + victim as u64);
    // A slow source (256 KiB every 20 ms) so the kill lands mid-upload.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let feed = {
        let data = Bytes::from(data.clone());
        tokio::spawn(async move {
            for i in (0..data.len()).step_by(1 << 18) {
                let piece = data.slice(i..(i + (1 << 18)).min(data.len()));
                if tx.send(Ok(piece)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let up = {
        let client: Client = client.clone();
        tokio::spawn(async move {
            client
                .upload(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                    "survivor.bin",
                    "",
                )
                .await
        })
    };
    tokio::time::sleep(after).await;
    assert!(!up.is_finished(), "the kill must land mid-upload");
    cluster.kill(victim);
    let up = tokio::time::timeout(DEADLINE * 2, up)
        .await
        .expect("upload finishes")
        .unwrap();
    feed.await.unwrap();
    let up = up.expect("the upload survives a killed datanode");
    assert_eq!(up.record.id.to_string(), sha(&data));
    assert!(up.replicas >= 2);
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data, "content intact");
    // Once the node is declared dead, reads still work from the survivors.
    cluster.wait_live(datanodes - 1).await;
    let (_, body) = client.download(up.record.id, None).await.unwrap();
    assert!(collect(body).await == data);
}

/// With 3 datanodes and replication 3 every pipeline holds every node, so the victim
/// is in the pipeline of each block in flight (as head, middle or tail, depending on
/// the block): blocks must finish on the survivors or be re-sent to a new pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_datanode_of_three_mid_upload_does_not_fail_it() {
    for victim in 0..3 {
        kill_mid_upload(3, victim, Duration::from_millis(500)).await;
    }
}

/// With 4 datanodes the namenode can also route later blocks around the dead node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_datanode_mid_upload_of_four_does_not_fail_it() {
    kill_mid_upload(4, 1, Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_replicas_are_never_served_and_reads_fail_over() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let data = content(2 * BLOCK as usize + 4321, 77);
    let hash = upload_ok(&c, &url, "fragile.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // Corrupt two of the three replicas of the middle block, and read with those two
    // ranked first: the reader must fail over twice, mid-file, and still deliver every
    // byte intact (whole-block reads and ranged reads inside the block).
    let client = cluster.client();
    // `info` keeps the order of this lookup: the two damaged replicas come first.
    let info = client.get(FileId::parse(&hash).unwrap()).await.unwrap();
    let block = info.blocks[1].clone();
    assert_eq!(block.replicas.len(), 3, "{block:?}");
    let id = block.id.to_string();
    let id = id.as_str();
    let bad: Vec<usize> = block.replicas[..2]
        .iter()
        .map(|r| {
            cluster
                .datanode_index(&r.address)
                .expect("a cluster datanode")
        })
        .collect();
    for &i in &bad {
        cluster.corrupt(i, id);
    }
    let whole = ByteRange {
        start: 0,
        end: data.len() as u64,
    };
    assert!(
        collect(client.read(&info, whole)).await == data,
        "failover delivers intact bytes"
    );
    let inside = ByteRange {
        start: BLOCK + 10,
        end: BLOCK + 70_001,
    };
    assert!(
        collect(client.read(&info, inside)).await
            == data[BLOCK as usize + 10..BLOCK as usize + 70_001],
        "ranged read inside the damaged block"
    );
    assert!(download(&c, &url, &hash).await == data);
    // The corrupt copies are quarantined (by the datanode on its failed read, and on
    // our report): no servable copy with wrong content remains anywhere, and the
    // namenode heals the block back to three replicas.
    let cluster = &cluster;
    common::wait_until(
        "corrupt copies quarantined and the block healed",
        DEADLINE,
        || {
            let (c, url, hash, bad) = (c.clone(), url.clone(), hash.clone(), bad.clone());
            async move {
                let clean = bad
                    .iter()
                    .all(|&i| cluster.stored_copy(i, id).is_none_or(|b| sha(&b) == id));
                let Ok(r) = c.get(format!("{url}/files/{hash}")).send().await else {
                    return false;
                };
                let Ok(v) = r.json::<Value>().await else {
                    return false;
                };
                clean
                    && v["blocks"][1]["replicas"]
                        .as_array()
                        .is_some_and(|l| l.len() == 3)
            }
        },
    )
    .await;
    assert!(download(&c, &url, &hash).await == data);
}

/// A small file is read whole before its answer starts: a corrupt replica (its bytes
/// do not hash to the block's id) is failed over like a missing one, for a range
/// too, and a file whose every replica is corrupt is a 503, never a 200 with a body
/// broken off or wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_fail_over_corrupt_replicas_and_are_503_when_none_is_good() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let client = cluster.client();
    let replicas_of = |info: &kdfs_client_gateway::FileInfo| -> Vec<usize> {
        info.blocks[0]
            .replicas
            .iter()
            .map(|r| {
                cluster
                    .datanode_index(&r.address)
                    .expect("a cluster datanode")
            })
            .collect()
    };

    let data = content(4096, 91);
    let hash = upload_ok(&c, &url, "small.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = client.get(FileId::parse(&hash).unwrap()).await.unwrap();
    let nodes = replicas_of(&info);
    assert_eq!(nodes.len(), 3);
    // The two replicas this lookup ranks first are corrupt: the third serves.
    for &i in &nodes[..2] {
        cluster.corrupt(i, &hash);
    }
    let whole = ByteRange {
        start: 0,
        end: 4096,
    };
    let got = client.read_small(&info, whole).await.expect("a small file");
    assert!(got.unwrap() == data, "failed over to the good replica");
    let inside = ByteRange {
        start: 100,
        end: 2_100,
    };
    let got = client
        .read_small(&info, inside)
        .await
        .expect("a small file");
    assert!(got.unwrap() == data[100..2_100], "a range, verified whole");
    assert!(download(&c, &url, &hash).await == data);

    // Every replica corrupt: a 503 before any byte.
    let data = content(3000, 92);
    let hash = upload_ok(&c, &url, "doomed.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = client.get(FileId::parse(&hash).unwrap()).await.unwrap();
    for i in replicas_of(&info) {
        cluster.corrupt(i, &hash);
    }
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    let msg = assert_json_error(r, 503).await;
    assert!(msg.contains("every replica failed"), "{msg}");
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
async fn out_of_space_is_507_and_too_few_datanodes_503() {
    // Datanodes with less room than the file: the namenode cannot place it, and
    // nothing is left behind.
    let full = TestCluster::with(Spec {
        capacity: "512KiB".into(),
        ..Spec::default()
    })
    .await;
    let c = http();
    let r = upload(&c, &full.gateway.url, "big.bin", &content(600 << 10, 1)).await;
    let m = assert_json_error(r, 507).await;
    assert!(m.contains("space"), "{m}");
    let list = list_files(&c, &full.gateway.url).await;
    assert!(list["files"].as_array().unwrap().is_empty(), "{list}");
    drop(full);

    // One datanode, replication 3 (so at least 2 replicas): not enough live datanodes.
    let lonely = TestCluster::with(Spec {
        datanodes: 1,
        ..Spec::default()
    })
    .await;
    let r = upload(&c, &lonely.gateway.url, "a.bin", b"abc").await;
    let m = assert_json_error(r, 503).await;
    assert!(m.contains("not enough live datanodes"), "{m}");
    assert_json_error(
        c.get(format!("{}/readyz", lonely.gateway.url))
            .send()
            .await
            .unwrap(),
        503,
    )
    .await;
    let list = list_files(&c, &lonely.gateway.url).await;
    assert!(list["files"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanodes_refusing_for_room_the_namenode_thought_they_had_is_507() {
    // Heartbeats an hour apart: the namenode's view of free space stays what the
    // datanodes registered with (1 MiB each), so after a first 600 KiB file it still
    // places a second one on nodes that have 424 KiB left, and every pipeline the
    // gateway tries is refused by its datanodes for lack of room.
    let c = TestCluster::with(Spec {
        capacity: "1MiB".into(),
        namenode_args: vec![
            "--heartbeat-interval=1h".into(),
            "--stale-after=2h".into(),
            "--dead-after=3h".into(),
        ],
        ..Spec::default()
    })
    .await;
    let http = http();
    upload_ok(&http, &c.gateway.url, "first.bin", &content(600 << 10, 1)).await;
    let r = upload(&http, &c.gateway.url, "second.bin", &content(600 << 10, 2)).await;
    let m = assert_json_error(r, 507).await;
    assert!(m.contains("room"), "{m}");
    let list = list_files(&http, &c.gateway.url).await;
    assert_eq!(list["files"].as_array().unwrap().len(), 1, "{list}");
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

/// Uploads `files` at once through one client, each bounded by its length (as
/// `/upload` bounds a file by its body), and checks every answer and every download.
/// Returns how many answers said the content already existed.
async fn upload_all_at_once(client: &Client, files: Vec<(String, Vec<u8>)>) -> usize {
    let mut tasks = Vec::new();
    for (name, data) in files {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let len = data.len() as u64;
            let up = client
                .upload_at_most(source(data.clone(), 1000), &name, "text/plain", Some(len))
                .await
                .unwrap_or_else(|e| panic!("upload of {name}: {e}"));
            assert_eq!(up.record.id.to_string(), sha(&data), "{name}");
            assert_eq!(up.record.size, len, "{name}");
            assert_eq!(up.record.content_type, "text/plain", "{name}");
            assert!(up.replicas >= 2, "{name}: {} replicas", up.replicas);
            if !up.existed {
                assert_eq!(up.record.name, name);
            }
            (up, data)
        }));
    }
    let mut existed = 0;
    for t in tasks {
        let (up, data) = t.await.unwrap();
        existed += usize::from(up.existed);
        let (_, body) = client.download(up.record.id, None).await.unwrap();
        assert!(collect(body).await == data, "{}", up.record.name);
    }
    existed
}

/// Concurrent small uploads of one client share batches (one lease, one WriteBlocks
/// stream per hop and one CommitFiles for many files), and each file keeps its own
/// name, type and content; the same content twice is stored once. With batching off
/// every upload goes alone, and files that cannot be batched (empty, over a batched
/// block) go alone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_uploads_are_batched_and_each_round_trips() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let shared = content(5000, 8_000);
    let mut files: Vec<(String, Vec<u8>)> = (0..38u64)
        .map(|i| {
            let len = match i {
                0 => 1,
                1 => BLOCK as usize,
                _ => 100 + 997 * i as usize,
            };
            (format!("b{i}.txt"), content(len, 8_001 + i))
        })
        .collect();
    files.push(("twin-a.txt".into(), shared.clone()));
    files.push(("twin-b.txt".into(), shared.clone()));
    let existed = upload_all_at_once(&client, files).await;
    assert_eq!(existed, 1, "the shared content is stored once");
    let stats = client.batch_stats();
    assert_eq!(stats.files, 40, "{stats:?}");
    assert!(stats.batches < 40, "uploads were not batched: {stats:?}");
    let listing = client.list(100, "", "").await.unwrap();
    assert_eq!(listing.files.len(), 39);

    // Not batched: an empty file, one over a batched block, and everything with
    // batching off.
    let empty = upload_all_at_once(&client, vec![("empty.txt".into(), Vec::new())]).await;
    let big = vec![("big.txt".into(), content(BLOCK as usize + 1, 8_100))];
    upload_all_at_once(&client, big).await;
    assert_eq!(client.batch_stats(), stats);
    let alone = Client::new(
        &cluster.namenode_url,
        kdfs_client_gateway::ClientOptions {
            batch_small_files: false,
            ..Default::default()
        },
    )
    .unwrap();
    let files = (0..8u64)
        .map(|i| (format!("alone{i}.txt"), content(4096, 8_200 + i)))
        .collect();
    assert_eq!(upload_all_at_once(&alone, files).await + empty, 0);
    assert_eq!(alone.batch_stats().batches, 0);
    assert_eq!(client.list(100, "", "").await.unwrap().files.len(), 49);
}

/// A batch lingers for as many files as the last one carried (`batch_linger`), so
/// clients that send their next file once answered share one batch; but a lone upload
/// never waits for files that are not coming (a client alone: at once; after a burst:
/// at most the linger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_batches_gather_returning_clients_and_never_hold_a_lone_upload() {
    let cluster = TestCluster::start(3).await;
    let with_linger = |linger: Duration| {
        Client::new(
            &cluster.namenode_url,
            kdfs_client_gateway::ClientOptions {
                batch_linger: linger,
                ..Default::default()
            },
        )
        .unwrap()
    };
    // One client alone, one file after the other: each batch carries one file and the
    // next one expects one, so none waits out the (minute-long) linger.
    let alone = with_linger(Duration::from_secs(60));
    let sequential = async {
        for i in 0..5u64 {
            let file = vec![(format!("seq{i}.txt"), content(3000, 8_500 + i))];
            upload_all_at_once(&alone, file).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), sequential)
        .await
        .expect("a lone upload waited for files that were not coming");
    assert_eq!(alone.batch_stats().files, 5);

    // After a burst, a lone file waits at most the linger for the burst's size.
    let bursty = with_linger(Duration::from_millis(300));
    let burst = (0..8u64)
        .map(|i| (format!("burst{i}.txt"), content(2000, 8_600 + i)))
        .collect();
    upload_all_at_once(&bursty, burst).await;
    let late = vec![("late.txt".into(), content(2000, 8_700))];
    tokio::time::timeout(Duration::from_secs(30), upload_all_at_once(&bursty, late))
        .await
        .expect("a lone upload after a burst waited past the linger");

    // Eight clients, each sending its next file once answered: all stored, in batches.
    let looping = with_linger(Duration::from_millis(500));
    let clients: Vec<_> = (0..8u64)
        .map(|c| {
            let client = looping.clone();
            tokio::spawn(async move {
                for round in 0..4u64 {
                    let seed = 8_800 + c * 10 + round;
                    let file = vec![(format!("loop{c}-{round}.txt"), content(1500, seed))];
                    upload_all_at_once(&client, file).await;
                }
            })
        })
        .collect();
    let all = async {
        for c in clients {
            c.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("looping clients stalled");
    let stats = looping.batch_stats();
    assert_eq!(stats.files, 32, "{stats:?}");
    assert!(stats.batches < 32, "uploads were not batched: {stats:?}");
    let listing = alone.list(100, "", "").await.unwrap();
    assert_eq!(listing.files.len(), 5 + 9 + 32);
}

/// A datanode dies and the namenode does not know yet, so it stays in the pipelines:
/// a batch whose head is the dead node fails and its files go alone (the pipeline with
/// recovery leaves the node out); a batch that only lost a later node commits its files
/// with the two replicas it got. Every file is stored and reads back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_uploads_survive_a_datanode_dying_under_their_batches() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    let warm = vec![("warm.txt".into(), content(4096, 8_300))];
    upload_all_at_once(&client, warm).await;
    cluster.kill(0);
    for round in 0..3u64 {
        let files = (0..16u64)
            .map(|i| {
                let seed = 8_400 + round * 100 + i;
                (
                    format!("r{round}-{i}.txt"),
                    content(4096 + i as usize, seed),
                )
            })
            .collect();
        upload_all_at_once(&client, files).await;
    }
    assert_eq!(client.list(100, "", "").await.unwrap().files.len(), 49);
}
