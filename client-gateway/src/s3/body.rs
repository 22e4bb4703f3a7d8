//! The body of a PutObject or UploadPart on its way into [`crate::Client::upload`]:
//! counted against `--max-upload`, and hashed in a task of its own (the MD5 that
//! becomes the ETag, and every checksum the client sent: `Content-MD5`,
//! `x-amz-checksum-*` as a header or as a trailer of an `aws-chunked` body). The
//! verdict is given at the body's end, before the upload can commit: a body that is
//! too large or whose digests do not match ends with an error instead, so the upload
//! is abandoned and nothing is stored under the key.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::TrailingHeaders;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::{Checksum, StreamingBlob};
use tokio::sync::{mpsc, oneshot};

/// Chunks queued for the hasher task.
const HASH_QUEUE: usize = 8;

/// Why a body was refused (the upload's `Error::Source`; [`super::object`] maps it).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the {max} bytes this gateway accepts (--max-upload)")]
    TooLarge { max: u64 },
    #[error("{0}")]
    BadDigest(String),
    /// The body is not the one the request's signature covers (`x-amz-content-sha256`).
    #[error("the body's SHA-256 is not the x-amz-content-sha256 the request was signed with")]
    NotSigned,
    #[error("reading the request body: {0}")]
    Read(String),
}

/// The checksums a request announced, by header or trailer.
#[derive(Debug, Default, Clone)]
pub struct Announced {
    /// `Content-MD5`, decoded.
    pub content_md5: Option<[u8; 16]>,
    /// `x-amz-checksum-*` header values (base64), as s3s parsed them.
    pub headers: Checksum,
    /// The `x-amz-checksum-*` names announced in `x-amz-trailer`, lowercase.
    pub trailer_names: Vec<String>,
    pub trailers: Option<TrailingHeaders>,
}

/// What the body hashed to.
#[derive(Debug, Clone)]
pub struct Digests {
    pub md5: [u8; 16],
    /// The checksums that were announced (and matched), base64.
    pub checksums: Checksum,
    pub size: u64,
}

/// Each algorithm's header name and its slot in a [`Checksum`].
fn slots(c: &mut Checksum) -> [(&'static str, &mut Option<String>); 5] {
    [
        ("x-amz-checksum-crc32", &mut c.checksum_crc32),
        ("x-amz-checksum-crc32c", &mut c.checksum_crc32c),
        ("x-amz-checksum-crc64nvme", &mut c.checksum_crc64nvme),
        ("x-amz-checksum-sha1", &mut c.checksum_sha1),
        ("x-amz-checksum-sha256", &mut c.checksum_sha256),
    ]
}

/// A hasher for every algorithm `announced` names.
fn hasher_for(announced: &Announced) -> ChecksumHasher {
    let mut headers = announced.headers.clone();
    let wanted: Vec<&'static str> = slots(&mut headers)
        .into_iter()
        .filter(|(name, slot)| slot.is_some() || announced.trailer_names.iter().any(|t| t == name))
        .map(|(name, _)| name)
        .collect();
    let on = |name: &str| wanted.contains(&name);
    ChecksumHasher {
        crc32: on("x-amz-checksum-crc32").then(s3s::crypto::Crc32::new),
        crc32c: on("x-amz-checksum-crc32c").then(s3s::crypto::Crc32c::new),
        crc64nvme: on("x-amz-checksum-crc64nvme").then(s3s::crypto::Crc64Nvme::new),
        sha1: on("x-amz-checksum-sha1").then(s3s::crypto::Sha1::new),
        sha256: on("x-amz-checksum-sha256").then(s3s::crypto::Sha256::new),
    }
}

/// Compares what the body hashed to with what was announced.
fn verdict(announced: &Announced, md5: [u8; 16], mut got: Checksum) -> Result<Checksum, BodyError> {
    let encode = base64_encode;
    if let Some(want) = announced.content_md5
        && want != md5
    {
        return Err(BodyError::BadDigest(format!(
            "the Content-MD5 you specified ({}) did not match what we received ({})",
            encode(&want),
            encode(&md5)
        )));
    }
    let mut expected = announced.headers.clone();
    for ((name, want), (_, have)) in slots(&mut expected).into_iter().zip(slots(&mut got)) {
        let want = want.clone().or_else(|| {
            announced
                .trailers
                .as_ref()
                .and_then(|t| {
                    t.read(|h| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned))
                })
                .flatten()
        });
        if let (Some(want), Some(have)) = (want, have.as_ref())
            && want.trim() != have
        {
            return Err(BodyError::BadDigest(format!(
                "the {name} you specified ({want}) did not match what we received ({have})"
            )));
        }
    }
    Ok(got)
}

/// Base64 in the standard alphabet with padding, as S3 headers carry digests.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a base64 header value, if it is one.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// `Content-MD5` decoded: `None` if absent, an error if it is not 16 bytes of base64.
pub fn content_md5(header: Option<&str>) -> Result<Option<[u8; 16]>, String> {
    let Some(h) = header else { return Ok(None) };
    base64_decode(h)
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| format!("Content-MD5 {h:?} is not the base64 of 16 bytes"))
}

