//! The namenode's command-line and environment configuration, one struct with every
//! flag documented (the table is in docs/configuration.md).
//!
//! Every flag also reads `KDFS_<FLAG>`; defaults are the named constants below so that
//! tests, manifests and documentation can refer to them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kdfs_core::telemetry::LogFormat;
use kdfs_core::{ByteSize, HumanDuration};

/// gRPC listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8020";
/// HTTP listen address (`/healthz`, `/readyz`, `/metrics`).
pub const DEFAULT_HTTP: &str = "0.0.0.0:9870";
/// Where the metadata database lives.
pub const DEFAULT_DATA_DIR: &str = "./kdfs-namenode";
/// Replicas wanted per block.
pub const DEFAULT_REPLICATION: u32 = 3;
/// Largest block (docs/decisions/0002-64-mib-blocks.md).
pub const DEFAULT_BLOCK_SIZE: &str = "64MiB";
/// How often datanodes heartbeat.
pub const DEFAULT_HEARTBEAT_INTERVAL: &str = "3s";
/// A datanode silent this long is dead; its replicas are re-replicated.
pub const DEFAULT_DEAD_AFTER: &str = "30s";
pub const DEFAULT_MAINTENANCE_TIMEOUT: &str = "10m";
/// How often datanodes send a full block report.
pub const DEFAULT_BLOCK_REPORT_INTERVAL: &str = "1h";
/// An upload lease expires this long after its last use.
pub const DEFAULT_LEASE_TTL: &str = "2m";
/// Tombstones (and the knowledge that their blocks must go) are kept this long.
pub const DEFAULT_TOMBSTONE_RETENTION: &str = "7d";
/// Replicas of deleted content are deleted this long after the file (a re-upload of
/// the same content within it cancels the deletes; see the `gc` module).
pub const DEFAULT_DELETE_GRACE: &str = "30s";
/// Multipart uploads (S3) older than this are aborted.
pub const DEFAULT_MULTIPART_EXPIRY: &str = "7d";
/// Content stored for the bucket/key namespace that no key or part claims within this
/// long is deleted.
pub const DEFAULT_OBJECT_CLAIM_GRACE: &str = "1h";
/// Safe mode ends when this fraction of known blocks has been reported...
pub const DEFAULT_SAFE_MODE_THRESHOLD: f64 = 0.999;
/// ...or after this long, whichever comes first.
pub const DEFAULT_SAFE_MODE_TIMEOUT: &str = "2m";
/// Concurrent re-replication streams a datanode serves as a source, and as a target.
pub const DEFAULT_REPLICATION_STREAMS: u32 = 2;
/// A re-replication not confirmed by the target's report within this is retried.
pub const DEFAULT_REPLICATION_TIMEOUT: &str = "2m";
/// A new block key signs block access tokens this often (docs/security.md).
pub const DEFAULT_BLOCK_KEY_ROTATION: &str = "10m";
/// Block access tokens are valid this long: a download that reads its last block
/// later fails at that block (HDFS's default lifetime).
pub const DEFAULT_BLOCK_TOKEN_LIFETIME: &str = "10h";

/// HA: a batch of metadata changes not committed by a majority within this long fails
/// (UNAVAILABLE; the gateway answers 503).
pub const DEFAULT_RAFT_WRITE_TIMEOUT: &str = "5s";
/// HA: how often the leader sends heartbeats to the other namenodes.
pub const DEFAULT_RAFT_HEARTBEAT_INTERVAL: &str = "250ms";
/// HA: a follower that heard no leader for this long (randomized up to twice as long)
/// starts an election; a leader that heard no majority for this long stops serving.
pub const DEFAULT_RAFT_ELECTION_TIMEOUT: &str = "1500ms";
/// HA: log entries between two snapshots of the metadata (older entries are then
/// dropped from the log; a member further behind catches up by snapshot).
pub const DEFAULT_RAFT_SNAPSHOT_ENTRIES: u64 = 5000;

/// Label selector of the datanode pods (the StatefulSet's pod template label).
pub const DATANODE_SELECTOR: &str = "app.kubernetes.io/name=datanode";

/// `--kubernetes`: whether the namenode uses the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// On when running in a pod (`KUBERNETES_SERVICE_HOST` is set), off otherwise.
    #[default]
    Auto,
    /// On (uses the in-cluster config or a kubeconfig).
    On,
    /// Off: liveness from heartbeats only, zones from the datanodes' `--zone`.
    Off,
}

