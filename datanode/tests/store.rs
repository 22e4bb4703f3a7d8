//! Block store tests on real files in temp directories: durability rules, verification,
//! quarantine, concurrency, capacity, restart scan, and the background scanner.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;
use kdfs_datanode::capacity::CapacitySource;
use kdfs_datanode::error::Error;
use kdfs_datanode::scanner::{self, ScannerConfig, ScannerStats};
use kdfs_datanode::store::{CHECKSUM_CHUNK, Event, Store, StoreConfig};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store").0
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A batch for `BatchWriter::commit_all`: each block as one piece, with its id.
fn batch_of<B: AsRef<[u8]>>(blocks: &[B]) -> Vec<(Vec<Bytes>, BlockId)> {
    blocks
        .iter()
        .map(|b| {
            let b = b.as_ref();
            (vec![Bytes::copy_from_slice(b)], BlockId::of(b))
        })
        .collect()
}

/// Temp files of writes in progress under `tmp`: named ones, and the unnamed
/// (`O_TMPFILE`) ones this process holds open there.
fn temp_files(tmp: &Path) -> Vec<String> {
    let mut out = files_in(tmp);
    out.extend(
        kdfs_core::tmpfiles::open_unnamed_in(None, tmp)
            .iter()
            .map(|p| p.display().to_string()),
    );
    out
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn flip_byte(path: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

/// Polls `cond` until it holds or `deadline` passes.
async fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[test]
fn put_get_round_trip_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(
        store.events().drain().events,
        vec![Event::Added {
            id: c.id,
            length: 200_000
        }]
    );
    // Writing it again is a no-op success that reports the replica again (the
    // namenode may have dropped it, and a copy sent here waits for the report).
    let again = store.put(&data).unwrap();
    assert!(again.existed);
    assert_eq!(
        store.events().drain().events,
        vec![Event::Added {
            id: c.id,
            length: 200_000
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
                kdfs_core::tmpfiles::open_unnamed_in(None, &tmp).len(),
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
    let store = open(dir.path());
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
    let store = open(dir.path());
    let mut w = store.begin_write(4).unwrap();
    w.write(b"abc").unwrap();
    assert_eq!(temp_files(&dir.path().join("tmp")).len(), 1);
    assert!(matches!(w.write(b"de"), Err(Error::TooLong { max: 4 })));
    drop(w);
    assert!(temp_files(&dir.path().join("tmp")).is_empty());
}

#[test]
fn leftovers_in_tmp_are_removed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    let _store = open(dir.path());
    let err = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, Error::DataDir { .. }), "{err}");
}

#[test]
fn corrupt_byte_fails_range_read_and_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = pattern(5 * CHECKSUM_CHUNK + 7, 2);
    let c = store.put(&data).unwrap();
    store.events().drain();
    let path = store.block_path(&c.id);
    flip_byte(&path, 3 * CHECKSUM_CHUNK as u64 + 5);
    // A range that does not touch the damaged chunk still reads fine.
    let ok: Vec<u8> = store
        .read_range(&c.id, 10, 1000)
        .unwrap()
        .flat_map(|p| p.unwrap().data.to_vec())
        .collect();
    assert_eq!(ok, data[10..1010]);
    // One that does fails with the distinct corrupt error.
    let err = store
        .read_range(&c.id, 3 * CHECKSUM_CHUNK as u64 + 100, 10)
        .unwrap()
        .find_map(|p| p.err())
        .expect("corruption detected");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // Quarantined: gone from the index and from blocks/, kept in quarantine/.
    assert!(!store.contains(&c.id));
    assert!(!path.exists());
    assert!(matches!(
        store.read_range(&c.id, 0, 0),
        Err(Error::NotFound(_))
    ));
    assert_eq!(files_in(&dir.path().join("quarantine")).len(), 2);
    assert_eq!(store.events().drain().events, vec![Event::Corrupt(c.id)]);
    // A fresh good copy can be written again.
    assert!(!store.put(&data).unwrap().existed);
    assert_eq!(store.get(&c.id).unwrap(), data);
}

