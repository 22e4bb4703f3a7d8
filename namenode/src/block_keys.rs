//! The namenode's block keys: it signs block access tokens with them
//! ([`kdfs_proto::block_token`]) and hands them to datanodes with Register and
//! Heartbeat replies, which verify tokens with them (docs/security.md, "Block access
//! tokens").
//!
//! A key is 32 random bytes under a random id. The newest key signs; a new one is made
//! once it is `--block-key-rotation` old (on the next use: no worker needed). A key
//! stays valid for the tokens it signed, `--block-token-lifetime` after its last
//! signature, then it is dropped here and at every datanode. Keys live in memory only:
//! after a restart the namenode signs with new ones, and datanodes keep the old ones
//! until they expire, so tokens given out before stay valid. With HA the keys are
//! replicated instead ([`BlockKeys::replicated`]): a leader makes each new key through
//! the Raft log before it signs with it (`crate::ha`'s key rotation), so tokens an old
//! leader issued still verify after a failover and a new leader's keys are ones the
//! datanodes will be handed.

use std::sync::Mutex;
use std::time::Duration;

use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::block_token::{self, BlockKey, Grant, MAX_KEYS, SECRET_LEN};
use kdfs_proto::pb;
use kdfs_proto::wire;

use crate::meta::StoredKey;
use crate::namesystem::Location;

/// Checks the two durations: both positive, and few enough keys alive at once for a
/// datanode's key ring to hold them all.
pub fn check(rotation: Duration, lifetime: Duration) -> Result<(), String> {
    if rotation.is_zero() || lifetime.is_zero() {
        return Err("--block-key-rotation and --block-token-lifetime must be positive".into());
    }
    let alive = lifetime.as_millis() / rotation.as_millis() + 2;
    if alive > MAX_KEYS as u128 {
        return Err(format!(
            "--block-token-lifetime / --block-key-rotation keeps {alive} keys alive; at \
             most {MAX_KEYS} fit: rotate less often"
        ));
    }
    Ok(())
}

/// The keys and the durations that govern them.
#[derive(Debug)]
pub struct BlockKeys {
    /// Keys with when each was made, oldest first: the last one signs.
    keys: Mutex<Vec<(u64, BlockKey)>>,
    rotation_ms: u64,
    lifetime_ms: u64,
    /// Keys come only from [`BlockKeys::adopt`] (HA): signing never makes one.
    replicated: bool,
}

impl BlockKeys {
    pub fn new(rotation: Duration, lifetime: Duration) -> Self {
        Self {
            keys: Mutex::new(Vec::new()),
            rotation_ms: rotation.as_millis().max(1) as u64,
            lifetime_ms: lifetime.as_millis().max(1) as u64,
            replicated: false,
        }
    }

    /// With HA: the keys the store holds; new ones only through [`BlockKeys::adopt`].
    pub fn replicated(rotation: Duration, lifetime: Duration, stored: &[StoredKey]) -> Self {
        let keys = Self {
            replicated: true,
            ..Self::new(rotation, lifetime)
        };
        for k in stored {
            keys.adopt(k);
        }
        keys
    }