/// Configuration of `kdfs-namenode`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kdfs-namenode",
    version,
    about = "kdfs metadata server",
    args_override_self = true
)]
pub struct Config {
    /// gRPC address to listen on.
    #[arg(long, env = "KDFS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "KDFS_HTTP", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// Directory of the metadata database (created if missing).
    #[arg(long, env = "KDFS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Replicas per block for uploads that do not ask for another number.
    #[arg(long, env = "KDFS_REPLICATION", default_value_t = DEFAULT_REPLICATION,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replication: u32,
    /// Replicas that must be durable before an upload is acknowledged
    /// (default: min(2, replication)).
    #[arg(long, env = "KDFS_MIN_REPLICAS", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub min_replicas: Option<u32>,
    /// Largest block, e.g. 64MiB.
    #[arg(long, env = "KDFS_BLOCK_SIZE", default_value = DEFAULT_BLOCK_SIZE)]
    pub block_size: ByteSize,
    /// How often datanodes heartbeat.
    #[arg(long, env = "KDFS_HEARTBEAT_INTERVAL", default_value = DEFAULT_HEARTBEAT_INTERVAL)]
    pub heartbeat_interval: HumanDuration,
    /// A datanode silent this long is declared dead.
    #[arg(long, env = "KDFS_DEAD_AFTER", default_value = DEFAULT_DEAD_AFTER)]
    pub dead_after: HumanDuration,
    /// A datanode in maintenance (restarting: its pod terminating while its
    /// StatefulSet still wants it, or SIGTERM outside Kubernetes) is declared dead
    /// this long after it entered maintenance unless it registers again first.
    #[arg(long, env = "KDFS_MAINTENANCE_TIMEOUT", default_value = DEFAULT_MAINTENANCE_TIMEOUT)]
    pub maintenance_timeout: HumanDuration,
    /// How often datanodes send a full block report.
    #[arg(long, env = "KDFS_BLOCK_REPORT_INTERVAL", default_value = DEFAULT_BLOCK_REPORT_INTERVAL)]
    pub block_report_interval: HumanDuration,
    /// A datanode silent this long is stale: still read from, not written to
    /// (default: three heartbeat intervals).
    #[arg(long, env = "KDFS_STALE_AFTER")]
    pub stale_after: Option<HumanDuration>,
    /// Upload leases expire this long after their last use.
    #[arg(long, env = "KDFS_LEASE_TTL", default_value = DEFAULT_LEASE_TTL)]
    pub lease_ttl: HumanDuration,
    /// How long tombstones of deleted files are kept.
    #[arg(long, env = "KDFS_TOMBSTONE_RETENTION", default_value = DEFAULT_TOMBSTONE_RETENTION)]
    pub tombstone_retention: HumanDuration,
    /// Delay between deleting a file and deleting its unreferenced replicas (spares the
    /// datanodes deletes of content uploaded again at once; a re-upload is safe at any
    /// moment, deletes being conditional on write generations).
    #[arg(long, env = "KDFS_DELETE_GRACE", default_value = DEFAULT_DELETE_GRACE)]
    pub delete_grace: HumanDuration,
    /// S3 multipart uploads not completed or aborted this long after they began are
    /// aborted (their parts' content deleted).
    #[arg(long, env = "KDFS_MULTIPART_EXPIRY", default_value = DEFAULT_MULTIPART_EXPIRY)]
    pub multipart_expiry: HumanDuration,
    /// Content committed for the S3 namespace (an object's or a part's) that no key or
    /// part refers to this long after its commit is deleted (a gateway that died
    /// between storing the bytes and naming them).
    #[arg(long, env = "KDFS_OBJECT_CLAIM_GRACE", default_value = DEFAULT_OBJECT_CLAIM_GRACE)]
    pub object_claim_grace: HumanDuration,
    /// Safe mode ends once this fraction of known blocks has been reported.
    #[arg(long, env = "KDFS_SAFE_MODE_THRESHOLD", default_value_t = DEFAULT_SAFE_MODE_THRESHOLD)]
    pub safe_mode_threshold: f64,
    /// Safe mode ends after this long at the latest.
    #[arg(long, env = "KDFS_SAFE_MODE_TIMEOUT", default_value = DEFAULT_SAFE_MODE_TIMEOUT)]
    pub safe_mode_timeout: HumanDuration,
    /// After the threshold is reached, safe mode lasts this much longer so that
    /// datanodes reporting a moment later are counted (default: two heartbeat
    /// intervals).
    #[arg(long, env = "KDFS_SAFE_MODE_EXTENSION")]
    pub safe_mode_extension: Option<HumanDuration>,
    /// Concurrent re-replication streams per datanode, as source and as target.
    #[arg(long, env = "KDFS_REPLICATION_STREAMS", default_value_t = DEFAULT_REPLICATION_STREAMS)]
    pub replication_streams: u32,
    /// A re-replication not confirmed within this long is retried elsewhere.
    #[arg(long, env = "KDFS_REPLICATION_TIMEOUT", default_value = DEFAULT_REPLICATION_TIMEOUT)]
    pub replication_timeout: HumanDuration,
    /// How often a new key starts signing block access tokens.
    #[arg(long, env = "KDFS_BLOCK_KEY_ROTATION", default_value = DEFAULT_BLOCK_KEY_ROTATION)]
    pub block_key_rotation: HumanDuration,
    /// How long a block access token (a pipeline, a read, a transfer) stays valid.
    #[arg(long, env = "KDFS_BLOCK_TOKEN_LIFETIME", default_value = DEFAULT_BLOCK_TOKEN_LIFETIME)]
    pub block_token_lifetime: HumanDuration,
    /// Use the Kubernetes API (zones from node labels, pod deletions at once):
    /// `auto` = when running in a pod (KUBERNETES_SERVICE_HOST set), `on`, or `off`.
    #[arg(long, env = "KDFS_KUBERNETES", value_enum, default_value_t = Mode::Auto)]
    pub kubernetes: Mode,
    /// Label selector of the datanode pods to watch.
    #[arg(long, env = "KDFS_KUBERNETES_SELECTOR", default_value = DATANODE_SELECTOR)]
    pub kubernetes_selector: String,
    /// Namespace of the datanode pods (default: `POD_NAMESPACE`, else the client's
    /// default namespace).
    #[arg(long, env = "KDFS_KUBERNETES_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// HA: this namenode's id in `--peers`.
    #[arg(long, env = "KDFS_ID", default_value_t = 0)]
    pub id: u32,
    /// HA: every namenode's gRPC address, itself included, the same list on each:
    /// `0=HOST:PORT,1=HOST:PORT,2=HOST:PORT`. Empty: a single namenode, no Raft.
    #[arg(long, env = "KDFS_PEERS", default_value = "")]
    pub peers: String,
    /// HA: a batch of metadata changes not committed by a majority within this long
    /// fails with UNAVAILABLE.
    #[arg(long, env = "KDFS_RAFT_WRITE_TIMEOUT", default_value = DEFAULT_RAFT_WRITE_TIMEOUT)]
    pub raft_write_timeout: HumanDuration,
    /// HA: how often the leader sends heartbeats to the other namenodes.
    #[arg(long, env = "KDFS_RAFT_HEARTBEAT_INTERVAL", default_value = DEFAULT_RAFT_HEARTBEAT_INTERVAL)]
    pub raft_heartbeat_interval: HumanDuration,
    /// HA: silence from the leader after which a follower starts an election
    /// (randomized up to twice this), and silence from a majority after which a leader
    /// stops serving.
    #[arg(long, env = "KDFS_RAFT_ELECTION_TIMEOUT", default_value = DEFAULT_RAFT_ELECTION_TIMEOUT)]
    pub raft_election_timeout: HumanDuration,
    /// HA: log entries between two snapshots of the metadata.
    #[arg(long, env = "KDFS_RAFT_SNAPSHOT_ENTRIES", default_value_t = DEFAULT_RAFT_SNAPSHOT_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub raft_snapshot_entries: u64,
    /// Log format: plain or json.
    #[arg(long, env = "KDFS_LOG_FORMAT", default_value = "plain")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub tls: kdfs_proto::tls::TlsArgs,
    #[command(flatten)]
    pub plaintext: kdfs_proto::plaintext::PlaintextArgs,
}

