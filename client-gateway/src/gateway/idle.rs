//! The gateway's idle timeouts, one per direction (`--idle-timeout`):
//!
//! - [`IdleBody`]: a request body that delivers nothing for the timeout while the
//!   gateway waits for it fails with [`IdleTimeout`] (the upload is abandoned and
//!   answered 408). The clock runs only while the gateway asks for more: an upload held
//!   back by the upload budget or a slow datanode is not the client's fault.
//! - [`WriteStall`]: a connection on which a write has been waiting for the timeout
//!   (the client reads nothing: its socket's buffers are full) fails, so hyper drops
//!   the connection and, with it, the response body and what it had read ahead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::error::BoxError;

/// Why a request body failed: the client sent nothing for this long.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing for {0:?} (--idle-timeout)")]
pub struct IdleTimeout(pub Duration);

/// A clock that runs only while something waits: armed at the first `Pending`,
/// disarmed by progress.
struct Stall {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Stall {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    fn progress(&mut self) {
        self.armed = false;
    }

    /// Called when the inner operation is pending: whether the timeout has passed
    /// since it started waiting (registers the waker for that moment otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            self.sleep.as_mut().reset(Instant::now() + self.timeout);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// A request body with the idle timeout (see the [module docs](self)).
pub struct IdleBody<B> {
    inner: B,
    stall: Stall,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            stall: Stall::new(timeout),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stall.progress();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.stall.expired(cx) {
            metrics::counter!("kdfs_gateway_idle_timeouts_total", "direction" => "request")
                .increment(1);
            return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.stall.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail once one has waited for the idle timeout (see the
/// [module docs](self)).
pub struct WriteStall<T> {
    inner: T,
    stall: Stall,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            stall: Stall::new(timeout),
        }
    }

    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.stall.progress();
                Poll::Ready(r)
            }
            Poll::Pending if self.stall.expired(cx) => {
                metrics::counter!("kdfs_gateway_idle_timeouts_total", "direction" => "response")
                    .increment(1);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client read nothing for {:?} (--idle-timeout)",
                        self.stall.timeout
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, polled)
    }
}
