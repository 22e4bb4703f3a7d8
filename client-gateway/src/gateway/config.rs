//! `kdfs-gateway`'s configuration: every flag, its environment variable and default.
//!
//! The names of `--listen`, `--namenode`, `--max-upload` and `--auth-token` are part
//! of the command-line contract (docs/configuration.md; scripts and manifests use
//! them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kdfs_core::telemetry::LogFormat;
use kdfs_core::{ByteSize, HumanDuration};

/// Where the gateway listens by default.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// The namenode's default gRPC address.
pub const DEFAULT_NAMENODE: &str = "http://127.0.0.1:8020";
/// Bytes all uploads together may hold unacknowledged (see [`crate::client::upload`]).
pub const DEFAULT_UPLOAD_BUDGET: &str = "512MiB";
/// How long a shutdown waits for in-flight transfers before closing them.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
/// A block transfer that moves no message for this long fails over.
pub const DEFAULT_STALL_TIMEOUT: &str = "30s";
/// See `--batch-linger`.
pub const DEFAULT_BATCH_LINGER: &str = "3ms";
/// How often `--auth-token-file` is re-read (a Kubernetes Secret volume changes in place).
pub const DEFAULT_AUTH_TOKEN_RELOAD_INTERVAL: &str = "5s";
/// Failed authentications one client may make within `--auth-failure-window` before its
/// upload and delete requests are refused with 429.
pub const DEFAULT_AUTH_MAX_FAILURES: u32 = 10;
/// The window, starting at a client's first failure, that `--auth-max-failures` counts in.
pub const DEFAULT_AUTH_FAILURE_WINDOW: &str = "60s";

/// A request's head must arrive whole within this (and an idle keep-alive connection
/// is closed after it).
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
/// An upload body that sends nothing, or a client that reads nothing of its answer,
/// for this long is cut off.
pub const DEFAULT_IDLE_TIMEOUT: &str = "30s";
/// Connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections open at once from one client address (IPv4, or IPv6 /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// An HTTPS client that has not finished its TLS handshake by then is dropped.
pub const DEFAULT_HTTPS_HANDSHAKE_TIMEOUT: &str = "5s";

