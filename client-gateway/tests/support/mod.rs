//! Helpers shared by the cluster test files (`transfers.rs`, `http_contract.rs`,
//! `failures.rs`, `small_files.rs`): test content, uploads and downloads through the
//! gateway's HTTP API, and byte sources for the library.

#![allow(dead_code)]

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

/// Deterministic, non-repeating test content (so a misplaced block is detected), and
/// the hex SHA-256 the gateway answers: the test kit's.
pub use kdfs_testkit::{random_bytes as content, sha256_hex as sha};

pub async fn upload(c: &reqwest::Client, url: &str, name: &str, data: &[u8]) -> reqwest::Response {
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

pub async fn upload_ok(c: &reqwest::Client, url: &str, name: &str, data: &[u8]) -> Value {
    let r = upload(c, url, name, data).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "upload of {name}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Uploads `data` as `name` in a task; the task checks the answered hash and returns
/// it with the data.
pub fn spawn_upload(
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

/// `GET url` as JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// `GET /files` (the first page, newest first).
pub async fn list_files(c: &reqwest::Client, url: &str) -> Value {
    get_json(c, &format!("{url}/files")).await
}

/// Asserts for a while (ten looks, 100 ms apart) that the cluster holds no file.
pub async fn assert_no_files(c: &reqwest::Client, url: &str) {
    for _ in 0..10 {
        let list = list_files(c, url).await;
        assert!(list["files"].as_array().unwrap().is_empty(), "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn download(c: &reqwest::Client, url: &str, hash: &str) -> Vec<u8> {
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// A source that yields `data` in pieces of `piece` bytes.
pub fn source(
    data: Vec<u8>,
    piece: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let data = Bytes::from(data);
    let n = data.len().div_ceil(piece.max(1));
    futures::stream::iter(
        (0..n).map(move |i| Ok(data.slice(i * piece..((i + 1) * piece).min(data.len())))),
    )
}

pub async fn collect(mut s: kdfs_client_gateway::Download) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.expect("verified bytes"));
    }
    out
}

/// Sends `head` and then `body` (a part of what the head announces) over a fresh
/// connection to `addr` and returns the first bytes of the answer, read while the
/// rest of the body is still owed.
pub async fn answer_while_owing(addr: &str, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(crate::common::DEADLINE, s.read(&mut answer))
        .await
        .expect("the answer arrives before the body is complete")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// The sum of the gateway's `/metrics` samples whose name (with labels, if given)
/// starts with `series`, e.g. `kdfs_gateway_connections` or
/// `kdfs_gateway_idle_timeouts_total{direction="request"}`; 0 when there is none.
pub async fn metric(c: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                || (series.ends_with('}') && l.starts_with(series))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
