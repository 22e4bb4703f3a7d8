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
#[path = "block_token_tests.rs"]
mod tests;
