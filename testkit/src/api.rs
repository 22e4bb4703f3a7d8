//! The gateway's HTTP API as a blocking client sees it: upload, download, info, list,
//! delete, each with a `try_` form returning the failure and a form that asserts.
//!
//! Blocking, so that a test's background threads can upload and download while the
//! test kills processes, with no runtime to share.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::data::sha256_hex;

/// A failed HTTP call: its status (0 if no response came) and body.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub status: u16,
    pub body: String,
}

impl HttpFailure {
    /// A call that got no response (refused, reset, timed out): status 0.
    fn no_response(e: reqwest::Error) -> Self {
        Self {
            status: 0,
            body: format!("{e:#}"),
        }
    }
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

/// A file the test stored: its id and the source bytes' SHA-256 (equal, if kdfs is right).
#[derive(Debug, Clone)]
pub struct Stored {
    pub hash: String,
    pub len: usize,
}

/// The gateway's HTTP API, as a client sees it. Cheap to clone and `Send`, so
/// background threads of a test can upload and download while the test kills processes.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>` of the gateway.
    pub base: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// A client of the gateway at `base` (`http://host:port`).
    pub fn new(base: String) -> Self {
        install_crypto_provider();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building the HTTP client");
        Self { base, http }
    }

    /// The HTTP client (for requests the helpers do not cover).
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /upload` of `data` named `name`; the JSON answer or the failure.
    pub fn try_upload_named(&self, name: &str, data: Vec<u8>) -> Result<Value, HttpFailure> {
        let part = reqwest::blocking::multipart::Part::bytes(data).file_name(name.to_owned());
        self.send_upload(reqwest::blocking::multipart::Form::new().part("file", part))
    }

    /// `POST /upload` streaming the body from `reader` (chunked, length unknown).
    pub fn try_upload_reader(
        &self,
        name: &str,
        reader: impl Read + Send + 'static,
    ) -> Result<Value, HttpFailure> {
        let part = reqwest::blocking::multipart::Part::reader(reader).file_name(name.to_owned());
        self.send_upload(reqwest::blocking::multipart::Form::new().part("file", part))
    }

    fn send_upload(&self, form: reqwest::blocking::multipart::Form) -> Result<Value, HttpFailure> {
        let resp = self
            .http
            .post(self.url("/upload"))
            .multipart(form)
            .send()
            .map_err(HttpFailure::no_response)?;
        json_or_failure(resp)
    }

    /// Uploads `data`, asserts success and that the returned hash is its SHA-256.
    pub fn upload(&self, data: &[u8]) -> Stored {
        let want = sha256_hex(data);
        let v = self
            .try_upload_named(&format!("{}.bin", &want[..12]), data.to_vec())
            .unwrap_or_else(|e| panic!("upload of {} bytes failed: {e}", data.len()));
        assert_eq!(v["hash"].as_str(), Some(want.as_str()), "upload answer {v}");
        assert_eq!(
            v["size"].as_u64(),
            Some(data.len() as u64),
            "upload answer {v}"
        );
        Stored {
            hash: want,
            len: data.len(),
        }
    }

    /// `GET /download?hash=`; the body or the failure.
    pub fn try_download(&self, hash: &str) -> Result<Vec<u8>, HttpFailure> {
        let resp = self
            .http
            .get(self.url("/download"))
            .query(&[("hash", hash)])
            .send()
            .map_err(HttpFailure::no_response)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(HttpFailure {
                status,
                body: resp.text().unwrap_or_default(),
            });
        }
        resp.bytes().map(|b| b.to_vec()).map_err(|e| HttpFailure {
            status,
            body: format!("body broke off: {e:#}"),
        })
    }

    /// Downloads `hash` and asserts the bytes hash to it.
    pub fn download(&self, hash: &str) -> Vec<u8> {
        let data = self
            .try_download(hash)
            .unwrap_or_else(|e| panic!("download of {hash} failed: {e}"));
        assert_eq!(sha256_hex(&data), hash, "downloaded bytes of {hash} differ");
        data
    }

    /// Downloads every file and compares its SHA-256 and length with the source's.
    pub fn verify_all(&self, files: &[Stored]) {
        for f in files {
            let data = self.download(&f.hash);
            assert_eq!(data.len(), f.len, "length of {}", f.hash);
        }
    }

    /// `GET /info`, or the failure.
    pub fn try_info(&self) -> Result<Value, HttpFailure> {
        let resp = self
            .http
            .get(self.url("/info"))
            .timeout(Duration::from_secs(5))
            .send()
            .map_err(HttpFailure::no_response)?;
        json_or_failure(resp)
    }

    /// `GET /info`; panics if it fails.
    pub fn info(&self) -> Value {
        self.try_info()
            .unwrap_or_else(|e| panic!("GET /info failed: {e}"))
    }

    /// `GET /files/{hash}`: `Ok(None)` on 404/410.
    pub fn file(&self, hash: &str) -> Result<Option<Value>, HttpFailure> {
        let resp = self
            .http
            .get(self.url(&format!("/files/{hash}")))
            .timeout(Duration::from_secs(10))
            .send()
            .map_err(HttpFailure::no_response)?;
        match resp.status().as_u16() {
            404 | 410 => Ok(None),
            _ => json_or_failure(resp).map(Some),
        }
    }

    /// Every file the listing shows (all pages).
    pub fn list(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let resp = self
                .http
                .get(self.url("/files"))
                .query(&[("limit", "1000"), ("after", after.as_str())])
                .send()
                .unwrap_or_else(|e| panic!("GET /files failed: {e:#}"));
            let v = json_or_failure(resp).unwrap_or_else(|e| panic!("GET /files: {e}"));
            out.extend(v["files"].as_array().cloned().unwrap_or_default());
            match v["next"].as_str() {
                Some(n) if !n.is_empty() => after = n.to_owned(),
                _ => return out,
            }
        }
    }

    /// The hash of every file the listing shows, in its order.
    pub fn listed_hashes(&self) -> Vec<String> {
        self.list()
            .iter()
            .filter_map(|f| f["hash"].as_str().map(str::to_owned))
            .collect()
    }

    /// `DELETE /files/{hash}`; the JSON answer or the failure.
    pub fn try_delete(&self, hash: &str) -> Result<Value, HttpFailure> {
        let resp = self
            .http
            .delete(self.url(&format!("/files/{hash}")))
            .send()
            .map_err(HttpFailure::no_response)?;
        json_or_failure(resp)
    }

    /// `DELETE /files/{hash}`; panics unless 200.
    pub fn delete(&self, hash: &str) -> Value {
        let resp = self
            .http
            .delete(self.url(&format!("/files/{hash}")))
            .send()
            .unwrap_or_else(|e| panic!("DELETE {hash} failed: {e:#}"));
        json_or_failure(resp).unwrap_or_else(|e| panic!("DELETE {hash}: {e}"))
    }
}

/// An async HTTP client for tests that run in a runtime (the in-process clusters).
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("building a plain HTTP client")
}

/// One plain `GET http://{addr}{path}` (a server's `/healthz`, `/readyz`, `/metrics`);
/// returns the status and body. Panics if no response comes.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let resp = http_client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body broke off: {e:#}"));
    (status, body)
}

