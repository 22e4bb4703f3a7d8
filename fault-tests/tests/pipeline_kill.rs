//! Scenario 2 (issue 7): SIGKILL a datanode in the write pipeline during a large, slowly
//! streamed upload, once for each of three datanodes. The upload must succeed (pipeline
//! recovery with the survivors, min_replicas 2), the file must read back intact, and the
//! namenode must heal every block back to three replicas on the remaining nodes.
//!
//! With four datanodes, replication 3 and two blocks or more in flight, the killed node is
//! in most pipelines at the moment of the kill, at varying positions; the gateway's log
//! tells which recovery happened (a head or middle loss re-sends the block to a new
//! pipeline; a tail loss is accepted with fewer replicas and healed later).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kdfs_fault_tests::{Options, SlowReader, Stored, TestCluster, random_bytes, sha256_hex};

const SIZE: usize = 6 << 20;

#[test]
fn sigkill_pipeline_member_during_large_upload() {
    let mut c = TestCluster::start(Options::default().datanodes(4));
    let mut files: Vec<Stored> = Vec::new();
    for victim in 0..3 {
        let data = random_bytes(SIZE, 20 + victim as u64);
        let hash = sha256_hex(&data);
        let sent = Arc::new(AtomicUsize::new(0));
        let log_before = c.gateway.log_text().len();
        let upload = {
            let (api, sent) = (c.api.clone(), sent.clone());
            std::thread::spawn(move || {
                let reader = SlowReader::new(data, 64 << 10, Duration::from_millis(10), move |n| {
                    sent.store(n, Ordering::Relaxed)
                });
                api.try_upload_reader(&format!("large-{victim}.bin"), reader)
            })
        };
        c.wait_until(Duration::from_secs(30), "40% of the upload sent", || {
            sent.load(Ordering::Relaxed) >= SIZE * 2 / 5
        });
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
        let new = &log[log_before.min(log.len())..];
        let resent = new
            .matches("re-sending the block to a new pipeline")
            .count();
        let short = new.matches("accepted with fewer replicas").count();
        let what = format!("healed to 3 replicas without datanode {victim}");
        c.wait_replicated(Duration::from_secs(90), &what, &files, &[victim]);
        eprintln!(
            "scenario 2: datanode {victim} killed at 40% of a {} MiB upload: {resent} blocks \
             re-sent to a new pipeline (head/middle lost), {short} accepted short (tail lost); \
             healed {:.2}s after the kill",
            SIZE >> 20,
            killed.elapsed().as_secs_f64()
        );
        c.verify_all(&files);
        c.restart_datanode(victim);
        c.wait_replicated(
            Duration::from_secs(60),
            "exactly 3 replicas after the victim returned",
            &files,
            &[],
        );
    }
    c.verify_all(&files);
}
