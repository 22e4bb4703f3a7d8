//! The gateway under test, spoken to over its public HTTP API exactly as a `curl`
//! user would: multipart uploads, verified downloads, and the `/info` and `/files`
//! JSON the heal scenario polls.

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::content::Content;

pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
}

impl Target {
    /// Uploads `content` as `name`; returns the gateway's JSON answer.
    pub(crate) async fn upload(&self, content: &Content, name: &str) -> anyhow::Result<Value> {
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(content.stream()),
            content.size,
        )
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = self
            .http
            .post(format!("{}/upload", self.url))
            .multipart(form)
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }

    /// Downloads `hash` and returns (bytes, sha256 of what arrived).
    pub(crate) async fn download(&self, hash: &str) -> anyhow::Result<(u64, String)> {
        let resp = self
            .http
            .get(format!("{}/download", self.url))
            .query(&[("hash", hash)])
            .send()
            .await?;
        let mut s = check(resp).await?.bytes_stream();
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(c) = s.next().await {
            let c = c.context("download interrupted")?;
            n += c.len() as u64;
            h.update(&c);
        }
        Ok((n, hex::encode(h.finalize())))
    }

    /// The JSON of a GET of `path` (e.g. `/info`), whatever its status.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await?
            .json()
            .await?)
    }
}

/// A success passes through; an error status becomes an error carrying the gateway's
/// `{"error": …}` message (or the start of the body).
async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    bail!("{} ({})", msg, status)
}
