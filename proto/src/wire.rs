//! Checked conversion from wire values to domain types.
//!
//! Every id that arrives over the network passes through one of these functions before
//! it touches a map or a path. A refusal is `Status::invalid_argument` naming the field,
//! so a caller sees which part of its request was wrong.

use kdfs_core::{BlockId, DatanodeId, FileId};
use tonic::Status;

use crate::pb;

/// Parses a 32-byte block id from field `field`.
pub fn block_id(field: &str, raw: &[u8]) -> Result<BlockId, Status> {
    BlockId::from_slice(raw).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Parses a 32-byte file id from field `field`.
pub fn file_id(field: &str, raw: &[u8]) -> Result<FileId, Status> {
    FileId::from_slice(raw).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Parses a datanode UUID from field `field`.
pub fn datanode_id(field: &str, raw: &str) -> Result<DatanodeId, Status> {
    DatanodeId::parse(raw).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Parses every block id of a repeated field, refusing the whole list on one bad entry.
pub fn block_ids<'a>(
    field: &str,
    raw: impl IntoIterator<Item = &'a bytes::Bytes>,
) -> Result<Vec<BlockId>, Status> {
    raw.into_iter().map(|b| block_id(field, b)).collect()
}

/// A checked `host:port` address: non-empty host of safe characters, numeric port.
pub fn address(field: &str, raw: &str) -> Result<String, Status> {
    let bad = || Status::invalid_argument(format!("{field}: {raw:?} is not a host:port address"));
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(raw.to_owned())
}

/// A datanode location with its id and address checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub id: DatanodeId,
    pub address: String,
}

impl TryFrom<&pb::DatanodeLocation> for Location {
    type Error = Status;
    fn try_from(l: &pb::DatanodeLocation) -> Result<Self, Status> {
        Ok(Self {
            id: datanode_id("location.id", &l.id)?,
            address: address("location.address", &l.address)?,
        })
    }
}

impl From<&Location> for pb::DatanodeLocation {
    fn from(l: &Location) -> Self {
        pb::DatanodeLocation {
            id: l.id.to_string(),
            address: l.address.clone(),
        }
    }
}

/// Raw bytes of an id for the wire.
pub fn raw(id: &[u8; 32]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(block_id("b", &[0; 32]).is_ok());
        let e = block_id("block_id", &[0; 3]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("block_id"));
        assert!(file_id("f", &[0; 33]).is_err());
        assert!(datanode_id("d", "x").is_err());
    }

    #[test]
    fn addresses_are_checked() {
        for ok in ["127.0.0.1:9866", "dn-0.datanodes.kdfs.svc:9866", "[::1]:80"] {
            assert!(address("a", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            ":80",
            "h:0",
            "h:99999",
            "h/../x:80",
            "h x:80",
            "h:80\n",
        ] {
            assert!(address("a", bad).is_err(), "{bad:?}");
        }
    }
}