/// Waits until `GET url` through `client` answers 200 (a server's `/healthz` or
/// `/readyz`); panics naming `what` after `within`. Returns how long it took.
pub async fn wait_http_ok(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    within: Duration,
) -> Duration {
    crate::wait::wait_until(what, within, || async {
        client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
}

/// reqwest is built without a default TLS backend, and needs a process-wide rustls
/// crypto provider to build any client, even a plain-http one.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn json_or_failure(resp: reqwest::blocking::Response) -> Result<Value, HttpFailure> {
    let status = resp.status().as_u16();
    let body = resp.text().map_err(|e| HttpFailure {
        status,
        body: format!("body broke off: {e:#}"),
    })?;
    if status != 200 {
        return Err(HttpFailure { status, body });
    }
    serde_json::from_str(&body).map_err(|e| HttpFailure {
        status,
        body: format!("not JSON ({e}): {body}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A server answering each of `answers` to one connection, in order.
    fn canned(answers: Vec<(u16, &'static str)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for (code, body) in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        base
    }

    #[test]
    fn answers_become_json_or_failures() {
        let api = Api::new(canned(vec![
            (200, "{\"live_datanodes\":3}"),
            (503, "busy"),
            (200, "not json"),
            (404, "gone"),
        ]));
        assert_eq!(api.info()["live_datanodes"], 3);
        let e = api.try_info().unwrap_err();
        assert_eq!((e.status, e.body.as_str()), (503, "busy"));
        assert_eq!(e.to_string(), "HTTP 503: busy");
        let e = api.try_info().unwrap_err();
        assert!(e.body.starts_with("not JSON"), "{e}");
        assert!(
            api.file(&"0".repeat(64)).unwrap().is_none(),
            "404 is no file"
        );
        let e = api.try_info().unwrap_err();
        assert_eq!(e.status, 0, "no server: no status");
    }

    #[tokio::test]
    async fn waits_for_an_ok_answer() {
        let base = canned(vec![(503, "not yet"), (200, "ok")]);
        let took = wait_http_ok(
            &http_client(),
            &format!("{base}/readyz"),
            "ready",
            Duration::from_secs(10),
        )
        .await;
        assert!(took >= crate::wait::ASYNC_POLL, "polled twice: {took:?}");
    }
}
