//! `s3`: the S3 port driven by a real client (boto3, `s3_client.py`, run by
//! `--python`) side by side with the HTTP API in the same run: a file of `--size` PUT
//! (one PutObject, and `upload_file`'s multipart) and GET through S3 against `/upload`
//! and `/download`, `--runs` times (medians); then `--count` objects of `--file-size`
//! PUT and GET by `--concurrency` client processes against the same through
//! `/upload` and `/download`. Each path stores its own content (no dedup flatters
//! either) and every read is verified by SHA-256. Ratios are S3 over HTTP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use kdfs_core::ByteSize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::content::Content;
use crate::report::progress;
use crate::stats::{mbps, median, percentile};
use crate::target::Target;

/// The boto3 driver, run with `python -c`.
const DRIVER: &str = include_str!("s3_client.py");

/// The S3 port under test and the client that drives it.
pub(crate) struct S3Client {
    pub(crate) endpoint: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    /// A Python with boto3.
    pub(crate) python: PathBuf,
}

impl S3Client {
    /// Fails, saying what to do, unless `python` can import boto3.
    pub(crate) async fn check(&self) -> anyhow::Result<()> {
        let ok = tokio::process::Command::new(&self.python)
            .args(["-c", "import boto3"])
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        ensure!(
            ok,
            "the s3 scenario drives boto3: {} cannot import it (pass --python, e.g. \
             .ci/.venv/bin/python after .ci/run, or pip install boto3)",
            self.python.display()
        );
        Ok(())
    }

    /// Runs the driver in `mode` with `args`; its JSON answer.
    async fn run(&self, mode: &str, args: &[&str]) -> anyhow::Result<Value> {
        let out = tokio::process::Command::new(&self.python)
            .arg("-c")
            .arg(DRIVER)
            .args([&self.endpoint, &self.access_key, &self.secret_key, mode])
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {}", self.python.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            bail!(
                "the S3 client ({mode}) failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .with_context(|| format!("the S3 client's answer: {stdout}"))
    }
}

/// Writes `content` to a new file in `dir`.
async fn write_file(dir: &Path, content: &Content) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("s3-bench-{}.bin", crate::content::now_nanos()));
    let mut f = tokio::fs::File::create(&path).await?;
    for i in 0..content.chunks() {
        f.write_all(&content.chunk(i)).await?;
    }
    f.flush().await?;
    Ok(path)
}

fn f64_of(v: &Value, k: &str) -> anyhow::Result<f64> {
    v[k].as_f64()
        .with_context(|| format!("the S3 client's answer lacks {k}: {v}"))
}

/// Checks a driver's answer names `want` (size and SHA-256).
fn verified(what: &str, v: &Value, size: u64, want: &str) -> anyhow::Result<()> {
    ensure!(
        v["size"] == size && v["sha256"] == want,
        "{what} verification failed: {v}, want {size} bytes with sha256 {want}"
    );
    Ok(())
}

/// Large objects: S3 single PUT, multipart PUT and GET against `/upload`/`/download`.
async fn large(t: &Target, s3: &S3Client, size: u64, runs: usize) -> anyhow::Result<Value> {
    let scratch = tempfile::Builder::new()
        .prefix("kdfs-bench-s3-")
        .tempdir_in(".")?;
    let (mut up, mut down, mut put, mut multipart, mut get) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut client_cpu = Vec::new();
    for run in 0..runs.max(1) {
        progress(format!(
            "s3: run {}/{runs}: {} through /upload and /download",
            run + 1,
            ByteSize(size)
        ));
        let content = Content::new(size);
        let want = content.sha256();
        let t0 = Instant::now();
        let v = t.upload(&content, &format!("bench-s3-http-{run}")).await?;
        up.push(mbps(size, t0.elapsed()));
        ensure!(v["hash"] == want.as_str(), "upload returned {}", v["hash"]);
        let t0 = Instant::now();
        let (n, got) = t.download(&want).await?;
        down.push(mbps(size, t0.elapsed()));
        ensure!(n == size && got == want, "download verification failed");

        progress(format!("s3: run {}/{runs}: PutObject, GetObject", run + 1));
        let bucket = format!("bench-large-{}", crate::content::now_nanos());
        let content = Content::new(size);
        let want = content.sha256();
        let file = write_file(scratch.path(), &content).await?;
        let path = file.to_string_lossy().into_owned();
        let v = s3.run("put", &[&bucket, "single", &path, "single"]).await?;
        verified("PutObject", &v, size, &want)?;
        put.push(mbps(size, Duration::from_secs_f64(f64_of(&v, "seconds")?)));
        let v = s3.run("get", &[&bucket, "single"]).await?;
        verified("GetObject", &v, size, &want)?;
        get.push(mbps(size, Duration::from_secs_f64(f64_of(&v, "seconds")?)));
        client_cpu.push(f64_of(&v, "client_cpu_s")? * 1e9 / size as f64);

        progress(format!("s3: run {}/{runs}: multipart upload", run + 1));
        let content = Content::new(size);
        let want = content.sha256();
        tokio::fs::remove_file(&file).await?;
        let file = write_file(scratch.path(), &content).await?;
        let path = file.to_string_lossy().into_owned();
        let v = s3
            .run("put", &[&bucket, "multipart", &path, "multipart"])
            .await?;
        verified("multipart upload", &v, size, &want)?;
        multipart.push(mbps(size, Duration::from_secs_f64(f64_of(&v, "seconds")?)));
        tokio::fs::remove_file(&file).await?;
        s3.run("drop", &[&bucket]).await?;
    }
    let (up_m, down_m) = (median(up.clone()), median(down.clone()));
    let (put_m, mp_m, get_m) = (
        median(put.clone()),
        median(multipart.clone()),
        median(get.clone()),
    );
    Ok(json!({
        "size_bytes": size, "runs": runs,
        "http_upload_mb_s": up_m, "http_download_mb_s": down_m,
        "s3_put_mb_s": put_m, "s3_multipart_put_mb_s": mp_m, "s3_get_mb_s": get_m,
        "s3_put_runs_mb_s": put, "s3_multipart_put_runs_mb_s": multipart, "s3_get_runs_mb_s": get,
        "put_ratio": put_m / up_m, "multipart_put_ratio": mp_m / up_m, "get_ratio": get_m / down_m,
        "s3_get_client_cpu_ns_per_byte": median(client_cpu),
    }))
}

