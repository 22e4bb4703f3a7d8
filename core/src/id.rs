//! Validated identifiers.
//!
//! Blocks and files are named by the SHA-256 of their content; on the wire they are 32
//! raw bytes, for people and paths 64 lowercase hex characters. Parsing accepts exactly
//! those forms and nothing else: no uppercase, no prefix, no whitespace. That strictness
//! is what makes [`crate::cas`] paths safe to derive (a parsed id cannot contain `/` or
//! `..`).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id must be 64 lowercase hex characters, got {len} characters")]
    HexLength { kind: &'static str, len: usize },
    #[error("{kind} id must be 64 lowercase hex characters (0-9, a-f)")]
    HexDigit { kind: &'static str },
    #[error("{kind} id must be 32 bytes, got {len}")]
    RawLength { kind: &'static str, len: usize },
    #[error("datanode id must be a UUID: {0}")]
    Uuid(String),
}

/// A SHA-256 digest: the shared representation of [`BlockId`] and [`FileId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Digest32([u8; 32]);

impl Digest32 {
    fn parse_hex(kind: &'static str, s: &str) -> Result<Self, IdError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(IdError::HexLength {
                kind,
                len: s.chars().count(),
            });
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0]).ok_or(IdError::HexDigit { kind })? << 4)
                | nibble(pair[1]).ok_or(IdError::HexDigit { kind })?;
        }
        Ok(Self(out))
    }

    fn from_slice(kind: &'static str, b: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| IdError::RawLength { kind, len: b.len() })?;
        Ok(Self(arr))
    }
}

/// Lowercase hex digits only: uppercase is refused so that one id has one spelling.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

macro_rules! digest_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Digest32);

        impl $name {
            /// Parses 64 lowercase hex characters.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Digest32::parse_hex($kind, s).map(Self)
            }

            /// Takes the 32 raw bytes of a digest, as carried on the wire.
            pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
                Digest32::from_slice($kind, b).map(Self)
            }

            /// Wraps a digest computed locally.
            pub const fn from_bytes(b: [u8; 32]) -> Self {
                Self(Digest32(b))
            }

            /// The SHA-256 of `data`.
            pub fn of(data: &[u8]) -> Self {
                Self::from_bytes(Sha256::digest(data).into())
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &(self.0).0
            }

            /// 64 lowercase hex characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.as_bytes())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; 64];
                hex::encode_to_slice(self.as_bytes(), &mut buf).expect("64 bytes hold 32 as hex");
                f.write_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_id!(
    /// A block: the SHA-256 of its bytes. Identical blocks share one id (dedup).
    BlockId,
    "block"
);
digest_id!(
    /// A file: the SHA-256 of its whole content, the `hash` users see.
    FileId,
    "file"
);

/// A datanode's persistent identity, generated once and kept in `<data>/VERSION`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatanodeId(uuid::Uuid);

impl DatanodeId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses the canonical hyphenated UUID form only (what [`fmt::Display`] writes).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() != 36 {
            return Err(IdError::Uuid(format!(
                "expected 36 characters, got {}",
                s.len()
            )));
        }
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| IdError::Uuid(e.to_string()))
    }
}

impl FromStr for DatanodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl fmt::Display for DatanodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for DatanodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatanodeId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn check(input: &str, ok: bool) {
        assert_eq!(
            BlockId::parse(input).is_ok(),
            ok,
            "BlockId::parse({input:?})"
        );
        assert_eq!(FileId::parse(input).is_ok(), ok, "FileId::parse({input:?})");
    }

    #[test]
    fn hex_ids_accept_only_64_lowercase_hex() {
        check(GOOD, true);
        check(&"0".repeat(64), true);
        check(&"f".repeat(64), true);
        check(&GOOD.to_uppercase(), false);
        check(&GOOD[..63], false);
        check(&format!("{GOOD}0"), false);
        check("", false);
        check(&format!("../{}", &GOOD[3..]), false);
        check(&format!("{}/x", &GOOD[..62]), false);
        check(&format!("{}g", &GOOD[..63]), false);
        check(&format!(" {}", &GOOD[1..]), false);
        check(&format!("0x{}", &GOOD[2..]), false);
        // 62 ASCII + one 2-byte char: 64 bytes, but not hex.
        check(&format!("{}é", &GOOD[..62]), false);
        check(&"é".repeat(32), false);
    }

    #[test]
    fn display_round_trips_and_matches_sha256() {
        let id = BlockId::of(b"");
        assert_eq!(id.to_string(), GOOD);
        assert_eq!(BlockId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(id.to_hex(), GOOD);
        assert_eq!(BlockId::from_slice(id.as_bytes()).unwrap(), id);
    }

    #[test]
    fn raw_ids_must_be_32_bytes() {
        assert!(BlockId::from_slice(&[0; 31]).is_err());
        assert!(BlockId::from_slice(&[0; 33]).is_err());
        assert!(FileId::from_slice(&[]).is_err());
        assert!(FileId::from_slice(&[7; 32]).is_ok());
    }

    #[test]
    fn datanode_ids_are_canonical_uuids() {
        let id = DatanodeId::random();
        assert_eq!(DatanodeId::parse(&id.to_string()).unwrap(), id);
        assert!(DatanodeId::parse("").is_err());
        assert!(DatanodeId::parse("../../etc/passwd").is_err());
        assert!(DatanodeId::parse(&id.to_string().replace('-', "")).is_err());
        assert!(DatanodeId::parse(&format!("{{{id}}}")).is_err());
    }
}
