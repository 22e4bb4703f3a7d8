//! Block store writes on real files in temp directories: commits and what they leave
//! behind, temp files (named and unnamed), concurrent writers of one block, capacity,
//! and the async writer.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kdfs_core::BlockId;
use kdfs_datanode::capacity::CapacitySource;
use kdfs_datanode::error::Error;
use kdfs_datanode::store::{CHECKSUM_CHUNK, Event, Store, StoreConfig};

#[test]
fn put_get_round_trip_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let data = pattern(200_000, 1);
    let c = store.put(&data).unwrap();
    assert_eq!(c.id, BlockId::of(&data));
    assert!(!c.existed);
    assert_eq!(store.get(&c.id).unwrap(), data);
    // <data>/blocks/ab/cd/<id>, holding exactly the bytes, with its sidecar beside it.
    let hex = c.id.to_string();
    let path = dir
        .path()
        .join("blocks")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    assert_eq!(fs::read(&path).unwrap(), data);
    assert!(path.with_file_name(format!("{hex}.crc")).is_file());
    assert_eq!(store.length(&c.id), Some(200_000));
    let first = store.generation(&c.id).unwrap();
    assert_eq!(
        store.events().drain().events,
        vec![Event::Added {
            id: c.id,
            length: 200_000,
            generation: first,
        }]
    );
    // Writing it again is a no-op success that reports the replica again (the
    // namenode may have dropped it, and a copy sent here waits for the report), at a
    // new write generation (a delete decided before this write must spare it).
    let again = store.put(&data).unwrap();
    assert!(again.existed);
    let second = store.generation(&c.id).unwrap();
    assert!(second > first);
    assert_eq!(
        store.events().drain().events,
        vec![Event::Added {
            id: c.id,
            length: 200_000,
            generation: second,
        }]
    );
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
}

fn open_with(dir: &Path, unnamed_tmp: bool) -> Store {
    let cfg = StoreConfig {
        unnamed_tmp,
        ..StoreConfig::new(dir)
    };
    Store::open(cfg).expect("open store").0
}

#[test]
fn unnamed_and_named_temp_files_store_exact_bytes_and_leave_nothing_behind() {
    for unnamed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let store = open_with(dir.path(), unnamed);
        assert_eq!(
            store.unnamed_tmp(),
            unnamed,
            "O_TMPFILE works in a temp dir here"
        );
        let mut ids = Vec::new();
        // No sidecar; a sidecar; a direct write over 1 MiB with a padded last piece.
        for (len, seed) in [(10, 1u8), (200_000, 2), ((1 << 20) + 5, 3)] {
            let data = pattern(len, seed);
            let mut w = store.begin_write(len as u64).unwrap();
            w.write(&data[..len / 2]).unwrap();
            let in_progress = (
                files_in(&tmp).len(),
                kdfs_testkit::tmpfiles::open_unnamed_in(None, &tmp).len(),
            );
            assert_eq!(
                in_progress,
                if unnamed { (0, 1) } else { (1, 0) },
                "len {len}"
            );
            w.write(&data[len / 2..]).unwrap();
            let c = w.commit(BlockId::of(&data)).unwrap();
            assert!(!c.existed);
            let path = store.block_path(&c.id);
            assert_eq!(
                fs::read(&path).unwrap(),
                data,
                "len {len}, unnamed {unnamed}"
            );
            let sidecar = Path::new(&format!("{}.crc", path.display())).exists();
            assert_eq!(sidecar, len > CHECKSUM_CHUNK, "len {len}");
            assert_eq!(store.get(&c.id).unwrap(), data);
            assert!(temp_files(&tmp).is_empty(), "{:?}", temp_files(&tmp));
            ids.push(c.id);
        }
        drop(store);
        let (store, report) = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(
            (report.blocks, report.quarantined, report.tmp_removed),
            (3, 0, 0)
        );
        assert_eq!(report.orphans_removed, 0);
        for id in &ids {
            assert_eq!(BlockId::of(&store.get(id).unwrap()), *id);
        }
    }
}

#[test]
fn a_stale_unindexed_file_at_the_destination_is_replaced() {
    for unnamed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with(dir.path(), unnamed);
        let data = pattern(200_000, 9);
        let id = BlockId::of(&data);
        // What a commit that failed after putting the files in place leaves: files the
        // index does not know.
        let dest = store.block_path(&id);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, b"stale").unwrap();
        fs::write(format!("{}.crc", dest.display()), b"stale sidecar").unwrap();
        let c = store.put(&data).unwrap();
        assert!(!c.existed, "unnamed {unnamed}");
        assert_eq!(fs::read(&dest).unwrap(), data);
        // Reads check the chunk CRCs of the new sidecar.
        assert_eq!(
            store
                .read_range(&id, 70_000, 1_000)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .data,
            data[70_000..71_000]
        );
        assert_eq!(store.get(&id).unwrap(), data);
    }
}

