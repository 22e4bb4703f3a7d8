//! README.md and docs/*.md are tested: every shell example that targets the local
//! cluster (`curl …`, `kdfs …`) runs as written against a real `kdfs local` this test
//! starts, in document order, each with `bash -e` and a timeout, in a working directory
//! holding the files the examples name. `127.0.0.1:8080` and `localhost:8080` point at
//! the test's gateway, `kdfs` is the built binary (with `KDFS_GATEWAY` set), `curl`
//! fails on an HTTP status of 400 or more (`--fail-with-body`), and `HASH` is the hash
//! the file's previous upload example printed. A `kdfs local …` example is started,
//! asked for `/info` and stopped.
//!
//! `aws …` examples run too, against the same cluster's S3 port: `127.0.0.1:9000`
//! points at it and `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` hold the key pair it
//! made (without the AWS CLI they are skipped, except under CI).
//!
//! An example that fails or cannot run fails the test with its file, line and output,
//! unless its block is marked `<!-- example: illustrative … -->` (not run here) or
//! `<!-- example: kubernetes -->` (checked by `deploy-tests/tests/deploy_dry_run.rs`).

#[path = "../common/mod.rs"]
mod common;
mod markdown;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{KDFS, Local, START_TIMEOUT, STOP_TIMEOUT, wait_exit};
use markdown::Example;

/// Longest an example may run: the largest file here is 1 MiB.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The files the examples name, small ones under the same names (`big.iso` too).
const FILES: [(&str, usize); 6] = [
    ("photo.jpg", 200 << 10),
    ("a.bin", 300 << 10),
    ("b.txt", 5 << 10),
    ("some-file", 10 << 10),
    ("f", 1 << 10),
    ("big.iso", 1 << 20),
];

#[test]
fn every_readme_and_docs_example_runs_against_kdfs_local() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let examples = markdown::workspace_examples(root);
    assert!(!examples.is_empty(), "no shell example found in README.md");
    let local = Local::start("1MiB");
    let s3 = S3Port::of(&local);
    let mut runner = Runner::new(&local.gateway, s3);
    let (mut ran, mut skipped, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for e in &examples {
        let listed = format!("{}  {}", e.at(), e.command);
        match e.marker.as_deref() {
            Some(kind @ ("illustrative" | "kubernetes")) => {
                skipped.push(format!("{listed}  [{kind}]"))
            }
            Some(other) => failures.push(format!(
                "{}: unknown marker `example: {other}` (illustrative or kubernetes)",
                e.at()
            )),
            None => match runner.run(e) {
                Ok(()) => ran.push(listed),
                Err(why) => failures.push(format!("{}: `{}`: {why}", e.at(), e.command)),
            },
        }
    }
    eprintln!("examples run against kdfs local:\n  {}", ran.join("\n  "));
    eprintln!("examples not run here:\n  {}", skipped.join("\n  "));
    assert!(
        failures.is_empty(),
        "{} example(s) failed:\n\n{}\n\nkdfs local's stderr:\n{}",
        failures.len(),
        failures.join("\n\n"),
        local.stderr()
    );
}

/// The S3 port of the test's `kdfs local` and its key pair.
struct S3Port {
    addr: String,
    access_key: String,
    secret_key: String,
}

impl S3Port {
    /// From the banner's `s3:` line and `<data-dir>/s3-credentials`.
    fn of(local: &Local) -> Option<S3Port> {
        let mut url = None;
        while let Ok(line) = local.rest.recv_timeout(START_TIMEOUT) {
            if let Some(u) = line.strip_prefix("s3: ") {
                url = Some(u.to_owned());
            }
            if line.starts_with("stop:") {
                break;
            }
        }
        let text = std::fs::read_to_string(local.data().join("s3-credentials")).ok()?;
        let pair = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))?;
        let (access_key, secret_key) = pair.split_once(' ')?;
        Some(S3Port {
            addr: url?.trim_start_matches("http://").to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.trim().to_owned(),
        })
    }
}

/// Runs examples in a working directory of its own, remembering each file's last hash.
struct Runner {
    gateway: String,
    s3: Option<S3Port>,
    /// The files the examples name; also where `kdfs local` examples keep `./kdfs-data`.
    work: tempfile::TempDir,
    /// `kdfs` and the `curl` wrapper, first on PATH.
    bin: tempfile::TempDir,
    /// The hash the last upload example of each Markdown file printed.
    hashes: HashMap<String, String>,
    runs: usize,
}

impl Runner {
    fn new(gateway: &str, s3: Option<S3Port>) -> Runner {
        let work = tempfile::tempdir().unwrap();
        for (i, (name, size)) in FILES.iter().enumerate() {
            let bytes = kdfs_testkit::random_bytes(*size, 28 + i as u64);
            std::fs::write(work.path().join(name), bytes).unwrap();
        }
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(KDFS, bin.path().join("kdfs")).unwrap();
        let curl = which("curl").expect("curl is installed (.ci/run installs it before the tests)");
        // The examples stay as written; the wrapper makes an HTTP error a failed command.
        let wrapper = bin.path().join("curl");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' --fail-with-body --no-progress-meter \"$@\"\n",
                curl.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Runner {
            gateway: gateway.to_owned(),
            s3,
            work,
            bin,
            hashes: HashMap::new(),
            runs: 0,
        }
    }

