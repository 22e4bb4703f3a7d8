//! The pipeline recovery policy of one block, as a pure state machine: fed the outcome
//! of each pipeline attempt, it says whether the block is accepted, which new pipelines
//! to ask the namenode for, or why the upload gives up (see [`super::upload`],
//! "Recovery"). [`super::block`] performs the calls; nothing here does I/O, so every
//! rule is checked by the table in the tests below.
//!
//! The rules:
//! - A block is accepted once `min_replicas` distinct datanodes committed it, over all
//!   attempts (the namenode heals it to `replication` later).
//! - A node that a pipeline names as failed is a *suspect* (maybe only cut off by
//!   another node's failure); with no names, the first node that did not commit is.
//!   A node after a failed one did not fail itself, so it stays eligible. A head whose
//!   whole call failed is *dead*. A pipeline that wrote another length than was sent
//!   makes every node of it a suspect.
//! - A new pipeline asks for the replicas still missing to reach `replication`,
//!   excluding suspects, dead heads and nodes that hold the block; if the cluster
//!   cannot give that, for what `min_replicas` still needs; then the same two with the
//!   suspects given another chance (never the dead heads).
//! - After `attempts` pipelines, or when no new pipeline can be had, the upload fails
//!   with how many replicas were obtained. When every attempt was refused for lack of
//!   room, that is "out of space" (507), not a shortage of datanodes (503): the
//!   namenode's view of free space is a heartbeat old, so a node it picked may refuse.

use std::collections::BTreeSet;

use kdfs_core::DatanodeId;
use kdfs_proto::wire::Location;

use crate::error::Error;

/// A node of a pipeline that reported a failure in its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeFailure {
    /// The node as the pipeline names it: its id or its address.
    pub node: String,
    pub reason: String,
    /// The node refused the block for lack of room.
    pub out_of_space: bool,
}

/// What one attempt to write the block down a pipeline came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The head answered: the block's length as written, the nodes that committed it
    /// (each once, in ack order) and the failures, in pipeline order (the first is
    /// the cause; the ones after it were not reached).
    Acked {
        length: u64,
        committed: Vec<DatanodeId>,
        failed: Vec<NodeFailure>,
    },
    /// The call to the head failed as a whole (or the stream to it broke): nothing of
    /// this attempt is durable.
    Broken { reason: String, out_of_space: bool },
}

/// A request for a new pipeline: nodes to exclude and replicas to ask for.
pub(crate) type Request = (BTreeSet<DatanodeId>, u32);

/// What to do after an attempt.
#[derive(Debug)]
pub(crate) enum Next {
    /// Enough replicas: the block is stored on these nodes.
    Accept(Vec<DatanodeId>),
    /// Ask the namenode for a pipeline with each request in turn, until one is not
    /// answered "not enough datanodes" (see [`Recovery::no_pipeline`]), and re-send
    /// the block down it.
    Reallocate(Vec<Request>),
    /// The upload fails.
    GiveUp(Error),
}

/// The recovery state of one block (see the module docs).
#[derive(Debug)]
pub(crate) struct Recovery {
    index: u64,
    replication: usize,
    min_replicas: usize,
    max_attempts: usize,
    /// Nodes holding the block, over every attempt.
    committed: Vec<DatanodeId>,
    /// Nodes named as failed by a pipeline.
    suspects: BTreeSet<DatanodeId>,
    /// Heads whose whole call failed (surely unusable for now).
    dead: BTreeSet<DatanodeId>,
    last_error: String,
    /// Whether every failed attempt failed because a node had no room for the block.
    only_space: bool,
    attempts: usize,
}

impl Recovery {
    /// The policy for block `index`, written with at most `max_attempts` pipelines.
    pub(crate) fn new(
        index: u64,
        replication: usize,
        min_replicas: usize,
        max_attempts: usize,
    ) -> Self {
        Self {
            index,
            replication,
            min_replicas,
            max_attempts,
            committed: Vec::new(),
            suspects: BTreeSet::new(),
            dead: BTreeSet::new(),
            last_error: String::new(),
            only_space: true,
            attempts: 0,
        }
    }

    /// Nodes holding the block so far.
    pub(crate) fn committed(&self) -> &[DatanodeId] {
        &self.committed
    }

    /// Why the last attempt failed.
    pub(crate) fn last_error(&self) -> &str {
        &self.last_error
    }

