//! How much room the store has: the filesystem's size (statvfs) minus a reserve, minus
//! the bytes promised to writes still in flight.
//!
//! A write declares its `max_length` up front and reserves that many bytes before its
//! first byte lands, so two writes can never both fit in the same last gigabyte. Tests
//! replace statvfs with a fixed-size pretend filesystem ([`CapacitySource::Fixed`]).

use std::io;
use std::path::Path;

/// Where the filesystem's size comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapacitySource {
    /// The real filesystem holding the data directory.
    #[default]
    Statvfs,
    /// A pretend filesystem of `total` bytes that holds only this store's blocks (tests).
    Fixed { total: u64 },
}

/// Storage figures in bytes, as reported to the namenode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Space {
    /// Usable for blocks: the filesystem's size minus the reserve.
    pub capacity: u64,
    /// Bytes of committed blocks.
    pub used: u64,
    /// Free for new blocks: free space minus the reserve minus in-flight reservations.
    pub available: u64,
}

/// Total and free bytes of the filesystem holding `path` (free as seen by non-root).
pub fn statvfs(path: &Path) -> io::Result<(u64, u64)> {
    crate::sys::statvfs(path)
}

impl CapacitySource {
    /// Total and free bytes of the (real or pretend) filesystem; `used` is what the
    /// store's blocks occupy, which a pretend filesystem subtracts from its size.
    pub fn total_and_free(&self, path: &Path, used: u64) -> io::Result<(u64, u64)> {
        match *self {
            Self::Statvfs => statvfs(path),
            Self::Fixed { total } => Ok((total, total.saturating_sub(used))),
        }
    }
}

/// Combines the filesystem's figures with the reserve and in-flight reservations.
pub fn space(total: u64, free: u64, reserved: u64, used: u64, in_flight: u64) -> Space {
    Space {
        capacity: total.saturating_sub(reserved),
        used,
        available: free.saturating_sub(reserved).saturating_sub(in_flight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_and_in_flight_are_subtracted() {
        assert_eq!(
            space(100, 60, 10, 40, 5),
            Space {
                capacity: 90,
                used: 40,
                available: 45
            }
        );
        // Never negative.
        assert_eq!(space(5, 1, 10, 0, 7).available, 0);
        assert_eq!(space(5, 1, 10, 0, 7).capacity, 0);
    }

    #[test]
    fn statvfs_reads_the_real_filesystem() {
        let (total, free) = statvfs(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
        let (t, f) = CapacitySource::Fixed { total: 10 }
            .total_and_free(Path::new("/"), 4)
            .unwrap();
        assert_eq!((t, f), (10, 6));
    }
}
