//! What the HA scenarios (`ha_*.rs`) share: checking a workload's outcome on every
//! namenode of the group, and summing up failover times.

use std::collections::BTreeSet;
use std::time::Duration;

use kdfs_testkit::workload::{Op, OpKind};
use kdfs_testkit::{Outcome, ProcessCluster};

/// How long a failover step (an election, a restart catching up) may take.
pub const FAILOVER_PATIENCE: Duration = Duration::from_secs(60);

/// Every acknowledged upload listed and every acknowledged delete gone, on each
/// namenode in turn as the leader (leaders are killed until it leads), then every
/// present file downloaded and its SHA-256 compared.
pub fn verify_on_every_namenode(c: &mut ProcessCluster, outcome: &Outcome, scenario: &str) {
    c.wait_caught_up("every namenode caught up", FAILOVER_PATIENCE);
    let mut kills = 0;
    for i in 0..c.namenode_count() {
        kills += c.lead_with(i, FAILOVER_PATIENCE);
        check_records(c, outcome, &format!("with namenode {i} leading"));
    }
    c.verify_all(&outcome.present);
    eprintln!(
        "{scenario}: {} acknowledged uploads present and {} acknowledged deletes gone on \
         each of {} namenodes ({kills} leader kills to have each lead)",
        outcome.present.len(),
        outcome.gone.len(),
        c.namenode_count()
    );
}

/// The leader's records: every present file listed with its size, every gone one
/// neither listed nor found.
pub fn check_records(c: &ProcessCluster, outcome: &Outcome, when: &str) {
    let listed: BTreeSet<String> = c.listed_hashes().into_iter().collect();
    let missing: Vec<&str> = outcome
        .present
        .iter()
        .filter(|s| !listed.contains(&s.hash))
        .map(|s| s.hash.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: {} acknowledged uploads are not listed: {missing:?}",
        missing.len()
    );
    for g in &outcome.gone {
        assert!(
            !listed.contains(g),
            "{when}: {g} is listed although its delete was acknowledged"
        );
        let found = c
            .file(g)
            .unwrap_or_else(|e| panic!("{when}: GET /files/{g}: {e}"));
        assert!(
            found.is_none(),
            "{when}: {g} is found although its delete was acknowledged"
        );
    }
}

/// Every failed call failed the way a client can retry: a 502/503/504, or no answer
/// (0: the gateway answered before reading the whole body). Returns how many failed.
pub fn assert_retryable_failures(ops: &[Op]) -> usize {
    let failed: Vec<&Op> = ops.iter().filter(|o| o.result.is_err()).collect();
    for o in &failed {
        let e = o.result.as_ref().expect_err("a failure");
        assert!(
            matches!(e.status, 0 | 502..=504),
            "a {:?} of {} failed with something else than a retryable 5xx: {e}",
            o.kind,
            o.hash
        );
    }
    failed.len()
}

/// `min / median / max` of `times`, in seconds.
pub fn distribution(times: &[Duration]) -> String {
    let mut t = times.to_vec();
    t.sort();
    match (t.first(), t.get(t.len() / 2), t.last()) {
        (Some(min), Some(med), Some(max)) => format!(
            "min {:.2}s / median {:.2}s / max {:.2}s over {}",
            min.as_secs_f64(),
            med.as_secs_f64(),
            max.as_secs_f64(),
            t.len()
        ),
        _ => "none".to_owned(),
    }
}

/// Calls of `kind` in `ops` that succeeded.
pub fn succeeded(ops: &[Op], kind: OpKind) -> usize {
    ops.iter()
        .filter(|o| o.kind == kind && o.result.is_ok())
        .count()
}
