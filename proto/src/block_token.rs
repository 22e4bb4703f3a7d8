//! Block access tokens: how a datanode knows that a write, read or transfer is one the
//! namenode allowed (docs/security.md, "Block access tokens"; HDFS's answer to the
//! same problem).
//!
//! The namenode describes what it allows in a [`Grant`] (mode, upload or block, the
//! ordered pipeline, the most bytes a stream may reserve, an expiry) and signs its
//! encoding with HMAC-SHA256 under a random [`BlockKey`]; the result is a
//! `pb::BlockToken` that gateways and datanodes pass on unchanged. Datanodes hold the
//! namenode's keys in a [`KeyRing`] (sent with Register and Heartbeat replies) and
//! verify a token once per stream, before they reserve or write a byte: the check is
//! an HMAC over a few hundred bytes, nothing on the per-chunk path.
//!
//! The signed bytes are the grant exactly as encoded by the namenode: the verifier
//! checks the MAC over the bytes it received and only then decodes them, so no
//! re-encoding has to agree byte for byte.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use kdfs_core::{BlockId, DatanodeId};
use prost::Message;
use sha2::Sha256;
use tonic::Status;

use crate::pb;
use crate::wire::{self, Location};

/// Most datanodes a pipeline may name (the namenode's `--replication` is at most 16):
/// a longer downstream list is refused before its token is even looked at.
pub const MAX_PIPELINE: usize = 16;
/// Bytes of a key's secret.
pub const SECRET_LEN: usize = 32;
/// Most keys a [`KeyRing`] keeps (the soonest to expire go first). The namenode keeps
/// `lifetime / rotation + 2` keys alive, so its settings must stay below this.
pub const MAX_KEYS: usize = 256;
/// Largest encoded grant accepted: a full pipeline of long host names fits many times.
const MAX_GRANT_LEN: usize = 16 << 10;

type HmacSha256 = Hmac<Sha256>;

/// Milliseconds since the Unix epoch, the clock tokens and keys expire by.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `WriteBlock`/`WriteBlocks` down a pipeline, for one upload.
    Write,
    /// `ReadBlock` of one block.
    Read,
    /// `TransferBlock` of one block from one source down a pipeline, and the
    /// `WriteBlock` stream that carries it.
    Transfer,
}

impl Access {
    fn to_wire(self) -> pb::BlockAccess {
        match self {
            Access::Write => pb::BlockAccess::Write,
            Access::Read => pb::BlockAccess::Read,
            Access::Transfer => pb::BlockAccess::Transfer,
        }
    }
}

/// A key the namenode signs with. Its secret never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockKey {
    pub id: u64,
    secret: [u8; SECRET_LEN],
    /// After this (ms since the epoch) the key and every token it signed are refused.
    pub expires_ms: u64,
}

impl std::fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockKey")
            .field("id", &self.id)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

impl BlockKey {
    pub fn new(id: u64, secret: [u8; SECRET_LEN], expires_ms: u64) -> Self {
        Self {
            id,
            secret,
            expires_ms,
        }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length")
    }

    /// The key as Register and Heartbeat replies carry it.
    pub fn to_wire(&self) -> pb::BlockKey {
        pb::BlockKey {
            id: self.id,
            secret: bytes::Bytes::copy_from_slice(&self.secret),
            expires_ms: self.expires_ms,
        }
    }
}

impl TryFrom<&pb::BlockKey> for BlockKey {
    type Error = Status;
    fn try_from(k: &pb::BlockKey) -> Result<Self, Status> {
        let secret = <[u8; SECRET_LEN]>::try_from(k.secret.as_ref()).map_err(|_| {
            Status::invalid_argument(format!("block_keys.secret: not {SECRET_LEN} bytes"))
        })?;
        Ok(Self::new(k.id, secret, k.expires_ms))
    }
}

/// What the namenode allows, before signing and after verifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub access: Access,
    pub expires_ms: u64,
    /// `Write`: the upload.
    pub upload_id: String,
    /// `Read`, `Transfer`: the block.
    pub block: Option<BlockId>,
    /// `Write`, `Transfer`: the datanodes, in order.
    pub pipeline: Vec<Location>,
    /// `Write`, `Transfer`: the most a stream's `max_length` may be.
    pub max_length: u64,
    /// `Transfer`: the node asked to send the block.
    pub source: Option<DatanodeId>,
}