    /// Takes in the outcome of an attempt down `pipeline` that sent `length` bytes.
    pub(crate) fn record(&mut self, pipeline: &[Location], length: u64, outcome: Outcome) -> Next {
        self.attempts += 1;
        match outcome {
            Outcome::Acked { length: wrote, .. } if wrote != length => {
                self.last_error = format!("pipeline wrote {wrote} bytes, sent {length}");
                self.only_space = false;
                self.suspects.extend(pipeline.iter().map(|l| l.id));
            }
            Outcome::Acked {
                committed, failed, ..
            } => {
                for d in committed {
                    if !self.committed.contains(&d) {
                        self.committed.push(d);
                    }
                }
                let named: Vec<DatanodeId> = failed
                    .iter()
                    .filter_map(|f| {
                        pipeline
                            .iter()
                            .find(|l| l.id.to_string() == f.node || l.address == f.node)
                            .map(|l| l.id)
                    })
                    .collect();
                if named.is_empty() {
                    if let Some(l) = pipeline.iter().find(|l| !self.committed.contains(&l.id)) {
                        self.suspects.insert(l.id);
                    }
                } else {
                    self.suspects.extend(named);
                }
                match failed.first() {
                    Some(f) => {
                        self.last_error = format!("{}: {}", f.node, f.reason);
                        self.only_space &= f.out_of_space;
                    }
                    None if self.committed.len() < self.min_replicas => self.only_space = false,
                    None => {}
                }
            }
            Outcome::Broken {
                reason,
                out_of_space,
            } => {
                let head = &pipeline[0];
                self.last_error = format!("{}: {reason}", head.address);
                self.only_space &= out_of_space;
                self.dead.insert(head.id);
            }
        }
        if self.committed.len() >= self.min_replicas {
            return Next::Accept(self.committed.clone());
        }
        if self.attempts >= self.max_attempts {
            return Next::GiveUp(self.not_enough(self.last_error.clone()));
        }
        let mut strict: BTreeSet<DatanodeId> = self.suspects.union(&self.dead).copied().collect();
        strict.extend(self.committed.iter().copied());
        let mut lenient: BTreeSet<DatanodeId> = self.dead.clone();
        lenient.extend(self.committed.iter().copied());
        let wanted = (self.replication - self.committed.len()) as u32;
        let needed = (self.min_replicas - self.committed.len()) as u32;
        Next::Reallocate(vec![
            (strict.clone(), wanted),
            (strict, needed),
            (lenient.clone(), wanted),
            (lenient, needed),
        ])
    }

    /// The error when no new pipeline could be had: `e` is the namenode's last answer.
    /// No node with room for the rest is out of space (507), not a shortage of live
    /// datanodes (503).
    pub(crate) fn no_pipeline(&self, e: Error) -> Error {
        match e {
            Error::NoSpace(msg) => Error::NoSpace(format!(
                "block {} got {} of the {} replicas required: {}; no new pipeline: {msg}",
                self.index,
                self.committed.len(),
                self.min_replicas,
                self.last_error
            )),
            e @ Error::NotEnoughDatanodes(_) => {
                self.not_enough(format!("{}; no new pipeline: {e}", self.last_error))
            }
            e => e,
        }
    }

    /// The error when the retained block could not be read back for a re-send.
    pub(crate) fn cannot_resend(&self, why: &str) -> Error {
        self.not_enough(format!(
            "{}; cannot re-send the block: {why}",
            self.last_error
        ))
    }

