//! What a web page may make a visitor's browser do to the gateway (issue 24, finding
//! 12; docs/security.md, "Browsers").
//!
//! - [`cross_origin`]: a mutating request (POST, PUT, DELETE, PATCH) sent by a page of
//!   another origin is refused. A browser says where a request comes from:
//!   `Sec-Fetch-Site` (anything but `same-origin` or `none`, i.e. `cross-site` and
//!   also `same-site`, which covers another port of the same host, is another origin)
//!   and `Origin` (compared, host and port, with the request's own `Host`). A request
//!   with neither header (curl, the kdfs CLI, S3 tools, scripts) is not a browser's
//!   cross-origin request and passes.
//! - [`foreign_host`]: DNS rebinding makes a page of `evil.example` talk to a gateway
//!   on 127.0.0.1 as if it were `evil.example`, which makes the origin checks pass.
//!   A gateway listening on a loopback address therefore answers only requests whose
//!   `Host` is a loopback name or address (`localhost`, `*.localhost`, `127.x.y.z`,
//!   `[::1]`, any port) or one of `--allowed-hosts`.

use axum::http::{HeaderMap, Method, Uri, header};

/// Why a mutating request from a browser is refused, if it is.
pub fn cross_origin(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if !matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) {
        return None;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim();
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Some(format!(
                "cross-origin {method} refused: the browser says this request comes from \
                 another site (Sec-Fetch-Site: {site}); only the gateway's own page may change files"
            ));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("").trim();
    let own = request_host(uri, headers);
    match (origin_authority(origin), &own) {
        (Some(theirs), Some(own)) if same_authority(&theirs, own) => None,
        _ => Some(format!(
            "cross-origin {method} refused: Origin {origin} is not this gateway ({}); \
             only the gateway's own page may change files",
            own.as_deref().unwrap_or("no Host")
        )),
    }
}

/// Why a request's `Host` is refused on a loopback listener, if it is; `allowed` are
/// the `--allowed-hosts` names.
pub fn foreign_host(uri: &Uri, headers: &HeaderMap, allowed: &[String]) -> Option<String> {
    // Without a Host (HTTP/1.0) no browser is involved.
    let host = request_host(uri, headers)?;
    let name = host_name(&host);
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let listed = allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&host) || a.eq_ignore_ascii_case(name));
    if loopback || listed {
        return None;
    }
    Some(format!(
        "Host {host} is not served here: this gateway listens on a loopback address and \
         answers only loopback names (a page on another name reaching it is DNS \
         rebinding); start it with --allowed-hosts {name} to serve that name"
    ))
}

/// The request's own `host[:port]`: the HTTP/2 authority, else the `Host` header.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    uri.authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
}

/// `host[:port]` of an `Origin` (`scheme://host[:port]`); `None` for `null` or junk.
fn origin_authority(origin: &str) -> Option<String> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.trim_end_matches('/');
    (!authority.is_empty() && !authority.contains('/')).then(|| authority.to_owned())
}

/// The host part of `host[:port]` or `[v6]:port` (brackets kept).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Whether two `host[:port]` name the same place. The scheme is not compared: behind a
/// proxy that ends TLS the page's origin is `https://` while the gateway sees HTTP; a
/// missing port matches the default ones (80, 443).
fn same_authority(a: &str, b: &str) -> bool {
    fn split(x: &str) -> (String, Option<&str>) {
        let name = host_name(x);
        let port = x[name.len()..].strip_prefix(':');
        let port = port.filter(|p| !matches!(*p, "80" | "443"));
        (name.to_ascii_lowercase(), port)
    }
    split(a) == split(b)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cross_origin_mutations_are_refused() {
        let uri: Uri = "/upload".parse().unwrap();
        let check = |method: Method, pairs: &[(&'static str, &str)], refused: bool| {
            let got = cross_origin(&method, &uri, &headers(pairs));
            assert_eq!(got.is_some(), refused, "{method} {pairs:?}: {got:?}");
        };
        let host = ("host", "127.0.0.1:8080");
        // No browser headers: curl, the CLI.
        check(Method::POST, &[host], false);
        check(Method::DELETE, &[], false);
        // The gateway's own page.
        check(
            Method::POST,
            &[host, ("origin", "http://127.0.0.1:8080")],
            false,
        );
        check(
            Method::POST,
            &[host, ("sec-fetch-site", "same-origin")],
            false,
        );
        check(Method::POST, &[host, ("sec-fetch-site", "none")], false);
        check(
            Method::POST,
            &[("host", "kdfs.example"), ("origin", "https://kdfs.example")],
            false,
        );
        // Another page.
        check(
            Method::POST,
            &[host, ("origin", "http://evil.example")],
            true,
        );
        check(
            Method::PUT,
            &[host, ("origin", "http://127.0.0.1:3000")],
            true,
        );
        check(Method::DELETE, &[host, ("origin", "null")], true);
        check(
            Method::PATCH,
            &[host, ("sec-fetch-site", "cross-site")],
            true,
        );
        check(Method::POST, &[host, ("sec-fetch-site", "same-site")], true);
        check(
            Method::POST,
            &[
                host,
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:8080"),
            ],
            true,
        );
        // Reads are not mutations.
        check(
            Method::GET,
            &[host, ("origin", "http://evil.example")],
            false,
        );
    }

    #[test]
    fn loopback_listeners_answer_loopback_hosts_only() {
        let uri: Uri = "/info".parse().unwrap();
        let allowed = vec!["kdfs.lan".to_owned(), "nas:8080".to_owned()];
        for (host, refused) in [
            ("localhost:8080", false),
            ("LOCALHOST", false),
            ("app.localhost:8080", false),
            ("127.0.0.1:8080", false),
            ("127.0.0.2", false),
            ("[::1]:8080", false),
            ("kdfs.lan:9999", false),
            ("nas:8080", false),
            ("evil.example:8080", true),
            ("evil.example", true),
            ("nas:9090", true),
            ("10.0.0.1:8080", true),
            ("localhost.evil.example", true),
        ] {
            let got = foreign_host(&uri, &headers(&[("host", host)]), &allowed);
            assert_eq!(got.is_some(), refused, "{host}: {got:?}");
        }
        assert_eq!(foreign_host(&uri, &HeaderMap::new(), &allowed), None);
    }
}
