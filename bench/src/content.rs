//! Synthetic file content for the scenarios: cheap to produce, reproducible (so its
//! SHA-256 is known before the timed upload), and unique per run and chunk.

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Bytes per generated chunk of synthetic file content.
pub(crate) const GEN_CHUNK: usize = 1 << 20;

/// A random pattern of at most [`GEN_CHUNK`] bytes with each chunk stamped with a run
/// nonce and its index, so no two blocks are equal (no dedup flattering the figures).
#[derive(Clone)]
pub(crate) struct Content {
    pattern: Bytes,
    nonce: u64,
    pub(crate) size: u64,
}

impl Content {
    pub(crate) fn new(size: u64) -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ now_nanos();
        // A small file needs only its own length of pattern (4,000 small files would
        // otherwise cost 4 GiB of setup).
        let pattern: Vec<u8> = (0..(size as usize).clamp(1, GEN_CHUNK))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self {
            pattern: pattern.into(),
            nonce: now_nanos(),
            size,
        }
    }

    pub(crate) fn chunk(&self, i: u64) -> Bytes {
        let start = i * GEN_CHUNK as u64;
        let len = (self.size - start).min(GEN_CHUNK as u64) as usize;
        let mut v = self.pattern[..len].to_vec();
        let stamp = [self.nonce.to_le_bytes(), i.to_le_bytes()].concat();
        let n = stamp.len().min(len);
        v[..n].copy_from_slice(&stamp[..n]);
        v.into()
    }

    pub(crate) fn chunks(&self) -> u64 {
        self.size.div_ceil(GEN_CHUNK as u64)
    }

    pub(crate) fn stream(
        &self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let me = self.clone();
        futures::stream::iter(0..me.chunks()).map(move |i| Ok(me.chunk(i)))
    }

    pub(crate) fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for i in 0..self.chunks() {
            h.update(self.chunk(i));
        }
        hex::encode(h.finalize())
    }
}

/// Nanoseconds since the Unix epoch: a seed and nonce that differs between runs.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_unique_per_chunk() {
        let c = Content::new(3 * GEN_CHUNK as u64 + 5);
        assert_eq!(c.chunks(), 4);
        assert_eq!(c.chunk(3).len(), 5);
        assert_ne!(c.chunk(0), c.chunk(1));
        assert_eq!(c.sha256(), c.sha256());
        assert_eq!(Content::new(0).chunks(), 0);
    }
}
