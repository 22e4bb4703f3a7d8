//! Who may call each rpc of a datanode: the one table `kdfs_proto::authz` enforces on
//! its gRPC server (docs/security.md, "Roles"). Gateways write and read; datanodes
//! forward pipeline writes to each other (transfers included) and may read. The
//! namenode never dials a datanode: its commands ride on heartbeat replies, so
//! `TransferBlock` (the same copy, callable directly by tests and the benchmark over
//! plaintext) is served to no certificate at all.

use kdfs_proto::authz::Rules;
use kdfs_proto::roles::Role;

const GATEWAY_OR_DATANODE: &[Role] = &[Role::Gateway, Role::Datanode];

/// The datanode's authorization table.
pub static RULES: Rules = Rules {
    service: "kdfs.v1.Datanode",
    rpcs: &[
        ("WriteBlock", GATEWAY_OR_DATANODE),
        ("WriteBlocks", GATEWAY_OR_DATANODE),
        ("ReadBlock", GATEWAY_OR_DATANODE),
        ("TransferBlock", &[]),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rpc of `service Datanode` in kdfs.proto has a row, and no row names an rpc
    /// that does not exist.
    #[test]
    fn the_table_names_every_rpc_of_the_service() {
        let proto = include_str!("../../../proto/proto/kdfs.proto");
        let mut in_proto = kdfs_proto::authz::rpcs_in_proto(proto, "Datanode");
        let mut in_table: Vec<String> = RULES.rpcs.iter().map(|(m, _)| m.to_string()).collect();
        in_proto.sort();
        in_table.sort();
        assert!(!in_proto.is_empty());
        assert_eq!(in_table, in_proto);
    }
}