#[test]
fn truncated_block_and_bad_sidecar_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = store.put(&pattern(100_000, 3)).unwrap();
    let b = store.put(&pattern(100_000, 4)).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(store.block_path(&a.id))
        .unwrap()
        .set_len(50_000)
        .unwrap();
    assert!(matches!(
        store.read_range(&a.id, 0, 10),
        Err(Error::Corrupt { .. })
    ));
    let side = store.block_path(&b.id).with_extension("crc");
    let side = if side.exists() {
        side
    } else {
        Path::new(&format!("{}.crc", store.block_path(&b.id).display())).to_path_buf()
    };
    flip_byte(&side, 17);
    let err = store.get(&b.id).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(store.block_count(), 0);
}

#[test]
fn many_concurrent_writers_of_one_block_end_with_one_intact_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(
        store.events().drain().events,
        vec![
            Event::Added {
                id: c.id,
                length: 2_500
            },
            Event::Added {
                id: BlockId::of(&d),
                length: 300
            }
        ]
    );
    assert!(temp_files(&tmp).is_empty());
    assert_eq!(store.space().unwrap().available, 7_200);
}

#[test]
fn restart_scan_restores_the_index_and_fixes_torn_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
fn small_blocks_have_no_sidecar_and_every_read_checks_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let small = pattern(CHECKSUM_CHUNK, 11);
    let big = pattern(CHECKSUM_CHUNK + 1, 12);
    let (s, b) = (store.put(&small).unwrap(), store.put(&big).unwrap());
    let sidecar = |id: &BlockId| {
        let p = store.block_path(id);
        p.with_file_name(format!("{id}.crc")).is_file()
    };
    assert!(!sidecar(&s.id), "a one-chunk block got a sidecar");
    assert!(sidecar(&b.id), "a two-chunk block has no sidecar");
    assert_eq!(read(&store, &s.id, 100, 50), small[100..150]);
    assert_eq!(store.get(&s.id).unwrap(), small);
    drop(store);
    // It survives a restart's scan.
    let store = open(dir.path());
    assert_eq!(store.length(&s.id), Some(CHECKSUM_CHUNK as u64));
    // A flipped byte anywhere fails even a range read that does not cover it, and
    // quarantines the replica.
    flip_byte(&store.block_path(&s.id), CHECKSUM_CHUNK as u64 - 1);
    let err = store
        .read_range(&s.id, 0, 10)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(!store.contains(&s.id));
    assert_eq!(files_in(&dir.path().join("quarantine")).len(), 1);
}

#[test]
fn delete_removes_files_and_logs_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    let store = open(dir.path());
    let ids: Vec<BlockId> = (0..5u8).map(|i| store.put(&[i; 100]).unwrap().id).collect();
    store.events().drain();
    let late = store.delete_many(&ids[..2], Instant::now()).unwrap();
    assert_eq!(
        (late.deleted, late.skipped.len()),
        (0, 2),
        "past deadline: nothing deleted"
    );
    let absent = BlockId::of(b"never stored");
    let o = store
        .delete_many(
            &[ids[0], ids[1], absent],
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!((o.deleted, o.skipped.len()), (2, 0));
    assert_eq!(store.block_count(), 3);
    // Three small blocks left, without sidecars.
    assert_eq!(files_in(&dir.path().join("blocks")).len(), 3);
    assert_eq!(
        store.events().drain().events,
        vec![Event::Removed(ids[0]), Event::Removed(ids[1])]
    );
}

#[test]
fn range_errors_and_empty_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let e = store.put(b"").unwrap();
    assert_eq!(store.get(&e.id).unwrap(), b"");
    let c = store.put(b"0123456789").unwrap();
    assert!(matches!(
        store.read_range(&c.id, 11, 0),
        Err(Error::Range { .. })
    ));
    assert!(matches!(
        store.read_range(&c.id, 5, 6),
        Err(Error::Range { .. })
    ));
    assert_eq!(store.read_range(&c.id, 10, 0).unwrap().count(), 0);
    assert!(matches!(
        store.read_range(&BlockId::of(b"nope"), 0, 0),
        Err(Error::NotFound(_))
    ));
}

fn read(store: &Store, id: &BlockId, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = offset;
    for p in store.read_range(id, offset, len).unwrap() {
        let p = p.unwrap();
        assert_eq!(p.offset, next, "pieces are contiguous");
        next += p.data.len() as u64;
        out.extend_from_slice(&p.data);
    }
    out
}

