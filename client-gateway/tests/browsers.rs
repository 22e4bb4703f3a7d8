//! What a web page can make a visitor's browser do to a gateway without a token (issue
//! 24, finding 12), over real sockets: a cross-site form post, a DNS-rebound page, and
//! a client locking others out by failing authentication behind a shared address.

mod common;
mod support;

use std::net::SocketAddr;

use common::cluster::TestCluster;
use common::{DEADLINE, Gateway, assert_json_error, http, multipart};
use support::{content, list_files, sha};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// A multipart upload of `data` with extra `headers`; the response.
async fn form_post(url: &str, data: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
    let (ct, body) = multipart(&[("file", Some("page.txt"), data)]);
    let mut req = http()
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Sends `GET path` with `Host: host` over raw TCP (a client library would fill Host
/// in itself); the status line.
async fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A cross-site multipart POST (a form on `evil.example` submitted by the visitor's
/// browser, which needs no preflight) is refused and stores nothing; the same form
/// from the gateway's own page is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_origin_mutations_are_refused_and_same_origin_ones_work() {
    let cluster = TestCluster::start(3).await;
    let url = cluster.gateway.url.clone();
    let data = content(10_000, 1);

    let r = form_post(&url, &data, &[("origin", "http://evil.example")]).await;
    let m = assert_json_error(r, 403).await;
    assert!(
        m.contains("cross-origin") && m.contains("evil.example"),
        "{m}"
    );
    let r = form_post(&url, &data, &[("sec-fetch-site", "cross-site")]).await;
    assert_json_error(r, 403).await;
    let files = list_files(&http(), &url).await;
    assert_eq!(files["files"].as_array().map(Vec::len), Some(0), "{files}");

    // The page's own requests: its origin, as a browser sends it.
    let own = url.clone();
    let r = form_post(
        &url,
        &data,
        &[("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["hash"], sha(&data));

    // A cross-site delete of what is stored is refused too; curl's is not.
    let hash = v["hash"].as_str().unwrap();
    let r = http()
        .delete(format!("{url}/files/{hash}"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 403).await;
    let r = http()
        .delete(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// DNS rebinding: a page of `evil.example` whose name now points at 127.0.0.1 reaches
/// a loopback gateway with `Host: evil.example:8080`, which is refused; loopback names
/// and `--allowed-hosts` are answered.
#[tokio::test]
async fn a_rebinding_host_on_a_loopback_listener_is_refused() {
    let gw = Gateway::start("http://127.0.0.1:9", &["--allowed-hosts=kdfs.lan"]).await;
    let addr = addr_of(&gw.url);
    let answer = get_with_host(addr, "/healthz", "evil.example:8080").await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(answer.contains("DNS rebinding"), "{answer}");
    for host in [
        format!("127.0.0.1:{}", addr.port()),
        format!("localhost:{}", addr.port()),
        "[::1]:8080".to_owned(),
        "kdfs.lan:8080".to_owned(),
    ] {
        let answer = get_with_host(addr, "/healthz", &host).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    gw.stop().await;
}

/// Behind one address (a port-forward, a proxy), a client failing authentication
/// again and again does not lock out another client that has the right token.
#[tokio::test]
async fn one_client_failing_auth_does_not_lock_out_another() {
    // A namenode nobody serves: an authenticated upload gets as far as 503.
    let gw = Gateway::start(
        "http://127.0.0.1:9",
        &["--auth-token=right", "--auth-max-failures=3"],
    )
    .await;
    let status = |token: &'static str| {
        let url = gw.url.clone();
        async move {
            http()
                .post(format!("{url}/upload?name=x"))
                .bearer_auth(token)
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(status("stale").await, 401);
    }
    for _ in 0..10 {
        assert_eq!(status("stale").await, 429);
    }
    assert_eq!(status("right").await, 503, "the right token is let through");
    gw.stop().await;

    // Behind a trusted proxy, clients are told apart by X-Forwarded-For: even one that
    // guesses many tokens locks out only itself.
    let gw = Gateway::start(
        "http://127.0.0.1:9",
        &[
            "--auth-token=right",
            "--auth-max-failures=2",
            "--trusted-proxies=127.0.0.1",
        ],
    )
    .await;
    let via_proxy = |client: &'static str, token: String| {
        let url = gw.url.clone();
        async move {
            http()
                .post(format!("{url}/upload?name=x"))
                .header("x-forwarded-for", client)
                .bearer_auth(token)
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for i in 0..40 {
        let _ = via_proxy("203.0.113.5", format!("guess-{i}")).await;
    }
    assert_eq!(via_proxy("203.0.113.5", "right".into()).await, 429);
    assert_eq!(via_proxy("203.0.113.6", "right".into()).await, 503);
    gw.stop().await;
}
