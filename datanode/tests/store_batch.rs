//! Batches of small blocks: room reserved up front, concurrent batches, the journal's
//! crash repair and checkpoints, and a block that fails alone.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;
use kdfs_datanode::capacity::CapacitySource;
use kdfs_datanode::error::Error;
use kdfs_datanode::store::{CHECKSUM_CHUNK, Event, Store, StoreConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_batch_reserves_its_room_up_front_and_each_block_takes_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let cfg = StoreConfig {
        capacity: CapacitySource::Fixed { total: 10_000 },
        ..StoreConfig::new(dir.path())
    };
    let (store, _) = Store::open(cfg).unwrap();
    let batch = store.begin_batch(6_000).unwrap();
    assert_eq!(store.space().unwrap().available, 4_000);
    assert!(matches!(
        store.begin_batch(5_000),
        Err(Error::OutOfSpace { .. })
    ));
    // A block in two pieces: committed; the room it did not take is given back.
    let a = pattern(2_500, 1);
    let pieces = vec![
        Bytes::copy_from_slice(&a[..1000]),
        Bytes::copy_from_slice(&a[1000..]),
    ];
    let mut results = batch.commit_all(vec![(pieces, BlockId::of(&a))]).await;
    let c = results.pop().unwrap().unwrap();
    assert!(!c.existed);
    assert_eq!(store.get(&c.id).unwrap(), a);
    let s = store.space().unwrap();
    assert_eq!((s.used, s.available), (2_500, 7_500));

    // In one batch: a wrong hash fails that block alone and leaves nothing behind; a
    // block already stored is a no-op that reports the replica again; a new block
    // commits; a block longer than the room left (4,000 − 1,000 − 2,500 − 300) fails
    // with TooLong.
    store.events().drain();
    let b = pattern(1_000, 2);
    let d = pattern(300, 3);
    let batch = store.begin_batch(4_000).unwrap();
    let results = batch
        .commit_all(vec![
            (vec![Bytes::from(b.clone())], BlockId::of(b"other")),
            (vec![Bytes::from(a.clone())], BlockId::of(&a)),
            (vec![Bytes::from(d.clone())], BlockId::of(&d)),
            (
                vec![Bytes::from(vec![1u8; 1_001])],
                BlockId::of(&[1u8; 1_001]),
            ),
        ])
        .await;
    let mut results = results.into_iter();
    let err = results.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(!store.contains(&BlockId::of(&b)));
    assert!(results.next().unwrap().unwrap().existed);
    assert!(!results.next().unwrap().unwrap().existed);
    let err = results.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::TooLong { .. }), "{err}");
    assert_eq!(store.get(&BlockId::of(&d)).unwrap(), d);
    let events: Vec<(BlockId, u64)> = store
        .events()
        .drain()
        .events
        .into_iter()
        .map(|e| match e {
            Event::Added { id, length, .. } => (id, length),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(events, vec![(c.id, 2_500), (BlockId::of(&d), 300)]);
    assert!(temp_files(&tmp).is_empty());
    assert_eq!(store.space().unwrap().available, 7_200);
}

/// Batches committing at once (several gateways writing) share their `syncfs` calls:
/// every block of every batch is committed, indexed, reported once and reads back,
/// and nothing is left in `tmp/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_committing_at_once_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    store.events().drain();
    let batches: Vec<Vec<Vec<u8>>> = (0..8u8)
        .map(|b| {
            (0..6u8)
                .map(|i| pattern(3_000 + 10 * usize::from(i), b * 16 + i))
                .collect()
        })
        .collect();
    let tasks: Vec<_> = batches
        .iter()
        .map(|blocks| {
            let store = store.clone();
            let blocks = batch_of(blocks);
            tokio::spawn(async move {
                let total = blocks.iter().map(|(b, _)| b[0].len() as u64).sum();
                store.begin_batch(total).unwrap().commit_all(blocks).await
            })
        })
        .collect();
    for (task, blocks) in tasks.into_iter().zip(&batches) {
        let results = task.await.unwrap();
        assert_eq!(results.len(), blocks.len());
        for (r, b) in results.into_iter().zip(blocks) {
            let c = r.unwrap();
            assert!(!c.existed);
            assert_eq!(c.id, BlockId::of(b));
            assert_eq!(store.get(&c.id).unwrap(), *b);
        }
    }
    let added = store
        .events()
        .drain()
        .events
        .into_iter()
        .filter(|e| matches!(e, Event::Added { .. }))
        .count();
    assert_eq!(added, 8 * 6);
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
}

