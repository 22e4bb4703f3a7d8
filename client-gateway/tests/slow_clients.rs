//! Slow and hostile connections (issue 24, findings 9 and 10), each over real sockets
//! against an in-process gateway: uploads that go silent, a head sent byte by byte,
//! downloads nobody reads, one client opening every connection, and a flood of idle
//! TLS connections from one address. Another client's request must still be served
//! promptly, and the gateway must close what stalls.
//!
//! The tests read the gateway's metrics (one recorder per process), so they run one at
//! a time.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{Spec, TestCluster};
use common::{DEADLINE, Gateway, http, wait_until};
use support::{content, metric, sha, upload_ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::MutexGuard;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

fn addr_of(url: &str) -> SocketAddr {
    url.split_once("://")
        .map_or(url, |(_, a)| a)
        .parse()
        .expect("a socket address")
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2 is another
/// client than 127.0.0.1 to the gateway, on the same machine).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// Whether the peer has closed `s` within `within` (EOF or reset), reading and
/// discarding whatever it sent first; the bytes read.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

/// Finding 9: eight uploads that announce 64 MiB, send a little over 1 MiB (one chunk)
/// and go silent, with an upload budget of eight 8 MiB blocks: they would fill it if
/// each reserved its block before the block's bytes came. A small upload by another
/// client is stored at once; the silent ones are answered 408 and closed once the idle
/// timeout has passed, and their leases are given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_uploads_do_not_hold_up_others_and_are_cut_off() {
    let _serial = serial().await;
    let cluster = TestCluster::with(Spec {
        block_size: 8 << 20,
        gateway_args: vec![
            "--upload-budget=64MiB".into(),
            "--idle-timeout=8s".into(),
            // No batching: the small upload goes through the same budget as the rest.
            "--batch-small-files=false".into(),
        ],
        ..Spec::default()
    })
    .await;
    let gw = &cluster.gateway;
    let c = http();
    let addr = addr_of(&gw.url);
    let leases = |c: reqwest::Client| {
        let url = cluster.namenode_http.clone();
        async move { metric(&c, &url, "kdfs_namenode_open_leases").await }
    };
    let mut silent = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /upload?name=silent-{i} HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            64 << 20
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&content((1 << 20) + (64 << 10), i))
            .await
            .unwrap();
        silent.push(s);
    }
    wait_until("eight silent uploads hold a lease", DEADLINE, || {
        let c = c.clone();
        async move { leases(c).await >= 8.0 }
    })
    .await;

    // Far below the 15 s it took when the silent uploads held the budget, and below
    // the idle timeout, so it is the budget (not the timeout) that lets it through.
    let small = content(4 << 10, 99);
    let v = tokio::time::timeout(
        Duration::from_secs(5),
        upload_ok(&c, &gw.url, "small", &small),
    )
    .await
    .expect("a small upload is not held up by silent ones");
    assert_eq!(v["hash"], sha(&small));

    for (i, s) in silent.iter_mut().enumerate() {
        let answer = closed_within(s, DEADLINE)
            .await
            .unwrap_or_else(|| panic!("silent upload {i} is closed after the idle timeout"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("sent nothing"), "{answer}");
    }
    wait_until(
        "the silent uploads' leases are given back",
        DEADLINE,
        || {
            let c = c.clone();
            async move { leases(c).await == 0.0 }
        },
    )
    .await;
    let files = support::list_files(&c, &gw.url).await;
    assert_eq!(files["files"].as_array().map(Vec::len), Some(1), "{files}");
}

