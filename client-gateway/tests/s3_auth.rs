//! The S3 port's authentication, with the AWS CLI and boto3: no key pair configured
//! refuses everything in words; a wrong secret gets `SignatureDoesNotMatch`, an unknown
//! key `InvalidAccessKeyId`; a credentials file is re-read (a rotation), and refused
//! requests are counted and audited without the secret.

mod common;

use common::s3::{self, Clients};
use common::{DEADLINE, Gateway, http, wait_until};

/// A gateway whose namenode does not exist: authentication needs none.
async fn gateway(extra: &[String]) -> Gateway {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Gateway::start_full("http://127.0.0.1:1", &extra, "http", http(), true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_key_pairs_every_request_is_refused_in_words() {
    let g = gateway(&[]).await;
    let clients = Clients::new(g.s3_url.as_deref().unwrap());
    let Some(out) = clients.aws(&["s3api", "list-buckets"]).await else {
        return;
    };
    let err = s3::failed("list-buckets without keys configured", &out);
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(err.contains("no S3 credentials configured"), "{err}");
    // Unsigned requests too.
    let r = http()
        .get(format!("{}/", g.s3_url.as_deref().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_key_is_refused_with_its_s3_code() {
    let g = gateway(&s3::key_flags()).await;
    let url = g.s3_url.clone().unwrap();
    let wrong = Clients::with_keys(&url, s3::ACCESS_KEY, "not-the-secret");
    let Some(out) = wrong.aws(&["s3api", "list-buckets"]).await else {
        return;
    };
    let err = s3::failed("list-buckets with a wrong secret", &out);
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    let unknown = Clients::with_keys(&url, "nobody", "whatever");
    let out = unknown.aws(&["s3api", "list-buckets"]).await.unwrap();
    let err = s3::failed("list-buckets with an unknown key", &out);
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    // Anonymous: refused, saying a signature is needed.
    let r = http().get(format!("{url}/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("anonymous requests are refused")
    );
    // boto3 (newest SDK) sees the same code.
    let script = "try:\n    s3.list_buckets()\n    print('accepted')\nexcept botocore.exceptions.ClientError as e:\n    print(e.response['Error']['Code'])\n";
    if let Some(out) = wrong.boto3(script, &[]).await {
        assert_eq!(s3::ok("boto3", &out).trim(), "SignatureDoesNotMatch");
    }
    // Counted by operation (unknown: refused before it was resolved) and status.
    let metrics = http()
        .get(g.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kdfs_gateway_s3_requests_total")
                && l.contains("operation=\"unknown\"")
                && l.contains("status=\"403\"")),
        "{metrics}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_is_reread_for_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s3-credentials");
    std::fs::write(&file, "# rotated by hand\nOLDKEY old-secret-1\n").unwrap();
    let g = gateway(&[
        format!("--s3-credentials-file={}", file.display()),
        "--s3-credentials-reload-interval=50ms".to_owned(),
    ])
    .await;
    let url = g.s3_url.clone().unwrap();
    let old = Clients::with_keys(&url, "OLDKEY", "old-secret-1");
    let new = Clients::with_keys(&url, "NEWKEY", "new-secret-2");
    // A signed request that passed authentication reaches the operation (here, with no
    // namenode, an error that is not an authentication one).
    let accepted = |out: &std::process::Output| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        !text.contains("InvalidAccessKeyId") && !text.contains("SignatureDoesNotMatch")
    };
    let Some(out) = old.aws(&["s3api", "list-buckets"]).await else {
        return;
    };
    assert!(accepted(&out), "{out:?}");
    let out = new.aws(&["s3api", "list-buckets"]).await.unwrap();
    assert!(!accepted(&out), "NEWKEY is not configured yet");
    replace_file(&file, "NEWKEY new-secret-2\n");
    wait_until("the new key pair is accepted", DEADLINE, || async {
        accepted(&new.aws(&["s3api", "list-buckets"]).await.unwrap())
    })
    .await;
    let out = old.aws(&["s3api", "list-buckets"]).await.unwrap();
    assert!(!accepted(&out), "OLDKEY was removed");
    // A malformed file keeps the last good pairs (once it was read: the counter says so).
    let malformed_reads = || async {
        let text = http()
            .get(format!("{}/metrics", g.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(r#"kdfs_gateway_s3_credentials_reloads_total{result="malformed"} "#)
            })
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let before = malformed_reads().await;
    replace_file(&file, "NEWKEY\n");
    wait_until("the malformed file was read", DEADLINE, || async {
        malformed_reads().await > before
    })
    .await;
    assert!(accepted(
        &new.aws(&["s3api", "list-buckets"]).await.unwrap()
    ));
    g.stop().await;
}

#[tokio::test]
async fn a_malformed_credentials_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s3-credentials");
    std::fs::write(&file, "ONLYKEY\n").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s3 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = <kdfs_client_gateway::Config as clap::Parser>::parse_from([
        "kdfs-gateway".to_owned(),
        "--namenode=http://127.0.0.1:1".to_owned(),
        format!("--s3-credentials-file={}", file.display()),
    ]);
    let listeners = kdfs_client_gateway::Listeners {
        http: listener,
        s3: Some(s3),
    };
    let err = kdfs_client_gateway::run(config, listeners, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("ACCESS_KEY SECRET_KEY"),
        "{err}"
    );
}

/// The real binary's audit log: a write names the access key id, a refused signature
/// the key id it claimed; no line holds the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_name_the_access_key_never_the_secret() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kdfs-gateway"))
        .args([
            "--listen=127.0.0.1:0",
            "--s3-listen=127.0.0.1:0",
            "--namenode=http://127.0.0.1:1",
            "--log-format=json",
            "--drain-timeout=1s",
        ])
        .env("KDFS_S3_ACCESS_KEY", s3::ACCESS_KEY)
        .env("KDFS_S3_SECRET_KEY", s3::SECRET_KEY)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kdfs-gateway");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    let events = |lines: &Arc<Mutex<Vec<String>>>| -> Vec<serde_json::Value> {
        let l = lines.lock().unwrap();
        l.iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut addr = None;
    wait_until("the S3 port's ready line", DEADLINE, || {
        let found = events(&lines)
            .into_iter()
            .find(|v| v["fields"]["message"] == "S3 port ready" || v["message"] == "S3 port ready");
        addr = found.map(|v| {
            let a = if v["fields"]["addr"].is_string() {
                &v["fields"]["addr"]
            } else {
                &v["addr"]
            };
            a.as_str().unwrap().to_owned()
        });
        std::future::ready(addr.is_some())
    })
    .await;
    let url = format!("http://{}", addr.unwrap());
    let good = Clients::new(&url);
    let Some(out) = good
        .aws(&["s3api", "put-object", "--bucket", "audited", "--key", "k"])
        .await
    else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // No namenode: the write fails after authentication, and is audited as tried.
    s3::failed("put-object without a namenode", &out);
    let wrong = Clients::with_keys(&url, s3::ACCESS_KEY, "not-the-secret");
    s3::failed(
        "put-object with a wrong secret",
        &wrong
            .aws(&["s3api", "put-object", "--bucket", "audited", "--key", "k"])
            .await
            .unwrap(),
    );
    let audit = |lines: &Arc<Mutex<Vec<String>>>| -> Vec<serde_json::Value> {
        events(lines)
            .into_iter()
            .filter(|v| v["target"] == "kdfs::audit")
            .map(|v| {
                if v["fields"].is_object() {
                    v["fields"].clone()
                } else {
                    v
                }
            })
            .collect()
    };
    wait_until(
        "the write's and the refusal's audit lines",
        DEADLINE,
        || {
            let a = audit(&lines);
            std::future::ready(
                a.iter()
                    .any(|f| f["operation"] == "PutObject" && f["action"] == "s3")
                    && a.iter().any(|f| f["action"] == "auth"),
            )
        },
    )
    .await;
    let a = audit(&lines);
    let write = a.iter().find(|f| f["operation"] == "PutObject").unwrap();
    assert_eq!(write["who"], format!("s3:{}", s3::ACCESS_KEY), "{write}");
    assert_eq!(write["bucket"], "audited");
    assert_eq!(write["key"], "k");
    let refused = a.iter().find(|f| f["action"] == "auth").unwrap();
    assert_eq!(
        refused["who"],
        format!("s3:{}", s3::ACCESS_KEY),
        "{refused}"
    );
    assert_eq!(refused["status"], 403);
    let _ = child.kill();
    let _ = child.wait();
    for l in lines.lock().unwrap().iter() {
        assert!(
            !l.contains(s3::SECRET_KEY),
            "a log line holds the secret: {l}"
        );
    }
}

/// Replaces a credentials file the way a Secret volume or an editor's save does (a new
/// file renamed over the old), so the gateway's reload never reads it half-written.
fn replace_file(path: &std::path::Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}