    fn not_enough(&self, last_error: String) -> Error {
        let e = Error::NotEnoughReplicas {
            index: self.index,
            obtained: self.committed.len(),
            needed: self.min_replicas,
            attempts: self.attempts,
            last_error,
        };
        if self.only_space {
            Error::NoSpace(format!(
                "every pipeline attempt was refused for lack of room: {e}"
            ))
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datanode `n` (1-based) of the test cluster: id `…n`, address `dn-n:9866`.
    fn dn(n: u8) -> DatanodeId {
        DatanodeId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02}")).unwrap()
    }

    fn pipeline(nodes: &[u8]) -> Vec<Location> {
        nodes
            .iter()
            .map(|&n| Location {
                id: dn(n),
                address: format!("dn-{n}:9866"),
            })
            .collect()
    }

    fn set(nodes: &[u8]) -> BTreeSet<DatanodeId> {
        nodes.iter().map(|&n| dn(n)).collect()
    }

    const LEN: u64 = 1000;

    /// An ack of `LEN` bytes: `committed` nodes, and failures named by address.
    fn ack(committed: &[u8], failed: &[(u8, bool)]) -> Outcome {
        Outcome::Acked {
            length: LEN,
            committed: committed.iter().map(|&n| dn(n)).collect(),
            failed: failed
                .iter()
                .map(|&(n, out_of_space)| NodeFailure {
                    node: format!("dn-{n}:9866"),
                    reason: if out_of_space {
                        "no room"
                    } else {
                        "disk error"
                    }
                    .into(),
                    out_of_space,
                })
                .collect(),
        }
    }

    fn broken(out_of_space: bool) -> Outcome {
        Outcome::Broken {
            reason: if out_of_space { "no room" } else { "refused" }.into(),
            out_of_space,
        }
    }

    /// What the policy should answer after the last attempt of a row.
    #[derive(Debug)]
    enum Want {
        Accept(&'static [u8]),
        /// Strict exclusion, replicas wanted then needed; lenient exclusion, the same.
        Reallocate {
            strict: &'static [u8],
            lenient: &'static [u8],
            wanted: u32,
            needed: u32,
        },
        /// The error's Display starts with this.
        GiveUp(&'static str),
    }

    /// Feeds `attempts` (a pipeline and what it came to) to a fresh policy for block 7
    /// with replication 3, min_replicas 2 and 3 attempts; checks the answer to each
    /// but the last is `Reallocate`, and the last answer.
    fn check(attempts: &[(&[u8], Outcome)], want: Want) {
        let mut r = Recovery::new(7, 3, 2, 3);
        let mut next = None;
        for (i, (nodes, outcome)) in attempts.iter().enumerate() {
            let n = r.record(&pipeline(nodes), LEN, outcome.clone());
            if i + 1 < attempts.len() {
                assert!(matches!(n, Next::Reallocate(_)), "attempt {i}: {n:?}");
            }
            next = Some(n);
        }
        let next = next.expect("at least one attempt");
        match (&want, next) {
            (Want::Accept(nodes), Next::Accept(got)) => {
                assert_eq!(
                    got,
                    nodes.iter().map(|&n| dn(n)).collect::<Vec<_>>(),
                    "{attempts:?}"
                );
            }
            (
                Want::Reallocate {
                    strict,
                    lenient,
                    wanted,
                    needed,
                },
                Next::Reallocate(got),
            ) => {
                let expected = vec![
                    (set(strict), *wanted),
                    (set(strict), *needed),
                    (set(lenient), *wanted),
                    (set(lenient), *needed),
                ];
                assert_eq!(got, expected, "{attempts:?}");
            }
            (Want::GiveUp(prefix), Next::GiveUp(e)) => {
                let e = e.to_string();
                assert!(e.starts_with(prefix), "{attempts:?}: {e}");
            }
            (want, got) => panic!("{attempts:?}: wanted {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn recovery_policy() {
        use Want::*;
        // Every node committed.
        check(&[(&[1, 2, 3], ack(&[1, 2, 3], &[]))], Accept(&[1, 2, 3]));
        // min_replicas is enough.
        check(
            &[(&[1, 2, 3], ack(&[1, 2], &[(3, false)]))],
            Accept(&[1, 2]),
        );
        // The tail failed and the middle with it: the named nodes are suspects, the
        // one who committed is excluded too, and one more replica is needed.
        check(
            &[(&[1, 2, 3], ack(&[1], &[(2, false), (3, false)]))],
            Reallocate {
                strict: &[1, 2, 3],
                lenient: &[1],
                wanted: 2,
                needed: 1,
            },
        );
        // No names: the first node that did not commit is the suspect, not the ones
        // after it.
        check(
            &[(&[1, 2, 3], ack(&[1], &[]))],
            Reallocate {
                strict: &[1, 2],
                lenient: &[1],
                wanted: 2,
                needed: 1,
            },
        );
        // A failure naming a node outside the pipeline names nobody.
        check(
            &[(&[1, 2, 3], ack(&[], &[(9, false)]))],
            Reallocate {
                strict: &[1],
                lenient: &[],
                wanted: 3,
                needed: 2,
            },
        );
        // The head's whole call failed: it is dead, excluded even leniently.
        check(
            &[(&[1, 2, 3], broken(false))],
            Reallocate {
                strict: &[1],
                lenient: &[1],
                wanted: 3,
                needed: 2,
            },
        );
        // A pipeline that wrote another length: all its nodes are suspects, its acks
        // do not count.
        check(
            &[(
                &[1, 2, 3],
                Outcome::Acked {
                    length: LEN - 1,
                    committed: vec![dn(1), dn(2), dn(3)],
                    failed: vec![],
                },
            )],
            Reallocate {
                strict: &[1, 2, 3],
                lenient: &[],
                wanted: 3,
                needed: 2,
            },
        );
        // Replicas add up over attempts (each node once).
        check(
            &[
                (&[1, 2, 3], ack(&[1], &[(2, false)])),
                (&[1, 4], ack(&[1, 4], &[])),
            ],
            Accept(&[1, 4]),
        );
        // Suspects and dead heads accumulate over attempts.
        check(
            &[
                (&[1, 2, 3], broken(false)),
                (&[4, 2, 3], ack(&[4], &[(2, false)])),
            ],
            Reallocate {
                strict: &[1, 2, 4],
                lenient: &[1, 4],
                wanted: 2,
                needed: 1,
            },
        );
        // Out of attempts: the error names what was obtained.
        check(
            &[
                (&[1, 2, 3], broken(false)),
                (&[4, 2, 3], ack(&[4], &[(2, false)])),
                (&[5, 3], ack(&[], &[(5, false)])),
            ],
            GiveUp(
                "block 7 got only 1 of the 2 replicas required after 3 pipeline attempts: dn-5:9866: disk error",
            ),
        );
        // Every attempt refused for lack of room: out of space.
        check(
            &[
                (&[1, 2, 3], broken(true)),
                (&[4, 2, 3], ack(&[4], &[(2, true)])),
                (&[5, 3], ack(&[], &[(5, true)])),
            ],
            GiveUp(
                "out of space: every pipeline attempt was refused for lack of room: block 7 got only 1",
            ),
        );
        // One attempt failed otherwise: not out of space.
        check(
            &[
                (&[1, 2, 3], broken(true)),
                (&[4, 2, 3], ack(&[4], &[(2, false)])),
                (&[5, 3], ack(&[], &[(5, true)])),
            ],
            GiveUp("block 7 got only 1 of the 2"),
        );
        // An ack with too few replicas and no failure named is not a lack of room.
        check(
            &[
                (&[1, 2, 3], broken(true)),
                (&[4, 2, 3], ack(&[4], &[])),
                (&[5, 3], broken(true)),
            ],
            GiveUp("block 7 got only 1 of the 2"),
        );
    }

    #[test]
    fn errors_when_no_pipeline_or_no_resend() {
        let mut r = Recovery::new(7, 3, 2, 3);
        let next = r.record(&pipeline(&[1, 2, 3]), LEN, ack(&[1], &[(2, true)]));
        assert!(matches!(next, Next::Reallocate(_)));
        // No node with room: 507 with what was obtained.
        let e = r.no_pipeline(Error::NoSpace("full".into()));
        assert!(matches!(e, Error::NoSpace(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "out of space: block 7 got 1 of the 2 replicas required: dn-2:9866: no room; no new pipeline: full"
        );
        // Not enough datanodes, after attempts that all lacked room: still 507.
        let e = r.no_pipeline(Error::NotEnoughDatanodes("2 live".into()));
        assert_eq!(
            e.to_string(),
            "out of space: every pipeline attempt was refused for lack of room: block 7 got only 1 of the 2 replicas required after 1 pipeline attempts: dn-2:9866: no room; no new pipeline: not enough live datanodes: 2 live"
        );
        // Other errors pass.
        let e = r.no_pipeline(Error::NamenodeUnreachable("down".into()));
        assert!(matches!(e, Error::NamenodeUnreachable(_)), "{e:?}");
        let e = r.cannot_resend("spool file: gone");
        assert!(
            e.to_string()
                .ends_with("dn-2:9866: no room; cannot re-send the block: spool file: gone"),
            "{e}"
        );

        let mut r = Recovery::new(0, 3, 2, 3);
        r.record(&pipeline(&[1, 2, 3]), LEN, broken(false));
        let e = r.no_pipeline(Error::NotEnoughDatanodes("1 live".into()));
        assert!(
            matches!(e, Error::NotEnoughReplicas { obtained: 0, .. }),
            "{e:?}"
        );
    }
}
