//! The S3 port driven by boto3 (PyPI's newest, with its default checksums and
//! `aws-chunked` bodies): listing 2,000 keys with pages, prefixes and delimiters;
//! conditional and ranged GETs; checksums that do not match store nothing; multipart
//! uploads completed, refused (order, missing part, wrong ETag), aborted and resumed;
//! and hand-made requests (signed with botocore's signer) for what SDKs never send:
//! malformed XML, bad bucket names, virtual-hosted-style addressing. The checks are in
//! `s3/boto3_suite.py`; each names what failed.

mod common;

use common::cluster::{Spec, TestCluster};
use common::s3::{self, Clients};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_suite() {
    let c = TestCluster::with(Spec {
        s3: true,
        gateway_args: {
            let mut a = s3::key_flags();
            a.push("--s3-domain=s3.kdfs.test".to_owned());
            a
        },
        ..Spec::default()
    })
    .await;
    let url = c.gateway.s3_url.clone().unwrap();
    let clients = Clients::new(&url);
    let script = include_str!("s3/boto3_suite.py");
    let Some(out) = clients.boto3(script, &[&url]).await else {
        return;
    };
    let stdout = s3::ok("boto3 suite", &out);
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}
