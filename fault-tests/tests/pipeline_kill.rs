//! Scenario 2 (issue 7): SIGKILL a datanode of the write pipeline during a large, slowly
//! streamed upload. Every upload must succeed (pipeline recovery with the survivors,
//! min_replicas 2), read back intact, and be healed to three replicas on the remaining
//! nodes. Rounds repeat (the victim back in between) until the kills have hit the head,
//! the middle and the tail of a pipeline, at most `MAX_ROUNDS` times (which positions a
//! kill hits is up to the namenode's placement: the test reports the coverage).
//!
//! The victim is a datanode with a write in progress (a file in its `tmp/`) once 40% of
//! the upload is sent (or, if none is caught by 60%, the round's node). Its position is read from the gateway's recovery log: a lost head
//! re-sends the block with 0 replicas committed, a lost middle with 1 (the head's), and a
//! lost tail is accepted with fewer replicas and healed later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kdfs_testkit::{Options, ProcessCluster, SlowReader, Stored, random_bytes, sha256_hex};

const SIZE: usize = 6 << 20;
const MAX_ROUNDS: usize = 3;

/// Pipeline positions the gateway's log shows were lost, in `log`.
fn positions_lost(log: &str) -> Vec<&'static str> {
    log.lines()
        .filter_map(|l| {
            if l.contains("accepted with fewer replicas") {
                Some("tail")
            } else if l.contains("re-sending the block") && l.contains("committed=0") {
                Some("head")
            } else if l.contains("re-sending the block") && l.contains("committed=1") {
                Some("middle")
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn sigkill_each_pipeline_position_during_large_uploads() {
    let mut c = ProcessCluster::start(Options::default().datanodes(4));
    let mut files: Vec<Stored> = Vec::new();
    let mut hit = BTreeMap::<&'static str, usize>::new();
    for round in 0..MAX_ROUNDS {
        if ["head", "middle", "tail"]
            .iter()
            .all(|p| hit.contains_key(p))
        {
            break;
        }
        let data = random_bytes(SIZE, 20 + round as u64);
        let hash = sha256_hex(&data);
        let sent = Arc::new(AtomicUsize::new(0));
        let log_before = c.gateway.log_text().len();
        let upload = {
            let (api, sent) = (c.api.clone(), sent.clone());
            std::thread::spawn(move || {
                let reader = SlowReader::new(data, 64 << 10, Duration::from_millis(15), move |n| {
                    sent.store(n, Ordering::Relaxed)
                });
                api.try_upload_reader(&format!("large-{round}.bin"), reader)
            })
        };
        // Rotate over the nodes: the first one, from `round` on, that is writing now.
        let mut victim = None;
        c.wait_until(
            "40% sent and a datanode in a pipeline",
            Duration::from_secs(30),
            || {
                if upload.is_finished() {
                    return true;
                }
                let at = sent.load(Ordering::Relaxed);
                if at < SIZE * 2 / 5 {
                    return false;
                }
                victim = (0..4)
                    .map(|k| (round + k) % 4)
                    .find(|&i| !c.temp_files(i).is_empty());
                // No write caught by 60%: kill the round's node anyway (with 3 of 4
                // nodes in every pipeline it is in most of them).
                if victim.is_none() && at >= SIZE * 3 / 5 {
                    victim = Some(round % 4);
                }
                victim.is_some()
            },
        );
        let Some(victim) = victim else {
            // The upload finished before a write was caught in progress: nothing killed.
            let answer = upload.join().expect("upload thread");
            let answer = answer.unwrap_or_else(|e| panic!("upload failed: {e}"));
            assert_eq!(answer["hash"].as_str(), Some(hash.as_str()), "{answer}");
            files.push(Stored { hash, len: SIZE });
            eprintln!("scenario 2: round {round}: no write caught in progress, nothing killed");
            continue;
        };
        let killed = Instant::now();
        c.kill_datanode(victim);
        let answer = upload
            .join()
            .expect("upload thread")
            .unwrap_or_else(|e| panic!("upload with datanode {victim} killed failed: {e}"));
        assert_eq!(answer["hash"].as_str(), Some(hash.as_str()), "{answer}");
        let stored = Stored {
            hash: hash.clone(),
            len: SIZE,
        };
        c.verify_all(std::slice::from_ref(&stored));
        files.push(stored);

        let log = c.gateway.log_text();
        let lost = positions_lost(&log[log_before.min(log.len())..]);
        for p in &lost {
            *hit.entry(p).or_default() += 1;
        }
        let what = format!("healed to 3 replicas without datanode {victim}");
        c.wait_replicated(&what, Duration::from_secs(90), &files, &[victim]);
        eprintln!(
            "scenario 2: round {round}: datanode {victim} killed at 40% of a {} MiB upload, \
             positions lost {lost:?}; upload ok; healed {:.2}s after the kill",
            SIZE >> 20,
            killed.elapsed().as_secs_f64()
        );
        c.verify_all(&files);
        c.restart_datanode(victim);
        c.wait_replicated(
            "exactly 3 replicas after the victim returned",
            Duration::from_secs(60),
            &files,
            &[],
        );
    }
    eprintln!("scenario 2: positions killed over all rounds: {hit:?}");
    assert!(
        !hit.is_empty(),
        "no kill hit a pipeline: the scenario tested nothing"
    );
    c.verify_all(&files);
}
