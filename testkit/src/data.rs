//! Test data: deterministic pseudo-random bytes, the content id kdfs gives them, and a
//! slow reader that uploads them the way a slow client would.

use std::io::Read;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// SHA-256 of `data` as 64 lowercase hex characters (a kdfs file or block id).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `len` pseudo-random bytes, the same for the same `seed` (xorshift64*: fast and
/// incompressible enough that no two blocks of a file dedup by accident).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A reader that yields `data` in `chunk`-byte pieces, sleeping `pause` before each
/// (a slow client), and calls `on_progress(bytes_sent)` after each piece.
pub struct SlowReader<F: FnMut(usize) + Send> {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    pause: Duration,
    on_progress: F,
}

impl<F: FnMut(usize) + Send> SlowReader<F> {
    pub fn new(data: Vec<u8>, chunk: usize, pause: Duration, on_progress: F) -> Self {
        Self {
            data,
            pos: 0,
            chunk,
            pause,
            on_progress,
        }
    }
}

impl<F: FnMut(usize) + Send> Read for SlowReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        std::thread::sleep(self.pause);
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        (self.on_progress)(self.pos);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_deterministic_and_distinct() {
        assert_eq!(random_bytes(1000, 7), random_bytes(1000, 7));
        assert_ne!(random_bytes(1000, 7), random_bytes(1000, 8));
        assert_eq!(random_bytes(13, 1).len(), 13);
        // No two 256 KiB blocks of one file dedup by accident.
        let d = random_bytes(1 << 20, 3);
        assert_ne!(d[..256 << 10], d[256 << 10..512 << 10]);
    }

    #[test]
    fn sha256_hex_is_the_content_id() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn slow_reader_yields_everything_in_pieces() {
        let mut seen = Vec::new();
        let mut r = SlowReader::new(vec![9u8; 10], 4, Duration::ZERO, |n| seen.push(n));
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        drop(r);
        assert_eq!(out, vec![9u8; 10]);
        assert_eq!(seen, vec![4, 8, 10]);
    }
}