    /// Whether a new key is due at `now_ms` (none yet, or the newest is a rotation
    /// old): a replicated leader then makes one ([`BlockKeys::make`]) and adopts it
    /// once it is committed.
    pub fn due(&self, now_ms: u64) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.last()
            .is_none_or(|(made, _)| now_ms >= made + self.rotation_ms)
    }

    /// A fresh random key made at `now_ms`, to store through the log.
    pub fn make(&self, now_ms: u64) -> StoredKey {
        StoredKey {
            // Zero means "no key" in a heartbeat.
            id: rand::random::<u64>().max(1),
            made_ms: now_ms,
            expires_ms: now_ms + self.rotation_ms + self.lifetime_ms,
            secret: rand::random(),
        }
    }

    /// Signs with `key` from now on (it is durable in the replicated store).
    pub fn adopt(&self, key: &StoredKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.iter().any(|(_, k)| k.id == key.id) {
            return;
        }
        keys.push((
            key.made_ms,
            BlockKey::new(key.id, key.secret, key.expires_ms),
        ));
        keys.sort_by_key(|(made, _)| *made);
    }

    /// Rotates if due, drops expired keys, and runs `f` on the live keys (the signing
    /// one last).
    fn with_keys<T>(&self, now_ms: u64, f: impl FnOnce(&[(u64, BlockKey)]) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let due = !self.replicated
            && keys
                .last()
                .is_none_or(|(made, _)| now_ms >= made + self.rotation_ms);
        if due {
            let expires_ms = now_ms + self.rotation_ms + self.lifetime_ms;
            // Zero means "no key" in a heartbeat.
            let id = rand::random::<u64>().max(1);
            let secret: [u8; SECRET_LEN] = rand::random();
            keys.push((now_ms, BlockKey::new(id, secret, expires_ms)));
            tracing::debug!(key = id, "new block key");
        }
        // A replicated ring keeps its newest key even past expiry: signing needs one
        // until the leader's rotation adopts the next.
        let newest = keys.last().map(|(_, k)| k.id);
        keys.retain(|(_, k)| k.expires_ms > now_ms || Some(k.id) == newest && self.replicated);
        f(&keys)
    }

    /// Signs `grant` (whose expiry this sets) with the current key.
    fn sign(&self, grant: impl FnOnce(u64) -> Grant) -> pb::BlockToken {
        self.sign_at(block_token::now_ms(), grant)
    }

    fn sign_at(&self, now_ms: u64, grant: impl FnOnce(u64) -> Grant) -> pb::BlockToken {
        let grant = grant(now_ms + self.lifetime_ms);
        self.with_keys(now_ms, |keys| {
            // A replicated ring is never empty once its instance serves (`crate::ha`).
            let (_, key) = keys.last().expect("with_keys made a key");
            grant.sign(key)
        })
    }

    /// Every live key, for a Register reply.
    pub fn all(&self) -> Vec<pb::BlockKey> {
        self.unless_current_at(block_token::now_ms(), 0)
    }

    /// Every live key unless the datanode's newest (`held`) is the current one, for a
    /// Heartbeat reply.
    pub fn unless_current(&self, held: u64) -> Vec<pb::BlockKey> {
        self.unless_current_at(block_token::now_ms(), held)
    }

    fn unless_current_at(&self, now_ms: u64, held: u64) -> Vec<pb::BlockKey> {
        self.with_keys(now_ms, |keys| match keys.last() {
            Some((_, k)) if k.id == held => Vec::new(),
            _ => keys.iter().map(|(_, k)| k.to_wire()).collect(),
        })
    }

    /// A WRITE token for `pipeline` of upload `upload_id`, reserving at most
    /// `max_length` per stream.
    pub fn write(&self, upload_id: &str, pipeline: &[Location], max_length: u64) -> pb::BlockToken {
        let pipeline = wire_locations(pipeline);
        self.sign(|expires| Grant::write(upload_id, &pipeline, max_length, expires))
    }

    /// A READ token for `block`.
    pub fn read(&self, block: BlockId) -> pb::BlockToken {
        self.sign(|expires| Grant::read(block, expires))
    }

    /// A TRANSFER token for `block` (`length` bytes) from `source` to `targets`.
    pub fn transfer(
        &self,
        block: BlockId,
        length: u64,
        source: DatanodeId,
        targets: &[Location],
    ) -> pb::BlockToken {
        let targets = wire_locations(targets);
        self.sign(|expires| Grant::transfer(block, length, source, &targets, expires))
    }
}

fn wire_locations(l: &[Location]) -> Vec<wire::Location> {
    l.iter()
        .map(|l| wire::Location {
            id: l.id,
            address: l.address.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kdfs_proto::block_token::{KeyRing, now_ms};

    use super::*;

    #[test]
    fn settings_are_checked() {
        let m = Duration::from_secs(60);
        assert!(check(10 * m, 600 * m).is_ok());
        assert!(check(Duration::ZERO, m).is_err());
        assert!(check(m, Duration::ZERO).is_err());
        assert!(check(m, 600 * m).is_err(), "602 keys alive");
    }

    #[test]
    fn tokens_verify_with_the_keys_handed_out_and_rotation_keeps_old_ones() {
        let minute = 60_000;
        let keys = BlockKeys::new(Duration::from_secs(600), Duration::from_secs(3600));
        let t0 = now_ms();
        let ring = KeyRing::default();
        let token = keys.sign_at(t0, |e| Grant::read(BlockId::of(b"a"), e));
        ring.learn(&keys.unless_current_at(t0, 0), t0);
        let grant = ring.verify(Some(&token), t0).expect("valid");
        assert!(grant.check_read(&BlockId::of(b"a")).is_ok());
        assert_eq!(grant.expires_ms, t0 + 60 * minute);
        let first = ring.newest();
        assert_eq!(first, token.key_id);
        assert!(
            keys.unless_current_at(t0 + 9 * minute, first).is_empty(),
            "not due"
        );

        // Ten minutes on, the next use rotates; the old key stays for its tokens.
        let t1 = t0 + 10 * minute;
        let newer = keys.sign_at(t1, |e| Grant::read(BlockId::of(b"b"), e));
        assert_ne!(newer.key_id, token.key_id);
        let sent = keys.unless_current_at(t1, first);
        assert_eq!(sent.len(), 2, "the new key and the old one");
        ring.learn(&sent, t1);
        assert!(ring.verify(Some(&token), t1).is_ok());
        assert!(ring.verify(Some(&newer), t1).is_ok());
        assert!(
            keys.unless_current_at(t1, ring.newest()).is_empty(),
            "up to date"
        );

        // The first key signed its last token at t1 at the latest (lifetime 60 min
        // from then): it is gone 70 minutes after it was made, with its tokens.
        let t2 = t0 + 70 * minute;
        let kept = keys.unless_current_at(t2, 0);
        assert!(kept.iter().all(|k| k.id != first), "the first key expired");
        ring.learn(&kept, t2);
        assert!(ring.verify(Some(&token), t2).is_err());
    }
}