/// The HTTP gateway of kdfs: uploads, downloads, listings and the browser page.
#[derive(Debug, Clone, Parser)]
#[command(name = "kdfs-gateway", version, about)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "KDFS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// The namenode's gRPC address; with HA every namenode's, comma-separated (calls
    /// follow the leader).
    #[arg(long, env = "KDFS_NAMENODE", default_value = DEFAULT_NAMENODE)]
    pub namenode: String,

    /// Largest file accepted by `POST /upload` (e.g. `10GiB`); unlimited if unset.
    #[arg(long, env = "KDFS_MAX_UPLOAD")]
    pub max_upload: Option<ByteSize>,

    /// Bearer token required for upload and delete (and reads with `--auth-reads`).
    /// None if unset. Prefer `KDFS_AUTH_TOKEN` or `--auth-token-file`: a flag's value is
    /// visible to every local user in `ps`, and the gateway warns when given one.
    #[arg(long, env = "KDFS_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// With a token configured, reads need it too: `/download`, `/files`,
    /// `/files/{hash}`, `/info` and `/metrics` (which disclose the namenode address,
    /// cluster and node ids). The page itself and the probes `/healthz` and `/readyz`
    /// stay open.
    #[arg(long, env = "KDFS_AUTH_READS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auth_reads: bool,

    /// File of accepted bearer tokens (e.g. a mounted Kubernetes Secret): one token per
    /// line, blank lines and lines starting with `#` ignored, so several lines allow a
    /// rotation. Re-read every `--auth-token-reload-interval`; combines with `--auth-token`.
    #[arg(long, env = "KDFS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// How often `--auth-token-file` is re-read.
    #[arg(long, env = "KDFS_AUTH_TOKEN_RELOAD_INTERVAL", default_value = DEFAULT_AUTH_TOKEN_RELOAD_INTERVAL)]
    pub auth_token_reload_interval: HumanDuration,

    /// Failed authentications a client IP may make within `--auth-failure-window`;
    /// after that its upload and delete requests get 429 until the window ends, even
    /// with a correct token. The S3 port counts refused signatures the same way and
    /// answers `SlowDown` (503).
    #[arg(long, env = "KDFS_AUTH_MAX_FAILURES", default_value_t = DEFAULT_AUTH_MAX_FAILURES)]
    pub auth_max_failures: u32,

    /// The window, from a client's first failed authentication, that
    /// `--auth-max-failures` counts in.
    #[arg(long, env = "KDFS_AUTH_FAILURE_WINDOW", default_value = DEFAULT_AUTH_FAILURE_WINDOW)]
    pub auth_failure_window: HumanDuration,

    /// PEM certificate chain: with `--https-key`, the gateway serves HTTPS only (page
    /// and API) on `--listen`. The files are re-read when they change.
    #[arg(long, env = "KDFS_HTTPS_CERT", requires = "https_key")]
    pub https_cert: Option<PathBuf>,

    /// PEM private key of `--https-cert`.
    #[arg(long, env = "KDFS_HTTPS_KEY", requires = "https_cert")]
    pub https_key: Option<PathBuf>,

    /// How often the HTTPS certificate and key are checked for changes.
    #[arg(long, env = "KDFS_HTTPS_RELOAD_INTERVAL", default_value = kdfs_proto::tls::DEFAULT_RELOAD_INTERVAL)]
    pub https_reload_interval: HumanDuration,
    /// Memory all concurrent uploads together may hold while awaiting pipeline acks.
    #[arg(long, env = "KDFS_UPLOAD_BUDGET", default_value = DEFAULT_UPLOAD_BUDGET)]
    pub upload_budget: ByteSize,

    /// Directory where blocks awaiting their pipeline ack are spooled (unlinked temp
    /// files; the system temp directory if unset). If no file can be created there,
    /// blocks are kept in memory, bounded by `--upload-budget`.
    #[arg(long, env = "KDFS_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,

    /// Store concurrent small uploads (bodies of at most 1 MiB) in batches: one lease,
    /// one pipeline stream and one commit for many files. `false` gives every upload
    /// its own.
    #[arg(long, env = "KDFS_BATCH_SMALL_FILES", default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_small_files: bool,

    /// How long a batch of small files waits, once the last batch ended, for as many
    /// files as that one carried (the clients it answered usually send their next file
    /// at once). Larger batches cost less per file. `0s`: a batch starts as soon as the
    /// last one's blocks are written, with whatever files are queued.
    #[arg(long, env = "KDFS_BATCH_LINGER", default_value = DEFAULT_BATCH_LINGER)]
    pub batch_linger: HumanDuration,

    /// How long a graceful shutdown waits for in-flight transfers.
    #[arg(long, env = "KDFS_DRAIN_TIMEOUT", default_value = DEFAULT_DRAIN_TIMEOUT)]
    pub drain_timeout: HumanDuration,

    /// Per-message timeout of block transfers (stall detection).
    #[arg(long, env = "KDFS_STALL_TIMEOUT", default_value = DEFAULT_STALL_TIMEOUT)]
    pub stall_timeout: HumanDuration,

    /// A request's head (request line and headers) must arrive whole within this; an
    /// idle keep-alive connection is closed after it too.
    #[arg(long, env = "KDFS_HEADER_READ_TIMEOUT", default_value = DEFAULT_HEADER_READ_TIMEOUT)]
    pub header_read_timeout: HumanDuration,

    /// An upload whose body sends nothing for this long is aborted (408, its lease given
    /// back); a connection whose client reads nothing of its answer for this long (a
    /// stalled download) is closed.
    #[arg(long, env = "KDFS_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT)]
    pub idle_timeout: HumanDuration,

    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, env = "KDFS_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Connections open at once from one client address (IPv4, or IPv6 /64), so that
    /// one client cannot take every connection.
    #[arg(long, env = "KDFS_MAX_CONNECTIONS_PER_CLIENT", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    pub max_connections_per_client: usize,

    /// With HTTPS, a client that has not finished its TLS handshake by then is dropped
    /// (one client address may have 16 handshakes in progress at once).
    #[arg(long, env = "KDFS_HTTPS_HANDSHAKE_TIMEOUT", default_value = DEFAULT_HTTPS_HANDSHAKE_TIMEOUT)]
    pub https_handshake_timeout: HumanDuration,

    /// Host names (with or without a port) accepted in the `Host` header besides the
    /// loopback ones, when `--listen` is a loopback address (a guard against DNS
    /// rebinding: any other Host gets 421). Comma-separated, e.g. `kdfs.local,nas:8080`.
    #[arg(long, env = "KDFS_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Reverse proxies (comma-separated addresses or CIDR blocks, e.g. a cluster's pod
    /// network `10.42.0.0/16` where the ingress controller runs) whose `X-Forwarded-For`
    /// names the real client: the failed-authentication limit then counts that client
    /// instead of the proxy. A header from any other peer is ignored.
    #[arg(long, env = "KDFS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::gateway::ip_range::IpRange>,

    /// Log format: plain or json.
    #[arg(long, env = "KDFS_LOG_FORMAT", default_value = "plain")]
    pub log_format: LogFormat,

    /// mTLS towards the namenode and the datanodes (`--tls-cert/--tls-key/--tls-ca`).
    #[command(flatten)]
    pub tls: kdfs_proto::tls::TlsArgs,

    /// The S3 port (`--s3-*`).
    #[command(flatten)]
    pub s3: crate::s3::config::S3Args,
}

