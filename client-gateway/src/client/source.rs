//! The caller's byte source: reading a small one whole, and the error of a source
//! longer than it announced.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::budget::Claim;
use crate::error::{BoxError, Error, Result};

/// Reads a source of at most `at_most` bytes whole, counting each piece in `claim`
/// as it arrives. A longer source fails.
pub(crate) async fn read_whole<S, E>(source: S, at_most: u64, claim: &mut Claim) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: Into<BoxError>,
{
    let mut source = std::pin::pin!(source);
    // Read to the end (a multipart source checks the rest of its form there) and keep
    // the pieces: one piece, the usual case, is the file without a copy.
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut len = 0u64;
    while let Some(item) = source.next().await {
        let data = item.map_err(|e| Error::Source(e.into()))?;
        len += data.len() as u64;
        if len > at_most {
            return Err(longer_than(at_most));
        }
        claim.grow(data.len() as u64).await;
        pieces.push(data);
    }
    Ok(match pieces.len() {
        1 => pieces.pop().expect("one piece"),
        _ => Bytes::from(pieces.concat()),
    })
}

/// The error of a source that holds more than the `at_most` bytes it announced.
pub(crate) fn longer_than(at_most: u64) -> Error {
    Error::Source(format!("the source is longer than the {at_most} bytes it announced").into())
}
