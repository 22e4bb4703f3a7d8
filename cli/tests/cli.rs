//! The built `kdfs` binary against a real `kdfs local` cluster (its own child process):
//! upload, ls, download, info, rm, and the error paths a person meets first.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};

const KDFS: &str = env!("CARGO_BIN_EXE_kdfs");
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A `kdfs local` child process, killed (and its data dropped) when the test ends.
struct Local {
    child: Child,
    gateway: String,
    _dir: tempfile::TempDir,
}

impl Local {
    fn start(block_size: &str) -> Local {
        let dir = tempfile::tempdir().unwrap();
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
            .arg("--block-size")
            .arg(block_size)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kdfs local starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("gateway: ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let gateway = match rx.recv_timeout(START_TIMEOUT) {
            Ok(g) => g,
            Err(_) => {
                let _ = child.kill();
                panic!("kdfs local did not print its gateway within {START_TIMEOUT:?}");
            }
        };
        Local {
            child,
            gateway,
            _dir: dir,
        }
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
