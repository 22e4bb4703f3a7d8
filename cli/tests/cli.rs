//! The built `kdfs` binary against a real `kdfs local` cluster (its own child process):
//! upload, ls, download, info, rm, the error paths a person meets first, and the whole
//! cluster over mutual TLS (the default; issue 24 finding 1: a plaintext gRPC call to
//! its namenode is refused); and, against a recording stand-in gateway, that the token
//! goes with every request and is warned about as a flag.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use common::{KDFS, Local, ok};

#[test]
fn upload_ls_download_info_rm() {
    let local = Local::start("256KiB");
    let work = tempfile::tempdir().unwrap();
    // A multi-block file (1 MiB + 7 bytes at 256 KiB blocks) and a tiny one.
    let big: Vec<u8> = (0..(1 << 20) + 7)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(work.path().join("big.bin"), &big).unwrap();
    std::fs::write(work.path().join("small.txt"), b"hello kdfs\n").unwrap();
    let big_hash = hex::encode(Sha256::digest(&big));

    let out = ok(&local.kdfs(&["upload", "big.bin", "small.txt"], work.path()));
    assert!(
        out.contains(&format!("{big_hash}  big.bin")),
        "upload printed: {out}"
    );
    let small_hash = hex::encode(Sha256::digest(b"hello kdfs\n"));
    assert!(out.contains(&small_hash), "upload printed: {out}");

    let ls = ok(&local.kdfs(&["ls"], work.path()));
    assert!(
        ls.contains(&big_hash) && ls.contains("small.txt"),
        "ls printed: {ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&local.kdfs(&["ls", "--json"], work.path()))).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(2));

    ok(&local.kdfs(&["download", &big_hash, "-o", "copy.bin"], work.path()));
    assert_eq!(std::fs::read(work.path().join("copy.bin")).unwrap(), big);

    let info = ok(&local.kdfs(&["info"], work.path()));
    assert_eq!(info.matches("live").count(), 3, "info printed: {info}");

    // Decommission a datanode (through the gateway, over mTLS), then cancel it.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&local.kdfs(&["info", "--json"], work.path()))).unwrap();
    let id = info["datanodes"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let out = ok(&local.kdfs(&["decommission", &id, "--wait"], work.path()));
    assert!(
        out.contains("decommissioning") && out.contains("drained"),
        "decommission printed: {out}"
    );
    let info = ok(&local.kdfs(&["info"], work.path()));
    assert_eq!(
        info.matches("decommissioning").count(),
        1,
        "info printed: {info}"
    );
    let out = ok(&local.kdfs(&["decommission", &id, "--cancel"], work.path()));
    assert!(out.contains("live"), "cancel printed: {out}");

    ok(&local.kdfs(&["rm", &small_hash], work.path()));
    let ls = ok(&local.kdfs(&["ls"], work.path()));
    assert!(!ls.contains(&small_hash), "deleted file still listed: {ls}");

    // A deleted file cannot be downloaded, and no output file appears.
    let out = local.kdfs(&["download", &small_hash, "-o", "gone.txt"], work.path());
    assert!(!out.status.success());
    assert!(!work.path().join("gone.txt").exists());
}

#[test]
fn bad_input_fails_with_one_line_and_leaves_nothing() {
    let local = Local::start("1MiB");
    let work = tempfile::tempdir().unwrap();

    let out = local.kdfs(&["download", "../../etc/passwd", "-o", "x"], work.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid hash"), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let missing = "0".repeat(64);
    let out = local.kdfs(&["download", &missing, "-o", "missing.bin"], work.path());
    assert!(!out.status.success());
    assert!(
        !work.path().join("missing.bin").exists(),
        "a failed download left its output"
    );
    let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let out = local.kdfs(&["rm", "NOT-A-HASH"], work.path());
    assert!(!out.status.success());
    let out = local.kdfs(&["decommission", "../datanode"], work.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid datanode id"), "stderr: {err}");
    let out = local.kdfs(&["upload", "does-not-exist"], work.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

/// Issue 24 finding 1: anyone on the machine could delete a file with one plaintext
/// `DeleteFile` to the namenode while the gateway's DELETE wanted a token. By default
/// `kdfs local` runs mTLS, so that call fails (and leaves the file) while the gateway's
/// DELETE, over its own mTLS link, still works.
fn plaintext_delete_is_refused(local: &Local, hash: &str) {
    let info = kdfs_testkit::Api::new(local.gateway.clone()).info();
    let namenode = info["namenode"].as_str().expect("/info names the namenode");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let channel = kdfs_proto::transport::lazy_channel(namenode).unwrap();
        let mut client = kdfs_proto::pb::namenode_client::NamenodeClient::new(channel);
        let call = client.delete_file(kdfs_proto::pb::DeleteFileRequest {
            file_id: hex::decode(hash).unwrap().into(),
        });
        tokio::time::timeout(Duration::from_secs(10), call).await
    });
    match refused {
        Ok(Ok(_)) => panic!("a plaintext DeleteFile to {namenode} was served"),
        Ok(Err(status)) => eprintln!("plaintext DeleteFile refused: {status}"),
        Err(_) => eprintln!("plaintext DeleteFile got no answer"),
    }
    let api = kdfs_testkit::Api::new(local.gateway.clone());
    assert!(
        api.file(hash).unwrap().is_some(),
        "the file went after a plaintext DeleteFile"
    );
    api.delete(hash);
    assert!(
        api.file(hash).unwrap().is_none(),
        "the gateway's DELETE did not delete"
    );
}

#[test]
fn local_serves_over_mtls_by_default_refuses_plaintext_reuses_its_certificates() {
    let local = Local::start_in(tempfile::tempdir().unwrap(), "256KiB", &[]);
    let tls_dir = local.dir.path().join("data").join("tls");
    let tls = (0..5)
        .map_while(|_| local.rest.recv_timeout(Duration::from_secs(10)).ok())
        .find(|l| l.starts_with("tls:"))
        .expect("a tls: line in the banner");
    assert!(
        tls.contains("mTLS on") && tls.contains(&tls_dir.display().to_string()),
        "tls line: {tls}"
    );
    for f in ["ca", "namenode", "datanode", "gateway"] {
        assert!(tls_dir.join(format!("{f}.crt")).is_file(), "{f}.crt");
        assert!(tls_dir.join(format!("{f}.key")).is_file(), "{f}.key");
    }
    let ca = std::fs::read(tls_dir.join("ca.crt")).unwrap();

    // A multi-block file through the gateway, whose blocks cross every mTLS link.
    let work = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(1 << 20) + 333)
        .map(|i: u32| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(work.path().join("tls.bin"), &data).unwrap();
    let hash = hex::encode(Sha256::digest(&data));
    let out = ok(&local.kdfs(&["upload", "-q", "tls.bin"], work.path()));
    assert!(out.contains(&hash), "upload printed: {out}");
    ok(&local.kdfs(&["download", &hash, "-o", "back.bin", "-q"], work.path()));
    let back = std::fs::read(work.path().join("back.bin")).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&back)),
        hash,
        "downloaded bytes differ"
    );

    // The attack of finding 1 fails; the gateway's DELETE works (on a file of its own).
    std::fs::write(work.path().join("doomed.txt"), b"delete me").unwrap();
    let doomed = hex::encode(Sha256::digest(b"delete me"));
    ok(&local.kdfs(&["upload", "-q", "doomed.txt"], work.path()));
    plaintext_delete_is_refused(&local, &doomed);

    let logs = local.data().join("logs");
    let (status, dir) = local.terminate();
    assert!(
        status.success(),
        "kdfs local exited with {status} after SIGTERM"
    );
    // Every component turned mTLS on (namenode, three datanodes, gateway), none is plain.
    for c in [
        "namenode",
        "datanode-0",
        "datanode-1",
        "datanode-2",
        "gateway",
    ] {
        let log = std::fs::read_to_string(logs.join(format!("{c}.log"))).unwrap();
        assert!(
            log.contains("mTLS on"),
            "{c} does not report mTLS on:\n{log}"
        );
        assert!(!log.contains("mTLS is off"), "{c} ran plain:\n{log}");
    }

    // A second start reuses the certificates and finds the file again (`--tls`, the
    // flag of when mTLS was opt-in, is still accepted).
    let local = Local::start_in(dir, "256KiB", &["--tls"]);
    assert_eq!(
        std::fs::read(tls_dir.join("ca.crt")).unwrap(),
        ca,
        "the CA was replaced on restart"
    );
    ok(&local.kdfs(&["download", &hash, "-o", "again.bin", "-q"], work.path()));
    assert_eq!(std::fs::read(work.path().join("again.bin")).unwrap(), data);
    let (status, _) = local.terminate();
    assert!(status.success(), "second run exited with {status}");
}

/// A stand-in gateway on a free port that answers every request 404 and keeps each
/// request's head (request line and headers, lowercased).
fn recording_gateway() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&heads);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut head = String::new();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            sink.lock().unwrap().push(head);
            let body = r#"{"error":"stand-in"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, heads)
}

