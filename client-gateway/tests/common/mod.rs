//! Test fixtures: an in-process gateway on 127.0.0.1:0 (and in `cluster.rs` a whole
//! in-process cluster), multipart bodies and error-body checks. Waiting and the HTTP
//! client come from `kdfs-testkit`; the in-process fixtures stay here because the test
//! kit must not depend on this crate (see its crate doc).

#![allow(dead_code)]

pub mod cluster;
pub mod follower;
pub mod s3;

use std::time::Duration;

use clap::Parser;
use kdfs_client_gateway::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long fixtures wait for anything to become true.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub use kdfs_testkit::wait_until;

/// An HTTP client for plain-http tests.
pub fn http() -> reqwest::Client {
    kdfs_testkit::http_client()
}

/// A gateway serving on 127.0.0.1:0; cancelled (and awaited) on drop of its token.
pub struct Gateway {
    pub url: String,
    /// The S3 port's `http://127.0.0.1:PORT`, when started with one.
    pub s3_url: Option<String>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<kdfs_client_gateway::Result<()>>,
}

impl Gateway {
    /// Starts a gateway for `namenode` with extra flags (e.g. `--auth-token=x`).
    pub async fn start(namenode: &str, extra: &[&str]) -> Self {
        Self::start_with(namenode, extra, "http", http()).await
    }

    /// Starts a gateway whose URL has `scheme` (`https` with `--https-cert` among
    /// `extra`), waiting for `/healthz` through `client`.
    pub async fn start_with(
        namenode: &str,
        extra: &[&str],
        scheme: &str,
        client: reqwest::Client,
    ) -> Self {
        Self::start_full(namenode, extra, scheme, client, false).await
    }

    /// As [`Gateway::start_with`], with an S3 port on 127.0.0.1:0 when `s3`.
    pub async fn start_full(
        namenode: &str,
        extra: &[&str],
        scheme: &str,
        client: reqwest::Client,
        s3: bool,
    ) -> Self {
        // Logs (to stderr) only when asked for with RUST_LOG.
        if std::env::var_os("RUST_LOG").is_some() {
            kdfs_core::telemetry::init(kdfs_core::telemetry::LogFormat::Plain);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("{scheme}://{}", listener.local_addr().expect("local addr"));
        let s3_listener = match s3 {
            true => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
            false => None,
        };
        let s3_url = s3_listener
            .as_ref()
            .map(|l| format!("{scheme}://{}", l.local_addr().expect("local addr")));
        let mut args = vec![
            "kdfs-gateway".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            format!("--namenode={namenode}"),
            "--drain-timeout=5s".to_owned(),
            "--stall-timeout=5s".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = Config::parse_from(args);
        let shutdown = CancellationToken::new();
        let listeners = kdfs_client_gateway::Listeners {
            http: listener,
            s3: s3_listener,
        };
        let task = tokio::spawn(kdfs_client_gateway::run(
            config,
            listeners,
            shutdown.clone(),
        ));
        let g = Self {
            url,
            s3_url,
            shutdown,
            task,
        };
        let health = format!("{}/healthz", g.url);
        kdfs_testkit::wait_http_ok(&client, &health, "gateway /healthz", DEADLINE).await;
        g
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("gateway stops within the deadline")
            .expect("gateway task does not panic");
        r.expect("gateway exits cleanly");
    }
}

/// A `multipart/form-data` body with the given parts: (field name, file name, bytes).
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "kdfs-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Asserts a response has `status` and a JSON body `{"error": non-empty string}`.
pub async fn assert_json_error(resp: reqwest::Response, status: u16) -> String {
    let got = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "status (body {text})");
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?} for {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("error body is JSON");
    let msg = v["error"].as_str().expect("error field is a string");
    assert!(!msg.is_empty());
    msg.to_owned()
}

/// `GET url` through `c`, asserting the answer as [`assert_json_error`] does.
pub async fn get_error(c: &reqwest::Client, url: impl reqwest::IntoUrl, status: u16) -> String {
    assert_json_error(c.get(url).send().await.expect("send"), status).await
}
