//! The S3 port driven by boto3 (PyPI's newest, with its default checksums and
//! `aws-chunked` bodies): listing 2,000 keys with pages, prefixes and delimiters;
//! conditional and ranged GETs; checksums that do not match store nothing; multipart
//! uploads completed, refused (order, missing part, wrong ETag), aborted and resumed;
//! and hand-made requests (curl with SigV4) for what SDKs never send: malformed XML,
//! bad bucket names, virtual-hosted-style addressing.

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

    // Requests no SDK would make, signed by curl.
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", s3::ACCESS_KEY, s3::SECRET_KEY))
            .args(args)
            .output()
            .await
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let upload = curl(vec![
        "-X".into(),
        "POST".into(),
        format!("{url}/listing/raw?uploads"),
    ])
    .await;
    let id = upload
        .split("<UploadId>")
        .nth(1)
        .and_then(|s| s.split("</UploadId>").next())
        .unwrap_or_else(|| panic!("an upload id in {upload}"))
        .to_owned();
    let bad_xml = curl(vec![
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        "<CompleteMultipartUpload><Part><PartNumber>1</Part>".into(),
        format!("{url}/listing/raw?uploadId={id}"),
    ])
    .await;
    assert!(bad_xml.contains("<Code>MalformedXML</Code>"), "{bad_xml}");
    let bad_name = curl(vec!["-X".into(), "PUT".into(), format!("{url}/Bad_Bucket")]).await;
    assert!(
        bad_name.contains("<Code>InvalidBucketName</Code>"),
        "{bad_name}"
    );
    // Virtual-hosted style: Host names the bucket under --s3-domain.
    let port = url.rsplit(':').next().unwrap();
    let listed = curl(vec![
        "--connect-to".into(),
        format!("listing.s3.kdfs.test:{port}:127.0.0.1:{port}"),
        format!("http://listing.s3.kdfs.test:{port}/?list-type=2&prefix=cond"),
    ])
    .await;
    assert!(listed.contains("<Key>cond</Key>"), "{listed}");
}
