//! The checksum sidecar beside a block (`<id>.crc`): which blocks have one, its
//! format, and the CRC32C arithmetic that lets a reader hand out a piece's CRC without
//! a second pass over its bytes.
//!
//! A sidecar holds a 16-byte header (magic `KDFSCRC1`, the block's length as a
//! little-endian u64) and then the CRC32C of every [`CHECKSUM_CHUNK`] bytes of the
//! block, little-endian. A block of at most one chunk has none: its one CRC would cover
//! the same bytes as its SHA-256, which every read of it checks instead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes covered by one CRC32C in a sidecar.
pub const CHECKSUM_CHUNK: usize = 64 << 10;

pub(crate) const SIDECAR_SUFFIX: &str = ".crc";
const SIDECAR_MAGIC: &[u8; 8] = b"KDFSCRC1";
/// Bytes before the first CRC.
pub(crate) const SIDECAR_HEADER: u64 = 16;

/// Whether a block of `len` bytes keeps a checksum sidecar (see the module docs).
pub(crate) fn needs_sidecar(len: u64) -> bool {
    len > CHECKSUM_CHUNK as u64
}

/// The sidecar's path beside the block (or temp file) at `block`.
pub(crate) fn sidecar_of(block: &Path) -> PathBuf {
    let mut s = block.as_os_str().to_owned();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

/// A sidecar's bytes: its header (magic, block length), then one CRC32C per chunk.
pub(crate) fn sidecar_bytes(length: u64, crcs: &[u32]) -> Vec<u8> {
    let mut side = Vec::with_capacity(SIDECAR_HEADER as usize + 4 * crcs.len());
    side.extend_from_slice(SIDECAR_MAGIC);
    side.extend_from_slice(&length.to_le_bytes());
    for c in crcs {
        side.extend_from_slice(&c.to_le_bytes());
    }
    side
}

/// Whether `sidecar` is well-formed for a block of `block_len` bytes: its magic, the
/// length in its header, and one CRC per chunk, no more.
pub(crate) fn sidecar_fits(sidecar: &File, block_len: u64) -> bool {
    let mut header = [0u8; SIDECAR_HEADER as usize];
    let want_len = SIDECAR_HEADER + 4 * block_len.div_ceil(CHECKSUM_CHUNK as u64);
    sidecar.read_exact_at(&mut header, 0).is_ok()
        && &header[..8] == SIDECAR_MAGIC
        && header[8..] == block_len.to_le_bytes()
        && sidecar.metadata().map(|m| m.len()).ok() == Some(want_len)
}

/// A GF(2) 32×32 matrix acting on CRC32C registers, one `u32` per column.
type Gf2Matrix = [u32; 32];

fn gf2_times(mat: &Gf2Matrix, mut vec: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

/// The operator that feeds [`CHECKSUM_CHUNK`] zero bytes through a CRC32C register
/// (zlib's `crc32_combine` construction, done once instead of per call).
fn chunk_shift() -> &'static Gf2Matrix {
    static SHIFT: std::sync::OnceLock<Gf2Matrix> = std::sync::OnceLock::new();
    SHIFT.get_or_init(|| {
        // One zero bit: the reflected polynomial, then a shift by one.
        let mut op: Gf2Matrix = [0; 32];
        op[0] = 0x82F6_3B78;
        for (n, col) in op.iter_mut().enumerate().skip(1) {
            *col = 1 << (n - 1);
        }
        // Squaring doubles the zero bits: 2^k bits after k squarings.
        let bits = (CHECKSUM_CHUNK * 8).trailing_zeros();
        debug_assert!((CHECKSUM_CHUNK * 8).is_power_of_two());
        for _ in 0..bits {
            let mut sq: Gf2Matrix = [0; 32];
            for (n, col) in sq.iter_mut().enumerate() {
                *col = gf2_times(&op, op[n]);
            }
            op = sq;
        }
        op
    })
}

/// CRC32C of `a` followed by `b`, from `crc32c(a)`, `crc32c(b)` and `b.len()`: a few
/// dozen operations for a whole checksum chunk, instead of a second pass over the
/// bytes whose chunk CRCs were just checked.
pub(crate) fn crc32c_concat(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    if len_b == CHECKSUM_CHUNK {
        gf2_times(chunk_shift(), crc_a) ^ crc_b
    } else {
        crc32c::crc32c_combine(crc_a, crc_b, len_b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_concat_equals_the_crc_of_the_concatenation() {
        // The combination shortcut agrees with crc32c's own, for whole and short chunks.
        let a: Vec<u8> = (0..3 * CHECKSUM_CHUNK)
            .map(|i| (i * 31 % 256) as u8)
            .collect();
        for (len_a, len_b) in [
            (1, CHECKSUM_CHUNK),
            (CHECKSUM_CHUNK, CHECKSUM_CHUNK),
            (5, 17),
            (CHECKSUM_CHUNK, 1000),
        ] {
            let (x, y) = (&a[..len_a], &a[len_a..len_a + len_b]);
            let want = crc32c::crc32c(&a[..len_a + len_b]);
            let got = crc32c_concat(crc32c::crc32c(x), crc32c::crc32c(y), len_b);
            assert_eq!(got, want, "{len_a} + {len_b}");
        }
    }

    #[test]
    fn sidecar_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.crc");
        let len = 2 * CHECKSUM_CHUNK as u64 + 1;
        std::fs::write(&path, sidecar_bytes(len, &[1, 2, 3])).unwrap();
        let f = File::open(&path).unwrap();
        assert!(sidecar_fits(&f, len));
        assert!(
            !sidecar_fits(&f, len + CHECKSUM_CHUNK as u64),
            "one CRC short"
        );
        assert!(!sidecar_fits(&f, len - 1), "another length in the header");
    }
}