impl Grant {
    /// Writing blocks of `upload_id` down `pipeline`, each stream reserving at most
    /// `max_length` bytes per node.
    pub fn write(upload_id: &str, pipeline: &[Location], max_length: u64, expires_ms: u64) -> Self {
        Self {
            access: Access::Write,
            expires_ms,
            upload_id: upload_id.to_owned(),
            block: None,
            pipeline: pipeline.to_vec(),
            max_length,
            source: None,
        }
    }

    /// Reading `block` from any datanode.
    pub fn read(block: BlockId, expires_ms: u64) -> Self {
        Self {
            access: Access::Read,
            expires_ms,
            upload_id: String::new(),
            block: Some(block),
            pipeline: Vec::new(),
            max_length: 0,
            source: None,
        }
    }

    /// Copying `block` (`length` bytes) from `source` down `targets`.
    pub fn transfer(
        block: BlockId,
        length: u64,
        source: DatanodeId,
        targets: &[Location],
        expires_ms: u64,
    ) -> Self {
        Self {
            access: Access::Transfer,
            expires_ms,
            upload_id: String::new(),
            block: Some(block),
            pipeline: targets.to_vec(),
            max_length: length,
            source: Some(source),
        }
    }

    fn to_wire(&self) -> pb::BlockGrant {
        pb::BlockGrant {
            access: self.access.to_wire() as i32,
            expires_ms: self.expires_ms,
            upload_id: self.upload_id.clone(),
            block_id: self
                .block
                .map(|b| wire::raw(b.as_bytes()))
                .unwrap_or_default(),
            pipeline: self
                .pipeline
                .iter()
                .map(pb::DatanodeLocation::from)
                .collect(),
            max_length: self.max_length,
            source: self.source.map(|s| s.to_string()).unwrap_or_default(),
        }
    }

    fn from_wire(g: &pb::BlockGrant) -> Result<Self, TokenError> {
        let bad = |what: &str| TokenError::Malformed(what.to_owned());
        let access = match pb::BlockAccess::try_from(g.access) {
            Ok(pb::BlockAccess::Write) => Access::Write,
            Ok(pb::BlockAccess::Read) => Access::Read,
            Ok(pb::BlockAccess::Transfer) => Access::Transfer,
            _ => return Err(bad("unknown access")),
        };
        if g.pipeline.len() > MAX_PIPELINE {
            return Err(bad("pipeline too long"));
        }
        let block = match g.block_id.is_empty() {
            true => None,
            false => Some(BlockId::from_slice(&g.block_id).map_err(|_| bad("block id"))?),
        };
        let source = match g.source.is_empty() {
            true => None,
            false => Some(DatanodeId::parse(&g.source).map_err(|_| bad("source"))?),
        };
        Ok(Self {
            access,
            expires_ms: g.expires_ms,
            upload_id: g.upload_id.clone(),
            block,
            pipeline: g
                .pipeline
                .iter()
                .map(Location::try_from)
                .collect::<Result<_, _>>()
                .map_err(|_| bad("pipeline"))?,
            max_length: g.max_length,
            source,
        })
    }

    /// The signed token.
    pub fn sign(&self, key: &BlockKey) -> pb::BlockToken {
        let grant = self.to_wire().encode_to_vec();
        let mut mac = key.mac();
        mac.update(&grant);
        pb::BlockToken {
            key_id: key.id,
            mac: bytes::Bytes::copy_from_slice(&mac.finalize().into_bytes()),
            grant: grant.into(),
        }
    }

    fn want(&self, access: Access) -> Result<(), TokenError> {
        if self.access == access {
            Ok(())
        } else {
            Err(TokenError::Denied(format!(
                "a {:?} token does not allow a {access:?}",
                self.access
            )))
        }
    }

