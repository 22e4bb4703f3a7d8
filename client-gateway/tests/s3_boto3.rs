//! The S3 port driven by boto3 (PyPI's newest, with its default checksums and
//! `aws-chunked` bodies): listing 2,000 keys with pages, prefixes and delimiters;
//! conditional and ranged GETs; checksums that do not match store nothing; multipart
//! uploads completed (and the completion retried), refused (order, missing part, wrong
//! ETag), aborted, resumed and listed with a delimiter; and hand-made requests (signed
//! with botocore's signer) for what SDKs never send: malformed XML, bad bucket names, a
//! body other than the signed one, a Content-Length shorter or longer than the body,
//! virtual-hosted-style addressing. The failed-authentication limit (`SlowDown`). The checks are in
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
            a.push("--max-upload=12MiB".to_owned());
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

/// With too few live datanodes for a write, a PUT is refused with `SlowDown` (503,
/// which SDKs retry later) and nothing is stored under the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_datanodes_answer_slow_down() {
    let c = TestCluster::with(Spec {
        s3: true,
        datanodes: 1,
        replication: 3,
        gateway_args: s3::key_flags(),
        ..Spec::default()
    })
    .await;
    let url = c.gateway.s3_url.clone().unwrap();
    let script = r#"
from botocore.config import Config
once = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=s3._request_signer._credentials.access_key,
    aws_secret_access_key=s3._request_signer._credentials.secret_key, region_name='us-east-1',
    config=Config(retries={'max_attempts': 1, 'mode': 'standard'}))
once.create_bucket(Bucket='few')
try:
    once.put_object(Bucket='few', Key='k', Body=b'x' * 100_000)
    print('stored')
except botocore.exceptions.ClientError as e:
    print(e.response['Error']['Code'], e.response['ResponseMetadata']['HTTPStatusCode'])
try:
    once.head_object(Bucket='few', Key='k')
    print('present')
except botocore.exceptions.ClientError as e:
    print('absent', e.response['ResponseMetadata']['HTTPStatusCode'])
"#;
    let Some(out) = Clients::new(&url).boto3(script, &[&url]).await else {
        return;
    };
    let stdout = s3::ok("boto3", &out);
    assert_eq!(stdout.trim(), "SlowDown 503\nabsent 404", "{stdout}");
}

/// Refused signatures from one client count against `--auth-max-failures`: after the
/// limit, that client claiming that key id gets `SlowDown` (503, with Retry-After, which
/// SDKs back off on), while a client with a good key pair is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_signatures_get_slow_down_and_a_good_client_is_served() {
    let c = TestCluster::with(Spec {
        s3: true,
        gateway_args: {
            let mut a = s3::key_flags();
            a.push("--auth-max-failures=3".to_owned());
            a
        },
        ..Spec::default()
    })
    .await;
    let url = c.gateway.s3_url.clone().unwrap();
    let script = r#"
from botocore.config import Config
once = Config(retries={'max_attempts': 1, 'mode': 'standard'})
def client(key, secret):
    return boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=key,
        aws_secret_access_key=secret, region_name='us-east-1', config=once)
good = client(s3._request_signer._credentials.access_key, s3._request_signer._credentials.secret_key)
good.create_bucket(Bucket='throttled')
bad = client('intruder-key', 'a-guess')
for _ in range(5):
    try:
        bad.list_objects_v2(Bucket='throttled')
        print('accepted')
    except botocore.exceptions.ClientError as e:
        r = e.response
        print(r['Error']['Code'], r['ResponseMetadata']['HTTPStatusCode'], 'retry-after' in r['ResponseMetadata']['HTTPHeaders'])
good.put_object(Bucket='throttled', Key='k', Body=b'still served')
print(good.get_object(Bucket='throttled', Key='k')['Body'].read().decode())
"#;
    let Some(out) = Clients::new(&url).boto3(script, &[&url]).await else {
        return;
    };
    let stdout = s3::ok("boto3", &out);
    assert_eq!(
        stdout.trim(),
        "InvalidAccessKeyId 403 False\nInvalidAccessKeyId 403 False\nInvalidAccessKeyId 403 False\n\
         SlowDown 503 True\nSlowDown 503 True\nstill served",
        "{stdout}"
    );
}

/// A 200 MiB object through single PUTs and GETs and through a multipart upload whose
/// CompleteMultipartUpload (which reads every part back) takes longer than the client's
/// read timeout: the answer starts at once and whitespace keeps the connection alive
/// until the result, as S3 does. A completion refused after its answer started
/// (`EntityTooSmall`, found by the namenode) reaches the client as that error, inside
/// the 200. Every object read back has the SHA-256 of what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_and_a_completion_longer_than_the_read_timeout() {
    let c = TestCluster::with(Spec {
        s3: true,
        gateway_args: {
            let mut a = s3::key_flags();
            a.push("--s3-complete-keepalive-after=0s".to_owned());
            a
        },
        ..Spec::default()
    })
    .await;
    let url = c.gateway.s3_url.clone().unwrap();
    let clients = Clients::new(&url);
    let script = include_str!("s3/long_completion.py");
    let Some(out) = clients.boto3(script, &[&url]).await else {
        return;
    };
    let stdout = s3::ok("long completion", &out);
    eprintln!("{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}
