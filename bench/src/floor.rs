//! The floors of the `small` scenario: the least machine CPU each part of a small
//! upload or download costs when measured alone on this machine (an HTTP request, a
//! unary gRPC call, a WriteBlock or ReadBlock stream, the namenode's durable file
//! record, a SHA-256), so the figures the cluster reaches can be read against them.

use std::time::Instant;

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kdfs_proto::pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::disk::COMMIT_THREADS;
use crate::machine::machine_cpu_seconds;
use crate::sink::SinkServer;
use crate::stats::median;

/// The replication factor of `--local` clusters (the namenode's default).
pub(crate) const LOCAL_REPLICATION: u32 = kdfs_namenode::DEFAULT_REPLICATION;

/// Machine CPU µs per operation of `ops` runs of `op`, [`COMMIT_THREADS`] at a time
/// (see [`machine_cpu_seconds`]).
async fn machine_cpu_per_op<F, Fut>(ops: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cpu0 = machine_cpu_seconds();
    futures::stream::iter(0..ops)
        .map(op)
        .buffer_unordered(COMMIT_THREADS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(match (cpu0, machine_cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) * 1e6 / ops as f64,
        _ => f64::NAN,
    })
}

/// Operations per part of the upload floor (fewer for a run of fewer files).
pub(crate) const FLOOR_OPS: usize = 2_000;

/// The file record's part of the upload floor: machine CPU µs per record of a one-block
/// file of `len` bytes made durable by the namenode's own group-commit writer,
/// [`COMMIT_THREADS`] committers at once, its database in `dir` (the lease row is
/// queued first, as `BeginUpload` does; here it usually lands in its commit's batch and
/// is never written, which a real upload only gets when it is quick).
pub(crate) async fn meta_commit_floor(
    dir: &std::path::Path,
    len: usize,
    ops: usize,
) -> anyhow::Result<f64> {
    use kdfs_core::{BlockId, FileId};
    use kdfs_namenode::bench::{FileRecord, Lease, Op, Store, Writer};
    let db_dir = dir.join("floor-meta");
    let store = std::sync::Arc::new(
        Store::open(&db_dir).with_context(|| format!("open {}", db_dir.display()))?,
    );
    let (writer, stopped) = Writer::spawn(store, Box::new(|_, _| {}));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let len = len as u64;
    let meta_commit = machine_cpu_per_op(ops, |i| {
        let writer = writer.clone();
        async move {
            let upload_id = format!("floor-{i}");
            writer
                .enqueue(Op::PutLease(Lease {
                    id: upload_id.clone(),
                    name: upload_id.clone(),
                    content_type: "application/octet-stream".into(),
                    replication: LOCAL_REPLICATION,
                    begin_ms: now_ms,
                    expires_ms: now_ms + 60_000,
                }))
                .await?;
            let digest: [u8; 32] = Sha256::digest(upload_id.as_bytes()).into();
            writer
                .submit(Op::Commit {
                    record: FileRecord {
                        id: FileId::from_bytes(digest),
                        name: upload_id.clone(),
                        size: len,
                        content_type: "application/octet-stream".into(),
                        created_ms: now_ms as i64,
                        replication: LOCAL_REPLICATION,
                        blocks: vec![(BlockId::from_bytes(digest), len)],
                    },
                    replaces: None,
                    object_content: false,
                    replicas: vec![(0..LOCAL_REPLICATION).collect()],
                    upload_id,
                })
                .await?;
            Ok(())
        }
    })
    .await?;
    drop(writer);
    let _ = stopped.await;
    std::fs::remove_dir_all(&db_dir).with_context(|| format!("remove {}", db_dir.display()))?;
    Ok(meta_commit)
}

/// The hashing part of the floors: CPU µs of one SHA-256 pass over `data` on this
/// thread, the median of five timed loops.
pub(crate) fn sha256_us(data: &[u8]) -> f64 {
    const HASHES: u32 = 5_000;
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..HASHES {
                    std::hint::black_box(Sha256::digest(std::hint::black_box(data)));
                }
                t.elapsed().as_secs_f64() * 1e6 / f64::from(HASHES)
            })
            .collect(),
    )
}

