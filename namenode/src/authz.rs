//! Who may call each rpc of the namenode: the one table `kdfs_proto::authz` enforces
//! on its gRPC server (docs/security.md, "Roles"). Datanodes report; gateways upload,
//! read and delete. A new rpc is refused until it is added here.

use kdfs_proto::authz::Rules;
use kdfs_proto::roles::Role;

const DATANODE: &[Role] = &[Role::Datanode];
const GATEWAY: &[Role] = &[Role::Gateway];

/// The namenode's authorization table.
pub static RULES: Rules = Rules {
    service: "kdfs.v1.Namenode",
    rpcs: &[
        // A datanode's membership and block reports.
        ("Register", DATANODE),
        ("Heartbeat", DATANODE),
        ("FullBlockReport", DATANODE),
        ("IncrementalBlockReport", DATANODE),
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
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rpc of `service Namenode` in kdfs.proto has a row, and no row names an rpc
    /// that does not exist.
    #[test]
    fn the_table_names_every_rpc_of_the_service() {
        let proto = include_str!("../../proto/proto/kdfs.proto");
        let mut in_proto = kdfs_proto::authz::rpcs_in_proto(proto, "Namenode");
        let mut in_table: Vec<String> = RULES.rpcs.iter().map(|(m, _)| m.to_string()).collect();
        in_proto.sort();
        in_table.sort();
        assert!(!in_proto.is_empty());
        assert_eq!(in_table, in_proto);
    }
}
