//! Virtual-hosted-style addressing: `Host: <bucket>.<base domain>` names the bucket
//! when `<base domain>` is one of `--s3-domain`; every other host (an IP address,
//! `localhost`, a Kubernetes service name, a base domain itself) is path-style. s3s's
//! own parsers take an unknown host for a bucket name (a CNAME bucket), which would
//! turn `localhost:9000` into a bucket; this one never guesses.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// The base domains of `--s3-domain`, lowercase, without a port.
#[derive(Debug, Clone)]
pub struct Domains(Vec<String>);

impl Domains {
    /// `domains` as given (a port, if any, is ignored: the port does not name a bucket).
    pub fn new(domains: &[String]) -> Self {
        Self(
            domains
                .iter()
                .map(|d| {
                    strip_port(d.trim())
                        .trim_end_matches('.')
                        .to_ascii_lowercase()
                })
                .filter(|d| !d.is_empty())
                .collect(),
        )
    }

    /// The bucket a `Host` header names, if it is `<bucket>.<one of the domains>`.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = strip_port(host).trim_end_matches('.');
        self.0.iter().find_map(|d| {
            let cut = name.len().checked_sub(d.len() + 1)?;
            let (bucket, rest) = name.split_at(cut);
            (rest.len() == d.len() + 1
                && rest.as_bytes()[0] == b'.'
                && rest[1..].eq_ignore_ascii_case(d)
                && !bucket.is_empty())
            .then_some(bucket)
        })
    }
}

/// `host` without a trailing `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    }
}

impl S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(host).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subdomains_of_a_configured_domain_name_buckets() {
        let d = Domains::new(&["s3.example.com".to_owned(), "LOCALHOST:9000".to_owned()]);
        for (host, want) in [
            ("photos.s3.example.com", Some("photos")),
            ("photos.s3.example.com:9000", Some("photos")),
            ("my.dotted.bucket.s3.example.com", Some("my.dotted.bucket")),
            ("Photos.S3.Example.COM", Some("Photos")),
            ("b.localhost:9000", Some("b")),
            ("s3.example.com", None),
            ("s3.example.com:9000", None),
            ("evils3.example.com", None),
            (".s3.example.com", None),
            ("localhost:9000", None),
            ("127.0.0.1:9000", None),
            ("kdfs-gateway.kdfs.svc:9000", None),
        ] {
            assert_eq!(d.bucket_of(host), want, "{host}");
        }
        assert_eq!(Domains::new(&[]).bucket_of("b.localhost"), None);
    }
}
