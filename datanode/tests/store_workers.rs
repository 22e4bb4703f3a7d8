//! The store's background workers: the block scanner and quarantine pruning.

mod common;

use common::*;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdfs_core::BlockId;
use kdfs_datanode::scanner::{self, ScannerConfig, ScannerStats};
use kdfs_datanode::store::{CHECKSUM_CHUNK, Event};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn scanner_finds_a_flipped_byte_within_its_rate_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut total = 0u64;
    let mut ids = Vec::new();
    for i in 0..8u8 {
        let data = pattern(256 << 10, i);
        total += data.len() as u64;
        ids.push(store.put(&data).unwrap().id);
    }
    store.events().drain();
    let victim = ids[5];
    flip_byte(&store.block_path(&victim), 200_000);
    let rate = 4 << 20; // 2 MiB of blocks at 4 MiB/s: a pass takes ~0.5 s.
    let interval = Duration::from_millis(100);
    let stats = Arc::new(ScannerStats::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(scanner::run(
        store.clone(),
        ScannerConfig { interval, rate },
        stats.clone(),
        cancel.clone(),
    ));
    let window = interval + Duration::from_secs_f64(total as f64 / rate as f64);
    let started = Instant::now();
    let mut seen = Vec::new();
    wait_for(
        "the scanner's corrupt-block event",
        window * 2 + Duration::from_secs(1),
        || {
            seen.extend(store.events().drain().events);
            seen.contains(&Event::Corrupt(victim))
        },
    )
    .await;
    assert!(!store.contains(&victim), "corrupt block left the index");
    assert!(
        !store.block_path(&victim).exists(),
        "corrupt block quarantined"
    );
    // Rate limited: a pass over 2 MiB at 4 MiB/s cannot finish in much under 0.5 s.
    wait_for("a completed scanner pass", Duration::from_secs(5), || {
        stats
            .passes_completed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(store.block_count(), 7);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn quarantined_replicas_are_deleted_after_their_retention_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    // A real quarantine: a corrupt 5-chunk block (with its sidecar) found by a read.
    let data = pattern(5 * CHECKSUM_CHUNK + 7, 4);
    let c = store.put(&data).unwrap();
    flip_byte(&store.block_path(&c.id), 100);
    assert!(store.read_range(&c.id, 0, 0).unwrap().any(|p| p.is_err()));
    let q = dir.path().join("quarantine");
    let fresh = files_in(&q);
    assert_eq!(fresh.len(), 2, "replica and sidecar: {fresh:?}");
    // An old quarantine (a replica and its sidecar), and files the store never puts
    // there: foreign names, a bad id, a bad time.
    let old = BlockId::of(b"old reject");
    let old_files = [format!("{old}.1000"), format!("{old}.1000.crc")];
    let foreign = [
        "notes.txt".to_owned(),
        "abcd.1000".to_owned(),
        format!("{old}.x1000"),
        format!("{old}."),
    ];
    for name in old_files.iter().chain(&foreign) {
        fs::write(q.join(name), b"0123456789").unwrap();
    }

    // A store-level pass with the cutoff an hour ago removes only the old pair.
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let pruned = store.prune_quarantine(cutoff).unwrap();
    assert_eq!((pruned.files, pruned.bytes), (2, 20));
    let mut left = files_in(&q);
    left.sort();
    let mut want: Vec<PathBuf> = fresh
        .iter()
        .cloned()
        .chain(foreign.iter().map(|n| q.join(n)))
        .collect();
    want.sort();
    assert_eq!(left, want);
    // Nothing left to prune: a second pass removes nothing.
    assert_eq!(store.prune_quarantine(cutoff).unwrap().files, 0);

    // The worker with a short retention deletes the fresh quarantine within a pass or
    // two, still leaving the foreign files, and stops when cancelled.
    let cancel = CancellationToken::new();
    let task = tokio::spawn(kdfs_datanode::store::run_quarantine_pruning(
        store.clone(),
        Duration::from_millis(300),
        cancel.clone(),
    ));
    wait_for(
        "only the foreign files left in quarantine",
        Duration::from_secs(10),
        || files_in(&q).len() == foreign.len(),
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    // The block itself can still be written again and read.
    assert!(!store.put(&data).unwrap().existed);
    assert_eq!(store.get(&c.id).unwrap(), data);
}