    /// May datanode `me` accept a write stream (`WriteBlock` or `WriteBlocks`) that
    /// forwards to `downstream` and reserves `max_length`? A `Write` grant must be for
    /// `upload_id`; a `Transfer` grant (only where `transfer_ok`) for no upload. The
    /// block a transfer carries is checked at its trailer ([`Grant::check_block`]).
    pub fn check_write(
        &self,
        me: &DatanodeId,
        downstream: &[Location],
        upload_id: &str,
        max_length: u64,
        transfer_ok: bool,
    ) -> Result<(), TokenError> {
        match self.access {
            Access::Write if self.upload_id == upload_id => {}
            Access::Write => {
                return Err(TokenError::Denied(format!(
                    "the token is for upload {:?}, not {upload_id:?}",
                    self.upload_id
                )));
            }
            Access::Transfer if transfer_ok && upload_id.is_empty() => {}
            _ => return Err(TokenError::Denied(format!("a {:?} token", self.access))),
        }
        if max_length > self.max_length {
            return Err(TokenError::Denied(format!(
                "max_length {max_length} exceeds the token's {}",
                self.max_length
            )));
        }
        check_pipeline(&self.pipeline, me, downstream).map_err(TokenError::Denied)
    }

    /// May `block` be the block of this grant (a read, or a transfer's trailer)?
    pub fn check_block(&self, block: &BlockId) -> Result<(), TokenError> {
        match self.block {
            Some(b) if b == *block => Ok(()),
            _ => Err(TokenError::Denied(format!(
                "the token is not for block {block}"
            ))),
        }
    }

    /// May `block` be read?
    pub fn check_read(&self, block: &BlockId) -> Result<(), TokenError> {
        self.want(Access::Read)?;
        self.check_block(block)
    }

    /// May datanode `me` send `block` to `targets` (`TransferBlock`, or the namenode's
    /// replicate command)?
    pub fn check_transfer_source(
        &self,
        me: &DatanodeId,
        block: &BlockId,
        targets: &[Location],
    ) -> Result<(), TokenError> {
        self.want(Access::Transfer)?;
        self.check_block(block)?;
        if self.source != Some(*me) {
            return Err(TokenError::Denied(
                "the token names another source datanode".into(),
            ));
        }
        if targets.is_empty() || !is_subsequence(targets, &self.pipeline) {
            return Err(TokenError::Denied(
                "the targets are not the token's pipeline".into(),
            ));
        }
        Ok(())
    }
}

/// `me` must be in `pipeline`, and `downstream` an ordered sub-sequence of the nodes
/// after it (id and address alike): so a stream can skip nodes (a pipeline's survivors)
/// but never add, reorder or repeat one, nor name an address the namenode did not.
pub fn check_pipeline(
    pipeline: &[Location],
    me: &DatanodeId,
    downstream: &[Location],
) -> Result<(), String> {
    let Some(at) = pipeline.iter().position(|l| l.id == *me) else {
        return Err(format!(
            "this datanode ({me}) is not in the token's pipeline"
        ));
    };
    if !is_subsequence(downstream, &pipeline[at + 1..]) {
        return Err("the downstream list is not the rest of the token's pipeline".into());
    }
    Ok(())
}

/// Whether `part` appears in `whole` in order (not necessarily contiguous).
fn is_subsequence(part: &[Location], whole: &[Location]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|p| rest.any(|w| w == p))
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no block access token")]
    Missing,
    #[error("no block keys from the namenode yet")]
    NoKeys,
    #[error("signed by unknown or expired key {0}")]
    UnknownKey(u64),
    #[error("bad signature")]
    BadMac,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("expired {ago_ms} ms ago")]
    Expired { ago_ms: u64 },
    #[error("{0}")]
    Denied(String),
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Self {
        let message = format!("block access token refused: {e}");
        match e {
            // Transient: another replica, or this one a heartbeat later, may serve.
            TokenError::NoKeys => Status::unavailable(message),
            _ => Status::permission_denied(message),
        }
    }
}

/// The keys a datanode verifies tokens with: every key the namenode sent that has not
/// expired (a namenode restart brings new keys, and tokens signed before it stay valid
/// until their key expires). Bounded by [`MAX_KEYS`].
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<u64, BlockKey>>,
}

