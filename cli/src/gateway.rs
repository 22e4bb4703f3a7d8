//! The gateway's HTTP API as the CLI uses it: small calls and table output.

use anyhow::{Context, bail};
use kdfs_core::FileId;
use serde_json::Value;

/// Page size used to walk `/files`.
const PAGE: usize = 500;

pub struct Gateway {
    pub base: String,
    pub http: reqwest::Client,
    token: Option<String>,
}

impl Gateway {
    /// A client of the gateway at `base`; with `ca`, also trusting the CA
    /// certificate(s) in that PEM file for an `https://` gateway whose certificate a
    /// private CA signed (e.g. `kdfs certs`).
    pub fn new(
        base: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--gateway must be an http:// or https:// URL, got {base:?}");
        }
        // One crypto provider for the whole workspace (ring); reqwest is built without
        // one, and installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder =
            reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading --gateway-ca {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--gateway-ca {}: not PEM certificates", ca.display()))?;
            if certs.is_empty() {
                bail!("--gateway-ca {}: holds no certificate", ca.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self { base, http, token })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Adds the bearer token, if any, to a request: every request carries it, since a
    /// gateway with `--auth-reads` wants it on reads too.
    pub fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .send(self.authed(self.http.get(self.url(path))))
            .await?;
        resp.json().await.context("reading the gateway's JSON")
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the API's message.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        check(resp).await
    }

    pub async fn ls(&self, json: bool, search: Option<&str>, limit: usize) -> anyhow::Result<()> {
        let mut files = Vec::new();
        let mut after = String::new();
        loop {
            let page = if limit == 0 {
                PAGE
            } else {
                PAGE.min(limit - files.len())
            };
            let mut q = vec![("limit", page.to_string())];
            if !after.is_empty() {
                q.push(("after", after.clone()));
            }
            if let Some(s) = search {
                q.push(("q", s.to_owned()));
            }
            let resp = self
                .send(self.authed(self.http.get(self.url("/files")).query(&q)))
                .await?;
            let v: Value = resp.json().await.context("reading the file list")?;
            files.extend(v["files"].as_array().cloned().unwrap_or_default());
            match v["next"].as_str() {
                Some(n) if !n.is_empty() && (limit == 0 || files.len() < limit) => {
                    after = n.to_owned()
                }
                _ => break,
            }
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&Value::Array(files))?);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = files
            .iter()
            .map(|f| {
                vec![
                    str_field(f, "hash"),
                    human_bytes(f["size"].as_u64().unwrap_or(0)),
                    str_field(f, "created"),
                    f["replicas"]
                        .as_u64()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    str_field(f, "name"),
                ]
            })
            .collect();
        print_table(&["HASH", "SIZE", "CREATED", "REPLICAS", "NAME"], &rows);
        Ok(())
    }

    pub async fn rm(&self, hash: &str) -> anyhow::Result<()> {
        let id = parse_hash(hash)?;
        self.send(self.authed(self.http.delete(self.url(&format!("/files/{id}")))))
            .await?;
        println!("deleted {id}");
        Ok(())
    }

    /// `kdfs decommission ID [--cancel] [--wait]`.
    pub async fn decommission(&self, id: &str, cancel: bool, wait: bool) -> anyhow::Result<()> {
        let id = kdfs_core::DatanodeId::parse(id)
            .map_err(|e| anyhow::anyhow!("invalid datanode id {id:?}: {e}"))?;
        let url = self.url(&format!("/datanodes/{id}/decommission"));
        loop {
            let rb = if cancel {
                self.http.delete(url.clone())
            } else {
                self.http.post(url.clone())
            };
            let v: Value = self
                .send(self.authed(rb))
                .await?
                .json()
                .await
                .context("reading the gateway's JSON")?;
            let left = v["blocks_left"].as_u64().unwrap_or(0);
            println!(
                "datanode {id}: {}, {left} blocks not yet at full replication elsewhere",
                str_field(&v, "state")
            );
            if cancel || !wait || v["drained"].as_bool().unwrap_or(false) {
                if !cancel && left == 0 {
                    println!("drained: it may stop now");
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    pub async fn info(&self, json: bool) -> anyhow::Result<()> {
        let v = self.get_json("/info").await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!(
            "status: {}   version: {}   safe mode: {}",
            str_field(&v, "status"),
            str_field(&v, "version"),
            v["safe_mode"].as_bool().unwrap_or(false)
        );
        println!(
            "files: {}   blocks: {}   bytes: {}   under-replicated: {}",
            v["files"].as_u64().unwrap_or(0),
            v["blocks"].as_u64().unwrap_or(0),
            human_bytes(v["bytes"].as_u64().unwrap_or(0)),
            v["under_replicated"].as_u64().unwrap_or(0)
        );
        // With HA, where the namenodes stand (one namenode needs no line).
        if let Some(namenodes) = v["namenodes"].as_array().filter(|n| n.len() > 1) {
            let each: Vec<String> = namenodes
                .iter()
                .map(|n| {
                    let id = n["id"].as_u64().map_or("?".to_owned(), |id| id.to_string());
                    format!("{id} {} {}", str_field(n, "address"), str_field(n, "role"))
                })
                .collect();
            println!("namenodes: {}", each.join(", "));
        }
        let rows: Vec<Vec<String>> = v["datanodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|d| {
                vec![
                    str_field(d, "id"),
                    str_field(d, "address"),
                    str_field(d, "zone"),
                    str_field(d, "state"),
                    format!(
                        "{} / {}",
                        human_bytes(d["used"].as_u64().unwrap_or(0)),
                        human_bytes(d["capacity"].as_u64().unwrap_or(0))
                    ),
                    d["blocks"].as_u64().unwrap_or(0).to_string(),
                    d["last_heartbeat_secs"]
                        .as_f64()
                        .map(|s| format!("{s:.1}s"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        println!();
        print_table(
            &[
                "DATANODE",
                "ADDRESS",
                "ZONE",
                "STATE",
                "USED / CAPACITY",
                "BLOCKS",
                "HEARTBEAT",
            ],
            &rows,
        );
        Ok(())
    }
}

/// Turns a non-2xx response into an error with the API's `{"error": …}` text.
pub async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
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

/// A hash as the user typed it, checked before it goes into a URL.
pub fn parse_hash(s: &str) -> anyhow::Result<FileId> {
    FileId::parse(s).map_err(|e| anyhow::anyhow!("invalid hash {s:?}: {e}"))
}

fn str_field(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Left-aligned columns, two spaces apart.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn hashes_are_checked_before_use() {
        assert!(parse_hash("../etc").is_err());
        assert!(parse_hash(&"A".repeat(64)).is_err());
        assert!(parse_hash(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn gateway_url_must_be_http() {
        assert!(Gateway::new("localhost:8080", None, None).is_err());
        assert_eq!(
            Gateway::new("http://h:1/", None, None).unwrap().url("/x"),
            "http://h:1/x"
        );
    }
}
