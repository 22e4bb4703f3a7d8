//! The real `kdfs-datanode` binary: starts from flags, logs one "datanode ready" line,
//! serves gRPC, and exits 0 after a graceful drain on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kdfs_core::BlockId;
use kdfs_proto::pb::ReadBlockRequest;
use kdfs_proto::pb::datanode_client::DatanodeClient;

#[tokio::test]
async fn binary_serves_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kdfs-datanode"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--namenode", "http://127.0.0.1:1", "--reserved", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("KDFS_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let v = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a 'datanode ready' log line");
        if v["message"] == "datanode ready" {
            break v;
        }
    };
    let grpc = ready["grpc"].as_str().unwrap().to_owned();
    let mut client = DatanodeClient::new(kdfs_proto::transport::lazy_channel(&grpc).unwrap());
    let err = client
        .read_block(ReadBlockRequest {
            block_id: kdfs_proto::wire::raw(BlockId::of(b"x").as_bytes()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // It serves: a read without a block access token is refused.
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "datanode did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