#[test]
fn hash_mismatch_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut w = store.begin_write(10).unwrap();
    w.write(b"0123456789").unwrap();
    let err = w.commit(BlockId::of(b"something else")).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
    assert!(files_in(&dir.path().join("blocks")).is_empty());
    assert_eq!(store.block_count(), 0);
    // The reservation was released: the whole capacity is available again.
    assert_eq!(store.space().unwrap().used, 0);
}

#[test]
fn dropped_writer_removes_its_temp_file_and_too_long_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut w = store.begin_write(4).unwrap();
    w.write(b"abc").unwrap();
    assert_eq!(temp_files(&dir.path().join("tmp")).len(), 1);
    assert!(matches!(w.write(b"de"), Err(Error::TooLong { max: 4 })));
    drop(w);
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
}

#[test]
fn many_concurrent_writers_of_one_block_end_with_one_intact_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let data = Arc::new(pattern(300_000, 5));
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                let data = data.clone();
                s.spawn(move || {
                    let mut w = store.begin_write(data.len() as u64)?;
                    for piece in data.chunks(7_000) {
                        w.write(piece)?;
                    }
                    w.commit(BlockId::of(&data))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fresh = results
        .iter()
        .filter(|r| matches!(r, Ok(c) if !c.existed))
        .count();
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(fresh, 1, "exactly one writer committed");
    assert_eq!(store.get(&BlockId::of(&data)).unwrap(), *data);
    assert_eq!(files_in(&dir.path().join("blocks")).len(), 2);
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.space().unwrap().used, data.len() as u64);
}

#[test]
fn out_of_space_is_refused_before_any_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        reserved: 1_000,
        capacity: CapacitySource::Fixed { total: 11_000 },
        ..StoreConfig::new(dir.path())
    };
    let (store, _) = Store::open(cfg).unwrap();
    let s = store.space().unwrap();
    assert_eq!((s.capacity, s.used, s.available), (10_000, 0, 10_000));
    // An in-flight write's declared maximum is reserved...
    let w = store.begin_write(6_000).unwrap();
    assert_eq!(store.space().unwrap().available, 4_000);
    let err = store.begin_write(5_000).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfSpace {
                needed: 5_000,
                available: 4_000
            }
        ),
        "{err}"
    );
    assert!(
        temp_files(&dir.path().join("tmp")).len() == 1,
        "refused write created nothing"
    );
    // ...and released when it ends.
    drop(w);
    let c = store.put(&pattern(9_000, 6)).unwrap();
    let s = store.space().unwrap();
    assert_eq!((s.used, s.available), (9_000, 1_000));
    assert!(matches!(
        store.put(&pattern(2_000, 7)),
        Err(Error::OutOfSpace { .. })
    ));
    assert!(store.delete(&c.id).unwrap());
    assert_eq!(store.space().unwrap().available, 10_000);
}

#[tokio::test]
async fn async_writer_commits_and_aborts() {
    use kdfs_datanode::store::AsyncBlockWriter;
    let dir = tempfile::tempdir().unwrap();
    // A fixed capacity: the room checks below must not follow other writers of the
    // same disk (a build or a test run beside this one).
    let cfg = StoreConfig {
        capacity: CapacitySource::Fixed { total: 8 << 30 },
        ..StoreConfig::new(dir.path())
    };
    let (store, _) = Store::open(cfg).unwrap();
    let data = bytes::Bytes::from(pattern(3 << 20, 9));
    let mut w = AsyncBlockWriter::start(&store, data.len() as u64)
        .await
        .unwrap();
    for piece in data.chunks(1 << 20) {
        w.write(data.slice_ref(piece)).await.unwrap();
    }
    let c = w.commit(BlockId::of(&data)).await.unwrap();
    assert_eq!(store.get(&c.id).unwrap(), data);

    // The digest computed on the hasher thread is checked like the inline one.
    let mut w = AsyncBlockWriter::start(&store, 5).await.unwrap();
    w.write(bytes::Bytes::from_static(b"hello")).await.unwrap();
    let err = w.commit(BlockId::of(b"jello")).await.unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(!store.contains(&BlockId::of(b"hello")));

    // Small writes are held in memory, but their room is reserved from the start and
    // released when they are dropped.
    let before = store.space().unwrap().available;
    let mut w = AsyncBlockWriter::start(&store, 1 << 30).await.unwrap();
    w.write(bytes::Bytes::from_static(b"abc")).await.unwrap();
    assert!(store.space().unwrap().available <= before - (1 << 30));
    drop(w);
    assert!(store.space().unwrap().available + (1 << 20) > before);
    let tmp = dir.path().join("tmp");
    wait_for("tmp/ emptied", Duration::from_secs(5), || {
        temp_files(&tmp).is_empty()
    })
    .await;

    let mut w = AsyncBlockWriter::start(&store, 2).await.unwrap();
    let first = w.write(bytes::Bytes::from_static(b"abc")).await;
    let res = match first {
        Err(e) => Err(e),
        Ok(()) => w.commit(BlockId::of(b"abc")).await.map(|_| ()),
    };
    assert!(matches!(res, Err(Error::TooLong { max: 2 })), "{res:?}");
}
