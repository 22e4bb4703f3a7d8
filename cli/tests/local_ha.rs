//! `kdfs local --namenodes 3` (issue 27): an HA group of three namenodes in one process
//! serves like one namenode: it prints its gateway once a leader serves, the gateway's
//! `/info` lists the three with one leader, a file stored survives a restart on the same
//! data dir (each namenode finds its peers at the ports kept in `namenode-peers`), and
//! the same directory started with one namenode is refused with the reason.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KDFS, Local, START_TIMEOUT, ok, wait_exit};

fn log_of(local: &Local, component: &str) -> String {
    std::fs::read_to_string(local.data().join("logs").join(format!("{component}.log")))
        .unwrap_or_else(|e| panic!("{component}.log: {e}"))
}

/// The roles the gateway's `/info` gives the namenodes.
fn roles(gateway: &str) -> Vec<String> {
    let info = kdfs_testkit::Api::new(gateway.to_owned())
        .try_info()
        .unwrap_or_default();
    info["namenodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["role"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn three_namenodes_serve_keep_their_peers_and_refuse_a_single_start() {
    let local = Local::start_in(tempfile::tempdir().unwrap(), "1MiB", &["--namenodes", "3"]);
    for i in 0..3 {
        let log = log_of(&local, &format!("namenode-{i}"));
        assert!(log.contains("namenode ready"), "namenode-{i}.log:\n{log}");
    }
    let peers = std::fs::read_to_string(local.data().join("namenode-peers")).unwrap();
    assert_eq!(peers.trim().split(',').count(), 3, "{peers}");
    kdfs_testkit::wait_until_blocking(
        "/info listing three namenodes, one leading",
        Duration::from_secs(30),
        || {
            let r = roles(&local.gateway);
            r.len() == 3
                && r.iter().filter(|r| *r == "leader").count() == 1
                && r.iter().filter(|r| *r == "follower").count() == 2
        },
    );

    let work = tempfile::tempdir().unwrap();
    let content = kdfs_testkit::random_bytes(3 << 20, 27);
    std::fs::write(work.path().join("ha.bin"), &content).unwrap();
    let hash = kdfs_testkit::sha256_hex(&content);
    let out = ok(&local.kdfs(&["upload", "-q", "ha.bin"], work.path()));
    assert!(out.contains(&hash), "upload printed: {out}");
    let (status, dir) = local.terminate();
    assert!(status.success(), "kdfs local exited with {status}");

    // The same directory with one namenode: refused, nothing started.
    let mut single = Command::new(KDFS)
        .args([
            "local",
            "--http",
            "127.0.0.1:0",
            "--s3",
            "off",
            "--reserved",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut single, START_TIMEOUT);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut single.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "a single start of an HA dir exited with {status}"
    );
    assert!(
        stderr.contains("holds an HA group of namenodes"),
        "stderr: {stderr}"
    );

    // A restart of the group finds the file.
    let local = Local::start_in(dir, "1MiB", &["--namenodes", "3"]);
    assert_eq!(
        std::fs::read_to_string(local.data().join("namenode-peers")).unwrap(),
        peers,
        "the kept ports changed"
    );
    ok(&local.kdfs(&["download", &hash, "-o", "back.bin"], work.path()));
    assert_eq!(
        std::fs::read(work.path().join("back.bin")).unwrap(),
        content
    );
    let (status, _) = local.terminate();
    assert!(status.success(), "second run exited with {status}");
}