impl Config {
    /// Replicas that must be durable before a commit (min(2, replication) unless set).
    pub fn min_replicas(&self) -> u32 {
        self.min_replicas.unwrap_or(2).min(self.replication).max(1)
    }

    /// How long safe mode lasts after its threshold is reached.
    pub fn safe_mode_extension(&self) -> Duration {
        self.safe_mode_extension
            .map(HumanDuration::get)
            .unwrap_or(self.heartbeat_interval.get() * 2)
    }

    /// When a silent datanode becomes stale.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
            .map(HumanDuration::get)
            .unwrap_or(self.heartbeat_interval.get() * 3)
            .min(self.dead_after.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::parse_from(["kdfs-namenode"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8020");
        assert_eq!(c.http.to_string(), "0.0.0.0:9870");
        assert_eq!(c.replication, 3);
        assert_eq!(c.min_replicas(), 2);
        assert_eq!(c.block_size.bytes(), 64 << 20);
        assert_eq!(c.heartbeat_interval.get(), Duration::from_secs(3));
        assert_eq!(c.dead_after.get(), Duration::from_secs(30));
        assert_eq!(c.block_report_interval.get(), Duration::from_secs(3600));
        assert_eq!(c.stale_after(), Duration::from_secs(9));
        assert_eq!(c.kubernetes, Mode::Auto);
        assert_eq!(c.block_key_rotation.get(), Duration::from_secs(600));
        assert_eq!(c.block_token_lifetime.get(), Duration::from_secs(36_000));
    }

    #[test]
    fn min_replicas_never_exceeds_replication() {
        let c = Config::parse_from(["kdfs-namenode", "--replication", "1"]);
        assert_eq!(c.min_replicas(), 1);
        let c = Config::parse_from(["kdfs-namenode", "--replication", "5", "--min-replicas", "3"]);
        assert_eq!(c.min_replicas(), 3);
    }
}
