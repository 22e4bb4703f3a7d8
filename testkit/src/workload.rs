//! A steady stream of uploads (small and multi-block) and deletes through the gateway,
//! run by background threads while a test kills or cuts off namenodes, with every
//! call's outcome kept: what got a 2xx is what must survive (or stay deleted).
//!
//! Each upload has content of its own (never uploaded twice), so an acknowledged delete
//! of it means the file must be gone for good. A call that failed leaves its file in
//! an unknown state (the namenode may have committed it before the answer was lost),
//! so it is in neither [`Outcome::present`] nor [`Outcome::gone`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::{Api, HttpFailure, Stored};
use crate::data::{random_bytes, sha256_hex};

/// Pause after a failed call, so a client does not spin while no namenode leads.
const FAILED_PAUSE: Duration = Duration::from_millis(50);

/// What a call was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Upload,
    Delete,
}

/// One call and its outcome.
#[derive(Clone, Debug)]
pub struct Op {
    pub kind: OpKind,
    pub hash: String,
    pub len: usize,
    pub started: Instant,
    pub finished: Instant,
    pub result: Result<(), HttpFailure>,
}

/// What a finished workload says must hold (files whose delete failed are in neither
/// list).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Uploads acknowledged and never deleted with an acknowledgement.
    pub present: Vec<Stored>,
    /// Files whose delete was acknowledged.
    pub gone: Vec<String>,
    /// Every call, in the order they finished.
    pub ops: Vec<Op>,
}

/// The background clients.
pub struct Workload {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Op>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts `clients` threads uploading through `api`, each making every third call a delete of its own
    /// oldest acknowledged upload; content from `seed`. Every fourth upload
    /// spans several blocks of `block_size` bytes.
    pub fn start(api: &Api, clients: usize, seed: u64, block_size: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (api, stop, log, counter) =
                    (api.clone(), stop.clone(), log.clone(), counter.clone());
                std::thread::spawn(move || client(&api, &stop, &log, &counter, seed, block_size))
            })
            .collect();
        Self { stop, log, threads }
    }

    /// A copy of every call finished so far.
    pub fn ops(&self) -> Vec<Op> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uploads started at or after `t` that succeeded.
    pub fn uploads_ok_since(&self, t: Instant) -> usize {
        self.ops()
            .iter()
            .filter(|o| o.kind == OpKind::Upload && o.started >= t && o.result.is_ok())
            .count()
    }

    /// How long after `t` the first upload started at or after `t` succeeded.
    pub fn first_upload_ok_after(&self, t: Instant) -> Option<Duration> {
        self.ops()
            .iter()
            .filter(|o| o.kind == OpKind::Upload && o.started >= t && o.result.is_ok())
            .map(|o| o.finished - t)
            .min()
    }

    /// Stops the clients, waits for their last calls, and says what must hold.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a workload client panicked");
        }
        let ops = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        outcome(ops)
    }
}

/// What `ops` (in finishing order) say must be present and must be gone.
fn outcome(ops: Vec<Op>) -> Outcome {
    let deletes = |ok: bool| -> std::collections::BTreeSet<&str> {
        ops.iter()
            .filter(|o| o.kind == OpKind::Delete && o.result.is_ok() == ok)
            .map(|o| o.hash.as_str())
            .collect()
    };
    // A delete that failed may still have been committed: its file is undecided.
    let (deleted, undecided) = (deletes(true), deletes(false));
    let present = ops
        .iter()
        .filter(|o| o.kind == OpKind::Upload && o.result.is_ok())
        .filter(|o| !deleted.contains(o.hash.as_str()) && !undecided.contains(o.hash.as_str()))
        .map(|o| Stored {
            hash: o.hash.clone(),
            len: o.len,
        })
        .collect();
    let gone = deleted.into_iter().map(str::to_owned).collect();
    Outcome { present, gone, ops }
}

fn client(
    api: &Api,
    stop: &AtomicBool,
    log: &Mutex<Vec<Op>>,
    counter: &AtomicU64,
    seed: u64,
    block_size: usize,
) {
    let mut mine: Vec<(String, usize)> = Vec::new();
    let mut calls = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = counter.fetch_add(1, Ordering::Relaxed);
        calls += 1;
        let op = if calls.is_multiple_of(3) && !mine.is_empty() {
            let (hash, len) = mine.remove(0);
            let started = Instant::now();
            let result = api.try_delete(&hash).map(drop);
            Op {
                kind: OpKind::Delete,
                hash,
                len,
                started,
                finished: Instant::now(),
                result,
            }
        } else {
            // Small (a batch) or two to four blocks.
            let len = if k % 4 == 3 {
                block_size * (2 + (k as usize % 3)) - 17
            } else {
                1 + (k as usize * 7919) % (48 << 10)
            };
            let data = random_bytes(len, seed.wrapping_mul(1_000_003) + k);
            let hash = sha256_hex(&data);
            let started = Instant::now();
            let result =
                api.try_upload_named(&format!("ha-{k}"), data)
                    .and_then(|v| match v["hash"].as_str() {
                        Some(h) if h == hash => Ok(()),
                        _ => Err(HttpFailure {
                            status: 200,
                            body: format!("answered another hash: {v}"),
                        }),
                    });
            if result.is_ok() {
                mine.push((hash.clone(), len));
            }
            Op {
                kind: OpKind::Upload,
                hash,
                len,
                started,
                finished: Instant::now(),
                result,
            }
        };
        let failed = op.result.is_err();
        log.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        if failed {
            std::thread::sleep(FAILED_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, hash: &str, ok: bool) -> Op {
        let now = Instant::now();
        Op {
            kind,
            hash: hash.into(),
            len: 1,
            started: now,
            finished: now,
            result: if ok {
                Ok(())
            } else {
                Err(HttpFailure {
                    status: 503,
                    body: String::new(),
                })
            },
        }
    }

    #[test]
    fn only_acknowledged_calls_decide() {
        let o = outcome(vec![
            op(OpKind::Upload, "a", true),
            op(OpKind::Upload, "b", true),
            op(OpKind::Upload, "c", false),
            op(OpKind::Upload, "d", true),
            op(OpKind::Delete, "a", true),
            op(OpKind::Delete, "b", false),
        ]);
        let present: Vec<&str> = o.present.iter().map(|s| s.hash.as_str()).collect();
        assert_eq!(present, ["d"], "b's delete failed: undecided");
        assert_eq!(o.gone, ["a"]);
        assert_eq!(o.ops.len(), 6);
    }
}