/// `body` as a stream for the upload, and the digests once it ended well.
pub fn verified(
    body: StreamingBlob,
    announced: Announced,
    max: Option<u64>,
) -> (
    impl Stream<Item = Result<Bytes, BodyError>> + Send,
    oneshot::Receiver<Digests>,
) {
    let (chunks, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE);
    let mut checksums = hasher_for(&announced);
    // Hashing is CPU work: off the async workers, beside the task that receives.
    let hasher = tokio::task::spawn_blocking(move || {
        let mut md5 = Md5::new();
        while let Some(b) = rx.blocking_recv() {
            md5.update(&b);
            checksums.update(&b);
        }
        (<[u8; 16]>::from(md5.finalize()), checksums.finalize())
    });
    let (done, digests) = oneshot::channel();
    let state = State {
        body: Some(body),
        chunks: Some(chunks),
        hasher: Some(hasher),
        size: 0,
        max,
        announced: Arc::new(announced),
        done: Some(done),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        let body = st.body.as_mut()?;
        match body.next().await {
            Some(Ok(b)) => {
                st.size += b.len() as u64;
                if let Some(max) = st.max
                    && st.size > max
                {
                    st.body = None;
                    return Some((Err(BodyError::TooLarge { max }), st));
                }
                let tx = st
                    .chunks
                    .as_ref()
                    .expect("the queue lives as long as the body");
                if tx.send(b.clone()).await.is_err() {
                    st.body = None;
                    return Some((Err(BodyError::Read("the hasher stopped".into())), st));
                }
                Some((Ok(b), st))
            }
            Some(Err(e)) => {
                st.body = None;
                // s3s checks a signed payload's hash as it streams; its error type is
                // private, its message names the mismatch.
                let e = e.to_string();
                let e = match e.contains("Sha256Mismatch") {
                    true => BodyError::NotSigned,
                    false => BodyError::Read(e),
                };
                Some((Err(e), st))
            }
            None => {
                st.body = None;
                st.chunks = None;
                let hasher = st.hasher.take().expect("the hasher is awaited once");
                let Ok((md5, got)) = hasher.await else {
                    return Some((Err(BodyError::Read("the hasher failed".into())), st));
                };
                match verdict(&st.announced, md5, got) {
                    Ok(checksums) => {
                        if let Some(done) = st.done.take() {
                            let _ = done.send(Digests {
                                md5,
                                checksums,
                                size: st.size,
                            });
                        }
                        None
                    }
                    Err(e) => Some((Err(e), st)),
                }
            }
        }
    });
    (stream, digests)
}

struct State {
    body: Option<StreamingBlob>,
    chunks: Option<mpsc::Sender<Bytes>>,
    hasher: Option<tokio::task::JoinHandle<([u8; 16], Checksum)>>,
    size: u64,
    max: Option<u64>,
    announced: Arc<Announced>,
    done: Option<oneshot::Sender<Digests>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for v in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(v)).unwrap(), v);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(
            content_md5(Some("1B2M2Y8AsgTpgAmY7PhCfg=="))
                .unwrap()
                .unwrap(),
            <[u8; 16]>::from(Md5::digest(b""))
        );
        assert!(content_md5(Some("nope")).is_err());
        assert_eq!(content_md5(None).unwrap(), None);
    }

    async fn run(data: &[u8], announced: Announced, max: Option<u64>) -> Result<Digests, String> {
        let body = StreamingBlob::wrap(futures::stream::iter(
            data.chunks(3)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let (stream, digests) = verified(body, announced, max);
        let items: Vec<_> = stream.collect().await;
        if let Some(Err(e)) = items.into_iter().find(Result::is_err) {
            return Err(e.to_string());
        }
        digests.await.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn digests_are_checked_at_the_end() {
        let data = b"hello, s3";
        let md5: [u8; 16] = Md5::digest(data).into();
        let d = run(data, Announced::default(), None).await.unwrap();
        assert_eq!((d.md5, d.size), (md5, 9));
        let good = Announced {
            content_md5: Some(md5),
            ..Announced::default()
        };
        assert!(run(data, good, None).await.is_ok());
        let bad = Announced {
            content_md5: Some([0; 16]),
            ..Announced::default()
        };
        assert!(
            run(data, bad, None)
                .await
                .unwrap_err()
                .contains("Content-MD5")
        );
        let sha = base64_encode(&sha2::Sha256::digest(data));
        let mut headers = Checksum {
            checksum_sha256: Some(sha.clone()),
            ..Default::default()
        };
        let ok = Announced {
            headers: headers.clone(),
            ..Announced::default()
        };
        assert_eq!(
            run(data, ok, None).await.unwrap().checksums.checksum_sha256,
            Some(sha)
        );
        headers.checksum_sha256 = Some(base64_encode(&[0u8; 32]));
        let wrong = Announced {
            headers,
            ..Announced::default()
        };
        assert!(
            run(data, wrong, None)
                .await
                .unwrap_err()
                .contains("x-amz-checksum-sha256")
        );
        assert!(
            run(data, Announced::default(), Some(8))
                .await
                .unwrap_err()
                .contains("larger")
        );
    }
}
