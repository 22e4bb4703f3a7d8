//! The datanode's command line (see docs/configuration.md): every flag also reads
//! `KDFS_<FLAG>`.
//!
//! Tests and `kdfs local` build it with `Config::parse_from(["kdfs-datanode", ...])`;
//! the names are a contract with scripts and manifests, so add flags but never rename.

use std::path::PathBuf;

use clap::Parser;
use kdfs_core::telemetry::LogFormat;
use kdfs_core::{ByteSize, HumanDuration};

/// gRPC address to listen on.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9866";
/// HTTP address for `/healthz`, `/readyz`, `/metrics`.
pub const DEFAULT_HTTP: &str = "0.0.0.0:9864";
pub const DEFAULT_NAMENODE: &str = "http://127.0.0.1:8020";
pub const DEFAULT_DATA_DIR: &str = "./kdfs-datanode-data";
/// Filesystem bytes never used for blocks.
pub const DEFAULT_RESERVED: &str = "1GiB";
/// A full verification pass starts at most this often.
pub const DEFAULT_SCAN_INTERVAL: &str = "24h";
/// Bytes per second the block scanner may read.
pub const DEFAULT_SCAN_RATE: &str = "32MiB";
pub const DEFAULT_BLOCK_REPORT_INTERVAL: &str = "1h";
/// How long in-flight writes may take to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "20s";
/// Longest wait for a decommissioned datanode's blocks to be copied away at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30m";
pub const DEFAULT_REPLICATION_STREAMS: &str = "4";
/// Replicas that failed verification stay in `quarantine/` this long.
pub const DEFAULT_QUARANTINE_RETENTION: &str = "7d";
/// A write stream (or a successor) that moves no data this long is given up on.
pub const DEFAULT_WRITE_IDLE_TIMEOUT: &str = "60s";

