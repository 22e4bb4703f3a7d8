//! The `kdfs` command against an HTTPS gateway whose certificate a private CA signed
//! (`kdfs certs`): refused without `--gateway-ca`, refused with another CA, served with
//! the right one. The namenode and gateway run in this process on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Output};

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const KDFS: &str = env!("CARGO_BIN_EXE_kdfs");

fn kdfs(args: &[&str]) -> Output {
    Command::new(KDFS)
        .args(args)
        .output()
        .expect("running kdfs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn make_certs(dir: &Path) {
    let out = kdfs(&["certs", "--out", dir.to_str().unwrap(), "--loopback"]);
    assert!(out.status.success(), "kdfs certs failed: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_trusts_an_https_gateway_only_through_gateway_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    make_certs(&ours);
    make_certs(&theirs);

    let stop = CancellationToken::new();
    let nn_grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nn_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nn_addr = nn_grpc.local_addr().unwrap();
    let nn_config = kdfs_namenode::Config::parse_from([
        "kdfs-namenode".to_owned(),
        format!("--data-dir={}", tmp.path().join("nn").display()),
        "--kubernetes=off".to_owned(),
    ]);
    let namenode = tokio::spawn(kdfs_namenode::run(
        nn_config,
        nn_grpc,
        nn_http,
        stop.clone(),
    ));

    let gw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw.local_addr().unwrap();
    let gw_config = kdfs_client_gateway::Config::parse_from([
        "kdfs-gateway".to_owned(),
        format!("--namenode=http://{nn_addr}"),
        format!("--https-cert={}", ours.join("gateway.crt").display()),
        format!("--https-key={}", ours.join("gateway.key").display()),
    ]);
    let gateway = tokio::spawn(kdfs_client_gateway::http::run(gw_config, gw, stop.clone()));

    let url = format!("https://127.0.0.1:{}", gw_addr.port());
    let ours_ca = ours.join("ca.crt");
    let theirs_ca = theirs.join("ca.crt");
    let (url2, ours_ca2, theirs_ca2) = (url.clone(), ours_ca.clone(), theirs_ca.clone());
    let (untrusted, foreign, trusted) = tokio::task::spawn_blocking(move || {
        // The gateway may need a moment to bind its TLS acceptor: retry the trusted call.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let trusted = loop {
            let o = kdfs(&[
                "--gateway",
                &url2,
                "--gateway-ca",
                ours_ca2.to_str().unwrap(),
                "info",
            ]);
            if o.status.success() || std::time::Instant::now() > deadline {
                break o;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let untrusted = kdfs(&["--gateway", &url2, "info"]);
        let foreign = kdfs(&[
            "--gateway",
            &url2,
            "--gateway-ca",
            theirs_ca2.to_str().unwrap(),
            "info",
        ]);
        (untrusted, foreign, trusted)
    })
    .await
    .unwrap();

    assert!(
        trusted.status.success(),
        "with --gateway-ca: {}",
        text(&trusted)
    );
    assert!(text(&trusted).contains("DATANODE"), "{}", text(&trusted));
    assert!(!untrusted.status.success(), "an unknown CA was trusted");
    assert!(
        text(&untrusted).contains("UnknownIssuer"),
        "{}",
        text(&untrusted)
    );
    assert!(!foreign.status.success(), "another CA was trusted");
    assert!(
        text(&foreign).contains("invalid peer certificate"),
        "{}",
        text(&foreign)
    );

    stop.cancel();
    let _ = namenode.await;
    let _ = gateway.await;
}
