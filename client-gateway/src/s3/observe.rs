//! What the S3 port tells operators: `/metrics` counts its requests by operation and
//! status (`kdfs_gateway_s3_requests_total`, `kdfs_gateway_s3_request_seconds`), and the
//! audit log (target [`AUDIT_TARGET`], as the HTTP side's) gets one line per write or
//! delete and per refused authentication, naming the access key id, never the secret.
//!
//! s3s resolves the operation only after the signature check, inside its service, so
//! the middleware ([`observe`]) hands it a [`Note`] in the request's extensions, which
//! [`super::auth::Access::check`] fills with the operation, the caller's access key and
//! the bucket and key; the middleware reads it back once the answer is made. A request
//! refused before that (a bad signature, an unknown key) counts as operation
//! `unknown`, and its audit line names the access key id it claimed.
//!
//! Audit fields: `who` (`s3:<access key id>`, or `none`), `client` (the peer's IP, or
//! the one a `--trusted-proxies` peer's `X-Forwarded-For` names), `action` (`s3`, or
//! `auth` for a refusal), `operation`, `bucket`, `key`, `file` and `size` (when the
//! operation stored content), `status` and `result` (`ok`, the status's reason, or
//! `aborted` when the client went away before the answer).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri};
use axum::middleware::Next;
use axum::response::Response;
use kdfs_core::telemetry::AUDIT_TARGET;
use tracing::info;

use crate::gateway::audit::Audited;

/// Operation names used as metric labels: the ones this gateway serves, so that the
/// label's values stay bounded whatever s3s resolves (anything else is `other`).
const OPERATIONS: &[&str] = &[
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteObject",
    "DeleteObjects",
    "GetBucketLocation",
    "GetBucketVersioning",
    "GetObject",
    "GetObjectTagging",
    "HeadBucket",
    "HeadObject",
    "ListBuckets",
    "ListMultipartUploads",
    "ListObjects",
    "ListObjectsV2",
    "ListParts",
    "PutObject",
    "UploadPart",
    "UploadPartCopy",
];

/// Operations that change what is stored: audited.
const WRITES: &[&str] = &[
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteObject",
    "DeleteObjects",
    "PutObject",
    "UploadPart",
    "UploadPartCopy",
];

/// The metric label of an operation name: itself if this gateway serves it, else
/// `other`.
pub fn operation_label(name: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|op| **op == name)
        .copied()
        .unwrap_or("other")
}

/// What s3s learned about a request, for the middleware (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<Noted>>);

#[derive(Default, Clone)]
struct Noted {
    operation: Option<&'static str>,
    access_key: Option<String>,
    bucket: Option<String>,
    key: Option<String>,
}

impl Note {
    pub fn set(
        &self,
        operation: &'static str,
        access_key: Option<String>,
        bucket: Option<String>,
        key: Option<String>,
    ) {
        *self.0.lock().expect("note lock is never poisoned") = Noted {
            operation: Some(operation),
            access_key,
            bucket,
            key,
        };
    }

    fn get(&self) -> Noted {
        self.0.lock().expect("note lock is never poisoned").clone()
    }
}

/// The SigV4 credential scope of a request (`Authorization: AWS4-HMAC-SHA256
/// Credential=AK/date/region/s3/aws4_request, …`, or a presigned URL's
/// `X-Amz-Credential`): its access key id and region, unverified.
fn credential_scope(headers: &HeaderMap, uri: &Uri) -> Option<(String, String)> {
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("Credential="))
        .map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or("").to_owned());
    let scope = from_header.or_else(|| {
        uri.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("X-Amz-Credential")
                .then(|| v.replace("%2F", "/").replace("%2f", "/"))
        })
    })?;
    let mut parts = scope.split('/');
    let access_key = parts.next()?.to_owned();
    let _date = parts.next()?;
    let region = parts.next()?.to_owned();
    Some((access_key, region))
}

/// The region a request is signed for, if it is a SigV4 request.
pub fn signed_region(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    credential_scope(headers, uri).map(|(_, r)| r)
}

/// An access key id as a log field: only when it is a plausible one (a refused request
/// may claim anything).
fn loggable(access_key: &str) -> Option<&str> {
    super::auth::valid_access_key(access_key).then_some(access_key)
}

/// The S3 port's own settings the middleware needs.
#[derive(Clone)]
pub struct Observe {
    pub trusted_proxies: Arc<Vec<crate::gateway::ip_range::IpRange>>,
    /// The failed-authentication limit.
    pub throttle: Arc<super::throttle::Throttle>,
}

/// The answer to a client over the failed-authentication limit: S3's `SlowDown`, which
/// SDKs retry with back-off.
fn slow_down(client: IpAddr, retry_after: std::time::Duration) -> Response {
    // Rounded up: a client that waits this long is let through.
    let secs = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
         <Message>too many failed authentications from {client}; retry in {secs} s</Message></Error>"
    );
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/xml"),
    );
    h.insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(secs),
    );
    r
}

