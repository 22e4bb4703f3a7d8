//! The namenode's HTTP side: health, readiness and metrics.

use kdfs_testkit::http_get;

use crate::common::*;

#[tokio::test]
async fn http_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 2).await;
    upload(&mut c, "m", b"metrics", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    assert_eq!(http_get(nn.http, "/healthz").await.0, 200);
    let (status, body) = http_get(nn.http, "/readyz").await;
    assert_eq!(status, 200);
    assert!(body.contains("ready"));
    let (status, body) = http_get(nn.http, "/metrics").await;
    assert_eq!(status, 200);
    for m in [
        "kdfs_namenode_datanodes",
        "kdfs_namenode_blocks",
        "kdfs_namenode_under_replicated_blocks",
        "kdfs_namenode_safe_mode",
        "kdfs_namenode_commits_total",
    ] {
        assert!(body.contains(m), "{m} missing from\n{body}");
    }
    nn.stop().await;
}
