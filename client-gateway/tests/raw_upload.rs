//! Raw-body uploads (`PUT /upload`, `POST /upload` with a non-form body) through a
//! real in-process cluster: round trips of every size with the multipart path's
//! answer, names from `?name=` and `Content-Disposition`, content types, chunked bodies
//! (`curl -T -`), `--max-upload`, the bearer token, a client disconnecting, and the
//! real `curl -T` when it is installed.
//!
//! The tests of this file run one at a time ([`serial`]): one of them counts batches
//! through the process-wide `/metrics`, which the others would move.

mod common;
mod support;

use std::time::Duration;

use common::cluster::{BLOCK, Spec, TestCluster};
use common::{DEADLINE, assert_json_error, get_error, http, wait_until};
use serde_json::Value;
use support::{answer_while_owing, assert_no_files, content, download, list_files, sha};
use tokio::io::AsyncWriteExt;
use tokio::sync::MutexGuard;

/// Holds the other tests of this file off while one runs.
async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Sends `data` as a raw body with `method` to `path` (e.g. `/upload?name=x`), with
/// `headers`, and returns the answer.
async fn raw(
    c: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = c.request(method, format!("{url}{path}")).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// As [`raw`], expecting 200; returns the JSON answer.
async fn raw_ok(
    c: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Value {
    let r = raw(c, url, method, path, headers, body).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// A chunked body (no Content-Length) yielding `data` in pieces of 100 000 bytes, as
/// `curl -T -` sends standard input.
fn chunked(data: &[u8]) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|p| Ok(p.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}

/// `GET /files/{hash}`.
async fn file_info(c: &reqwest::Client, url: &str, hash: &str) -> Value {
    let r = c.get(format!("{url}/files/{hash}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The gateway's `kdfs_gateway_upload_batches_total`.
async fn batches(c: &reqwest::Client, url: &str) -> u64 {
    support::metric(c, url, "kdfs_gateway_upload_batches_total").await as u64
}

/// The gateway's `kdfs_gateway_blocks_written_total`.
async fn blocks_written(c: &reqwest::Client, url: &str) -> u64 {
    support::metric(c, url, "kdfs_gateway_blocks_written_total").await as u64
}

/// Waits until the gateway has written `n` more blocks than `before`.
async fn wait_blocks_written(c: &reqwest::Client, url: &str, before: u64, n: u64) {
    wait_until("the sent blocks reach the datanodes", DEADLINE, || async {
        blocks_written(c, url).await >= before + n
    })
    .await;
}

/// PUT and POST of raw bodies of every size answer what the multipart path answers,
/// and store the bytes; a body with a Content-Length of at most a batched block goes
/// through the batches as a small form file does; one without a length goes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_puts_and_posts_round_trip_like_forms() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let b = BLOCK as usize;
    let mut seed = 0;
    for size in [0, 1, 4096, b, b + 1, 3 * b + 12_345] {
        for method in [reqwest::Method::PUT, reqwest::Method::POST] {
            seed += 1;
            let data = content(size, seed);
            let name = format!("{method}-{size}.bin");
            let before = batches(&c, url).await;
            let path = format!("/upload?name={name}");
            let v = raw_ok(&c, url, method.clone(), &path, &[], data.clone()).await;
            assert_eq!(v["hash"], sha(&data), "{v}");
            assert_eq!(v["size"], size as u64);
            // Every empty file is one file: the second is answered as the first.
            let again = size == 0 && method == reqwest::Method::POST;
            assert_eq!(v["existed"], again, "{v}");
            if !again {
                assert_eq!(v["name"], name.as_str());
            }
            // No Content-Type: the namenode's default, as for a form part without one.
            assert_eq!(v["content_type"], "application/octet-stream");
            assert_eq!(v["blocks"], size.div_ceil(b) as u64);
            assert!(v["replicas"].as_u64().unwrap() >= 2, "{v}");
            let batched = batches(&c, url).await > before;
            // Empty files are never batched (nothing to write).
            assert_eq!(batched, (1..=b).contains(&size), "{name}: batched");
            let got = download(&c, url, v["hash"].as_str().unwrap()).await;
            assert!(got == data, "download of {name}");
        }
    }

    // `curl -T -`: chunked, no Content-Length, small and over several blocks.
    for size in [4096, 2 * b + 777] {
        seed += 1;
        let data = content(size, seed);
        let before = batches(&c, url).await;
        let path = format!("/upload?name=chunked-{size}");
        let v = raw_ok(&c, url, reqwest::Method::PUT, &path, &[], chunked(&data)).await;
        assert_eq!(v["hash"], sha(&data), "{v}");
        assert_eq!(v["size"], size as u64);
        assert_eq!(
            batches(&c, url).await,
            before,
            "an unbounded body goes alone"
        );
        assert!(download(&c, url, &sha(&data)).await == data);
    }

    // The same content again: stored once, as with forms.
    let data = content(4096, 5); // the PUT of 4096 bytes above
    let v = raw_ok(&c, url, reqwest::Method::PUT, "/upload", &[], data).await;
    assert_eq!(v["existed"], true, "{v}");
}

/// Names: `?name=` first, then `Content-Disposition` (`filename*` over `filename`),
/// sanitised as form filenames are (no path, no control characters, at most 1024
/// bytes); none gives the form's default. Content types are kept (without parameters)
/// and shown by `/files/{hash}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_names_and_content_types() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let long = "n".repeat(3000);
    let long_path = format!("/upload?name={long}");
    // (path, headers, the name kept)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("/upload?name=plain.txt", vec![], "plain.txt"),
        ("/upload?name=..%2F..%2Fetc%2Fpasswd", vec![], "passwd"),
        ("/upload?name=C:%5Cdir%5Cwin.txt", vec![], "win.txt"),
        ("/upload?name=bell%07%0D%0Aname.txt", vec![], "bellname.txt"),
        ("/upload?name=caf%C3%A9%20menu.pdf", vec![], "café menu.pdf"),
        (
            "/upload",
            vec![("content-disposition", "attachment; filename=\"dir/cd.bin\"")],
            "cd.bin",
        ),
        (
            "/upload",
            vec![(
                "content-disposition",
                "attachment; filename=\"rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
            )],
            "€ rates.txt",
        ),
        (
            "/upload?name=query-wins.txt",
            vec![("content-disposition", "attachment; filename=cd.txt")],
            "query-wins.txt",
        ),
        ("/upload", vec![], "upload"),
        ("/upload?name=", vec![], "upload"),
        ("/upload?name=..", vec![], "upload"),
        (&long_path, vec![], &long[..1024]),
    ];
    for (i, (path, headers, want)) in cases.iter().enumerate() {
        let data = content(100 + i, 500 + i as u64);
        let v = raw_ok(&c, url, reqwest::Method::PUT, path, headers, data).await;
        assert_eq!(v["name"], *want, "{path} {headers:?}");
        let info = file_info(&c, url, v["hash"].as_str().unwrap()).await;
        assert_eq!(info["name"], *want, "{info}");
    }

    for (i, (sent, kept)) in [
        (None, "application/octet-stream"),
        (Some("text/x-kdfs"), "text/x-kdfs"),
        (Some("application/octet-stream"), "application/octet-stream"),
        (Some("text/plain; charset=utf-8"), "text/plain"),
        (Some("Image/PNG"), "image/png"),
    ]
    .into_iter()
    .enumerate()
    {
        let data = content(2 * BLOCK as usize + i, 600 + i as u64);
        let headers: Vec<(&str, &str)> = sent.map(|s| ("content-type", s)).into_iter().collect();
        let v = raw_ok(
            &c,
            url,
            reqwest::Method::POST,
            "/upload?name=t",
            &headers,
            data,
        )
        .await;
        assert_eq!(v["content_type"], kept, "{sent:?}");
        let info = file_info(&c, url, v["hash"].as_str().unwrap()).await;
        assert_eq!(info["content_type"], kept, "{info}");
        let r = c
            .get(format!(
                "{url}/download?hash={}",
                v["hash"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], kept);
    }
}

/// `--max-upload` refuses a raw body over the limit with 413 (at once when its
/// Content-Length says so, as soon as it crosses the limit when chunked) and stores
/// nothing; without the token a raw upload is 401 before its body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_uploads_meet_the_limit_and_the_token() {
    let _serial = serial().await;
    let cluster = TestCluster::with(Spec {
        gateway_args: vec!["--max-upload=1MiB".into(), "--auth-token=tok".into()],
        ..Spec::default()
    })
    .await;
    let url = &cluster.gateway.url;
    let addr = url.trim_start_matches("http://").to_owned();
    let big = content(3 << 20, 1);
    let auth = [("authorization", "Bearer tok")];

    // Announced too large: 413 before the body is sent (the client is still owing it).
    let head = format!(
        "PUT /upload?name=big.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer tok\r\n\
         Content-Length: {}\r\n\r\n",
        big.len()
    );
    let answer = answer_while_owing(&addr, &head, &big[..1000]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Through an HTTP client, with and without a length. The gateway may close the
    // connection before the client finished sending: then there is no answer to read.
    for body in [reqwest::Body::from(big.clone()), chunked(&big)] {
        let c = http();
        let r = c
            .put(format!("{url}/upload?name=big.bin"))
            .bearer_auth("tok")
            .body(body)
            .send()
            .await;
        if let Ok(r) = r {
            let m = assert_json_error(r, 413).await;
            assert!(m.contains("limit"), "{m}");
        }
    }
    // curl (if installed) sends `Expect: 100-continue` and gets the 413 instead of a reset.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let args = vec![
        "-sS".to_owned(),
        "-o".to_owned(),
        "/dev/null".to_owned(),
        "-w".to_owned(),
        "%{http_code}".to_owned(),
        "-H".to_owned(),
        "Authorization: Bearer tok".to_owned(),
        "-T".to_owned(),
        file.display().to_string(),
        format!("{url}/upload?name=big.bin"),
    ];
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(args).output())
            .await
            .unwrap();
    match out {
        Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "413", "{out:?}"),
        Err(e) => eprintln!("note: curl not run ({e}); its 413 is not checked"),
    }
    let c = http();
    assert_no_files(&c, url).await;

    // Exactly the limit passes, chunked or not.
    let limit = content(1 << 20, 2);
    let v = raw_ok(
        &c,
        url,
        reqwest::Method::PUT,
        "/upload",
        &auth,
        limit.clone(),
    )
    .await;
    assert_eq!(v["hash"], sha(&limit));
    let limit = content(1 << 20, 3);
    let v = raw_ok(
        &c,
        url,
        reqwest::Method::POST,
        "/upload",
        &auth,
        chunked(&limit),
    )
    .await;
    assert_eq!(v["hash"], sha(&limit));

    // No token or a wrong one: 401, for PUT and POST alike.
    for method in [reqwest::Method::PUT, reqwest::Method::POST] {
        for headers in [&[][..], &[("authorization", "Bearer nope")][..]] {
            let r = raw(&c, url, method.clone(), "/upload?name=x", headers, "x").await;
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            assert_json_error(r, 401).await;
        }
    }
    // 401 comes before the body is read: a body that never ends still gets an answer.
    let endless = futures::StreamExt::chain(
        futures::stream::once(async { Ok::<_, std::io::Error>(vec![7u8; 1000]) }),
        futures::stream::pending(),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.put(format!("{url}/upload?name=x"))
            .body(reqwest::Body::wrap_stream(endless))
            .send(),
    )
    .await
    .expect("401 without reading the body")
    .unwrap();
    assert_eq!(r.status(), 401);
    let list = list_files(&http(), url).await;
    assert_eq!(list["files"].as_array().unwrap().len(), 2, "{list}");
}

/// A client that vanishes mid-body (with a Content-Length or chunked) leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_disconnect_leaves_nothing() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = &cluster.gateway.url;
    let addr = url.trim_start_matches("http://").to_owned();
    let data = content(4 << 20, 5);
    // 2.5 MiB sent: two whole blocks reach the datanodes before the client goes.
    let sent = 5 << 19;

    let before = blocks_written(&c, url).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /upload?name=partial.bin HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data[..sent]).await.unwrap();
    s.flush().await.unwrap();
    wait_blocks_written(&c, url, before, 2).await;
    drop(s);

    let before = blocks_written(&c, url).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /upload?name=partial2.bin HTTP/1.1\r\nHost: {addr}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in data[..sent].chunks(64 << 10) {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(piece).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.flush().await.unwrap();
    wait_blocks_written(&c, url, before, 2).await;
    drop(s);

    assert_no_files(&c, url).await;
    get_error(&c, format!("{url}/files/{}", sha(&data)), 404).await;
}

