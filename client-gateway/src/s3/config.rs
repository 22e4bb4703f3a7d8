//! The S3 port's flags (flattened into the gateway's [`crate::Config`]): where it
//! listens, its region, its key pairs and the base domains of virtual-hosted-style
//! requests. `--s3-listen`, `--s3-region`, `--s3-access-key`, `--s3-secret-key` and
//! `--s3-credentials-file` are part of the command-line contract (docs/configuration.md).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use kdfs_core::HumanDuration;

/// Where the S3 port listens by default.
pub const DEFAULT_S3_LISTEN: &str = "0.0.0.0:9000";
/// The region the S3 port answers for (the one clients sign with).
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// How often `--s3-credentials-file` is re-read (a Kubernetes Secret changes in place).
pub const DEFAULT_S3_CREDENTIALS_RELOAD_INTERVAL: &str = "5s";
/// How long a CompleteMultipartUpload works before its answer starts (see
/// [`super::keep_alive`]): well under any client's read timeout.
pub const DEFAULT_S3_COMPLETE_KEEPALIVE_AFTER: &str = "1s";

/// `--s3-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Listen {
    Off,
    At(SocketAddr),
}

impl FromStr for S3Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|e| format!("{s:?} is neither an address (HOST:PORT) nor `off`: {e}"))
    }
}

impl fmt::Display for S3Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(a) => a.fmt(f),
        }
    }
}

/// The S3 port's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// Address the S3 API listens on, or `off`.
    #[arg(long, env = "KDFS_S3_LISTEN", default_value = DEFAULT_S3_LISTEN)]
    pub s3_listen: S3Listen,

    /// The region clients sign their requests for (`aws --region`, rclone's `region`).
    #[arg(long, env = "KDFS_S3_REGION", default_value = DEFAULT_S3_REGION)]
    pub s3_region: String,

    /// Access key id of an accepted S3 key pair (with `--s3-secret-key`). With no key
    /// pair configured, every S3 request is refused.
    #[arg(long, env = "KDFS_S3_ACCESS_KEY", requires = "s3_secret_key")]
    pub s3_access_key: Option<String>,

    /// Secret key of `--s3-access-key`. Prefer `KDFS_S3_SECRET_KEY` or
    /// `--s3-credentials-file`: a flag's value is visible to every local user in `ps`.
    #[arg(
        long,
        env = "KDFS_S3_SECRET_KEY",
        hide_env_values = true,
        requires = "s3_access_key"
    )]
    pub s3_secret_key: Option<String>,

    /// File of accepted S3 key pairs (e.g. a mounted Kubernetes Secret): one
    /// `ACCESS_KEY SECRET_KEY` pair per line, blank lines and lines starting with `#`
    /// ignored. Re-read every `--s3-credentials-reload-interval`, so pairs can be added
    /// and removed without a restart; combines with `--s3-access-key`.
    #[arg(long, env = "KDFS_S3_CREDENTIALS_FILE")]
    pub s3_credentials_file: Option<PathBuf>,

    /// How often `--s3-credentials-file` is re-read.
    #[arg(long, env = "KDFS_S3_CREDENTIALS_RELOAD_INTERVAL", default_value = DEFAULT_S3_CREDENTIALS_RELOAD_INTERVAL)]
    pub s3_credentials_reload_interval: HumanDuration,

    /// Base domains of virtual-hosted-style requests (comma-separated, e.g.
    /// `s3.example.com`): `Host: photos.s3.example.com` then addresses bucket `photos`.
    /// Any other host (an IP address, `localhost`, a service name) is path-style.
    #[arg(long, env = "KDFS_S3_DOMAIN", value_delimiter = ',')]
    pub s3_domain: Vec<String>,

    /// A CompleteMultipartUpload still working after this long answers 200 at once and
    /// sends whitespace until its result (or an error document) follows, as S3 does, so
    /// a client's read timeout does not end a long completion.
    #[arg(long, env = "KDFS_S3_COMPLETE_KEEPALIVE_AFTER", default_value = DEFAULT_S3_COMPLETE_KEEPALIVE_AFTER)]
    pub s3_complete_keepalive_after: HumanDuration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!("off".parse::<S3Listen>(), Ok(S3Listen::Off));
        assert_eq!("OFF".parse::<S3Listen>(), Ok(S3Listen::Off));
        assert_eq!(
            "127.0.0.1:9000".parse::<S3Listen>(),
            Ok(S3Listen::At("127.0.0.1:9000".parse().unwrap()))
        );
        assert!("nine-thousand".parse::<S3Listen>().is_err());
        assert_eq!(S3Listen::Off.to_string(), "off");
    }
}