/// The kdfs block server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kdfs-datanode",
    version,
    about = "The kdfs datanode: stores verified blocks and serves them over gRPC."
)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "KDFS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,

    /// `host:port` other components dial. Default: the listen address, or
    /// `$POD_NAME.<--headless-service>:<port>` in Kubernetes.
    #[arg(long, env = "KDFS_ADVERTISE")]
    pub advertise: Option<String>,

    /// HTTP listen address (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "KDFS_HTTP", default_value = DEFAULT_HTTP)]
    pub http: std::net::SocketAddr,

    /// The namenode's gRPC URI; with HA every namenode's, comma-separated (calls follow
    /// the leader).
    #[arg(long, env = "KDFS_NAMENODE", default_value = DEFAULT_NAMENODE)]
    pub namenode: String,

    /// Directory holding `VERSION`, `blocks/`, `tmp/`, `quarantine/`.
    #[arg(long, env = "KDFS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Failure domain for placement; empty lets the namenode ask Kubernetes.
    #[arg(long, env = "KDFS_ZONE")]
    pub zone: Option<String>,

    /// Filesystem space never used for blocks.
    #[arg(long, env = "KDFS_RESERVED", default_value = DEFAULT_RESERVED)]
    pub reserved: ByteSize,

    /// At most this many bytes of blocks, however large the filesystem: the reported
    /// capacity is `min(filesystem - reserved, this)` and the free space `min(filesystem
    /// free - reserved, this - used)`. Set it to the volume's size where volumes share a
    /// disk (k3d's local-path volumes are directories on one disk). Kubernetes suffixes
    /// (`5Gi`) are accepted.
    #[arg(long, env = "KDFS_CAPACITY")]
    pub capacity: Option<ByteSize>,

    /// Start a full verification pass at most this often.
    #[arg(long, env = "KDFS_SCAN_INTERVAL", default_value = DEFAULT_SCAN_INTERVAL)]
    pub scan_interval: HumanDuration,

    /// Bytes per second the block scanner may read.
    #[arg(long, env = "KDFS_SCAN_RATE", default_value = DEFAULT_SCAN_RATE)]
    pub scan_rate: ByteSize,

    /// How often to send a full block report (also sent at every registration).
    #[arg(long, env = "KDFS_BLOCK_REPORT_INTERVAL", default_value = DEFAULT_BLOCK_REPORT_INTERVAL)]
    pub block_report_interval: HumanDuration,

    /// Log format: plain or json.
    #[arg(long, env = "KDFS_LOG_FORMAT", default_value = "plain")]
    pub log_format: LogFormat,

    /// Kubernetes headless Service of the datanodes, for the default advertise address.
    #[arg(long, env = "KDFS_HEADLESS_SERVICE")]
    pub headless_service: Option<String>,

    /// This pod's name (set from the downward API in Kubernetes).
    #[arg(long, env = "KDFS_POD_NAME")]
    pub pod_name: Option<String>,

    /// The Kubernetes node this pod runs on (downward API).
    #[arg(long, env = "KDFS_NODE_NAME")]
    pub node_name: Option<String>,

    /// How long in-flight writes may take to finish after a shutdown signal.
    #[arg(long, env = "KDFS_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE)]
    pub shutdown_grace: HumanDuration,

    /// On a shutdown signal, a datanode being decommissioned (its pod scaled away, or
    /// `kdfs decommission`) keeps serving until its blocks are at full replication
    /// elsewhere, at most this long (then it stops anyway). Keep it below Kubernetes'
    /// terminationGracePeriodSeconds minus --shutdown-grace. A restarting datanode does
    /// not wait.
    #[arg(long, env = "KDFS_DRAIN_TIMEOUT", default_value = DEFAULT_DRAIN_TIMEOUT)]
    pub drain_timeout: HumanDuration,

    /// Replicas that failed verification are kept in `quarantine/` this long, for
    /// inspection, then deleted.
    #[arg(long, env = "KDFS_QUARANTINE_RETENTION", default_value = DEFAULT_QUARANTINE_RETENTION)]
    pub quarantine_retention: HumanDuration,

    /// Replication transfers (namenode commands) run at once.
    #[arg(long, env = "KDFS_REPLICATION_STREAMS", default_value = DEFAULT_REPLICATION_STREAMS)]
    pub replication_streams: usize,

    /// A write whose sender sends nothing, or whose successor accepts nothing, for this
    /// long is aborted / given up on (a stuck but connected peer).
    #[arg(long, env = "KDFS_WRITE_IDLE_TIMEOUT", default_value = DEFAULT_WRITE_IDLE_TIMEOUT)]
    pub write_idle_timeout: HumanDuration,

    /// Pretend the filesystem has exactly this many bytes (tests and demos of
    /// out-of-space handling); statvfs otherwise.
    #[arg(long, env = "KDFS_FIXED_CAPACITY")]
    pub fixed_capacity: Option<ByteSize>,

    /// Write blocks into unnamed temp files (`O_TMPFILE`) linked into place, instead of
    /// named temp files renamed into place. Only for journaled file systems (ext4 with
    /// a journal, XFS), where the directory fsync makes the link durable with the
    /// file's link count; on ext4 without a journal a crash can leave the block's name
    /// on an inode whose link count on disk is 0 (until fsck). Off by default.
    #[arg(long, env = "KDFS_UNNAMED_TMP")]
    pub unnamed_tmp: bool,

    #[command(flatten)]
    pub tls: kdfs_proto::tls::TlsArgs,
    #[command(flatten)]
    pub plaintext: kdfs_proto::plaintext::PlaintextArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::parse_from(["kdfs-datanode"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:9866");
        assert_eq!(c.http.to_string(), "0.0.0.0:9864");
        assert_eq!(c.namenode, "http://127.0.0.1:8020");
        assert_eq!(c.reserved, ByteSize(1 << 30));
        assert!(!c.unnamed_tmp, "named temp files unless asked");
        assert_eq!(c.scan_interval.get(), Duration::from_secs(86_400));
        assert_eq!(c.scan_rate, ByteSize(32 << 20));
        assert_eq!(c.block_report_interval.get(), Duration::from_secs(3600));
        assert_eq!(c.log_format, LogFormat::Plain);
        assert!(c.advertise.is_none() && c.zone.is_none());
    }

    #[test]
    fn flags_parse_human_units() {
        let c = Config::parse_from([
            "kdfs-datanode",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
            "--reserved",
            "0",
            "--scan-rate",
            "1MiB",
            "--scan-interval",
            "500ms",
            "--log-format",
            "json",
            "--zone",
            "z1",
        ]);
        assert_eq!(c.reserved, ByteSize(0));
        assert_eq!(c.scan_interval.get(), Duration::from_millis(500));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.zone.as_deref(), Some("z1"));
        assert!(Config::try_parse_from(["kdfs-datanode", "--reserved", "lots"]).is_err());
    }
}
