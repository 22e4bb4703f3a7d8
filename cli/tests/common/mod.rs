//! A `kdfs local` child process for the CLI's tests: the built `kdfs` binary started as
//! a person would, its stdout read line by line, its stderr kept in a file.

// Each test file uses a part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const KDFS: &str = env!("CARGO_BIN_EXE_kdfs");
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// A graceful shutdown drains for at most a few seconds when nothing is in flight.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A `kdfs local` child process, killed (and its data dropped) when the test ends.
pub struct Local {
    pub child: Child,
    pub gateway: String,
    /// stdout lines up to and including the `gateway:` line.
    pub before: Vec<String>,
    /// stdout lines after the `gateway:` line.
    pub rest: mpsc::Receiver<String>,
    /// Where its stderr goes.
    pub stderr: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Local {
    pub fn start(block_size: &str) -> Local {
        Local::start_in(tempfile::tempdir().unwrap(), block_size, &[])
    }

    /// `kdfs local` with its data in `dir/data` and `extra` flags, on a free port;
    /// returns once it printed its gateway.
    pub fn start_in(dir: tempfile::TempDir, block_size: &str, extra: &[&str]) -> Local {
        let stderr = dir.path().join(format!(
            "kdfs-local-{}.stderr",
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
                "--s3",
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
            .stderr(std::fs::File::create(&stderr).unwrap())
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
        let mut before = Vec::new();
        let gateway = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    before.push(line.clone());
                    if let Some(url) = line.strip_prefix("gateway: ") {
                        break url.to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
                    panic!(
                        "kdfs local did not print its gateway within {START_TIMEOUT:?}; \
                         stdout: {before:?}; stderr:\n{err}"
                    );
                }
            }
        };
        Local {
            child,
            gateway,
            before,
            rest: rx,
            stderr,
            dir,
        }
    }

    /// Its data directory (`--data-dir`).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// SIGTERM, then its exit status (within a deadline) and its data directory.
    pub fn terminate(self) -> (ExitStatus, tempfile::TempDir) {
        self.sigterm();
        self.wait()
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// Its exit status (within a deadline) and its data directory.
    pub fn wait(mut self) -> (ExitStatus, tempfile::TempDir) {
        let status = wait_exit(&mut self.child, STOP_TIMEOUT);
        // Drop would kill the (already gone) child; move the directory out instead.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    pub fn kdfs(&self, args: &[&str], cwd: &Path) -> Output {
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

/// `child`'s exit status once it exited; panics if it is still running after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let mut status = None;
    kdfs_testkit::wait_until_blocking("the kdfs process to exit", within, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.expect("it exited")
}

/// Asserts `out` succeeded and returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kdfs failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
