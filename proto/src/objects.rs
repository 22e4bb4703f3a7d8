//! The bucket/key namespace's shared rules (service `ObjectNamespace`, docs/objects.md):
//! the S3 error codes its statuses carry, and the checks of bucket names, keys, user
//! metadata, upload ids and part numbers that the namenode applies to every call and
//! the gateway may apply early.
//!
//! A refusal travels as a gRPC status whose metadata key [`CODE_HEADER`] names its
//! [`Code`], so a caller maps it to an S3 error without parsing the message.

use tonic::Status;
use tonic::metadata::MetadataValue;

/// The status metadata key naming a refusal's [`Code`].
pub const CODE_HEADER: &str = "kdfs-namespace-error";
/// Longest key, in bytes of UTF-8 (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;
/// Most bytes of user metadata (names and values together), as S3.
pub const MAX_USER_METADATA: usize = 2048;
/// Longest etag the namenode stores.
pub const MAX_ETAG_LEN: usize = 128;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Highest part number (parts are numbered from 1).
pub const MAX_PART_NUMBER: u32 = 10_000;
/// Most entries of one listing page and most keys of one batch delete.
pub const MAX_PAGE: u32 = 1000;

/// Why the namespace refused a call, by S3 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    /// A file a call names (by its hash) is not live.
    NoSuchContent,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    InvalidBucketName,
    KeyTooLongError,
    MetadataTooLarge,
    InvalidPart,
    InvalidPartOrder,
    EntityTooSmall,
    InvalidArgument,
    /// A conditional write whose condition did not hold ([`WriteCondition`]).
    PreconditionFailed,
}

impl Code {
    const ALL: [Code; 14] = [
        Code::NoSuchBucket,
        Code::NoSuchKey,
        Code::NoSuchUpload,
        Code::NoSuchContent,
        Code::BucketAlreadyOwnedByYou,
        Code::BucketNotEmpty,
        Code::InvalidBucketName,
        Code::KeyTooLongError,
        Code::MetadataTooLarge,
        Code::InvalidPart,
        Code::InvalidPartOrder,
        Code::EntityTooSmall,
        Code::InvalidArgument,
        Code::PreconditionFailed,
    ];

    /// The S3 error code's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NoSuchBucket => "NoSuchBucket",
            Code::NoSuchKey => "NoSuchKey",
            Code::NoSuchUpload => "NoSuchUpload",
            Code::NoSuchContent => "NoSuchContent",
            Code::BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            Code::BucketNotEmpty => "BucketNotEmpty",
            Code::InvalidBucketName => "InvalidBucketName",
            Code::KeyTooLongError => "KeyTooLongError",
            Code::MetadataTooLarge => "MetadataTooLarge",
            Code::InvalidPart => "InvalidPart",
            Code::InvalidPartOrder => "InvalidPartOrder",
            Code::EntityTooSmall => "EntityTooSmall",
            Code::InvalidArgument => "InvalidArgument",
            Code::PreconditionFailed => "PreconditionFailed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The gRPC code a refusal of this kind travels with.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Code::NoSuchBucket | Code::NoSuchKey | Code::NoSuchUpload | Code::NoSuchContent => {
                tonic::Code::NotFound
            }
            Code::BucketAlreadyOwnedByYou => tonic::Code::AlreadyExists,
            Code::BucketNotEmpty | Code::PreconditionFailed => tonic::Code::FailedPrecondition,
            _ => tonic::Code::InvalidArgument,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// S3's conditional write on a key (`If-None-Match`, `If-Match`; each empty, `*` or an
/// ETag, quotes ignored), checked against the key's current object in the transaction
/// that writes it.
// Serde: it travels inside the namenode's Raft log entries (ObjectOp).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteCondition {
    pub if_none_match: String,
    pub if_match: String,
}

impl WriteCondition {
    /// Whether the write may go ahead over the key's current object's ETag (`None`:
    /// the key holds none); `PreconditionFailed` if not (`NoSuchKey` for `If-Match`
    /// on a key that holds nothing, as S3).
    pub fn check(&self, current: Option<&str>) -> Result<(), Refusal> {
        let unquoted = |e: &str| {
            e.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        };
        let matches = |want: &str| match current {
            None => false,
            Some(etag) => want.trim() == "*" || unquoted(want) == unquoted(etag),
        };
        let failed = |why: &str| Err(Refusal::new(Code::PreconditionFailed, why));
        if !self.if_match.is_empty() && current.is_none() {
            // S3 answers a conditional overwrite of nothing as a missing key.
            return Err(Refusal::new(
                Code::NoSuchKey,
                "If-Match: the key holds no object",
            ));
        }
        if !self.if_match.is_empty() && !matches(&self.if_match) {
            return failed("If-Match: the key's object has another ETag");
        }
        if !self.if_none_match.is_empty() && matches(&self.if_none_match) {
            return failed(match current {
                Some(_) if self.if_none_match.trim() == "*" => {
                    "If-None-Match: *: the key already holds an object"
                }
                _ => "If-None-Match: the key's object has that ETag",
            });
        }
        Ok(())
    }
}

