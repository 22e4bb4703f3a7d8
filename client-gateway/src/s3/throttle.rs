//! The failed-authentication limit of the S3 port, the HTTP port's
//! ([`crate::gateway::auth`]) applied to S3's signatures: the same flags
//! (`--auth-max-failures`, `--auth-failure-window`), the same two levels, and the same
//! bounded tables ([`FailureLimiter`]).
//!
//! - per client **and claimed access key id** (a digest prefix): after
//!   `--auth-max-failures` refused signatures with that key id, requests from that
//!   client claiming it get `SlowDown` (503, `Retry-After`) until the window ends; a
//!   client with another key pair, or another client, is still served.
//! - per client: after [`CLIENT_FAILURES_FACTOR`] × `--auth-max-failures` refusals with
//!   any key ids, every request from it gets `SlowDown`, so guessing is bounded.
//!
//! A failure is an answer of 403 to a request no key pair was accepted for (a bad
//! signature, an unknown key id, an anonymous request): what the audit log records as
//! an `auth` refusal. S3 clients retry a 503 `SlowDown` with back-off, which is what a
//! client should do here.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::gateway::auth::{
    CLIENT_FAILURES_FACTOR, ClientKey, FailureLimiter, MAX_TRACKED_CLIENTS,
};

/// The access key id a request claims, as the limit counts it (never the id itself:
/// a refused request may claim anything).
type KeyId = [u8; 8];

fn key_id(claimed: Option<&str>) -> KeyId {
    let digest = Sha256::digest(claimed.unwrap_or("").as_bytes());
    digest[..8].try_into().expect("a digest has 32 bytes")
}

/// Both levels of the limit (see the [module docs](self)).
pub struct Throttle {
    tables: Mutex<Tables>,
}

struct Tables {
    per_key: FailureLimiter<(ClientKey, KeyId)>,
    per_client: FailureLimiter<ClientKey>,
}

impl Throttle {
    /// `max_failures` 0 turns the limit off.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            tables: Mutex::new(Tables {
                per_key: FailureLimiter::new(max_failures, window, MAX_TRACKED_CLIENTS),
                per_client: FailureLimiter::new(
                    max_failures.saturating_mul(CLIENT_FAILURES_FACTOR),
                    window,
                    MAX_TRACKED_CLIENTS,
                ),
            }),
        }
    }

    /// How long `client`, claiming `access_key`, must wait, if it is over a limit; and
    /// whether this is the window's first refusal.
    pub fn refuse(
        &self,
        client: IpAddr,
        access_key: Option<&str>,
        now: Instant,
    ) -> Option<(Duration, bool)> {
        let client = ClientKey::of(client);
        let mut t = self.tables.lock().expect("throttle lock is never poisoned");
        match t.per_client.refuse(client, now) {
            Some(r) => Some(r),
            None => t.per_key.refuse((client, key_id(access_key)), now),
        }
    }

    /// Counts a refused authentication from `client` claiming `access_key`.
    pub fn fail(&self, client: IpAddr, access_key: Option<&str>, now: Instant) {
        let client = ClientKey::of(client);
        let mut t = self.tables.lock().expect("throttle lock is never poisoned");
        t.per_key.fail((client, key_id(access_key)), now);
        t.per_client.fail(client, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_key_is_limited_alone_until_the_client_fails_too_often() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..2 {
            assert!(t.refuse(ip, Some("BAD"), now).is_none());
            t.fail(ip, Some("BAD"), now);
        }
        assert!(t.refuse(ip, Some("BAD"), now).is_some());
        assert!(t.refuse(ip, Some("GOOD"), now).is_none());
        assert!(
            t.refuse("10.0.0.2".parse().unwrap(), Some("BAD"), now)
                .is_none()
        );
        for i in 0..18 {
            t.fail(ip, Some(&format!("K{i}")), now);
        }
        assert!(t.refuse(ip, Some("GOOD"), now).is_some());
        assert!(
            t.refuse(ip, Some("GOOD"), now + Duration::from_secs(61))
                .is_none()
        );
    }
}
