//! Who may call each rpc of the namenode: the one table `kdfs_proto::authz` enforces
//! on its gRPC server (docs/security.md, "Roles"). Datanodes report; gateways upload,
//! read and delete, and alone use the bucket/key namespace; only namenodes speak Raft
//! to each other. A new rpc is refused
//! until it is added here.

use kdfs_proto::authz::Rules;
use kdfs_proto::roles::Role;

const DATANODE: &[Role] = &[Role::Datanode];
const GATEWAY: &[Role] = &[Role::Gateway];
const NAMENODE: &[Role] = &[Role::Namenode];
const ANY_COMPONENT: &[Role] = &[Role::Datanode, Role::Gateway, Role::Namenode];

/// The namenode's authorization table.
pub static RULES: Rules = Rules {
    service: "kdfs.v1.Namenode",
    rpcs: &[
        // A datanode's membership and block reports.
        ("Register", DATANODE),
        ("Heartbeat", DATANODE),
        ("FullBlockReport", DATANODE),
        ("IncrementalBlockReport", DATANODE),
        ("Leaving", DATANODE),
        // The client library in the gateway (uploads, reads, deletes, /info).
        ("BeginUpload", GATEWAY),
        ("RenewLease", GATEWAY),
        ("AllocateBlock", GATEWAY),
        ("CommitFile", GATEWAY),
        ("CommitFiles", GATEWAY),
        ("AbandonUpload", GATEWAY),
        ("GetFile", GATEWAY),
        ("ListFiles", GATEWAY),
        ("DeleteFile", GATEWAY),
        ("ReportBadReplica", GATEWAY),
        ("ClusterInfo", GATEWAY),
        // An operator's decommission, through the gateway's bearer-token guard.
        ("DecommissionDatanode", GATEWAY),
        // Who leads the HA group: asked by everyone that looks for the leader.
        ("NamenodeRole", ANY_COMPONENT),
    ],
};

/// The bucket/key namespace's table: only gateways (the S3 port) call it.
pub static OBJECT_RULES: Rules = Rules {
    service: "kdfs.v1.ObjectNamespace",
    rpcs: &[
        ("CreateBucket", GATEWAY),
        ("HeadBucket", GATEWAY),
        ("ListBuckets", GATEWAY),
        ("DeleteBucket", GATEWAY),
        ("PutObject", GATEWAY),
        ("GetObject", GATEWAY),
        ("DeleteObject", GATEWAY),
        ("DeleteObjects", GATEWAY),
        ("CopyObject", GATEWAY),
        ("ListObjects", GATEWAY),
        ("CreateMultipartUpload", GATEWAY),
        ("RegisterPart", GATEWAY),
        ("ListParts", GATEWAY),
        ("ListMultipartUploads", GATEWAY),
        ("AbortMultipartUpload", GATEWAY),
        ("CompleteMultipartUpload", GATEWAY),
    ],
};

/// The namenodes' Raft traffic (HA): only namenodes call it.
pub static RAFT_RULES: Rules = Rules {
    service: "kdfs.v1.RaftPeer",
    rpcs: &[
        ("AppendEntries", NAMENODE),
        ("Vote", NAMENODE),
        ("InstallSnapshot", NAMENODE),
    ],
};

/// Every service the namenode's gRPC server serves, with its table.
pub static SERVICES: [&Rules; 2] = [&RULES, &OBJECT_RULES];

/// The same with HA (`--peers`), where the Raft service is served too.
pub static HA_SERVICES: [&Rules; 3] = [&RULES, &OBJECT_RULES, &RAFT_RULES];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rpc of each service the namenode serves has a row in its table, and no
    /// row names an rpc that does not exist.
    #[test]
    fn the_tables_name_every_rpc_of_their_services() {
        let proto = concat!(
            include_str!("../../proto/proto/kdfs.proto"),
            include_str!("../../proto/proto/raft.proto")
        );
        for rules in HA_SERVICES {
            let name = rules.service.strip_prefix("kdfs.v1.").unwrap();
            let mut in_proto = kdfs_proto::authz::rpcs_in_proto(proto, name);
            let mut in_table: Vec<String> = rules.rpcs.iter().map(|(m, _)| m.to_string()).collect();
            in_proto.sort();
            in_table.sort();
            assert!(!in_proto.is_empty(), "{name}");
            assert_eq!(in_table, in_proto, "{name}");
        }
    }
}
