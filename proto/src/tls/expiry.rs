//! When the certificates a process uses expire: a WARN line well before (at start, once
//! a day, and after every reload), and a gauge of the seconds left for every server's
//! `/metrics`, so a forgotten rotation shows up weeks before peers start refusing the
//! process (`kdfs certs` issues 397-day leaves).
//!
//! The figures are read from the configuration in force ([`Tls::expiry`]), so a reload
//! of rotated files moves them at once.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Tls;

/// A certificate closer than this to its end gets a WARN line.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// How often a running process checks again (besides at start and after a reload).
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(86_400);

/// The gauge every server's `/metrics` carries, one series per certificate.
pub const EXPIRY_METRIC: &str = "kdfs_tls_certificate_expiry_seconds";

/// The end of validity (`notAfter`, seconds since the Unix epoch) of the certificates
/// in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The process's own certificate (the first of its chain).
    pub own: i64,
    /// The CA's (the earliest of `--tls-ca`'s certificates); `None` without a CA.
    pub ca: Option<i64>,
}

/// `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, parsed) =
        X509Certificate::from_der(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// Seconds since the Unix epoch of `t` (negative before it).
fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

impl Expiry {
    /// Each certificate by name (`own`, `ca`) with the seconds it has left at `now`
    /// (negative once expired).
    pub fn seconds_left(&self, now: SystemTime) -> Vec<(&'static str, i64)> {
        let now = unix(now);
        let mut v = vec![("own", self.own - now)];
        if let Some(ca) = self.ca {
            v.push(("ca", ca - now));
        }
        v
    }

    /// What to warn about at `now`: one sentence per certificate that has expired or
    /// has less than [`EXPIRY_WARNING`] left.
    pub fn warnings(&self, now: SystemTime) -> Vec<String> {
        let what = |name: &str| match name {
            "own" => "the certificate this process presents",
            _ => "the CA certificate",
        };
        self.seconds_left(now)
            .into_iter()
            .filter(|(_, left)| *left < EXPIRY_WARNING.as_secs() as i64)
            .map(|(name, left)| {
                if left <= 0 {
                    format!(
                        "{} expired {} days ago: peers refuse it; issue new certificates \
                         (`./deploy.sh rotate-certs` or `kdfs certs`)",
                        what(name),
                        -left / 86_400
                    )
                } else {
                    format!(
                        "{} expires in {} days: issue new certificates before then \
                         (`./deploy.sh rotate-certs` or `kdfs certs`); they are reloaded \
                         without a restart",
                        what(name),
                        left / 86_400
                    )
                }
            })
            .collect()
    }
}

impl Tls {
    /// When the certificates in force expire.
    pub fn expiry(&self) -> Expiry {
        self.loaded().expiry
    }

    /// Logs [`Expiry::warnings`] for the certificates in force, each as a WARN line.
    pub fn warn_if_expiring(&self) {
        let expiry = self.expiry();
        for warning in expiry.warnings(SystemTime::now()) {
            tracing::warn!(cert = %self.cert.display(), "{warning}");
        }
    }
}

/// The end of validity of a chain and its CA bundle, for [`super::build`].
pub(super) fn expiry_of(
    leaf: &CertificateDer<'_>,
    ca: &[CertificateDer<'_>],
) -> Result<Expiry, String> {
    let ca = ca
        .iter()
        .map(not_after)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min();
    Ok(Expiry {
        own: not_after(leaf)?,
        ca,
    })
}

/// The Prometheus text of [`EXPIRY_METRIC`] for each `(use, tls)`: `use` says which of
/// the process's TLS configurations it is (`mtls` for the gRPC links, `https` for the
/// gateway's HTTPS), the `certificate` label whether it is the process's own or the CA.
pub fn metrics_text(sets: &[(&str, &Tls)], now: SystemTime) -> String {
    if sets.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "# HELP {EXPIRY_METRIC} Seconds until a certificate this process uses expires \
         (negative once it has).\n# TYPE {EXPIRY_METRIC} gauge\n"
    );
    for (usage, tls) in sets {
        for (certificate, left) in tls.expiry().seconds_left(now) {
            let _ = writeln!(
                out,
                "{EXPIRY_METRIC}{{use=\"{usage}\",certificate=\"{certificate}\"}} {left}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    const DAY: u64 = 86_400;

    /// A CA valid for `ca_days` and a leaf it signed valid for `leaf_days`, from now,
    /// written as PEM into `dir` (ca.crt, tls.crt, tls.key).
    fn write_pki(dir: &std::path::Path, ca_days: u64, leaf_days: u64) {
        let from_now = |days: u64| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            rcgen::date_time_ymd(1970, 1, 1) + now + Duration::from_secs(days * DAY)
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_after = from_now(ca_days);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.not_after = from_now(leaf_days);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    }

    fn load(dir: &std::path::Path) -> std::sync::Arc<Tls> {
        Tls::from_files(
            dir.join("tls.crt"),
            dir.join("tls.key"),
            Some(dir.join("ca.crt")),
        )
        .unwrap()
    }

    /// `(name, whole days left)` of each certificate at `now`.
    fn days_left(tls: &Tls, now: SystemTime) -> Vec<(&'static str, i64)> {
        let day = DAY as i64;
        tls.expiry()
            .seconds_left(now)
            .into_iter()
            .map(|(n, s)| (n, (s + day / 2).div_euclid(day)))
            .collect()
    }

    #[test]
    fn expiry_follows_the_files_across_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        write_pki(dir.path(), 400, 10);
        let tls = load(dir.path());
        let now = SystemTime::now();
        assert_eq!(days_left(&tls, now), [("own", 10), ("ca", 400)]);
        let text = metrics_text(&[("mtls", &tls)], now);
        assert!(
            text.contains(&format!("# TYPE {EXPIRY_METRIC} gauge\n")),
            "{text}"
        );
        let own = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "{EXPIRY_METRIC}{{use=\"mtls\",certificate=\"own\"}} "
                ))
            })
            .expect("the own series");
        let own: i64 = own.parse().unwrap();
        assert!((own - 10 * DAY as i64).abs() < 120, "{text}");

        // Rotated files: the figures are the new certificates' once reloaded.
        write_pki(dir.path(), 800, 300);
        assert!(tls.reload().unwrap());
        assert_eq!(days_left(&tls, now), [("own", 300), ("ca", 800)]);
    }

    #[test]
    fn warnings_start_thirty_days_before_the_end() {
        let now = SystemTime::now();
        let at = |days: i64| unix(now) + days * DAY as i64;
        let check = |own: i64, ca: Option<i64>, want: &[&str]| {
            let got = Expiry {
                own: at(own),
                ca: ca.map(at),
            }
            .warnings(now);
            assert_eq!(got.len(), want.len(), "own {own} ca {ca:?}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.contains(w), "own {own} ca {ca:?}: {g:?} lacks {w:?}");
            }
        };
        check(397, Some(3650), &[]);
        check(31, None, &[]);
        check(
            29,
            Some(3650),
            &["the certificate this process presents expires in 29 days"],
        );
        check(397, Some(5), &["the CA certificate expires in 5 days"]);
        check(
            -3,
            Some(-1),
            &[
                "the certificate this process presents expired 3 days ago",
                "the CA certificate expired 1 days ago",
            ],
        );
    }

    #[test]
    fn no_tls_no_series() {
        assert_eq!(metrics_text(&[], SystemTime::now()), "");
    }
}
