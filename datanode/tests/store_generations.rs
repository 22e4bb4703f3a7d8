//! Write generations against deletes: a namenode's delete removes a replica only if it
//! was written before the generation the command names, whatever the order in which
//! the delete and a new write of the same block reach the store (a re-upload of
//! deleted content, a batch, a copy), and across restarts.

mod common;

use common::*;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_datanode::store::{Event, GENERATION_FILE, Store, StoreConfig};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn added(events: Vec<Event>) -> Vec<(BlockId, u64)> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Added { id, generation, .. } => Some((id, generation)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_delete_keeps_a_replica_written_again_since_it_was_decided() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let data = pattern(3_000, 1);
    let id = store.put(&data).unwrap().id;
    let first = store.generation(&id).unwrap();
    // The namenode decides the delete having seen this counter.
    let below = store.write_generation();
    assert!(first < below);
    // The same content is written again (a re-upload) before the delete arrives.
    assert!(store.put(&data).unwrap().existed);
    let second = store.generation(&id).unwrap();
    assert!(
        second >= below,
        "a write of a block already held is a new generation"
    );
    store.events().drain();

    let o = store.delete_many(&[id], below, soon()).unwrap();
    assert_eq!((o.deleted, o.kept.clone()), (0, vec![id]));
    assert_eq!(store.get(&id).unwrap(), data);
    // Reported again, so the namenode decides anew.
    assert_eq!(added(store.events().drain().events), vec![(id, second)]);

    // A delete decided after the write removes it.
    let o = store
        .delete_many(&[id], store.write_generation(), soon())
        .unwrap();
    assert_eq!((o.deleted, o.kept.len()), (1, 0));
    assert!(!store.contains(&id));
    assert_eq!(store.events().drain().events, vec![Event::Removed(id)]);
}

#[tokio::test]
async fn batch_writes_and_copies_are_new_generations_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let data = pattern(900, 2);
    let id = BlockId::of(&data);
    store.put(&data).unwrap();
    let below = store.write_generation();
    // A batch carrying the same block (a small file uploaded again).
    let results = store
        .begin_batch(data.len() as u64)
        .unwrap()
        .commit_all(vec![(vec![Bytes::from(data.clone())], id)])
        .await;
    assert!(results[0].as_ref().unwrap().existed);
    assert!(store.generation(&id).unwrap() >= below);
    let o = store.delete_many(&[id], below, soon()).unwrap();
    assert_eq!(o.kept, vec![id]);
    assert!(store.contains(&id));
    // A block written for the first time after the decision is just as safe.
    let fresh = pattern(700, 3);
    let fresh_id = BlockId::of(&fresh);
    store.put(&fresh).unwrap();
    let o = store.delete_many(&[fresh_id], below, soon()).unwrap();
    assert_eq!(o.kept, vec![fresh_id]);
}

#[test]
fn a_delete_decided_before_a_restart_never_removes_anything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let old = store.put(&pattern(1_000, 4)).unwrap().id;
    let below = store.write_generation();
    drop(store);

    let store = open_store(dir.path());
    assert!(std::fs::read_to_string(dir.path().join(GENERATION_FILE)).is_ok());
    assert!(
        store.write_generation() > below,
        "monotonic across restarts"
    );
    // Even the replica found on disk: the namenode may have seen it written again
    // just before the restart, so only a delete decided after the restart removes it.
    let o = store.delete_many(&[old], below, soon()).unwrap();
    assert_eq!(o.kept, vec![old]);
    let o = store
        .delete_many(&[old], store.write_generation(), soon())
        .unwrap();
    assert_eq!(o.deleted, 1);
}

#[test]
fn a_delete_without_a_generation_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let id = store.put(&pattern(500, 5)).unwrap().id;
    let o = store.delete_many(&[id], 0, soon()).unwrap();
    assert_eq!(o.kept, vec![id]);
    assert!(store.contains(&id));
}

/// A delete and a write of the same block arriving at once, many times over, in both
/// write paths: whichever takes the block's lock first, a write that succeeded leaves
/// the block stored and intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_delete_racing_a_write_of_the_same_block_never_removes_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap().0;
    let mut deleted_first = 0;
    for round in 0..200u32 {
        let data = pattern(2_000 + (round as usize % 7), round as u8);
        let id = BlockId::of(&data);
        store.put(&data).unwrap();
        let below = store.write_generation();
        let gate = Arc::new(Barrier::new(2));
        let deleter = {
            let (store, gate) = (store.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                store.delete_many(&[id], below, soon()).unwrap()
            })
        };
        gate.wait();
        if round % 2 == 0 {
            store.put(&data).unwrap();
        } else {
            let r = store
                .begin_batch(data.len() as u64)
                .unwrap()
                .commit_all(vec![(vec![Bytes::from(data.clone())], id)])
                .await;
            r.into_iter().next().unwrap().unwrap();
        }
        let o = deleter.join().unwrap();
        deleted_first += o.deleted;
        assert_eq!(
            store.get(&id).unwrap(),
            data,
            "round {round}: the write survives"
        );
        store.delete(&id).unwrap();
    }
    eprintln!("{deleted_first} of 200 deletes ran before their write");
}
