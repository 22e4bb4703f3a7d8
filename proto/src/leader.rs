//! Finding the namenode leader (DESIGN.md §5, high availability). A namenode that is not
//! the leader refuses every rpc but `NamenodeRole` with UNAVAILABLE and the metadata key
//! [`NOT_LEADER_KEY`], whose value is the leader's gRPC address (`host:port`, as written
//! in `--peers`) or [`UNKNOWN_LEADER`]. Datanodes and gateways given several `--namenode`
//! URLs follow it; a plain UNAVAILABLE (a namenode down) makes them try the next one.

use tonic::Status;
use tonic::metadata::MetadataValue;

/// The metadata key of a "not the leader" refusal.
pub const NOT_LEADER_KEY: &str = "kdfs-not-leader";
/// Its value while no leader is known (an election is running, or this namenode is cut off).
pub const UNKNOWN_LEADER: &str = "unknown";

/// The refusal a namenode that is not the leader answers with.
pub fn not_leader(leader: Option<&str>) -> Status {
    let message = match leader {
        Some(address) => format!("this namenode is not the leader; the leader is {address}"),
        None => "this namenode is not the leader and no leader is known yet".to_string(),
    };
    let mut status = Status::unavailable(message);
    let value = leader
        .and_then(|address| MetadataValue::try_from(address).ok())
        .unwrap_or_else(|| MetadataValue::from_static(UNKNOWN_LEADER));
    status.metadata_mut().insert(NOT_LEADER_KEY, value);
    status
}

/// What a refusal says of the leader: `None` when `status` is not a "not the leader"
/// refusal, `Some(None)` when it is but names no leader, `Some(Some(address))` otherwise.
pub fn leader_hint(status: &Status) -> Option<Option<String>> {
    let value = status.metadata().get(NOT_LEADER_KEY)?.to_str().ok()?;
    Some((value != UNKNOWN_LEADER && !value.is_empty()).then(|| value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_leader_when_known() {
        let known = not_leader(Some("nn-1:8020"));
        assert_eq!(known.code(), tonic::Code::Unavailable);
        assert_eq!(leader_hint(&known), Some(Some("nn-1:8020".to_string())));
        assert_eq!(leader_hint(&not_leader(None)), Some(None));
        assert_eq!(
            leader_hint(&Status::unavailable("connection refused")),
            None
        );
    }
}
