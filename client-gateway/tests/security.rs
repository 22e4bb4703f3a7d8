//! Issue 9 on the gateway: tokens from a reloadable file, the failed-attempt limit, the
//! audit log (read from a real `kdfs-gateway` process's JSON logs) and HTTPS.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::cluster::TestCluster;
use common::{DEADLINE, Gateway, assert_json_error, get_error, http, multipart, wait_until};
use serde_json::Value;
use sha2::{Digest, Sha256};

const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A namenode address nothing listens on (the port was bound, then released).
async fn dead_namenode() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Replaces `path`'s contents at once, as a Kubernetes Secret volume does (a rename).
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The status of an upload of a small file with `token` (if any): 503 means it passed
/// authentication and met the dead namenode.
async fn upload_status(c: &reqwest::Client, gw: &Gateway, token: Option<&str>) -> u16 {
    let (ct, body) = multipart(&[("file", Some("a.txt"), b"hello")]);
    let mut req = c
        .post(gw.at("/upload"))
        .header("content-type", ct)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn delete_status(c: &reqwest::Client, gw: &Gateway, token: Option<&str>) -> u16 {
    let mut req = c.delete(gw.at(&format!("/files/{HASH}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn tokens_from_a_file_and_the_flag_both_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# current and next\n  alpha-token  \n\nbeta-token\n").unwrap();
    let gw = Gateway::start(
        &dead_namenode().await,
        &[
            &format!("--auth-token-file={}", file.display()),
            "--auth-token=flag-token",
        ],
    )
    .await;
    let c = http();
    for good in ["alpha-token", "beta-token", "flag-token"] {
        assert_eq!(upload_status(&c, &gw, Some(good)).await, 503, "{good}");
        assert_eq!(delete_status(&c, &gw, Some(good)).await, 503, "{good}");
    }
    for bad in [
        None,
        Some("alpha"),
        Some("# current and next"),
        Some("gamma"),
    ] {
        assert_eq!(upload_status(&c, &gw, bad).await, 401, "{bad:?}");
    }
    // Reads stay open.
    get_error(&c, gw.at("/files"), 503).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_rotated_token_file_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "old-token\n").unwrap();
    let gw = Gateway::start(
        &dead_namenode().await,
        &[
            &format!("--auth-token-file={}", file.display()),
            "--auth-token-reload-interval=100ms",
            // Polling with the old token while waiting must not lock us out.
            "--auth-max-failures=0",
        ],
    )
    .await;
    let c = http();
    assert_eq!(upload_status(&c, &gw, Some("old-token")).await, 503);
    assert_eq!(upload_status(&c, &gw, Some("new-token")).await, 401);

    // Rotation, step 1: both tokens.
    replace_file(&file, "new-token\nold-token\n");
    wait_until("the new token is accepted", DEADLINE, || {
        let (c, gw) = (c.clone(), &gw);
        async move { upload_status(&c, gw, Some("new-token")).await == 503 }
    })
    .await;
    assert_eq!(upload_status(&c, &gw, Some("old-token")).await, 503);

    // Step 2: the old token removed.
    replace_file(&file, "new-token\n");
    wait_until("the old token is refused", DEADLINE, || {
        let (c, gw) = (c.clone(), &gw);
        async move { upload_status(&c, gw, Some("old-token")).await == 401 }
    })
    .await;
    assert_eq!(delete_status(&c, &gw, Some("new-token")).await, 503);

    // A file that holds no token any more keeps the last good set.
    replace_file(&file, "# emptied by mistake\n");
    let reloads = Instant::now();
    while reloads.elapsed() < Duration::from_millis(500) {
        assert_eq!(upload_status(&c, &gw, Some("new-token")).await, 503);
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_token_file_without_a_token_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n# nothing yet\n").unwrap();
    let missing = dir.path().join("missing");
    for (path, want) in [(&empty, "holds no token"), (&missing, "cannot read")] {
        let config = kdfs_client_gateway::Config::parse_from([
            "kdfs-gateway".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            format!("--auth-token-file={}", path.display()),
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let r = tokio::time::timeout(
            DEADLINE,
            kdfs_client_gateway::run(config, listener, shutdown),
        )
        .await
        .expect("run returns at once");
        let e = r.expect_err("a gateway without a usable token file must not start");
        let e = e.to_string();
        assert!(e.contains(want) && e.contains("--auth-token-file"), "{e}");
    }
}

#[tokio::test]
async fn repeated_failures_are_answered_429_and_guessing_locks_out_the_client() {
    let gw = Gateway::start(&dead_namenode().await, &["--auth-token=right"]).await;
    let c = http();
    for i in 0..10 {
        assert_eq!(
            upload_status(&c, &gw, Some("wrong")).await,
            401,
            "failure {i}"
        );
    }
    let r = c
        .delete(gw.at(&format!("/files/{HASH}")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let m = assert_json_error(r, 429).await;
    assert!(m.contains("too many"), "{m}");
    // Another token (the right one) is still let through: the limit is per token...
    assert_eq!(upload_status(&c, &gw, Some("right")).await, 503);
    // ...until the client has failed 10 times the limit with any tokens: then the
    // right token is refused too while the window lasts; reads stay open.
    for i in 0..90 {
        let token = format!("guess-{i}");
        assert_eq!(upload_status(&c, &gw, Some(&token)).await, 401, "guess {i}");
    }
    assert_eq!(upload_status(&c, &gw, Some("right")).await, 429);
    assert_eq!(delete_status(&c, &gw, Some("right")).await, 429);
    get_error(&c, gw.at("/files"), 503).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_failure_window_ends() {
    let gw = Gateway::start(
        &dead_namenode().await,
        &[
            "--auth-token=right",
            "--auth-max-failures=2",
            "--auth-failure-window=1s",
        ],
    )
    .await;
    let c = http();
    assert_eq!(upload_status(&c, &gw, Some("wrong")).await, 401);
    assert_eq!(upload_status(&c, &gw, Some("wrong")).await, 401);
    let blocked = Instant::now();
    assert_eq!(upload_status(&c, &gw, Some("wrong")).await, 429);
    wait_until("the window ends", DEADLINE, || {
        let (c, gw) = (c.clone(), &gw);
        async move { upload_status(&c, gw, Some("wrong")).await == 401 }
    })
    .await;
    assert!(blocked.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}

/// A `kdfs-gateway` process with JSON logs on stderr, collected line by line.
struct GatewayProcess {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    async fn start(namenode: &str, extra: &[&str]) -> Self {
        Self::start_env(namenode, extra, &[]).await
    }

    /// As [`Self::start`], with extra environment variables.
    async fn start_env(namenode: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kdfs-gateway"))
            .args([
                "--listen=127.0.0.1:0",
                &format!("--namenode={namenode}"),
                "--log-format=json",
                "--drain-timeout=2s",
                "--s3-listen=off",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kdfs-gateway");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut p = Self {
            child,
            url: String::new(),
            lines,
        };
        let end = Instant::now() + DEADLINE;
        let addr = loop {
            if let Some(v) = p
                .events()
                .into_iter()
                .find(|v| v["message"] == "gateway ready")
            {
                break v["addr"].as_str().unwrap().to_owned();
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!(
                    "kdfs-gateway exited with {status}: {:?}",
                    p.lines.lock().unwrap()
                );
            }
            assert!(Instant::now() < end, "kdfs-gateway never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        p.url = format!("http://{addr}");
        p
    }

    /// Every JSON log line so far.
    fn events(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The audit lines so far.
    fn audit(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|v| v["target"] == "kdfs::audit")
            .collect()
    }

    /// Waits for an audit line for which `matches` holds.
    async fn audit_line(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = self.audit().into_iter().find(&matches) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "no audit line for {what}; audit so far: {:?}",
                self.audit()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn raw_log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_id(token: &str) -> String {
    format!(
        "token:{}",
        &hex::encode(Sha256::digest(token.as_bytes()))[..8]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_deletes_and_refusals_are_audited() {
    let cluster = TestCluster::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let token = "audit-secret-token-123";
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let gw = GatewayProcess::start(
        &cluster.namenode_url,
        &[&format!("--auth-token-file={}", file.display())],
    )
    .await;
    let c = http();
    let data = b"audited bytes, 27 of them.\n";
    let hash = hex::encode(Sha256::digest(data));
    let form = || {
        let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name("a.txt");
        reqwest::multipart::Form::new().part("file", part)
    };

    // A wrong token and none: 401, one `auth` line each.
    let r = c
        .post(format!("{}/upload", gw.url))
        .bearer_auth("not-the-token")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_json_error(r, 401).await;
    let v = gw
        .audit_line("a bad token", |v| v["who"] == "bad-token")
        .await;
    assert_eq!(v["action"], "auth");
    assert_eq!(v["wanted"], "upload");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["status"], 401);
    assert_eq!(v["result"], "unauthorized");
    assert_eq!(v["level"], "INFO");
    let r = c
        .delete(format!("{}/files/{hash}", gw.url))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 401).await;
    let v = gw.audit_line("no token", |v| v["who"] == "none").await;
    assert_eq!(
        (&v["action"], &v["wanted"]),
        (&"auth".into(), &"delete".into())
    );
    assert_eq!(v["file"], hash.as_str());

    // An upload: who, the hash and the size.
    let r = c
        .post(format!("{}/upload", gw.url))
        .bearer_auth(token)
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = gw
        .audit_line("the upload", |v| v["action"] == "upload")
        .await;
    assert_eq!(v["who"], token_id(token).as_str());
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["file"], hash.as_str());
    assert_eq!(v["size"], data.len());
    assert_eq!(v["status"], 200);
    assert_eq!(v["result"], "ok");

    // A delete: the hash and the size it had.
    let r = c
        .delete(format!("{}/files/{hash}", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = gw
        .audit_line("the delete", |v| v["action"] == "delete")
        .await;
    assert_eq!(v["who"], token_id(token).as_str());
    assert_eq!(v["file"], hash.as_str());
    assert_eq!(v["size"], data.len());
    assert_eq!(v["result"], "ok");

    // An upload whose client vanishes half-way is audited too, as a failure.
    {
        use tokio::io::AsyncWriteExt;
        let big = vec![7u8; 3 << 20];
        let (ct, body) = multipart(&[("file", Some("gone.bin"), &big)]);
        let addr = gw.url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body[..body.len() / 2]).await.unwrap();
        drop(s);
    }
    let v = gw
        .audit_line("the interrupted upload", |v| {
            v["action"] == "upload" && v["result"] != "ok"
        })
        .await;
    assert_eq!(v["who"], token_id(token).as_str());

    // Exactly these five lines, and the token appears nowhere in the log.
    assert_eq!(gw.audit().len(), 5, "{:?}", gw.audit());
    assert!(!gw.raw_log().contains(token));
}

#[tokio::test]
async fn without_auth_the_audit_says_anonymous_and_a_flood_is_one_line() {
    let gw = GatewayProcess::start(&dead_namenode().await, &[]).await;
    let c = http();
    let r = c
        .delete(format!("{}/files/{HASH}", gw.url))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 503).await;
    let v = gw
        .audit_line("an anonymous delete", |v| v["action"] == "delete")
        .await;
    assert_eq!(v["who"], "anonymous");
    assert_eq!(v["file"], HASH);
    assert_eq!(v["status"], 503);
    assert_eq!(v["result"], "service-unavailable");
    drop(gw);

    // With a token: 3 failures, then 20 refusals give 3 + 1 audit lines.
    let gw = GatewayProcess::start(
        &dead_namenode().await,
        &["--auth-token=t0ken", "--auth-max-failures=3"],
    )
    .await;
    for _ in 0..23 {
        c.delete(format!("{}/files/{HASH}", gw.url))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
    }
    let v = gw
        .audit_line("the refusal", |v| v["who"] == "limited")
        .await;
    assert_eq!(v["status"], 429);
    assert_eq!(v["result"], "too-many-requests");
    // Every request has been answered, so every line it made is written.
    assert_eq!(gw.audit().len(), 4, "{:?}", gw.audit());
}

/// Issue 24 finding 13: `--auth-reads` puts every read of files, the cluster and
/// metrics behind the token (the page and the probes stay open; refusals are audited),
/// and a token given as a flag, visible in `ps`, is warned about once at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_reads_guards_reads_and_a_token_flag_is_warned_about() {
    let cluster = TestCluster::start(2).await;
    let token = "read-secret-token";
    let c = http();
    let data = b"read me only with the token\n";
    let hash = hex::encode(Sha256::digest(data));
    let reads = [
        format!("/download?hash={hash}"),
        "/files".to_owned(),
        format!("/files/{hash}"),
        "/info".to_owned(),
        "/metrics".to_owned(),
    ];
    let get = |gw: &GatewayProcess, path: &str, token: Option<&str>| {
        let mut req = c.get(format!("{}{path}", gw.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let warned = |gw: &GatewayProcess| {
        gw.events().iter().any(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("--auth-token was given on the command line"))
        })
    };

    // The token from the environment, reads open: no warning, every read answers.
    let gw =
        GatewayProcess::start_env(&cluster.namenode_url, &[], &[("KDFS_AUTH_TOKEN", token)]).await;
    let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name("r.txt");
    let r = c
        .post(format!("{}/upload", gw.url))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in &reads {
        assert_eq!(get(&gw, path, None).await, 200, "open read {path}");
    }
    assert!(!warned(&gw), "{}", gw.raw_log());
    drop(gw);

    // The token as a flag, with --auth-reads.
    let flag = format!("--auth-token={token}");
    let gw = GatewayProcess::start(&cluster.namenode_url, &[&flag, "--auth-reads"]).await;
    assert!(warned(&gw), "no warning about the flag: {}", gw.raw_log());
    assert!(!gw.raw_log().contains(token), "the token was logged");
    for path in &reads {
        assert_eq!(get(&gw, path, None).await, 401, "{path} without a token");
        assert_eq!(
            get(&gw, path, Some(token)).await,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(get(&gw, "/info", Some("wrong")).await, 401);
    for open in ["/", "/healthz", "/readyz"] {
        assert_eq!(get(&gw, open, None).await, 200, "{open} stays open");
    }
    let v = gw
        .audit_line("a refused read", |v| {
            v["wanted"] == "read" && v["who"] == "none"
        })
        .await;
    assert_eq!(
        (v["action"].as_str(), v["status"].as_u64()),
        (Some("auth"), Some(401))
    );
    gw.audit_line("a read with a bad token", |v| {
        v["wanted"] == "read" && v["who"] == "bad-token"
    })
    .await;
    assert!(
        gw.audit().iter().all(|v| v["action"] != "read"),
        "accepted reads are not audited: {:?}",
        gw.audit()
    );
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (made with `openssl`), as
/// (certificate path, key path, certificate PEM).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let config = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &config,
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = leaf\nprompt = no\n\
             [dn]\nCN = {name}\n\
             [leaf]\nbasicConstraints = critical,CA:FALSE\n\
             subjectAltName = DNS:localhost,IP:127.0.0.1\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
        ),
    )
    .unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-config",
        ])
        .arg(&config)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the HTTPS tests need the openssl command");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(&cert).unwrap();
    (cert, key, pem)
}

/// An HTTPS client that trusts only `pem`.
fn https_client(pem: &[u8]) -> reqwest::Client {
    let _ = http(); // installs the crypto provider
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_serves_the_page_and_the_api_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = self_signed(dir.path(), "first");
    let https = https_client(&first);
    let gw = Gateway::start_with(
        &dead_namenode().await,
        &[
            &format!("--https-cert={}", cert.display()),
            &format!("--https-key={}", key.display()),
            "--https-reload-interval=100ms",
            "--auth-token=tok",
        ],
        "https",
        https.clone(),
    )
    .await;
    assert!(gw.url.starts_with("https://127.0.0.1:"));

    let r = https.get(gw.at("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"file-input\""));
    let r = https.get(gw.at("/info")).send().await.unwrap();
    assert_eq!(r.status(), 503, "the namenode is dead; /info still answers");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["service"], "kdfs-gateway");
    // Auth works the same over HTTPS.
    let r = https
        .delete(gw.at(&format!("/files/{HASH}")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 401).await;

    // Only HTTPS: a plain request on the same port gets no answer.
    let plain = http()
        .get(gw.at("/healthz").replacen("https://", "http://", 1))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // Rotation: new files in place; new connections get the new certificate.
    let (next_cert, next_key, second) = self_signed(dir.path(), "second");
    std::fs::rename(&next_key, &key).unwrap();
    std::fs::rename(&next_cert, &cert).unwrap();
    let trusts_second = https_client(&second);
    wait_until("the new certificate is served", DEADLINE, || {
        let (c, url) = (trusts_second.clone(), gw.at("/healthz"));
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let old = https_client(&first).get(gw.at("/healthz")).send().await;
    assert!(
        old.is_err(),
        "a client trusting only the old certificate: {old:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_unusable_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key, _) = self_signed(dir.path(), "gw");
    let missing = dir.path().join("missing.key");
    let config = kdfs_client_gateway::Config::parse_from([
        "kdfs-gateway".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        format!("--https-cert={}", cert.display()),
        format!("--https-key={}", missing.display()),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = tokio::time::timeout(
        DEADLINE,
        kdfs_client_gateway::run(config, listener, Default::default()),
    )
    .await
    .expect("run returns at once");
    let e = r.expect_err("no HTTPS without a key").to_string();
    assert!(e.contains("HTTPS") && e.contains("missing.key"), "{e}");
}