/// A crash after a batch was acknowledged but before a checkpoint: its blocks' bytes
/// and names in place may not have reached the disk. The next start replays the
/// journal and puts back every block that is missing or damaged (its sidecar made
/// again), leaves intact ones alone, and stops at a torn record.
#[tokio::test]
async fn a_crash_after_a_batch_is_repaired_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open_store(root);
    let small = pattern(3_000, 1);
    let large = pattern(2 * CHECKSUM_CHUNK + 100, 2); // With a sidecar.
    let intact = pattern(2_000, 3);
    let partial = pattern(5_000, 4);
    let blocks = batch_of(&[&small, &large, &intact, &partial]);
    let ids: Vec<BlockId> = blocks.iter().map(|(_, id)| *id).collect();
    let total = blocks.iter().map(|(b, _)| b[0].len() as u64).sum();
    let results = store.begin_batch(total).unwrap().commit_all(blocks).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(store.journal_bytes() > total);
    drop(store); // Crashed: no checkpoint.

    // What the crash lost: one block's name, another's bytes and sidecar.
    let path_of = |id: &BlockId| Sharding::default().path(&root.join("blocks"), id);
    fs::remove_file(path_of(&ids[0])).unwrap();
    fs::write(path_of(&ids[1]), vec![0u8; large.len()]).unwrap();
    fs::remove_file(format!("{}.crc", path_of(&ids[1]).display())).unwrap();
    // And one block in place whose bytes reached the disk only in part.
    fs::OpenOptions::new()
        .write(true)
        .open(path_of(&ids[3]))
        .unwrap()
        .set_len(1_000)
        .unwrap();
    // And the journal ends in a record torn mid-append (never acknowledged).
    let journal = files_in(&root.join("journal"));
    assert_eq!(journal.len(), 1);
    let mut torn = fs::OpenOptions::new()
        .append(true)
        .open(&journal[0])
        .unwrap();
    std::io::Write::write_all(&mut torn, b"KJB1\x10\x00\x00\x00half a header").unwrap();

    let (store, report) = Store::open(StoreConfig::new(root)).unwrap();
    assert_eq!(report.journal_restored, 3);
    assert_eq!(store.get(&ids[0]).unwrap(), small);
    assert_eq!(store.get(&ids[1]).unwrap(), large);
    assert_eq!(store.get(&ids[2]).unwrap(), intact);
    assert_eq!(store.get(&ids[3]).unwrap(), partial);
    // A range read checks the chunk CRCs of the sidecar made again.
    let piece = store
        .read_range(&ids[1], CHECKSUM_CHUNK as u64 + 5, 1_000)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let at = CHECKSUM_CHUNK + 5;
    assert_eq!(piece.data, large[at..at + 1_000]);
    assert!(temp_files(&root.join("tmp")).is_empty());
    // The replayed journal is gone; a new, empty one takes the next batches.
    let journal = files_in(&root.join("journal"));
    assert_eq!(journal.len(), 1);
    assert_eq!(fs::metadata(&journal[0]).unwrap().len(), 0);
    drop(store);
    let (_, report) = Store::open(StoreConfig::new(root)).unwrap();
    assert_eq!(report.journal_restored, 0);
}

/// A batched block that cannot be put into place (its shard directory cannot be
/// made) fails alone, leaves no file behind, and is stored by a later batch; the
/// others of its batch are stored and readable.
#[tokio::test]
async fn a_batched_block_that_cannot_be_written_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open_store(root);
    let data: Vec<Vec<u8>> = (0..4).map(|i| pattern(3_000 + i, 10 + i as u8)).collect();
    let ids: Vec<BlockId> = data.iter().map(|d| BlockId::of(d)).collect();
    let path_of = |id: &BlockId| Sharding::default().path(&root.join("blocks"), id);
    // The first shard level of block 2 is a file: nothing can be made under it.
    let blocker = path_of(&ids[2])
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    assert!(
        ids.iter()
            .enumerate()
            .all(|(i, id)| i == 2 || !path_of(id).starts_with(&blocker)),
        "the blocks share a shard: pick other patterns"
    );
    fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    fs::write(&blocker, b"not a directory").unwrap();
    let total = data.iter().map(|d| d.len() as u64).sum();
    let results = store
        .begin_batch(total)
        .unwrap()
        .commit_all(batch_of(&data))
        .await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 2, "block {i}: {r:?}");
    }
    assert!(!store.contains(&ids[2]));
    for i in [0, 1, 3] {
        assert_eq!(store.get(&ids[i]).unwrap(), data[i]);
    }
    assert!(temp_files(&root.join("tmp")).is_empty());

    fs::remove_file(&blocker).unwrap();
    let again = store
        .begin_batch(data[2].len() as u64)
        .unwrap()
        .commit_all(batch_of(&data[2..3]))
        .await;
    assert!(again[0].is_ok(), "{again:?}");
    assert_eq!(store.get(&ids[2]).unwrap(), data[2]);
    assert!(temp_files(&root.join("tmp")).is_empty());
}

/// A checkpoint (one syncfs) empties the journal; the datanode's worker runs one once
/// the oldest record is a second old, and not before.
#[tokio::test]
async fn journal_checkpoints_empty_the_journal_once_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let batch = |seed: u8| {
        let store = store.clone();
        async move {
            let data: Vec<Vec<u8>> = (0..3u8)
                .map(|i| pattern(1_000 + usize::from(i), seed + i))
                .collect();
            let blocks = batch_of(&data);
            let r = store.begin_batch(4_000).unwrap().commit_all(blocks).await;
            assert!(r.iter().all(Result::is_ok));
        }
    };
    assert!(!store.checkpoint_journal_now().unwrap(), "nothing to do");
    batch(10).await;
    assert!(store.journal_bytes() > 3_000);
    assert!(store.checkpoint_journal_now().unwrap());
    assert_eq!(store.journal_bytes(), 0);
    assert_eq!(store.journal_checkpoints(), 1);
    let journal = files_in(&dir.path().join("journal"));
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(fs::metadata(&journal[0]).unwrap().len(), 0);

    batch(20).await;
    let written = Instant::now();
    assert!(!store.checkpoint_journal().unwrap(), "not due yet");
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(kdfs_datanode::store::run_journal_checkpoints(
        store.clone(),
        cancel.clone(),
    ));
    wait_for("an empty journal", Duration::from_secs(10), || {
        store.journal_bytes() == 0
    })
    .await;
    assert!(written.elapsed() >= kdfs_datanode::store::CHECKPOINT_AGE);
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(files_in(&dir.path().join("blocks")).len(), 6);
}