fn sizes() -> impl Strategy<Value = usize> {
    let c = CHECKSUM_CHUNK;
    prop_oneof![
        Just(0),
        Just(1),
        Just(c),
        Just(c - 1),
        Just(c + 1),
        Just(3 << 20),
        Just((2 << 20) + c + 3),
        0usize..(4 << 20),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sizes_round_trip_and_ranges_read_back(
        size in sizes(),
        seed in any::<u8>(),
        write_piece in 1usize..300_000,
        picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let data = pattern(size, seed);
        let mut w = store.begin_write(size as u64).unwrap();
        for piece in data.chunks(write_piece) {
            w.write(piece).unwrap();
        }
        let c = w.commit(BlockId::of(&data)).unwrap();
        prop_assert_eq!(c.length, size as u64);
        prop_assert_eq!(read(&store, &c.id, 0, 0), data.clone());
        let n = size as u64;
        let c64 = CHECKSUM_CHUNK as u64;
        let mut ranges = vec![(0, n), (n, 0)];
        if n > 0 {
            ranges.extend([(n - 1, 1), (0, 1), (n / 2, n - n / 2)]);
        }
        for edge in [c64 - 1, c64, c64 + 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1] {
            if edge < n {
                ranges.push((edge, 1));
                ranges.push((edge, (n - edge).min(2 * c64 + 1)));
            }
        }
        for (a, b) in picks {
            if n > 0 {
                let off = a % n;
                ranges.push((off, b % (n - off) + 1));
            }
        }
        for (off, len) in ranges {
            let got = read(&store, &c.id, off, len);
            let end = if len == 0 { n } else { off + len };
            prop_assert_eq!(&got[..], &data[off as usize..end as usize], "range {}+{}", off, len);
        }
    }
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
    assert!(wait_until(Duration::from_secs(5), || temp_files(&tmp).is_empty()).await);

    let mut w = AsyncBlockWriter::start(&store, 2).await.unwrap();
    let first = w.write(bytes::Bytes::from_static(b"abc")).await;
    let res = match first {
        Err(e) => Err(e),
        Ok(()) => w.commit(BlockId::of(b"abc")).await.map(|_| ()),
    };
    assert!(matches!(res, Err(Error::TooLong { max: 2 })), "{res:?}");
}

#[tokio::test]
async fn scanner_finds_a_flipped_byte_within_its_rate_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert!(
        wait_until(window * 2 + Duration::from_secs(1), || {
            seen.extend(store.events().drain().events);
            seen.contains(&Event::Corrupt(victim))
        })
        .await,
        "scanner did not report the corrupt block on the event channel"
    );
    assert!(!store.contains(&victim), "corrupt block left the index");
    assert!(
        !store.block_path(&victim).exists(),
        "corrupt block quarantined"
    );
    // Rate limited: a pass over 2 MiB at 4 MiB/s cannot finish in much under 0.5 s.
    assert!(
        wait_until(Duration::from_secs(5), || {
            stats
                .passes_completed
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        })
        .await
    );
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
    let store = open(dir.path());
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
    let mut left: Vec<String> = files_in(&q);
    left.sort();
    let mut want: Vec<String> = fresh
        .iter()
        .cloned()
        .chain(foreign.iter().map(|n| q.join(n).display().to_string()))
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
    assert!(
        wait_until(Duration::from_secs(10), || files_in(&q).len()
            == foreign.len())
        .await,
        "left: {:?}",
        files_in(&q)
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
    // The block itself can still be written again and read.
    assert!(!store.put(&data).unwrap().existed);
    assert_eq!(store.get(&c.id).unwrap(), data);
}

/// Batches committing at once (several gateways writing) share their `syncfs` calls:
/// every block of every batch is committed, indexed, reported once and reads back,
/// and nothing is left in `tmp/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_committing_at_once_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    let store = open(root);
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
    let store = open(root);
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
    let store = open(dir.path());
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
    assert!(wait_until(Duration::from_secs(10), || store.journal_bytes() == 0).await);
    assert!(written.elapsed() >= kdfs_datanode::store::CHECKPOINT_AGE);
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(files_in(&dir.path().join("blocks")).len(), 6);
}

/// A shard directory that vanished after the store made it (an operator's cleanup) is
/// made again by the next block that belongs in it, in a batch and alone.
#[tokio::test]
async fn a_shard_directory_removed_under_the_store_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(open(dir.path()).get(&id).unwrap(), a);
}