/// The README's commands, run with the real curl: `curl -T file`, `curl -T -` and
/// `curl --data-binary @file` with a type. Skipped (with a note) without curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_curl_uploads_raw_bodies() {
    let _serial = serial().await;
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: curl is not on PATH; the_real_curl_uploads_raw_bodies skipped");
        return;
    }
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * BLOCK as usize + 5, 77);
    let file = dir.path().join("big.iso");
    std::fs::write(&file, &data).unwrap();
    let file = file.to_str().unwrap().to_owned();

    let curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--fail-with-body"])
                .args(&args)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "curl {args:?}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_str::<Value>(&text).unwrap()
        })
    };

    let v = curl(vec![
        "-T".into(),
        file.clone(),
        format!("{url}/upload?name=big.iso"),
    ])
    .await
    .unwrap();
    assert_eq!(v["hash"], sha(&data), "{v}");
    assert_eq!(v["name"], "big.iso");
    assert_eq!(v["size"], data.len() as u64);

    // `curl -T -` reads standard input and sends it chunked.
    let other = content(2 * BLOCK as usize + 9, 78);
    let stdin_file = dir.path().join("stdin.bin");
    std::fs::write(&stdin_file, &other).unwrap();
    let stdin_path = stdin_file.to_str().unwrap().to_owned();
    let u = url.clone();
    let v = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail-with-body", "-T", "-"])
            .arg(format!("{u}/upload?name=from-stdin.bin"))
            .stdin(std::fs::File::open(stdin_path).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(v["hash"], sha(&other), "{v}");
    assert_eq!(v["name"], "from-stdin.bin");

    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello raw world\n").unwrap();
    let v = curl(vec![
        "--data-binary".into(),
        format!("@{}", small.display()),
        "-H".into(),
        "Content-Type: application/octet-stream".into(),
        format!("{url}/upload?name=small.txt"),
    ])
    .await
    .unwrap();
    assert_eq!(v["hash"], sha(b"hello raw world\n"), "{v}");
    assert_eq!(v["content_type"], "application/octet-stream");

    assert!(download(&c, &url, &sha(&data)).await == data);
    assert!(download(&c, &url, &sha(&other)).await == other);
}
