//! Room reserved for writes in flight: a write that could not fit is refused before
//! any byte is accepted, and what it reserved is released when it ends either way.

use std::sync::Arc;

use super::{Inner, Store};
use crate::error::{Error, Result};

/// Bytes reserved for a write in flight; released when the write ends either way.
#[derive(Debug)]
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    pub(crate) bytes: u64,
}

impl Reservation {
    /// Moves up to `bytes` of this reservation into a new one: the room reserved in all
    /// does not change.
    pub(crate) fn split(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            inner: self.inner.clone(),
            bytes,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = self
            .inner
            .in_flight
            .lock()
            .expect("reservation lock poisoned");
        *r = r.saturating_sub(self.bytes);
    }
}

impl Store {
    /// Reserves room for a write of at most `max_len` bytes (one statvfs, no file).
    pub(crate) fn reserve(&self, max_len: u64) -> Result<Reservation> {
        let mut in_flight = self
            .inner
            .in_flight
            .lock()
            .expect("reservation lock poisoned");
        let space = self.space_with(*in_flight)?;
        if max_len > space.available {
            return Err(Error::OutOfSpace {
                needed: max_len,
                available: space.available,
            });
        }
        *in_flight += max_len;
        Ok(Reservation {
            inner: self.inner.clone(),
            bytes: max_len,
        })
    }
}
