//! A datanode with mTLS exports the seconds until its certificate and its CA expire on
//! `/metrics`, and the figure follows a rotation of the files (no restart).

mod common;

use std::time::Duration;

use common::*;
use kdfs_proto::tls::expiry::EXPIRY_METRIC;
use kdfs_testkit::pki::Ca;

const DAY: i64 = 86_400;

/// The value of the series `{use="mtls",certificate="<which>"}` in `/metrics` text.
fn series(metrics: &str, which: &str) -> Option<i64> {
    let prefix = format!("{EXPIRY_METRIC}{{use=\"mtls\",certificate=\"{which}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("an integer gauge"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exported_and_follows_a_rotation() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "kdfs test CA");
    let names = ["localhost", "127.0.0.1"];
    let leaf = ca.leaf_expiring_in("datanode", "datanode", &names, 10);
    let (cert, key, ca_path) = (
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
        ca.cert.display().to_string(),
    );
    // No namenode answers: the HTTP side serves anyway. (Not `TestNode::start`: it
    // probes gRPC in plaintext.)
    let dir = tempfile::tempdir().unwrap();
    let (task, _grpc, http, cancel) = spawn(
        dir.path(),
        "http://127.0.0.1:9",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca_path,
            "--tls-reload-interval",
            "100ms",
        ],
    )
    .await;
    wait_until(
        "the datanode serving HTTP",
        Duration::from_secs(10),
        || async move { http_get(http, "/metrics").await.0 == 200 },
    )
    .await;
    let (code, m) = http_get(http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(m.contains(&format!("# TYPE {EXPIRY_METRIC} gauge")), "{m}");
    let own = series(&m, "own").expect("the own certificate's series");
    assert!(
        (own - 10 * DAY).abs() < 300,
        "{own}s left, 10 days expected"
    );
    // rcgen's default CA validity runs to 4096: far beyond the leaf.
    assert!(series(&m, "ca").expect("the CA's series") > 365 * DAY);

    // Rotated under the same CA: the gauge moves to the new leaf without a restart.
    ca.leaf_expiring_in("datanode", "datanode", &names, 200);
    wait_until(
        "the gauge of the rotated certificate",
        Duration::from_secs(10),
        || async move {
            let (_, m) = http_get(http, "/metrics").await;
            series(&m, "own").is_some_and(|s| (s - 200 * DAY).abs() < 300)
        },
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}
