//! Real S3 clients against a gateway's S3 port, run as child processes: the AWS CLI,
//! rclone, s3cmd and a boto3 script (from `.ci/.venv`, which `.ci/run` fills).
//!
//! A client that is not installed fails the test under CI (`CI` set, as `.ci/run` runs
//! on a CI machine): the suite must not pass by skipping. Elsewhere the test says
//! what it skipped, on stderr, and passes, so that a developer without the tools can
//! still run the rest (README.md, "Testing").

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

/// The key pair test gateways accept.
pub const ACCESS_KEY: &str = "kdfs-test-access";
pub const SECRET_KEY: &str = "kdfs-test-secret-0123456789";

/// Gateway flags that configure [`ACCESS_KEY`]/[`SECRET_KEY`].
pub fn key_flags() -> Vec<String> {
    vec![
        format!("--s3-access-key={ACCESS_KEY}"),
        format!("--s3-secret-key={SECRET_KEY}"),
    ]
}

/// Whether a missing client must fail the test rather than skip it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `name` if installed; `None` (after saying so) when it is not and this is not CI.
fn require(name: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let why = format!(
        "{name} is not installed: .ci/run installs it (apt-get install awscli rclone s3cmd; \
         boto3 with pip into .ci/.venv)"
    );
    if in_ci() {
        panic!("{why}");
    }
    eprintln!("SKIPPED (not in CI): {why}");
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The workspace root (this crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf()
}

/// The S3 clients, configured for one endpoint and key pair, with their config files in
/// a temp dir.
pub struct Clients {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub dir: tempfile::TempDir,
}

impl Clients {
    pub fn new(endpoint: &str) -> Self {
        Self::with_keys(endpoint, ACCESS_KEY, SECRET_KEY)
    }

    pub fn with_keys(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Parts of 5 MiB (the S3 minimum) above 8 MiB, so multipart is tested with
        // moderate sizes.
        std::fs::write(
            dir.path().join("aws-config"),
            "[default]\ns3 =\n  multipart_threshold = 8MB\n  multipart_chunksize = 5MB\n",
        )
        .unwrap();
        let hostport = endpoint.trim_start_matches("http://");
        std::fs::write(
            dir.path().join("s3cmd.cfg"),
            format!(
                "[default]\naccess_key = {access_key}\nsecret_key = {secret_key}\nhost_base = {hostport}\n\
                 host_bucket = {hostport}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n\
                 multipart_chunk_size_mb = 5\n"
            ),
        )
        .unwrap();
        Self {
            endpoint: endpoint.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            dir,
        }
    }

    /// The Debian AWS CLI (`/usr/bin/aws`) if there, else `aws` on `PATH`.
    pub fn aws_cli() -> Option<PathBuf> {
        let debian = PathBuf::from("/usr/bin/aws");
        require(
            "aws (awscli)",
            debian
                .is_file()
                .then_some(debian)
                .or_else(|| on_path("aws")),
        )
    }

    /// `aws --endpoint-url <endpoint> <args>`; `None` if skipped.
    pub async fn aws(&self, args: &[&str]) -> Option<Output> {
        let aws = Self::aws_cli()?;
        let out = Command::new(aws)
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .output()
            .await
            .expect("run aws");
        Some(out)
    }

    /// `rclone <args>` with a remote `kdfs:` configured by environment variables.
    pub async fn rclone(&self, args: &[&str]) -> Option<Output> {
        let rclone = require("rclone", on_path("rclone"))?;
        let out = Command::new(rclone)
            .args(args)
            // rclone refuses to start with a CA bundle it cannot use for plain HTTP.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", self.dir.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_KDFS_TYPE", "s3")
            .env("RCLONE_CONFIG_KDFS_PROVIDER", "Other")
            .env("RCLONE_CONFIG_KDFS_ACCESS_KEY_ID", &self.access_key)
            .env("RCLONE_CONFIG_KDFS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("RCLONE_CONFIG_KDFS_ENDPOINT", &self.endpoint)
            .env("RCLONE_CONFIG_KDFS_REGION", "us-east-1")
            .output()
            .await
            .expect("run rclone");
        Some(out)
    }

    /// `s3cmd -c <config> <args>`.
    pub async fn s3cmd(&self, args: &[&str]) -> Option<Output> {
        let s3cmd = require("s3cmd", on_path("s3cmd"))?;
        let out = Command::new(s3cmd)
            .arg("-c")
            .arg(self.dir.path().join("s3cmd.cfg"))
            .args(args)
            .output()
            .await
            .expect("run s3cmd");
        Some(out)
    }

    /// The Python of `.ci/.venv` if it has boto3.
    pub fn boto3_python() -> Option<PathBuf> {
        let python = workspace().join(".ci/.venv/bin/python");
        let ok = python.is_file()
            && std::process::Command::new(&python)
                .args(["-c", "import boto3"])
                .output()
                .is_ok_and(|o| o.status.success());
        require("boto3 (in .ci/.venv)", ok.then_some(python))
    }

    /// The Python of `.ci/.venv` if it has what the Ceph s3-tests import (pytest,
    /// boto3, munch, isodate, pytz, requests).
    pub fn pytest_python() -> Option<PathBuf> {
        let python = workspace().join(".ci/.venv/bin/python");
        let ok = python.is_file()
            && std::process::Command::new(&python)
                .args(["-c", "import pytest, boto3, munch, isodate, pytz, requests"])
                .output()
                .is_ok_and(|o| o.status.success());
        require(
            "pytest and the s3-tests modules (in .ci/.venv)",
            ok.then_some(python),
        )
    }

    /// Runs the Python `script` with boto3 (`s3` is a client for the endpoint, `args`
    /// its `sys.argv[1:]`).
    pub async fn boto3(&self, script: &str, args: &[&str]) -> Option<Output> {
        let python = Self::boto3_python()?;
        let prelude = format!(
            "import sys, boto3, botocore\n\
             s3 = boto3.client('s3', endpoint_url={:?}, aws_access_key_id={:?}, \
             aws_secret_access_key={:?}, region_name='us-east-1')\n",
            self.endpoint, self.access_key, self.secret_key
        );
        let out = Command::new(python)
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .args(args)
            .env("AWS_CONFIG_FILE", self.dir.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .await
            .expect("run python");
        Some(out)
    }
}

/// The output's stdout, asserting the command succeeded.
pub fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The output's stderr, asserting the command failed.
pub fn failed(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} succeeded but should have failed:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
}