/// Small objects: S3 PUT/GET by `concurrency` client processes against the HTTP API.
async fn small(
    t: &Target,
    s3: &S3Client,
    count: usize,
    file_size: u64,
    concurrency: usize,
) -> anyhow::Result<Value> {
    progress(format!(
        "s3: {count} objects of {} by {concurrency} clients, HTTP then S3",
        ByteSize(file_size)
    ));
    let contents: Vec<Content> = (0..count).map(|_| Content::new(file_size)).collect();
    let t0 = Instant::now();
    let hashes: Vec<String> = futures::stream::iter(contents.iter().enumerate())
        .map(|(i, c)| async move {
            let v = t.upload(c, &format!("bench-s3-small-{i}")).await?;
            Ok::<_, anyhow::Error>(v["hash"].as_str().unwrap_or_default().to_owned())
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let http_up = count as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(hashes.iter())
        .map(|h| async move {
            let s = Instant::now();
            let (_, got) = t.download(h).await?;
            ensure!(&got == h, "small download verification failed for {h}");
            Ok(s.elapsed())
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let http_down = count as f64 / t0.elapsed().as_secs_f64();
    lat.sort();

    let bucket = format!("bench-small-{}", crate::content::now_nanos());
    let (n, size, clients) = (
        count.to_string(),
        file_size.to_string(),
        concurrency.max(1).to_string(),
    );
    let v = s3.run("small", &[&bucket, &n, &size, &clients]).await?;
    s3.run("drop", &[&bucket]).await?;
    let s3_put = count as f64 / f64_of(&v, "put_seconds")?;
    let s3_get = count as f64 / f64_of(&v, "get_seconds")?;
    Ok(json!({
        "count": count, "file_size_bytes": file_size, "clients": concurrency,
        "http_upload_ops_s": http_up, "http_download_ops_s": http_down,
        "http_download_p50_ms": percentile(&lat, 0.5),
        "s3_put_ops_s": s3_put, "s3_get_ops_s": s3_get,
        "s3_put_p50_ms": v["put_p50_ms"], "s3_put_p99_ms": v["put_p99_ms"],
        "s3_get_p50_ms": v["get_p50_ms"], "s3_get_p99_ms": v["get_p99_ms"],
        "put_ratio": s3_put / http_up, "get_ratio": s3_get / http_down,
        "s3_client_cpu_us_per_put": f64_of(&v, "put_client_cpu_s")? * 1e6 / count as f64,
        "s3_client_cpu_us_per_get": f64_of(&v, "get_client_cpu_s")? * 1e6 / count as f64,
    }))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn s3(
    t: &Target,
    s3: &S3Client,
    size: u64,
    runs: usize,
    count: usize,
    file_size: u64,
    concurrency: usize,
) -> anyhow::Result<Value> {
    s3.check().await?;
    let large = large(t, s3, size, runs).await?;
    let small = small(t, s3, count, file_size, concurrency).await?;
    Ok(json!({ "scenario": "s3", "client": "boto3", "large": large, "small": small }))
}
