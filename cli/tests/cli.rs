//! The built `kdfs` binary against a real `kdfs local` cluster (its own child process):
//! upload, ls, download, info, rm, the error paths a person meets first, and the whole
//! cluster over mutual TLS (`kdfs local --tls`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const KDFS: &str = env!("CARGO_BIN_EXE_kdfs");
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// A graceful shutdown drains for at most a few seconds when nothing is in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A `kdfs local` child process, killed (and its data dropped) when the test ends.
struct Local {
    child: Child,
    gateway: String,
    /// stdout lines after the `gateway:` line.
    rest: mpsc::Receiver<String>,
    /// Where its logs (stderr) go.
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Local {
    fn start(block_size: &str) -> Local {
        Local::start_in(tempfile::tempdir().unwrap(), block_size, &[])
    }

    /// `kdfs local` on `dir` with `extra` flags; returns once it printed its gateway.
    fn start_in(dir: tempfile::TempDir, block_size: &str, extra: &[&str]) -> Local {
        let log = dir.path().join(format!(
            "kdfs-local-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(KDFS)
            .args([
                "local",
                "--http",
                "127.0.0.1:0",
                "--datanodes",
                "3",
                "--reserved",
                "0",
            ])
            .args(extra)
            .arg("--block-size")
            .arg(block_size)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kdfs local starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let gateway = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("gateway: ") {
                        break url.to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let logs = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = logs.lines().rev().take(10).collect();
                    panic!(
                        "kdfs local did not print its gateway within {START_TIMEOUT:?}; log tail:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        };
        Local {
            child,
            gateway,
            rest: rx,
            log,
            dir,
        }
    }

    /// SIGTERM, then its exit status (within a deadline) and its data directory.
    fn terminate(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "kdfs local did not exit within {STOP_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Drop would kill the (already gone) child; move the directory out instead.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    fn kdfs(&self, args: &[&str], cwd: &Path) -> Output {
        Command::new(KDFS)
            .args(args)
            .env("KDFS_GATEWAY", &self.gateway)
            .current_dir(cwd)
            .output()
            .expect("kdfs runs")
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kdfs failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

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
    let out = local.kdfs(&["upload", "does-not-exist"], work.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

#[test]
fn local_tls_serves_over_mtls_reuses_its_certificates_and_stops_on_sigterm() {
    let local = Local::start_in(tempfile::tempdir().unwrap(), "256KiB", &["--tls"]);
    let mtls = local
        .rest
        .recv_timeout(Duration::from_secs(10))
        .expect("a line after the gateway's");
    let tls_dir = local.dir.path().join("data").join("tls");
    assert!(
        mtls.starts_with("mTLS:") && mtls.contains(&tls_dir.display().to_string()),
        "second line: {mtls}"
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

    let log_path = local.log.clone();
    let (status, dir) = local.terminate();
    assert!(
        status.success(),
        "kdfs local exited with {status} after SIGTERM"
    );
    // Every component turned mTLS on (namenode, three datanodes, gateway), none is plain.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.matches("mTLS on").count() >= 5,
        "fewer than 5 components report mTLS on:\n{log}"
    );
    assert!(
        !log.contains("mTLS is off"),
        "a component ran plain:\n{log}"
    );

    // A second start reuses the certificates and finds the file again.
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
