//! Scenario 11 (issue 7), bounded: malformed input at every edge of a real cluster.
//! Random and truncated bodies for every gRPC method of the namenode and a datanode
//! (through a raw-bytes codec, so the servers' decoders see the garbage), and bad ids,
//! paths and multipart bodies at the gateway. Nothing may panic or hang, every HTTP error
//! is a 4xx JSON error, no garbage becomes a file, and the cluster still works after.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use kdfs_testkit::{Options, ProcessCluster, random_bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Per-call deadline: a call that takes longer is a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Inputs per gRPC method.
const CASES: u64 = 40;

/// Sends and receives message bodies as raw bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Unary,
    ClientStreaming,
    ServerStreaming,
}

const NAMENODE: &[(&str, Kind)] = &[
    ("Register", Kind::Unary),
    ("Heartbeat", Kind::Unary),
    ("FullBlockReport", Kind::ClientStreaming),
    ("IncrementalBlockReport", Kind::Unary),
    ("BeginUpload", Kind::Unary),
    ("RenewLease", Kind::Unary),
    ("AllocateBlock", Kind::Unary),
    ("CommitFile", Kind::Unary),
    ("AbandonUpload", Kind::Unary),
    ("GetFile", Kind::Unary),
    ("ListFiles", Kind::Unary),
    ("DeleteFile", Kind::Unary),
    ("ReportBadReplica", Kind::Unary),
    ("ClusterInfo", Kind::Unary),
];
const DATANODE: &[(&str, Kind)] = &[
    ("WriteBlock", Kind::ClientStreaming),
    ("ReadBlock", Kind::ServerStreaming),
    ("TransferBlock", Kind::Unary),
];

/// A message that looks like protobuf: random fields with plausible tags, varints and
/// length-delimited values (ids of 32 bytes, hex strings, huge lengths), cut at a random
/// place half of the time.
fn protobuf_ish(seed: u64) -> Bytes {
    let r = random_bytes(4096, seed);
    let mut it = r.iter().copied();
    let mut next = move || it.next().unwrap_or(0);
    let mut out = Vec::new();
    let fields = next() % 8;
    for _ in 0..fields {
        let field = u64::from(next() % 12 + 1);
        match next() % 4 {
            0 => {
                // Wire type 0: a varint.
                out.push((field << 3) as u8);
                for _ in 0..(next() % 10) {
                    out.push(next() | 0x80);
                }
                out.push(next() & 0x7f);
            }
            1 => {
                // An id-sized value.
                out.push(((field << 3) | 2) as u8);
                let len = [0usize, 31, 32, 33, 64][usize::from(next()) % 5];
                out.push(len as u8);
                out.extend((0..len).map(|_| next()));
            }
            2 => {
                // A hex-ish string, sometimes with path traversal.
                out.push(((field << 3) | 2) as u8);
                let s: &[u8] = match next() % 4 {
                    0 => b"../../etc/passwd",
                    1 => b"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef012345678",
                    2 => b"127.0.0.1:1",
                    _ => b"",
                };
                out.push(s.len() as u8);
                out.extend_from_slice(s);
            }
            _ => {
                // A length that runs past the end.
                out.push(((field << 3) | 2) as u8);
                out.extend_from_slice(&[0xff, 0xff, 0xff, 0x0f]);
                out.extend((0..next() % 16).map(|_| next()));
            }
        }
    }
    if next() % 2 == 0 && !out.is_empty() {
        let cut = usize::from(next()) % out.len();
        out.truncate(cut);
    }
    Bytes::from(out)
}

fn input(seed: u64) -> Bytes {
    match seed % 3 {
        0 => Bytes::from(random_bytes((seed % 300) as usize, seed)),
        _ => protobuf_ish(seed),
    }
}

/// Calls every method of a service with garbage; returns the status codes seen.
async fn fuzz_service(
    addr: &str,
    service: &str,
    methods: &[(&str, Kind)],
) -> std::collections::BTreeMap<String, usize> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {service} at {addr}: {e}"));
    let mut seen = std::collections::BTreeMap::new();
    for (m, kind) in methods {
        let path = PathAndQuery::try_from(format!("/kdfs.v1.{service}/{m}")).expect("path");
        for case in 0..CASES {
            let seed = case * 7919 + m.len() as u64;
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                match kind {
                    Kind::Unary => grpc
                        .unary(tonic::Request::new(input(seed)), path.clone(), Raw)
                        .await
                        .map(|_| ()),
                    Kind::ClientStreaming => {
                        let msgs: Vec<Bytes> = (0..seed % 4).map(|j| input(seed + j)).collect();
                        grpc.client_streaming(
                            tonic::Request::new(futures::stream::iter(msgs)),
                            path.clone(),
                            Raw,
                        )
                        .await
                        .map(|_| ())
                    }
                    Kind::ServerStreaming => {
                        let mut s = grpc
                            .server_streaming(tonic::Request::new(input(seed)), path.clone(), Raw)
                            .await?
                            .into_inner();
                        while s.message().await?.is_some() {}
                        Ok(())
                    }
                }
            };
            let outcome = tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| panic!("{service}/{m} hung on input {seed}"));
            let code = match outcome {
                Ok(()) => "OK".to_owned(),
                Err(status) => {
                    assert!(
                        !status.message().is_empty(),
                        "{service}/{m}: an error without a message on input {seed}"
                    );
                    format!("{:?}", status.code())
                }
            };
            *seen.entry(format!("{m}:{code}")).or_default() += 1;
        }
    }
    seen
}