/// Finding 9: a client that sends its request head one byte at a time, never ending it,
/// is cut off after `--header-read-timeout`.
#[tokio::test]
async fn a_head_sent_byte_by_byte_is_cut_off() {
    let _serial = serial().await;
    let gw = Gateway::start(
        "http://127.0.0.1:9",
        &["--header-read-timeout=1s", "--idle-timeout=60s"],
    )
    .await;
    let mut s = TcpStream::connect(addr_of(&gw.url)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        for b in b"X-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("the gateway closes a connection whose head never ends");
    gw.stop().await;
}

/// Finding 9: downloads whose clients read nothing are closed after the idle timeout,
/// which frees what they held (read-ahead, buffers), instead of being held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_downloads_are_closed_after_the_idle_timeout() {
    let _serial = serial().await;
    let cluster = TestCluster::with(Spec {
        gateway_args: vec!["--idle-timeout=3s".into()],
        ..Spec::default()
    })
    .await;
    let gw = &cluster.gateway;
    let c = http();
    // Far more than the socket buffers between the gateway and a client that reads
    // nothing can take, so every download stalls.
    let data = content(24 << 20, 7);
    let hash = upload_ok(&c, &gw.url, "big.bin", &data).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = addr_of(&gw.url);
    let before = metric(
        &c,
        &gw.url,
        "kdfs_gateway_idle_timeouts_total{direction=\"response\"}",
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 << 10).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let req = format!("GET /download?hash={hash} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // Without reading: the gateway must give up on them by itself.
    wait_until("the stalled downloads are dropped", DEADLINE, || {
        let c = c.clone();
        let url = gw.url.clone();
        async move {
            metric(
                &c,
                &url,
                "kdfs_gateway_idle_timeouts_total{direction=\"response\"}",
            )
            .await
                >= before + 8.0
        }
    })
    .await;
    for (i, s) in stalled.iter_mut().enumerate() {
        let got = closed_within(s, DEADLINE)
            .await
            .unwrap_or_else(|| panic!("stalled download {i} is closed"));
        assert!(got.len() < data.len(), "download {i} was cut short");
    }
    // The gateway still serves.
    let v = support::download(&c, &gw.url, &hash).await;
    assert_eq!(v.len(), data.len());
}

/// Finding 9: one client address cannot take every connection: past
/// `--max-connections-per-client` its connections are closed at once, while another
/// client (127.0.0.2) is served.
#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let _serial = serial().await;
    let gw = Gateway::start("http://127.0.0.1:9", &["--max-connections-per-client=4"]).await;
    let addr = addr_of(&gw.url);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    let mut fifth = connect_from("127.0.0.1", addr).await;
    fifth
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok();
    let answer = closed_within(&mut fifth, DEADLINE)
        .await
        .expect("a connection over the per-client cap is closed");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let mut other = connect_from("127.0.0.2", addr).await;
    other
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let answer = closed_within(&mut other, DEADLINE).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    gw.stop().await;
}

/// Finding 10: 300 idle TCP connections from one address to an HTTPS gateway (every
/// handshake slot, were there no per-source limit) do not stop another client's
/// handshake; and a connection that never starts its handshake is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_tls_connections_from_one_source_do_not_starve_another() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = kdfs_testkit::pki::Ca::new(dir.path(), "https-test-ca");
    let leaf = ca.leaf("gateway", &["127.0.0.1", "localhost"]);
    let pem = std::fs::read(&ca.cert).unwrap();
    let _ = http(); // installs the crypto provider
    let https_client = |from: &str| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let cert = format!("--https-cert={}", leaf.cert.display());
    let key = format!("--https-key={}", leaf.key.display());
    let gw = Gateway::start_with(
        "http://127.0.0.1:9",
        &[&cert, &key, "--https-handshake-timeout=2s"],
        "https",
        https_client("127.0.0.1"),
    )
    .await;
    let addr = addr_of(&gw.url);
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(connect_from("127.0.0.1", addr).await);
    }
    let other = https_client("127.0.0.2");
    let r = other
        .get(gw.at("/healthz"))
        .send()
        .await
        .expect("another client's handshake succeeds");
    assert_eq!(r.status(), 200);
    // The idle connections' handshakes time out (or were never started): closed.
    let first = idle.first_mut().unwrap();
    closed_within(first, DEADLINE)
        .await
        .expect("an idle TLS connection is dropped after the handshake timeout");
    drop(idle);
    gw.stop().await;
}
