//! ETags. S3 clients check a 32-hex-digit ETag against the MD5 of what they sent (and
//! `aws s3 sync`, rclone and s3cmd compare it with local files), so an ETag looks like
//! an MD5 only when it is one: a single PUT's ETag is the real MD5 of its bytes,
//! computed while they stream in. A multipart object's is S3's own form,
//! `<md5 of the parts' MD5s>-<number of parts>`, which clients know is not the
//! content's MD5.

use md5::{Digest, Md5};

/// The ETag of a single PUT: the content's MD5 in hex.
pub fn of_md5(md5: &[u8; 16]) -> String {
    hex::encode(md5)
}

/// The ETag of a multipart object from its parts' ETags (each a hex MD5), in order.
/// `None` if a part's ETag is not a hex MD5.
pub fn multipart<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut h = Md5::new();
    let mut n = 0usize;
    for p in parts {
        let raw = hex::decode(p.trim_matches('"')).ok()?;
        if raw.len() != 16 {
            return None;
        }
        h.update(&raw);
        n += 1;
    }
    Some(format!("{}-{n}", hex::encode(h.finalize())))
}

/// The value of an ETag without its quotes (clients send both forms).
pub fn unquoted(etag: &str) -> &str {
    etag.trim().trim_start_matches("W/").trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etags_are_the_md5_of_the_part_md5s() {
        // Two parts "a" and "b": the MD5 of their concatenated raw MD5s, then "-2".
        let a = of_md5(&Md5::digest(b"a").into());
        let b = of_md5(&Md5::digest(b"b").into());
        let mut raw = Vec::new();
        raw.extend_from_slice(&Md5::digest(b"a"));
        raw.extend_from_slice(&Md5::digest(b"b"));
        let want = format!("{}-2", hex::encode(Md5::digest(&raw)));
        assert_eq!(multipart([a.as_str(), b.as_str()]), Some(want));
        assert_eq!(multipart(["nothex"]), None);
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted("W/\"abc\""), "abc");
    }
}