impl Config {
    /// The auth token, if one is configured (an empty value means none).
    pub fn auth_token(&self) -> Option<&str> {
        self.auth_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The HTTPS certificate and key files, if HTTPS is configured.
    pub fn https(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        match (&self.https_cert, &self.https_key) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::parse_from(["kdfs-gateway"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.namenode, "http://127.0.0.1:8020");
        assert_eq!(c.max_upload, None);
        assert_eq!(c.auth_token(), None);
        assert_eq!(c.auth_token_file, None);
        assert_eq!(c.auth_max_failures, 10);
        assert_eq!(c.auth_failure_window.get().as_secs(), 60);
        assert!(!c.auth_reads);
        assert!(c.https().is_none());
        assert_eq!(c.header_read_timeout.get().as_secs(), 10);
        assert_eq!(c.idle_timeout.get().as_secs(), 30);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_connections_per_client, 64);
        assert!(c.allowed_hosts.is_empty() && c.trusted_proxies.is_empty());
        assert_eq!(c.s3.s3_listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.s3.s3_region, "us-east-1");
        assert!(c.s3.s3_access_key.is_none() && c.s3.s3_credentials_file.is_none());
        let c = Config::parse_from([
            "kdfs-gateway",
            "--allowed-hosts=kdfs.local,nas:8080",
            "--trusted-proxies=10.0.0.1,::1,10.42.0.0/16",
        ]);
        assert_eq!(c.allowed_hosts, ["kdfs.local", "nas:8080"]);
        assert_eq!(c.trusted_proxies.len(), 3);
        assert!(
            Config::try_parse_from(["kdfs-gateway", "--trusted-proxies=10.42.0.1/16"]).is_err()
        );
        let c = Config::parse_from([
            "kdfs-gateway",
            "--max-upload",
            "1MiB",
            "--auth-token",
            "s3cret",
            "--listen",
            "127.0.0.1:0",
        ]);
        assert_eq!(c.max_upload, Some(ByteSize(1 << 20)));
        assert_eq!(c.auth_token(), Some("s3cret"));
        for (args, want) in [
            (&["--auth-reads"][..], true),
            (&["--auth-reads=true"], true),
            (&["--auth-reads", "false"], false),
        ] {
            let c = Config::parse_from(std::iter::once("kdfs-gateway").chain(args.iter().copied()));
            assert_eq!(c.auth_reads, want, "{args:?}");
        }
    }

    #[test]
    fn https_needs_both_files() {
        assert!(Config::try_parse_from(["kdfs-gateway", "--https-cert=c.pem"]).is_err());
        assert!(Config::try_parse_from(["kdfs-gateway", "--https-key=k.pem"]).is_err());
        let c = Config::parse_from(["kdfs-gateway", "--https-cert=c.pem", "--https-key=k.pem"]);
        let (cert, key) = c.https().unwrap();
        assert_eq!(
            (cert.to_str(), key.to_str()),
            (Some("c.pem"), Some("k.pem"))
        );
    }
}