#[test]
fn malformed_input_everywhere_is_refused_cleanly() {
    let c = ProcessCluster::start(Options::default());
    let kept = c.upload(&random_bytes(300 << 10, 11));

    // gRPC: every method of the namenode and of one datanode.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nn = format!("127.0.0.1:{}", c.namenode_port);
    let dn = c.datanode_addrs[0].clone();
    let (nn_seen, dn_seen) = rt.block_on(async {
        (
            fuzz_service(&nn, "Namenode", NAMENODE).await,
            fuzz_service(&dn, "Datanode", DATANODE).await,
        )
    });
    let ok: usize = nn_seen
        .iter()
        .chain(dn_seen.iter())
        .filter(|(k, _)| k.ends_with(":OK"))
        .map(|(_, n)| n)
        .sum();
    eprintln!("scenario 11: namenode answers {nn_seen:?}");
    eprintln!("scenario 11: datanode answers {dn_seen:?}; {ok} garbage calls accepted");

    // HTTP: bad ids, paths, methods and multipart bodies at the gateway.
    let http = c.http();
    let base = &c.api.base;
    let bad_ids = [
        "",
        "abc",
        "../../etc/passwd",
        "%2e%2e%2fetc%2fpasswd",
        &"A".repeat(64),
        &"0".repeat(63),
        &"0".repeat(65),
        &"g".repeat(64),
        &"é".repeat(32),
    ];
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut check = |what: String, resp: reqwest::Result<reqwest::blocking::Response>| {
        let resp = resp.unwrap_or_else(|e| panic!("{what}: no answer: {e:#}"));
        let status = resp.status().as_u16();
        let body = resp.text().unwrap_or_default();
        *statuses.entry(status).or_default() += 1;
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status} {body}"
        );
        assert!(
            body.contains("\"error\""),
            "{what}: not a JSON error: {body}"
        );
    };
    for id in bad_ids {
        check(
            format!("download {id:?}"),
            http.get(format!("{base}/download"))
                .query(&[("hash", id)])
                .send(),
        );
        check(
            format!("record {id:?}"),
            http.get(format!("{base}/files/{id}x")).send(),
        );
        check(
            format!("delete {id:?}"),
            http.delete(format!("{base}/files/{id}x")).send(),
        );
    }
    check(
        "no hash".into(),
        http.get(format!("{base}/download")).send(),
    );
    // PUT /upload is a raw-body upload; PATCH is no method of /upload.
    check(
        "bad method".into(),
        http.patch(format!("{base}/upload")).send(),
    );
    check(
        "no route".into(),
        http.get(format!("{base}/../../etc/passwd")).send(),
    );
    check(
        "bad limit".into(),
        http.get(format!("{base}/files"))
            .query(&[("limit", "-1")])
            .send(),
    );
    check(
        "bad range".into(),
        http.get(format!("{base}/download"))
            .query(&[("hash", kept.hash.as_str())])
            .header("Range", "bytes=999999999-")
            .send(),
    );
    // Multipart bodies: garbage, truncated at every tenth of a real form, no file field,
    // two file fields, no boundary.
    let boundary = "XyZkdfsFuzzBoundary";
    let content = random_bytes(200 << 10, 12);
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&content);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let post = |body: Vec<u8>, ctype: &str| {
        http.post(format!("{base}/upload"))
            .header("Content-Type", ctype)
            .body(body)
            .send()
    };
    for tenth in 0..10 {
        let cut = form.len() * tenth / 10 + tenth;
        check(
            format!("form cut at {cut}"),
            post(form[..cut].to_vec(), &ctype),
        );
    }
    check("garbage form".into(), post(random_bytes(5000, 13), &ctype));
    check(
        "no boundary".into(),
        post(form.clone(), "multipart/form-data"),
    );
    // A body that is not multipart is a raw-body upload, not bad input; a multipart
    // type with an empty boundary is.
    check(
        "empty boundary".into(),
        post(form.clone(), "multipart/form-data; boundary="),
    );
    let no_file = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    check("no file field".into(), post(no_file.into_bytes(), &ctype));
    let mut two = form[..form.len() - format!("--{boundary}--\r\n").len()].to_vec();
    two.extend_from_slice(&form);
    check("two file fields".into(), post(two, &ctype));
    eprintln!("scenario 11: gateway answered bad HTTP input with {statuses:?}");

    // Nothing garbage became a file; nothing crashed; the cluster still works.
    let listed = c.listed_hashes();
    assert_eq!(listed, vec![kept.hash.clone()], "garbage became a file");
    assert!(c.exited_unexpectedly().is_none(), "a process died");
    for p in c.procs() {
        assert!(
            !p.log_text().contains("panicked"),
            "{} panicked:\n{}",
            p.name,
            p.log_tail(40)
        );
    }
    // Nodes the fuzz registered (if any) die off; the real three stay live.
    c.wait_until(
        "only the real datanodes live",
        Duration::from_secs(30),
        || c.live_datanodes() == 3,
    );
    let after = c.upload(&random_bytes(500 << 10, 14));
    c.verify_all(&[kept, after]);
}

/// A gateway that refuses an upload at once (here: too few datanodes for the
/// replication) answers before it has read the body. The client, still sending tens of
/// MiB, must get that answer, not a connection reset (which is what closing a socket
/// with unread data makes the kernel send).
#[test]
fn a_client_still_sending_a_refused_upload_gets_the_refusal() {
    let c = ProcessCluster::start(Options {
        datanodes: 1,
        ..Options::default()
    });
    let data = random_bytes(48 << 20, 9);
    for attempt in 0..3 {
        match c.try_upload_named("big.bin", data.clone()) {
            Ok(v) => panic!("an upload with too few datanodes succeeded: {v}"),
            Err(e) => assert!(
                e.status == 503 && e.body.contains("not enough live datanodes"),
                "attempt {attempt}: {e}"
            ),
        }
    }
    assert!(c.list().is_empty(), "a refused upload left a file");
}