/// The network work every small upload at replication 3, and every small download,
/// needs at the least, each part measured alone on this machine, as machine CPU µs per
/// operation with 16 callers at once (client and server in this process, over
/// 127.0.0.1, the store's transport settings): `http`, a multipart POST of the file to
/// an HTTP server that parses it and answers a line of JSON (the gateway's front);
/// `http_get`, a GET that the server answers with the file; `unary`, one gRPC call
/// with an empty answer (an upload makes two: BeginUpload, CommitFile; a download one:
/// GetFile); `stream`, one WriteBlock stream of a header, the file and a trailer into a
/// sink (an upload makes three, one per hop); `read_stream`, one ReadBlock answered by
/// one message of the file (a download makes one). Nothing here stores, hashes or logs.
pub(crate) async fn floor(file: Bytes, ops: usize) -> anyhow::Result<Value> {
    let sink = SinkServer::start(file.clone()).await?;
    let client = sink.client().await?;
    let unary = machine_cpu_per_op(ops, |i| {
        let mut c = client.clone();
        async move {
            c.transfer_block(pb::ReplicateBlock {
                block_id: Bytes::copy_from_slice(&[i as u8; 32]),
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let stream = machine_cpu_per_op(ops, |i| {
        let mut c = client.clone();
        let file = file.clone();
        async move {
            use pb::write_block_request::Msg;
            let msgs = [
                Msg::Header(pb::WriteHeader {
                    upload_id: format!("floor-{i}"),
                    max_length: file.len() as u64,
                    ..Default::default()
                }),
                Msg::Data(file),
                Msg::Trailer(pb::WriteTrailer {
                    block_id: Bytes::copy_from_slice(&[i as u8; 32]),
                }),
            ]
            .map(|m| pb::WriteBlockRequest { msg: Some(m) });
            c.write_block(futures::stream::iter(msgs)).await?;
            Ok(())
        }
    })
    .await?;
    let len = file.len();
    let read_stream = machine_cpu_per_op(ops, |i| {
        let mut c = client.clone();
        async move {
            let mut r = c
                .read_block(pb::ReadBlockRequest {
                    block_id: Bytes::copy_from_slice(&[i as u8; 32]),
                    offset: 0,
                    length: len as u64,
                    // The sink checks no token (a datanode's check is one HMAC per
                    // stream, beside the point of this floor).
                    token: None,
                })
                .await?
                .into_inner();
            let mut got = 0;
            while let Some(m) = r.message().await? {
                got += m.data.len();
            }
            ensure!(got == len, "floor read got {got} of {len} bytes");
            Ok(())
        }
    })
    .await?;
    sink.stop().await;
    let (http, http_get) = http_floor(file, ops).await?;
    Ok(json!({
        "http_us": http, "http_get_us": http_get, "unary_us": unary,
        "stream_us": stream, "read_stream_us": read_stream,
    }))
}

/// The `http` and `http_get` parts of [`floor`].
async fn http_floor(file: Bytes, ops: usize) -> anyhow::Result<(f64, f64)> {
    use axum::extract::Request;
    use std::future::IntoFuture;
    async fn parse(req: Request) -> Result<axum::Json<Value>, axum::http::StatusCode> {
        let bad = |_| axum::http::StatusCode::BAD_REQUEST;
        let ct = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multer::parse_boundary(ct).map_err(bad)?;
        let mut form = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
        let mut n = 0;
        while let Some(mut field) = form.next_field().await.map_err(bad)? {
            while let Some(c) = field.chunk().await.map_err(bad)? {
                n += c.len();
            }
        }
        Ok(axum::Json(json!({ "size": n })))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let url = format!("{base}/upload");
    let stop = tokio_util::sync::CancellationToken::new();
    let app = axum::Router::new()
        .route("/upload", axum::routing::post(parse))
        .route(
            "/download",
            axum::routing::get({
                let file = file.clone();
                move || async move { file }
            }),
        );
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let http = reqwest::Client::new();
    let cpu = machine_cpu_per_op(ops, |_| {
        let (http, url, file) = (http.clone(), url.clone(), file.clone());
        async move {
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::from(file.clone()),
                file.len() as u64,
            )
            .file_name("floor")
            .mime_str("application/octet-stream")?;
            let form = reqwest::multipart::Form::new().part("file", part);
            let r = http.post(&url).multipart(form).send().await?;
            ensure!(
                r.status().is_success(),
                "floor server answered {}",
                r.status()
            );
            let v: Value = r.json().await?;
            ensure!(v["size"] == json!(file.len()), "floor server read {v}");
            Ok(())
        }
    })
    .await?;
    let get = machine_cpu_per_op(ops, |_| {
        let (http, url, len) = (http.clone(), format!("{base}/download"), file.len());
        async move {
            let r = http.get(&url).send().await?;
            ensure!(
                r.status().is_success(),
                "floor server answered {}",
                r.status()
            );
            let got = r.bytes().await?.len();
            ensure!(got == len, "floor download got {got} of {len} bytes");
            Ok(())
        }
    })
    .await?;
    stop.cancel();
    let _ = server.await;
    Ok((cpu, get))
}
