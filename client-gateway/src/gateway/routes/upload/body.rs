//! The request body shared by a form parser (or the raw source) and the handler, so
//! that after a refusal the handler can still read and discard what is left of it
//! ("lingering close", see the [module docs](super)).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tracing::debug;

use super::{LINGER_BYTES, LINGER_TIME};

/// The request body, shared by the parser and the handler: once the parser is gone
/// (the upload failed), the handler can still read what is left of it.
#[derive(Clone)]
pub(crate) struct SharedBody(Arc<Mutex<BodyDataStream>>);

impl SharedBody {
    pub(crate) fn new(body: Body) -> Self {
        Self(Arc::new(Mutex::new(body.into_data_stream())))
    }

    /// Reads the rest of the body in the background and discards it, until it ends,
    /// fails, or [`LINGER_BYTES`] or [`LINGER_TIME`] is reached (then the connection
    /// is closed with the rest unread).
    pub(crate) fn linger(mut self) {
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(LINGER_TIME);
            tokio::pin!(deadline);
            let mut read = 0u64;
            let outcome = loop {
                tokio::select! {
                    _ = &mut deadline => break "time limit",
                    item = self.next() => match item {
                        Some(Ok(b)) => {
                            read += b.len() as u64;
                            if read > LINGER_BYTES {
                                break "size limit";
                            }
                        }
                        Some(Err(_)) => break "body broke off",
                        None => break "body read to its end",
                    },
                }
            };
            debug!(read, outcome, "rest of a refused upload's body discarded");
        });
    }
}

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Never contended: the parser and the lingering reader never run together.
        let mut body = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *body).poll_next(cx)
    }
}
