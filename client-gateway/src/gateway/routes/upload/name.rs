//! The name an upload is stored under: what the client sent (a form part's filename,
//! `?name=`, a `Content-Disposition` filename), reduced by one rule for every form so
//! that no name carries a path or a control character.

/// Longest file name kept, in bytes (the namenode's limit).
pub const MAX_NAME_BYTES: usize = 1024;

/// The name kept for a file: the last path component of what the client sent, with
/// control characters removed, at most [`MAX_NAME_BYTES`] bytes; `upload` if empty.
pub fn sanitize_name(raw: &str) -> String {
    // Browsers and curl send `"`, CR and LF in a multipart filename as %22, %0D, %0A
    // (HTML's form encoding; `%` itself is not escaped): undo the quote, drop the rest.
    let decoded = raw
        .replace("%22", "\"")
        .replace("%0D", "")
        .replace("%0A", "");
    let base = decoded.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in base.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let trimmed = out.trim();
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        "upload".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The filename a `Content-Disposition` header value names, unsanitised: the
/// `filename*` parameter (RFC 5987 `charset'lang'percent-encoded`, UTF-8 or ASCII) if
/// present and decodable, else `filename` (a token or a quoted string).
pub fn disposition_filename(value: &str) -> Option<String> {
    let params = disposition_params(value);
    let extended = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("filename*"))
        .and_then(|(_, v)| decode_ext_value(v));
    extended.or_else(|| {
        params
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("filename"))
            .map(|(_, v)| v)
    })
}

/// The `key=value` parameters after the disposition type, quoted strings unquoted.
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = match value.split_once(';') {
        Some((_, r)) => r,
        None => return params,
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some((key, after)) = rest.split_once('=') else {
            return params;
        };
        let after = after.trim_start();
        let (val, tail) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string: `\x` stands for `x`, and it ends at an unescaped `"`.
            let mut val = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &quoted[end..])
        } else {
            let (v, t) = after.split_once(';').unwrap_or((after, ""));
            (v.trim().to_owned(), t)
        };
        params.push((key.trim().to_owned(), val));
        rest = tail;
    }
}

/// An RFC 5987 `ext-value` (`UTF-8''%E2%82%AC%20rates.txt`) decoded, if its charset is
/// UTF-8 or ASCII and its bytes are UTF-8.
fn decode_ext_value(v: &str) -> Option<String> {
    let mut parts = v.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("us-ascii")) {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        for (raw, want) in [
            ("a.txt", "a.txt"),
            ("dir/sub/a.txt", "a.txt"),
            ("C:\\Users\\x\\a.txt", "a.txt"),
            ("bad\r\nname\".txt", "badname\".txt"),
            ("b %22q%22.txt", "b \"q\".txt"),
            ("two%0D%0Alines.txt", "twolines.txt"),
            ("", "upload"),
            ("..", "upload"),
            ("  ", "upload"),
            ("héllo wörld.pdf", "héllo wörld.pdf"),
        ] {
            assert_eq!(sanitize_name(raw), want, "{raw:?}");
        }
        let long = "é".repeat(1000);
        let s = sanitize_name(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.len() >= MAX_NAME_BYTES - 1);
    }

    fn check(header: &str, want: Option<&str>) {
        assert_eq!(
            disposition_filename(header).as_deref(),
            want,
            "Content-Disposition: {header}"
        );
    }

    #[test]
    fn disposition_filenames() {
        for (header, want) in [
            ("attachment; filename=a.txt", Some("a.txt")),
            ("attachment; filename=\"a b.txt\"", Some("a b.txt")),
            ("attachment;filename=\"a;b.txt\"; size=3", Some("a;b.txt")),
            ("inline; FILENAME=\"q\\\"uote.txt\"", Some("q\"uote.txt")),
            ("attachment; name=x; filename=y.bin", Some("y.bin")),
            (
                "attachment; filename=\"euro.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
                Some("€ rates.txt"),
            ),
            ("attachment; filename*=utf-8'en'x%2Fy.txt", Some("x/y.txt")),
            // Undecodable extended values fall back to `filename`.
            (
                "attachment; filename*=latin1''%E9.txt; filename=e.txt",
                Some("e.txt"),
            ),
            ("attachment; filename*=UTF-8''%ZZ", None),
            ("attachment; filename=\"unterminated", Some("unterminated")),
            ("attachment", None),
            ("attachment; size=3", None),
            ("", None),
        ] {
            check(header, want);
        }
    }
}
