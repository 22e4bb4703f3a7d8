//! How much room the store has: the filesystem's size (statvfs) minus a reserve, minus
//! the bytes promised to writes still in flight, and at most a configured capacity
//! (`--capacity`: on k3d every datanode's volume is a directory on one shared disk, so
//! the disk's figures alone would count its free space once per datanode).
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

/// The configured limits on the room a store may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Bytes of the filesystem never used for blocks (`--reserved`).
    pub reserved: u64,
    /// At most this many bytes of blocks, however large the filesystem (`--capacity`).
    pub cap: Option<u64>,
}

/// Combines the filesystem's figures with the limits and in-flight reservations:
/// capacity is `min(total - reserved, cap)` and free space `min(free - reserved,
/// cap - used)`, less what writes in flight have reserved.
pub fn space(total: u64, free: u64, limits: Limits, used: u64, in_flight: u64) -> Space {
    let mut capacity = total.saturating_sub(limits.reserved);
    let mut available = free.saturating_sub(limits.reserved);
    if let Some(cap) = limits.cap {
        capacity = capacity.min(cap);
        available = available.min(cap.saturating_sub(used));
    }
    Space {
        capacity,
        used,
        available: available.saturating_sub(in_flight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(reserved: u64) -> Limits {
        Limits {
            reserved,
            cap: None,
        }
    }

    fn capped(reserved: u64, cap: u64) -> Limits {
        Limits {
            reserved,
            cap: Some(cap),
        }
    }

    #[test]
    fn reserve_and_in_flight_are_subtracted() {
        assert_eq!(
            space(100, 60, reserved(10), 40, 5),
            Space {
                capacity: 90,
                used: 40,
                available: 45
            }
        );
        // Never negative.
        assert_eq!(space(5, 1, reserved(10), 0, 7).available, 0);
        assert_eq!(space(5, 1, reserved(10), 0, 7).capacity, 0);
    }

    /// One check per case: (total, free, reserved, cap, used, in_flight) and the
    /// (capacity, available) it gives.
    #[test]
    fn a_cap_bounds_capacity_and_free_space() {
        let check = |(total, free, res, cap, used, in_flight): (u64, u64, u64, u64, u64, u64),
                     want: (u64, u64)| {
            let s = space(total, free, capped(res, cap), used, in_flight);
            assert_eq!(
                (s.capacity, s.available, s.used),
                (want.0, want.1, used),
                "total {total} free {free} reserved {res} cap {cap} used {used} in flight {in_flight}"
            );
        };
        // A shared disk much larger than the cap: the cap and what is used of it decide.
        check((1000, 900, 0, 100, 30, 0), (100, 70));
        check((1000, 900, 0, 100, 30, 20), (100, 50));
        // The disk fuller than the cap says (other tenants): the disk decides.
        check((1000, 40, 0, 100, 30, 0), (100, 40));
        check((1000, 40, 10, 100, 30, 5), (100, 25));
        // A disk smaller than the cap: the cap changes nothing.
        check((80, 50, 10, 100, 30, 0), (70, 40));
        // Used beyond the cap (the cap was lowered): nothing is free, never negative.
        check((1000, 900, 0, 100, 150, 0), (100, 0));
        check((1000, 900, 0, 0, 0, 0), (0, 0));
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