#[test]
fn the_token_goes_with_reads_and_a_token_flag_is_warned_about() {
    let (url, heads) = recording_gateway();
    let work = tempfile::tempdir().unwrap();
    let hash = "a".repeat(64);
    let run = |args: &[&str], env_token: Option<&str>| {
        let mut cmd = Command::new(KDFS);
        cmd.args(args)
            .env("KDFS_GATEWAY", &url)
            .env_remove("KDFS_AUTH_TOKEN")
            .current_dir(work.path());
        if let Some(t) = env_token {
            cmd.env("KDFS_AUTH_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "the stand-in answers 404");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for args in [
        &["info"][..],
        &["ls"],
        &["download", &hash, "-o", "x"],
        &["rm", &hash],
    ] {
        heads.lock().unwrap().clear();
        let err = run(args, Some("env-secret"));
        assert!(
            !err.contains("warning"),
            "{args:?} with the variable: {err}"
        );
        let seen = heads.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{args:?}: {seen:?}");
        assert!(
            seen[0].contains("authorization: bearer env-secret"),
            "{args:?} sent no token: {seen:?}"
        );
    }
    for args in [
        &["--auth-token", "flag-secret", "info"][..],
        &["info", "--auth-token=flag-secret"],
    ] {
        let err = run(args, None);
        assert!(
            err.contains("warning") && err.contains("KDFS_AUTH_TOKEN"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("flag-secret"), "the token was printed: {err}");
    }
    assert!(!run(&["info"], None).contains("warning"));
}