/// A refusal: its code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The status carrying this refusal.
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.code.grpc(), self.message.clone());
        status
            .metadata_mut()
            .insert(CODE_HEADER, MetadataValue::from_static(self.code.as_str()));
        status
    }

    /// The refusal a status carries, if it carries one.
    pub fn from_status(status: &Status) -> Option<Self> {
        let code = status.metadata().get(CODE_HEADER)?.to_str().ok()?;
        Some(Self::new(Code::parse(code)?, status.message()))
    }
}

type Checked = Result<(), Refusal>;

/// S3's bucket naming rules (general purpose buckets).
pub fn check_bucket(name: &str) -> Checked {
    let bad = |why: &str| {
        Err(Refusal::new(
            Code::InvalidBucketName,
            format!("bucket name {:?} {why}", truncate(name)),
        ))
    };
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may hold only lowercase letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not hold '..', '.-' or '-.'");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    for prefix in ["xn--", "sthree-"] {
        if name.starts_with(prefix) {
            return bad(&format!("must not start with {prefix:?}"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3"] {
        if name.ends_with(suffix) {
            return bad(&format!("must not end with {suffix:?}"));
        }
    }
    Ok(())
}

/// A key: 1 to [`MAX_KEY_LEN`] bytes (a `String` is UTF-8 already).
pub fn check_key(key: &str) -> Checked {
    if key.is_empty() {
        return Err(Refusal::new(Code::InvalidArgument, "the key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Refusal::new(
            Code::KeyTooLongError,
            format!(
                "the key is {} bytes, at most {MAX_KEY_LEN} are allowed",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// User metadata: names that are lowercase HTTP header names (without the
/// `x-amz-meta-` prefix), unique, at most [`MAX_USER_METADATA`] bytes of names and
/// values together; values without control characters.
pub fn check_user_metadata<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Checked {
    let mut total = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in entries {
        // An HTTP header name's characters (RFC 9110 `tchar`), lowercased as HTTP/2
        // carries them.
        let tchar =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(tchar) {
            return Err(Refusal::new(
                Code::InvalidArgument,
                format!(
                    "user metadata name {:?} is not a lowercase HTTP header name",
                    truncate(name)
                ),
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Refusal::new(
                Code::InvalidArgument,
                format!("user metadata {name:?} holds a control character"),
            ));
        }
        if !seen.insert(name) {
            return Err(Refusal::new(
                Code::InvalidArgument,
                format!("user metadata {name:?} is given twice"),
            ));
        }
        total += name.len() + value.len();
    }
    if total > MAX_USER_METADATA {
        return Err(Refusal::new(
            Code::MetadataTooLarge,
            format!("user metadata is {total} bytes, at most {MAX_USER_METADATA} are allowed"),
        ));
    }
    Ok(())
}

/// An etag: at most [`MAX_ETAG_LEN`] printable ASCII bytes.
pub fn check_etag(etag: &str) -> Checked {
    if etag.len() > MAX_ETAG_LEN || !etag.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Refusal::new(
            Code::InvalidArgument,
            format!("etag is not at most {MAX_ETAG_LEN} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// A content type: at most [`MAX_CONTENT_TYPE_LEN`] bytes, no control characters.
pub fn check_content_type(ct: &str) -> Checked {
    if ct.len() > MAX_CONTENT_TYPE_LEN || ct.chars().any(char::is_control) {
        return Err(Refusal::new(
            Code::InvalidArgument,
            format!(
                "content type is not at most {MAX_CONTENT_TYPE_LEN} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// An upload id: exactly 32 lowercase hex characters. Anything else names no upload.
pub fn check_upload_id(id: &str) -> Checked {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    Err(Refusal::new(
        Code::NoSuchUpload,
        format!(
            "upload id {:?} is not one this namenode issues",
            truncate(id)
        ),
    ))
}

/// A part number: 1..=[`MAX_PART_NUMBER`].
pub fn check_part_number(n: u32) -> Checked {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        return Ok(());
    }
    Err(Refusal::new(
        Code::InvalidArgument,
        format!("part number {n} is not between 1 and {MAX_PART_NUMBER}"),
    ))
}

/// At most 80 characters of untrusted text, for messages.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_conditions_hold_or_fail_as_s3_says() {
        let cond = |m: &str, n: &str| WriteCondition {
            if_match: m.into(),
            if_none_match: n.into(),
        };
        assert!(cond("", "").check(None).is_ok());
        assert!(cond("", "*").check(None).is_ok());
        assert_eq!(
            cond("", "*").check(Some("e")).unwrap_err().code,
            Code::PreconditionFailed
        );
        assert!(cond("\"e\"", "").check(Some("e")).is_ok());
        assert!(cond("*", "").check(Some("e")).is_ok());
        assert_eq!(cond("*", "").check(None).unwrap_err().code, Code::NoSuchKey);
        assert!(cond("f", "").check(Some("e")).is_err());
        assert!(cond("", "\"e\"").check(Some("e")).is_err());
        assert!(cond("", "f").check(Some("e")).is_ok());
    }

    #[test]
    fn bucket_names_follow_the_s3_rules() {
        for ok in [
            "abc",
            "my-bucket",
            "my.bucket.1",
            "0abc",
            "a".repeat(63).as_str(),
            "1.2.3.4a",
        ] {
            assert_eq!(check_bucket(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "a".repeat(64).as_str(),
            "My-Bucket",
            "my_bucket",
            "-abc",
            "abc-",
            ".abc",
            "a..b",
            "a.-b",
            "a-.b",
            "192.168.1.1",
            "xn--abc",
            "sthree-abc",
            "abc-s3alias",
            "abc--ol-s3",
            "ab/c",
            "ab c",
            "äbc",
        ] {
            let e = check_bucket(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidBucketName, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_one_to_1024_bytes() {
        assert!(check_key("a").is_ok());
        assert!(check_key("dir/ünï cödé %+/x").is_ok());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        // 1024 bytes of two-byte characters is 512 characters: the limit is in bytes.
        assert!(check_key(&"é".repeat(512)).is_ok());
        assert_eq!(
            check_key(&"é".repeat(513)).unwrap_err().code,
            Code::KeyTooLongError
        );
        assert_eq!(
            check_key(&"k".repeat(1025)).unwrap_err().code,
            Code::KeyTooLongError
        );
        assert_eq!(check_key("").unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn user_metadata_is_bounded_and_named_plainly() {
        assert!(check_user_metadata([("color", "blue"), ("x-y_z.1+~", "ünï")]).is_ok());
        let big = "v".repeat(MAX_USER_METADATA);
        for (entries, code) in [
            (vec![("Color", "blue")], Code::InvalidArgument),
            (vec![("", "blue")], Code::InvalidArgument),
            (vec![("a b", "blue")], Code::InvalidArgument),
            (vec![("a:b", "blue")], Code::InvalidArgument),
            (vec![("a", "b\nc")], Code::InvalidArgument),
            (vec![("a", "1"), ("a", "2")], Code::InvalidArgument),
            (vec![("a", big.as_str())], Code::MetadataTooLarge),
        ] {
            assert_eq!(
                check_user_metadata(entries.clone()).unwrap_err().code,
                code,
                "{entries:?}"
            );
        }
    }

    #[test]
    fn upload_ids_part_numbers_and_etags() {
        assert!(check_upload_id("0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "../../../../etc/passwd/aaaaaaaaa",
        ] {
            assert_eq!(check_upload_id(bad).unwrap_err().code, Code::NoSuchUpload);
        }
        assert!(check_part_number(1).is_ok() && check_part_number(10_000).is_ok());
        assert!(check_part_number(0).is_err() && check_part_number(10_001).is_err());
        assert!(check_etag("\"abc-2\"").is_ok());
        assert!(check_etag("a\nb").is_err());
        assert!(check_etag(&"e".repeat(129)).is_err());
    }

    #[test]
    fn refusals_travel_in_status_metadata() {
        let r = Refusal::new(Code::BucketNotEmpty, "bucket b holds objects");
        let status = r.to_status();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(Refusal::from_status(&status), Some(r));
        assert_eq!(Refusal::from_status(&Status::not_found("x")), None);
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
    }
}
