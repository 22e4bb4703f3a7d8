//! Hostile HTTP clients (issue 24, findings 8 and 11): multipart bodies built to make
//! the form parser buffer without bound (a preamble with no boundary, a part header
//! with no end, thousands of parts), and requests with made-up methods that would grow
//! `/metrics` without bound. The gateway runs in this process, so its memory is this
//! process's memory (`VmHWM` in `/proc/self/status`).

mod common;
mod support;

use std::time::Duration;

use common::cluster::{Spec, TestCluster};
use common::{Gateway, http};
use support::{content, sha, upload_ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tests here measure the process's memory and metrics, so they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How much the process's peak memory may grow while a hostile body is refused: far
/// below the body's size, above what one in-flight read of the body holds.
const MAX_GROWTH: u64 = 32 << 20;
/// Size of each hostile body: what the parser would hold without a bound.
const HOSTILE_BODY: usize = 64 << 20;
const BOUNDARY: &str = "kdfs-hostile-boundary";

/// The process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// Posts a multipart upload whose body is `head` and then `filler` bytes up to
/// [`HOSTILE_BODY`], over raw TCP (the body is streamed, never held whole), and returns
/// the answer's status and body. The answer is read while the body is still being sent.
async fn hostile_upload(url: &str, head: &[u8], filler: u8) -> (u16, String) {
    let addr = url.trim_start_matches("http://").to_owned();
    let conn = TcpStream::connect(&addr).await.expect("connect");
    let (mut rd, mut wr) = conn.into_split();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {HOSTILE_BODY}\r\n\r\n"
    );
    let head = head.to_vec();
    let first = head.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(request.as_bytes()).await?;
        wr.write_all(&head).await?;
        let chunk = vec![filler; 64 << 10];
        let mut left = HOSTILE_BODY - head.len();
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await?;
            left -= n;
        }
        std::io::Result::Ok(())
    });
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return (status, body.to_string());
                }
            }
            let n = rd.read(&mut piece).await.expect("read the answer");
            assert!(
                n > 0,
                "connection closed before a full answer: {buf:?} (head {:?})",
                String::from_utf8_lossy(&first)
            );
            buf.extend_from_slice(&piece[..n]);
        }
    })
    .await
    .expect("the gateway answers a hostile body within 20 s");
    writer.abort();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_framing_is_bounded_and_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::with(Spec {
        datanodes: 1,
        replication: 1,
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = &cluster.gateway.url;
    // A normal upload first, so the baseline includes what any upload allocates.
    let data = content(100_000, 1);
    assert_eq!(
        upload_ok(&c, url, "before.bin", &data).await["hash"],
        sha(&data)
    );

    // The boundary declared in Content-Type never appears: all preamble.
    let base = peak_rss();
    let (status, body) = hostile_upload(url, b"", b'x').await;
    let grown = peak_rss().saturating_sub(base);
    assert_eq!(status, 400, "preamble without a boundary: {body}");
    assert!(body.contains("boundary"), "the error says why: {body}");
    assert!(
        grown < MAX_GROWTH,
        "a boundary-less body grew peak memory by {} MiB",
        grown >> 20
    );

    // A part whose header never ends.
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nX-Pad: "
    );
    let base = peak_rss();
    let (status, body) = hostile_upload(url, head.as_bytes(), b'y').await;
    let grown = peak_rss().saturating_sub(base);
    assert!(
        status == 400 || status == 413,
        "endless part header: {status} {body}"
    );
    assert!(body.contains("header"), "the error says why: {body}");
    assert!(
        grown < MAX_GROWTH,
        "an endless part header grew peak memory by {} MiB",
        grown >> 20
    );

    // Normal uploads still work right after.
    let data = content(300_000, 2);
    assert_eq!(
        upload_ok(&c, url, "after.bin", &data).await["hash"],
        sha(&data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_with_too_many_parts_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start(&dead_namenode().await, &[]).await;
    let mut parts: Vec<(String, Option<&str>, &[u8])> = (0..5_000)
        .map(|i| (format!("f{i}"), None, &b"v"[..]))
        .collect();
    parts.push(("file".to_owned(), Some("a.txt"), b"hello"));
    let refs: Vec<(&str, Option<&str>, &[u8])> =
        parts.iter().map(|(n, f, d)| (n.as_str(), *f, *d)).collect();
    let (ct, body) = common::multipart(&refs);
    let resp = http()
        .post(gw.at("/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    // Before the dead namenode is ever asked: the form is refused while it is parsed.
    let msg = common::assert_json_error(resp, 400).await;
    assert!(msg.contains("parts"), "{msg}");
    gw.stop().await;
}

/// A namenode address nothing listens on (the port was bound, then released).
async fn dead_namenode() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_metrics() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start(&dead_namenode().await, &[]).await;
    let c = http();
    let metrics = || async {
        c.get(gw.at("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Every label value an ordinary request makes exists before the baseline.
    for path in ["/healthz", "/nowhere"] {
        let m = reqwest::Method::from_bytes(b"WARMUP").unwrap();
        c.request(m, gw.at(path)).send().await.unwrap();
    }
    let before = metrics().await.len();
    for i in 0..500 {
        let m = reqwest::Method::from_bytes(format!("ZQX{i:04}RND").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/healthz" } else { "/nowhere" };
        let status = c.request(m, gw.at(path)).send().await.unwrap().status();
        assert!(status == 404 || status == 405, "{status}");
    }
    let after = metrics().await;
    assert!(
        !after.contains("ZQX"),
        "a made-up method became a metric label"
    );
    assert!(
        after.len() < before + (16 << 10),
        "/metrics grew from {before} to {} bytes",
        after.len()
    );
    gw.stop().await;
}
