//! Issue 24 finding 1: servers used to serve plaintext gRPC on 0.0.0.0 by default, so
//! anyone who reached the namenode could skip the gateway's token (a `DeleteFile`
//! needed nothing). Now `kdfs-namenode` and `kdfs-datanode` refuse to start with a
//! non-loopback gRPC address and no TLS, naming the flags, unless `--allow-plaintext`
//! (`KDFS_ALLOW_PLAINTEXT`) is given, and then warn at every start. (`kdfs local`'s
//! default mTLS: cli/tests/cli.rs.)

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use kdfs_testkit::Binaries;
use kdfs_testkit::wait_until_blocking;

const WITHIN: Duration = Duration::from_secs(30);

/// `bin` listening for gRPC on every interface, logging to `log`.
fn spawn(bin: &str, dir: &Path, log: &Path, extra: &[&str]) -> Child {
    let bins = Binaries::Workspace.dir().expect("the server binaries");
    let mut cmd = Command::new(bins.join(bin));
    cmd.args(["--listen", "0.0.0.0:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("KDFS_ALLOW_PLAINTEXT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"));
    if bin == "kdfs-datanode" {
        cmd.args(["--namenode", "http://127.0.0.1:1", "--reserved", "0"]);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"))
}

fn exit_within(child: &mut Child, what: &str) -> ExitStatus {
    let mut status = None;
    wait_until_blocking(what, WITHIN, || {
        status = child.try_wait().expect("polling the child");
        status.is_some()
    });
    status.expect("it exited")
}

#[test]
fn servers_refuse_plaintext_off_loopback_unless_allowed_and_then_warn() {
    for (bin, ready) in [
        ("kdfs-namenode", "namenode ready"),
        ("kdfs-datanode", "datanode ready"),
    ] {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("refused.log");

        // No TLS, 0.0.0.0, no --allow-plaintext: a clear refusal and a non-zero exit.
        let mut child = spawn(bin, &dir.path().join("data"), &log, &[]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exit_within(&mut child, &format!("{bin} refusing plaintext on 0.0.0.0"))
        }));
        let _ = child.kill();
        let _ = child.wait();
        let status = outcome.unwrap_or_else(|_| {
            panic!(
                "{bin} kept running in plaintext on 0.0.0.0:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let text = std::fs::read_to_string(&log).expect("its log");
        assert!(
            !status.success(),
            "{bin} exited {status} on refusal:\n{text}"
        );
        for needle in [
            "refusing to serve gRPC in plaintext on 0.0.0.0:",
            "not a loopback address",
            "--tls-cert, --tls-key and --tls-ca",
            "--allow-plaintext",
        ] {
            assert!(text.contains(needle), "{bin}: no {needle:?} in:\n{text}");
        }

        // With --allow-plaintext it serves, and says at start what that means.
        let log = dir.path().join("allowed.log");
        let mut child = spawn(bin, &dir.path().join("data"), &log, &["--allow-plaintext"]);
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until_blocking(
                &format!("{bin} ready with --allow-plaintext"),
                WITHIN,
                || read().contains(ready) || child.try_wait().ok().flatten().is_some(),
            )
        }));
        let _ = child.kill();
        let _ = child.wait();
        let text = read();
        assert!(
            served.is_ok() && text.contains(ready),
            "{bin} did not serve:\n{text}"
        );
        assert!(
            text.contains("--allow-plaintext: gRPC is plaintext on a non-loopback address")
                && text.contains("no role is checked"),
            "{bin} did not warn about plaintext:\n{text}"
        );
    }
}