/// Counts every S3 request and writes the audit lines (see the [module docs](self)).
pub async fn observe(State(cfg): State<Observe>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let note = Note::default();
    req.extensions_mut().insert(note.clone());
    let client = crate::gateway::auth::request_client(&req, &cfg.trusted_proxies);
    let claimed = credential_scope(req.headers(), req.uri()).map(|(a, _)| a);
    let mut line = AuditLine {
        client,
        claimed,
        note: note.clone(),
        done: false,
    };
    if let Some((retry_after, first)) =
        cfg.throttle
            .refuse(client, line.claimed.as_deref(), Instant::now())
    {
        metrics::counter!("kdfs_gateway_s3_requests_total", "operation" => "unknown", "status" => "503")
            .increment(1);
        metrics::counter!("kdfs_gateway_auth_refused_total", "reason" => "rate_limited")
            .increment(1);
        line.done = true;
        // One audit line per client and window: a flood is counted, not written out.
        if first {
            line.write(&Noted::default(), "auth", None, Some(503), "limited");
        }
        return slow_down(client, retry_after);
    }
    let resp = next.run(req).await;
    let noted = note.get();
    if noted.access_key.is_none() && resp.status() == axum::http::StatusCode::FORBIDDEN {
        cfg.throttle
            .fail(client, line.claimed.as_deref(), Instant::now());
    }
    // A completion answered before its outcome was known is counted and audited once
    // it is ([`super::keep_alive`]).
    if let Some(told) = resp
        .extensions()
        .get::<super::keep_alive::Deferred>()
        .and_then(super::keep_alive::Deferred::take)
    {
        tokio::spawn(async move {
            if let Ok(o) = told.await {
                line.record(start, o.status, o.audited.as_ref());
            }
        });
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, super::keep_alive::one_declaration(body));
    }
    line.record(start, resp.status(), resp.extensions().get::<Audited>());
    resp
}

/// One request's audit line, written once: by [`AuditLine::finish`] if the request is
/// a write or a refusal, or as `aborted` if the request's future is dropped first.
struct AuditLine {
    client: IpAddr,
    claimed: Option<String>,
    note: Note,
    done: bool,
}

impl AuditLine {
    /// Counts the request (the metrics) and writes its audit line.
    fn record(
        &mut self,
        start: Instant,
        status: axum::http::StatusCode,
        audited: Option<&Audited>,
    ) {
        let operation = self.note.get().operation.unwrap_or("unknown");
        metrics::counter!("kdfs_gateway_s3_requests_total", "operation" => operation, "status" => status.as_str().to_owned())
            .increment(1);
        metrics::histogram!("kdfs_gateway_s3_request_seconds", "operation" => operation)
            .record(start.elapsed().as_secs_f64());
        self.finish(status, audited);
    }

    fn finish(&mut self, status: axum::http::StatusCode, audited: Option<&Audited>) {
        self.done = true;
        let noted = self.note.get();
        // Every authentication refusal (AccessDenied, SignatureDoesNotMatch,
        // InvalidAccessKeyId) is a 403 without an accepted access key.
        let refused = noted.access_key.is_none() && status == axum::http::StatusCode::FORBIDDEN;
        let write = noted.operation.is_some_and(|op| WRITES.contains(&op));
        if !(write || refused) {
            return;
        }
        let result = if status.is_success() {
            "ok".to_owned()
        } else {
            status.canonical_reason().map_or_else(
                || status.as_str().to_owned(),
                |r| r.to_ascii_lowercase().replace([' ', '\''], "-"),
            )
        };
        self.write(
            &noted,
            if refused { "auth" } else { "s3" },
            audited,
            Some(status.as_u16()),
            &result,
        );
    }

    fn write(
        &self,
        noted: &Noted,
        action: &str,
        audited: Option<&Audited>,
        status: Option<u16>,
        result: &str,
    ) {
        let who = match noted
            .access_key
            .as_deref()
            .or(self.claimed.as_deref())
            .and_then(loggable)
        {
            Some(k) => format!("s3:{k}"),
            None => "none".to_owned(),
        };
        info!(
            target: AUDIT_TARGET,
            who = %who,
            client = %self.client,
            action,
            operation = noted.operation.unwrap_or("unknown"),
            bucket = noted.bucket.as_deref(),
            key = noted.key.as_deref(),
            file = audited.and_then(|a| a.file).map(tracing::field::display),
            size = audited.and_then(|a| a.size),
            status,
            result,
            "audit"
        );
    }
}

impl Drop for AuditLine {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let noted = self.note.get();
        if noted.operation.is_some_and(|op| WRITES.contains(&op)) {
            self.write(&noted, "s3", None, None, "aborted");
        }
    }
}

/// The response of an operation that stored content: its audit line names the file and
/// size (what `put`, `part` and `complete` lines report).
pub(crate) fn stored<T>(output: T, file: kdfs_core::FileId, size: u64) -> s3s::S3Response<T> {
    let mut resp = s3s::S3Response::new(output);
    resp.extensions.insert(Audited {
        file: Some(file),
        size: Some(size),
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn operation_labels_are_bounded() {
        assert_eq!(operation_label("PutObject"), "PutObject");
        assert_eq!(operation_label("PutBucketPolicy"), "other");
        assert_eq!(operation_label("made-up"), "other");
    }

    #[test]
    fn credential_scopes_come_from_the_header_or_the_query() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261207/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        let uri: Uri = "/b/k".parse().unwrap();
        assert_eq!(
            credential_scope(&h, &uri),
            Some(("AKID".to_owned(), "eu-west-1".to_owned()))
        );
        let uri: Uri = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK2%2F20261207%2Fus-east-1%2Fs3%2Faws4_request"
            .parse()
            .unwrap();
        assert_eq!(
            credential_scope(&HeaderMap::new(), &uri),
            Some(("AK2".to_owned(), "us-east-1".to_owned()))
        );
        assert_eq!(
            credential_scope(&HeaderMap::new(), &"/".parse().unwrap()),
            None
        );
    }
}
