//! The block store on disk across restarts: the directory lock, leftovers in `tmp/`,
//! the startup scan and its repairs, deletes, and shard directories made again.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_datanode::error::Error;
use kdfs_datanode::store::{CHECKSUM_CHUNK, Event, Store, StoreConfig};

#[test]
fn leftovers_in_tmp_are_removed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let kept = store.put(b"kept").unwrap();
    drop(store);
    fs::write(dir.path().join("tmp/w00000042"), b"half a block").unwrap();
    fs::create_dir(dir.path().join("tmp/junk")).unwrap();
    let (store, report) = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(report.tmp_removed, 2);
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.get(&kept.id).unwrap(), b"kept");
}

#[test]
fn a_directory_is_used_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open_store(dir.path());
    let err = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, Error::DataDir { .. }), "{err}");
}

#[test]
fn restart_scan_restores_the_index_and_fixes_torn_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut want = Vec::new();
    for i in 0..600u32 {
        let data = pattern((i as usize * 37) % 5000, i as u8);
        let data = [data, i.to_le_bytes().to_vec()].concat();
        let c = store.put(&data).unwrap();
        want.push((c.id, data.len() as u64));
    }
    let deleted = want.pop().unwrap();
    assert!(store.delete(&deleted.0).unwrap());
    // More than one checksum chunk: such a block needs its sidecar.
    let big = pattern(CHECKSUM_CHUNK + 1, 99);
    let big = store.put(&big).unwrap();
    drop(store);
    // A crash between the sidecar's and the block's rename leaves an orphan sidecar;
    // a block of more than one chunk without a sidecar cannot be verified and is
    // quarantined. Small blocks have none and stay (checked by `get` below).
    let orphan = BlockId::of(b"orphan");
    let hex = orphan.to_string();
    let odir = dir.path().join("blocks").join(&hex[..2]).join(&hex[2..4]);
    fs::create_dir_all(&odir).unwrap();
    fs::write(odir.join(format!("{hex}.crc")), b"x").unwrap();
    let (bare_id, bare_len) = (big.id, big.length);
    let bare = {
        let h = bare_id.to_string();
        dir.path()
            .join("blocks")
            .join(&h[..2])
            .join(&h[2..4])
            .join(format!("{h}.crc"))
    };
    fs::remove_file(&bare).unwrap();
    let (store, report) = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(report.orphans_removed, 1);
    assert_eq!(report.quarantined, 1);
    let mut got = store.snapshot();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(!store.contains(&bare_id) && bare_len > 0);
    for (id, _) in &want {
        assert_eq!(BlockId::of(&store.get(id).unwrap()), *id);
    }
}

#[test]
fn delete_removes_files_and_logs_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let c = store.put(b"bye").unwrap();
    store.events().drain();
    assert!(store.delete(&c.id).unwrap());
    assert!(!store.delete(&c.id).unwrap());
    assert!(files_in(&dir.path().join("blocks")).is_empty());
    assert_eq!(store.events().drain().events, vec![Event::Removed(c.id)]);
}

#[test]
fn batch_delete_honours_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let ids: Vec<BlockId> = (0..5u8).map(|i| store.put(&[i; 100]).unwrap().id).collect();
    store.events().drain();
    let below = store.write_generation();
    let late = store.delete_many(&ids[..2], below, Instant::now()).unwrap();
    assert_eq!(
        (late.deleted, late.skipped.len()),
        (0, 2),
        "past deadline: nothing deleted"
    );
    let absent = BlockId::of(b"never stored");
    let o = store
        .delete_many(
            &[ids[0], ids[1], absent],
            below,
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!((o.deleted, o.skipped.len()), (2, 0));
    assert_eq!(store.block_count(), 3);
    // Three small blocks left, without sidecars.
    assert_eq!(files_in(&dir.path().join("blocks")).len(), 3);
    // The two past the deadline were reported again as held, then removed.
    let events = store.events().drain().events;
    assert!(matches!(events[0], Event::Added { id, .. } if id == ids[0]));
    assert!(matches!(events[1], Event::Added { id, .. } if id == ids[1]));
    assert_eq!(
        events[2..],
        [Event::Removed(ids[0]), Event::Removed(ids[1])]
    );
}

/// A shard directory that vanished after the store made it (an operator's cleanup) is
/// made again by the next block that belongs in it, in a batch and alone.
#[tokio::test]
async fn a_shard_directory_removed_under_the_store_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let a = pattern(2_000, 40);
    let id = BlockId::of(&a);
    store.put(&a).unwrap();
    let shard = dir.path().join("blocks").join(&id.to_string()[..2]);
    assert!(store.delete(&id).unwrap());
    fs::remove_dir_all(&shard).unwrap();
    let results = store
        .begin_batch(a.len() as u64)
        .unwrap()
        .commit_all(vec![(vec![Bytes::from(a.clone())], id)])
        .await;
    assert!(!results[0].as_ref().unwrap().existed);
    assert_eq!(store.get(&id).unwrap(), a);
    assert!(store.delete(&id).unwrap());
    fs::remove_dir_all(&shard).unwrap();
    store.put(&a).unwrap();
    assert_eq!(store.get(&id).unwrap(), a);
    // Reopened: the block is found where it belongs.
    drop(store);
    assert_eq!(open_store(dir.path()).get(&id).unwrap(), a);
}
