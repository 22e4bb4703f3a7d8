//! The bound on what multer buffers outside a part's data: the preamble before the
//! first boundary, and each boundary line and part header. multer keeps those whole
//! until it finds their end and has no limit for them, so a body with no boundary (or
//! a header with no end) would be held in memory to its last byte.
//!
//! The body reaches multer through [`Guarded`], which counts the bytes it hands over
//! while no part's data is being read and fails the body once [`MAX_FRAMING`] of them
//! were not enough to reach a part's data. In that state it hands over one read at a
//! time (multer otherwise takes every read that is ready before parsing any), so a
//! part's header is parsed as soon as it has arrived and the count stays true to
//! within one read. A part's data needs no count: multer hands it out as it arrives,
//! and non-file parts are capped by their size limit.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use super::BodyError;
use super::body::SharedBody;

/// Most bytes of the body read outside any part's data before a part's data starts:
/// the preamble with the first boundary line and header, or one boundary line and
/// header between parts. multer buffers these whole.
pub const MAX_FRAMING: u64 = 64 * 1024;

/// Whether a part's data is being read, shared by the form parser (which knows) and
/// [`Guarded`] (which counts).
#[derive(Clone, Default)]
pub(super) struct Framing(Arc<State>);

#[derive(Default)]
struct State {
    in_part: AtomicBool,
    /// Bytes handed over since the last part's data started or ended.
    bytes: AtomicU64,
}

impl Framing {
    /// The body as multer should read it, bounded by this framing state.
    pub(super) fn guard(&self, body: SharedBody, boundary: &str) -> Guarded {
        Guarded {
            body,
            framing: self.clone(),
            delimiter: format!("--{boundary}").into_bytes(),
            preamble_tail: Some(Vec::new()),
            handed_over: false,
        }
    }

    /// A part's data is being read from now on (or, with `false`, no longer).
    pub(super) fn set_in_part(&self, in_part: bool) {
        self.0.bytes.store(0, Ordering::Relaxed);
        self.0.in_part.store(in_part, Ordering::Relaxed);
    }

    fn in_part(&self) -> bool {
        self.0.in_part.load(Ordering::Relaxed)
    }
}

/// The request body with the framing bound (see the [module docs](self)).
pub(super) struct Guarded {
    body: SharedBody,
    framing: Framing,
    /// `--boundary`, which starts every boundary line.
    delimiter: Vec<u8>,
    /// The last bytes read before the first delimiter was seen (one delimiter's
    /// length, in case it spans two reads), or `None` once it was.
    preamble_tail: Option<Vec<u8>>,
    /// Whether the last poll handed over a read outside a part's data.
    handed_over: bool,
}

impl Guarded {
    /// Counts `b`, read outside a part's data; fails if the bytes before it already
    /// reached the bound.
    fn count(&mut self, b: &[u8]) -> Result<(), BodyError> {
        if let Some(tail) = self.preamble_tail.as_mut() {
            tail.extend_from_slice(b);
            let d = &self.delimiter;
            if tail.windows(d.len()).any(|w| w == d.as_slice()) {
                self.preamble_tail = None;
            } else {
                tail.drain(..tail.len().saturating_sub(d.len()));
            }
        }
        let before = self
            .framing
            .0
            .bytes
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        if before < MAX_FRAMING {
            return Ok(());
        }
        Err(BodyError::Malformed(if self.preamble_tail.is_some() {
            format!(
                "no boundary from the Content-Type in the first {MAX_FRAMING} bytes of the body"
            )
        } else {
            format!("a boundary line or part header is longer than {MAX_FRAMING} bytes")
        }))
    }
}

impl Stream for Guarded {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let framing = !this.framing.in_part();
        if framing && std::mem::take(&mut this.handed_over) {
            // Let multer parse the last read before it takes the next one.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) if framing => {
                this.handed_over = true;
                Poll::Ready(Some(this.count(&b).map(|()| b)))
            }
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::from_body(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use futures::StreamExt;

    use super::*;

    /// Hands `reads` over outside any part's data; `Ok(n)` if all `n` went through,
    /// else the error's message.
    async fn framing_of(reads: &[Vec<u8>]) -> Result<usize, String> {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            reads.iter().map(|r| Ok(Bytes::from(r.clone()))).collect();
        let body = SharedBody::new(Body::from_stream(futures::stream::iter(pieces)));
        let mut guarded = Framing::default().guard(body, "B");
        let mut n = 0;
        while let Some(item) = guarded.next().await {
            item.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    }

    #[tokio::test]
    async fn framing_is_bounded_to_within_one_read() {
        let kib = |n: usize, byte: u8| vec![byte; n << 10];
        let with_boundary = |n: usize| {
            let mut r = b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n".to_vec();
            r.extend(kib(n, b'h'));
            r
        };
        async fn check(reads: Vec<Vec<u8>>, expected: Result<usize, &str>) {
            let got = framing_of(&reads).await;
            match expected {
                Ok(n) => assert_eq!(got, Ok(n)),
                Err(why) => assert!(got.as_ref().is_err_and(|e| e.contains(why)), "{got:?}"),
            }
        }
        // Small framing, or one large read (a header and a part's data): all through.
        check(vec![with_boundary(1)], Ok(1)).await;
        check(vec![with_boundary(1024)], Ok(1)).await;
        check(vec![kib(63, b'x'), with_boundary(0)], Ok(2)).await;
        // A read after the bound is reached fails, with why.
        check(vec![kib(64, b'x'), kib(1, b'x')], Err("no boundary")).await;
        check(vec![kib(16, b'x'); 8], Err("no boundary")).await;
        check(vec![with_boundary(64), kib(1, b'h')], Err("header")).await;
        // The delimiter split across two reads is still seen.
        check(
            vec![b"--".to_vec(), b"B".to_vec(), kib(64, b'h'), kib(1, b'h')],
            Err("header"),
        )
        .await;
    }
}
