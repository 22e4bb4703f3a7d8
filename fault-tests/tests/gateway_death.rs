//! Scenario 4 (issue 7): SIGKILL the gateway in the middle of an upload. No file record
//! may appear, the blocks the aborted upload wrote are collected once its lease expires,
//! other files are untouched, and the same content uploads fine afterwards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kdfs_testkit::{Options, ProcessCluster, SlowReader, random_bytes, sha256_hex};

#[test]
fn sigkill_gateway_mid_upload_leaves_no_record_and_no_garbage() {
    let mut c = ProcessCluster::start(Options::default().namenode_arg("--lease-ttl", "3s"));
    let kept = c.upload(&random_bytes(600 << 10, 41));
    let kept_blocks: BTreeSet<String> = c.block_ids(&kept.hash).into_iter().collect();

    let data = random_bytes(3 << 20, 42);
    let hash = sha256_hex(&data);
    let sent = Arc::new(AtomicUsize::new(0));
    let upload = {
        let (api, sent, data) = (c.api.clone(), sent.clone(), data.clone());
        std::thread::spawn(move || {
            let reader = SlowReader::new(data, 64 << 10, Duration::from_millis(20), move |n| {
                sent.store(n, Ordering::Relaxed)
            });
            api.try_upload_reader("interrupted.bin", reader)
        })
    };
    let on_disk = |c: &ProcessCluster| -> BTreeSet<String> {
        (0..c.datanodes.len())
            .flat_map(|i| c.blocks_on_disk(i))
            .collect()
    };
    c.wait_until(
        "half the upload sent and some of its blocks on disk",
        Duration::from_secs(30),
        || sent.load(Ordering::Relaxed) >= (3 << 20) / 2 && on_disk(&c).len() > kept_blocks.len(),
    );
    c.kill_gateway();
    let result = upload.join().expect("upload thread");
    assert!(
        result.is_err(),
        "the interrupted upload succeeded: {result:?}"
    );
    let orphans = on_disk(&c).len() - kept_blocks.len();

    c.restart_gateway();
    assert!(
        c.file(&hash).expect("GET /files").is_none(),
        "the interrupted upload has a file record"
    );
    let listed = c.listed_hashes();
    assert_eq!(listed, vec![kept.hash.clone()]);

    // The orphan blocks go once the upload's lease has expired; nothing else does.
    let took = c.wait_until(
        "orphan blocks of the interrupted upload deleted from every datanode",
        Duration::from_secs(60),
        || (0..3).all(|i| c.blocks_on_disk(i) == kept_blocks),
    );
    eprintln!(
        "scenario 4: {orphans} orphan blocks collected {:.2}s after the gateway restart \
         (lease TTL 3s)",
        took.as_secs_f64()
    );
    for i in 0..3 {
        assert!(
            c.temp_files(i).is_empty(),
            "datanode {i} keeps partial writes: {:?}",
            c.temp_files(i)
        );
    }

    // The same content uploads at the first try (even if the orphan deletes went out
    // moments ago), and everything reads back.
    let again = c.upload(&data);
    assert_eq!(again.hash, hash);
    c.verify_all(&[kept, again]);
}