impl KeyRing {
    /// Adds `keys` (a Register or Heartbeat reply's), drops expired ones and, past
    /// [`MAX_KEYS`], the soonest to expire. A malformed key is skipped.
    pub fn learn(&self, keys: &[pb::BlockKey], now_ms: u64) {
        let mut ring = self.keys.write().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            match BlockKey::try_from(k) {
                Ok(k) => {
                    ring.insert(k.id, k);
                }
                Err(e) => tracing::warn!(key = k.id, error = %e, "malformed block key ignored"),
            }
        }
        ring.retain(|_, k| k.expires_ms > now_ms);
        if ring.len() > MAX_KEYS {
            let mut by_expiry: Vec<(u64, u64)> =
                ring.values().map(|k| (k.expires_ms, k.id)).collect();
            by_expiry.sort_unstable();
            for (_, id) in &by_expiry[..ring.len() - MAX_KEYS] {
                ring.remove(id);
            }
        }
    }

    /// The id of the key that expires last (what the namenode signs with now), 0 for
    /// none.
    pub fn newest(&self) -> u64 {
        let ring = self.keys.read().unwrap_or_else(|e| e.into_inner());
        ring.values()
            .max_by_key(|k| (k.expires_ms, k.id))
            .map_or(0, |k| k.id)
    }

    /// The grant `token` carries, if a known key signed it and it has not expired.
    pub fn verify(&self, token: Option<&pb::BlockToken>, now_ms: u64) -> Result<Grant, TokenError> {
        let token = match token {
            Some(t) if !t.grant.is_empty() || !t.mac.is_empty() => t,
            _ => return Err(TokenError::Missing),
        };
        if token.grant.len() > MAX_GRANT_LEN {
            return Err(TokenError::Malformed("grant too long".into()));
        }
        let mut mac = {
            let ring = self.keys.read().unwrap_or_else(|e| e.into_inner());
            if ring.is_empty() {
                return Err(TokenError::NoKeys);
            }
            match ring.get(&token.key_id) {
                Some(k) if k.expires_ms > now_ms => k.mac(),
                _ => return Err(TokenError::UnknownKey(token.key_id)),
            }
        };
        mac.update(&token.grant);
        // Constant-time comparison.
        mac.verify_slice(&token.mac)
            .map_err(|_| TokenError::BadMac)?;
        let grant = pb::BlockGrant::decode(token.grant.as_ref())
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let grant = Grant::from_wire(&grant)?;
        if grant.expires_ms <= now_ms {
            return Err(TokenError::Expired {
                ago_ms: now_ms - grant.expires_ms,
            });
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn key(id: u64) -> BlockKey {
        BlockKey::new(id, [id as u8; SECRET_LEN], NOW + 60_000)
    }

    fn ring(keys: &[BlockKey]) -> KeyRing {
        let r = KeyRing::default();
        r.learn(&keys.iter().map(BlockKey::to_wire).collect::<Vec<_>>(), NOW);
        r
    }

    fn loc(n: u8) -> Location {
        Location {
            id: DatanodeId::random(),
            address: format!("10.0.0.{n}:9866"),
        }
    }

    fn block() -> BlockId {
        BlockId::of(b"block")
    }

    /// A token with its MAC or grant changed by `f`.
    fn tampered(f: impl FnOnce(&mut pb::BlockToken)) -> pb::BlockToken {
        let mut t = Grant::read(block(), NOW + 1).sign(&key(1));
        f(&mut t);
        t
    }

    /// A case of `sign_and_verify`: its name, the keys the ring holds, the token, and
    /// what verifying it gives.
    type VerifyCase = (
        &'static str,
        Vec<BlockKey>,
        Option<pb::BlockToken>,
        Result<Grant, TokenError>,
    );

    #[test]
    fn sign_and_verify() {
        let write = Grant::write("u", &[loc(1), loc(2)], 64 << 20, NOW + 1);
        let other_key = BlockKey::new(1, [9; SECRET_LEN], NOW + 60_000);
        let with_grant = |g: pb::BlockGrant| {
            let mut t = Grant::read(block(), NOW + 1).sign(&key(1));
            t.grant = g.encode_to_vec().into();
            t
        };
        let cases: Vec<VerifyCase> = vec![
            (
                "valid",
                vec![key(1)],
                Some(write.sign(&key(1))),
                Ok(write.clone()),
            ),
            (
                "a second key",
                vec![key(1), key(2)],
                Some(write.sign(&key(2))),
                Ok(write.clone()),
            ),
            ("no token", vec![key(1)], None, Err(TokenError::Missing)),
            (
                "an empty token",
                vec![key(1)],
                Some(pb::BlockToken::default()),
                Err(TokenError::Missing),
            ),
            (
                "no keys yet",
                vec![],
                Some(write.sign(&key(1))),
                Err(TokenError::NoKeys),
            ),
            (
                "unknown key",
                vec![key(1)],
                Some(write.sign(&key(3))),
                Err(TokenError::UnknownKey(3)),
            ),
            (
                "same id, another secret (forged)",
                vec![key(1)],
                Some(write.sign(&other_key)),
                Err(TokenError::BadMac),
            ),
            (
                "flipped mac bit",
                vec![key(1)],
                Some(tampered(|t| {
                    let mut m = t.mac.to_vec();
                    m[0] ^= 1;
                    t.mac = m.into();
                })),
                Err(TokenError::BadMac),
            ),
            (
                "truncated mac",
                vec![key(1)],
                Some(tampered(|t| t.mac = t.mac.slice(..16))),
                Err(TokenError::BadMac),
            ),
            (
                "grant widened after signing",
                vec![key(1)],
                Some(with_grant(pb::BlockGrant {
                    expires_ms: u64::MAX,
                    ..Grant::read(block(), NOW + 1).to_wire()
                })),
                Err(TokenError::BadMac),
            ),
            (
                "expired",
                vec![key(1)],
                Some(Grant::read(block(), NOW - 5).sign(&key(1))),
                Err(TokenError::Expired { ago_ms: 5 }),
            ),
            (
                "expires now",
                vec![key(1)],
                Some(Grant::read(block(), NOW).sign(&key(1))),
                Err(TokenError::Expired { ago_ms: 0 }),
            ),
            (
                "signed garbage",
                vec![key(1)],
                Some({
                    let garbage = b"\xff\xff\xff";
                    let mut mac = key(1).mac();
                    mac.update(garbage);
                    pb::BlockToken {
                        key_id: 1,
                        grant: bytes::Bytes::from_static(garbage),
                        mac: mac.finalize().into_bytes().to_vec().into(),
                    }
                }),
                Err(TokenError::Malformed(
                    "failed to decode Protobuf message: invalid varint".into(),
                )),
            ),
        ];
        for (name, keys, token, want) in cases {
            assert_eq!(ring(&keys).verify(token.as_ref(), NOW), want, "{name}");
        }
    }

    #[test]
    fn expired_keys_are_dropped_and_the_ring_is_bounded() {
        let r = ring(&[key(1)]);
        assert_eq!(r.newest(), 1);
        let token = Grant::read(block(), NOW + 1).sign(&key(1));
        // The key's own expiry ends its tokens, whatever they claim.
        let later = key(1).expires_ms;
        assert_eq!(
            r.verify(Some(&token), later),
            Err(TokenError::UnknownKey(1))
        );
        r.learn(&[], later);
        assert_eq!(r.newest(), 0);
        let many: Vec<pb::BlockKey> = (1..=(MAX_KEYS as u64 + 10))
            .map(|i| BlockKey::new(i, [1; SECRET_LEN], NOW + i).to_wire())
            .collect();
        r.learn(&many, NOW);
        assert_eq!(r.keys.read().unwrap().len(), MAX_KEYS);
        assert_eq!(
            r.newest(),
            MAX_KEYS as u64 + 10,
            "the longest-lived are kept"
        );
        // A malformed key is skipped, the others learnt.
        r.learn(
            &[
                pb::BlockKey {
                    id: 999,
                    secret: bytes::Bytes::from_static(b"short"),
                    expires_ms: u64::MAX,
                },
                key(1000).to_wire(),
            ],
            NOW,
        );
        assert!(r.keys.read().unwrap().contains_key(&1000));
        assert!(!r.keys.read().unwrap().contains_key(&999));
    }

    #[test]
    fn pipelines() {
        let (a, b, c, d) = (loc(1), loc(2), loc(3), loc(4));
        let mut moved = b.clone();
        moved.address = "169.254.169.254:80".into();
        let issued = [a.clone(), b.clone(), c.clone()];
        let cases: Vec<(&str, &Location, Vec<Location>, bool)> = vec![
            ("head, the rest", &a, vec![b.clone(), c.clone()], true),
            ("middle, the rest", &b, vec![c.clone()], true),
            ("tail", &c, vec![], true),
            ("head skipping a failed node", &a, vec![c.clone()], true),
            ("head alone", &a, vec![], true),
            ("not in the pipeline", &d, vec![], false),
            (
                "an extra node",
                &a,
                vec![b.clone(), c.clone(), d.clone()],
                false,
            ),
            ("reordered", &a, vec![c.clone(), b.clone()], false),
            ("a node twice", &a, vec![b.clone(), b.clone()], false),
            ("back to itself", &a, vec![a.clone(), a.clone()], false),
            ("a node before me", &b, vec![a.clone()], false),
            ("another address for a node", &a, vec![moved], false),
        ];
        for (name, me, downstream, ok) in cases {
            assert_eq!(
                check_pipeline(&issued, &me.id, &downstream).is_ok(),
                ok,
                "{name}"
            );
        }
    }

    #[test]
    fn writes_reads_and_transfers() {
        let (a, b, c) = (loc(1), loc(2), loc(3));
        let write = Grant::write("u1", &[a.clone(), b.clone()], 1000, NOW);
        assert!(
            write
                .check_write(&a.id, std::slice::from_ref(&b), "u1", 1000, false)
                .is_ok()
        );
        for (name, r) in [
            (
                "another upload",
                write.check_write(&a.id, std::slice::from_ref(&b), "u2", 10, false),
            ),
            (
                "too long",
                write.check_write(&a.id, std::slice::from_ref(&b), "u1", 1001, false),
            ),
            (
                "74 GB",
                write.check_write(&a.id, &[], "u1", 74 << 30, false),
            ),
            (
                "not in the pipeline",
                write.check_write(&c.id, &[], "u1", 10, false),
            ),
            ("read with it", write.check_read(&block())),
            (
                "transfer with it",
                write.check_transfer_source(&a.id, &block(), std::slice::from_ref(&b)),
            ),
        ] {
            assert!(matches!(r, Err(TokenError::Denied(_))), "{name}: {r:?}");
        }

        let read = Grant::read(block(), NOW);
        assert!(read.check_read(&block()).is_ok());
        assert!(read.check_read(&BlockId::of(b"other")).is_err());
        assert!(read.check_write(&a.id, &[], "", 0, true).is_err());

        let transfer = Grant::transfer(block(), 500, c.id, &[a.clone(), b.clone()], NOW);
        assert!(
            transfer
                .check_transfer_source(&c.id, &block(), &[a.clone(), b.clone()])
                .is_ok()
        );
        assert!(
            transfer
                .check_write(&a.id, std::slice::from_ref(&b), "", 500, true)
                .is_ok()
        );
        assert!(transfer.check_block(&block()).is_ok());
        for (name, r) in [
            (
                "another source",
                transfer.check_transfer_source(&a.id, &block(), std::slice::from_ref(&b)),
            ),
            (
                "another block",
                transfer.check_transfer_source(&c.id, &BlockId::of(b"x"), std::slice::from_ref(&a)),
            ),
            (
                "no targets",
                transfer.check_transfer_source(&c.id, &block(), &[]),
            ),
            (
                "other targets",
                transfer.check_transfer_source(&c.id, &block(), std::slice::from_ref(&c)),
            ),
            (
                "as a batch",
                transfer.check_write(&a.id, std::slice::from_ref(&b), "", 500, false),
            ),
            (
                "for an upload",
                transfer.check_write(&a.id, &[], "u1", 500, true),
            ),
            ("longer", transfer.check_write(&a.id, &[], "", 501, true)),
            (
                "trailer of another block",
                transfer.check_block(&BlockId::of(b"x")),
            ),
            ("read with it", transfer.check_read(&block())),
        ] {
            assert!(matches!(r, Err(TokenError::Denied(_))), "{name}: {r:?}");
        }
    }

    #[test]
    fn refusals_are_permission_denied_except_missing_keys() {
        assert_eq!(
            Status::from(TokenError::Missing).code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            Status::from(TokenError::NoKeys).code(),
            tonic::Code::Unavailable
        );
        let m = Status::from(TokenError::BadMac);
        assert_eq!(m.message(), "block access token refused: bad signature");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let k = BlockKey::new(5, [0xAB; SECRET_LEN], 9);
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
    }
}