    /// Runs one example; the error says why it failed, with its output.
    fn run(&mut self, e: &Example) -> Result<(), String> {
        let addr = self.gateway.trim_start_matches("http://");
        let mut command = e
            .command
            .replace("127.0.0.1:8080", addr)
            .replace("localhost:8080", addr);
        if let Some(s3) = &self.s3 {
            command = command
                .replace("127.0.0.1:9000", &s3.addr)
                .replace("localhost:9000", &s3.addr);
        }
        let mut substituted = None;
        if command.contains("HASH") {
            let hash = self.hashes.get(&e.file).ok_or(
                "no HASH to substitute: no upload example before it in this file printed one",
            )?;
            command = command.replace("HASH", hash);
            substituted = Some(hash.clone());
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        match (e.program(), words.get(1).copied()) {
            ("kdfs", Some("local")) => return self.serve(&command),
            ("curl" | "kdfs", _) => {}
            ("aws", _) if self.s3.is_none() => return Err("kdfs local printed no S3 port".into()),
            ("aws", _) if which("aws").is_none() => {
                if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
                    return Err("aws is not installed (.ci/run installs awscli)".into());
                }
                eprintln!("SKIPPED (not in CI): {} needs the AWS CLI", e.at());
                return Ok(());
            }
            ("aws", _) => {}
            (other, _) => {
                return Err(format!(
                    "cannot run `{other}` against kdfs local (only curl, kdfs and aws): \
                     mark its block illustrative or kubernetes"
                ));
            }
        }
        let download = substituted.as_ref().and(downloaded_to(&words));
        if let Some(name) = download {
            // Nothing under the name (kdfs download replaces a file only with --force),
            // so the check below sees what was downloaded.
            let _ = std::fs::remove_file(self.work.path().join(name));
        }
        let out = self.shell(&command)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("{}\n{}", out.status, text(&out)));
        }
        if let (Some(hash), Some(name)) = (substituted, download) {
            // What the README says of a download: the file's SHA-256 is HASH.
            let got =
                std::fs::read(self.work.path().join(name)).map_err(|e| format!("{name}: {e}"))?;
            let got = kdfs_testkit::sha256_hex(&got);
            if got != hash {
                return Err(format!("{name} has SHA-256 {got}, not {hash}"));
            }
        }
        if let Some(hash) = uploaded_hash(e.program(), &words, &stdout) {
            let hash = hash.ok_or_else(|| format!("no hash in its output:\n{}", text(&out)))?;
            self.hashes.insert(e.file.clone(), hash);
        }
        Ok(())
    }

    /// `bash -e -c command` in the working directory, within [`EXAMPLE_TIMEOUT`].
    fn shell(&mut self, command: &str) -> Result<Output, String> {
        self.runs += 1;
        let (stdout, stderr) = (self.output_file("out"), self.output_file("err"));
        let mut child = self
            .bash(command)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .map_err(|e| format!("bash: {e}"))?;
        let deadline = Instant::now() + EXAMPLE_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {EXAMPLE_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output {
            status,
            stdout: std::fs::read(stdout).unwrap(),
            stderr: std::fs::read(stderr).unwrap(),
        })
    }

    /// A `kdfs local …` example: started on a free gateway port, asked for `/info`,
    /// stopped with SIGTERM; it must exit 0.
    fn serve(&mut self, command: &str) -> Result<(), String> {
        let port = kdfs_testkit::free_ports(1)[0];
        let stderr = self.output_file("err");
        let mut child = self
            .bash(&format!(
                "exec {command} --http 127.0.0.1:{port} --s3 127.0.0.1:0"
            ))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .map_err(|e| format!("bash: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let served = loop {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(line) if line.starts_with("gateway: ") => break Ok(()),
                Ok(_) => {}
                Err(_) => {
                    break Err(format!(
                        "printed no `gateway:` line within {START_TIMEOUT:?}"
                    ));
                }
            }
        };
        let info = served.and_then(|()| {
            let out = self.shell(&format!("curl http://127.0.0.1:{port}/info"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("its /info: {}\n{}", out.status, text(&out)))
            }
        });
        if info.is_err() {
            let _ = child.kill();
        } else {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        let status = wait_exit(&mut child, STOP_TIMEOUT);
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        info.map_err(|why| format!("{why}\nstderr:\n{err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "stopped with SIGTERM, it exited {status}\nstderr:\n{err}"
            ))
        }
    }

    fn bash(&self, command: &str) -> Command {
        let mut path = OsString::from(self.bin.path());
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut c = Command::new("bash");
        c.args(["-e", "-c", command])
            .current_dir(self.work.path())
            .env("PATH", path)
            .env("KDFS_GATEWAY", &self.gateway)
            .env_remove("KDFS_AUTH_TOKEN")
            .stdin(Stdio::null());
        if let Some(s3) = &self.s3 {
            c.env("AWS_ACCESS_KEY_ID", &s3.access_key)
                .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_CONFIG_FILE", self.bin.path().join("no-aws-config"))
                .env(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    self.bin.path().join("no-aws-credentials"),
                )
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_PAGER", "");
        }
        c
    }

    fn output_file(&self, what: &str) -> PathBuf {
        self.bin.path().join(format!("{}.{what}", self.runs))
    }
}

/// For an upload example (`curl … /upload`, `kdfs upload …`), the hash it printed (None
/// if it printed none); for any other example, None.
fn uploaded_hash(program: &str, words: &[&str], stdout: &str) -> Option<Option<String>> {
    let hash = match program {
        "curl" if words.iter().any(|w| w.contains("/upload")) => {
            serde_json::from_str::<serde_json::Value>(stdout.trim())
                .ok()
                .and_then(|v| v["hash"].as_str().map(str::to_owned))
        }
        "kdfs" if words.get(1) == Some(&"upload") => stdout
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned),
        _ => return None,
    };
    Some(hash.filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// For a download example naming its output (`-o NAME`), NAME.
fn downloaded_to<'a>(words: &[&'a str]) -> Option<&'a str> {
    if !words.iter().any(|w| w.contains("download")) {
        return None;
    }
    let at = words.iter().position(|w| *w == "-o")?;
    words.get(at + 1).copied()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
