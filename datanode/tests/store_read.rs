//! Block store reads: every byte served is verified (CRC32C chunks, SHA-256 for small
//! blocks), corruption is quarantined, and any range of any size reads back exactly.

mod common;

use common::*;
use std::fs;
use std::path::Path;

use kdfs_core::BlockId;
use kdfs_datanode::error::Error;
use kdfs_datanode::store::{CHECKSUM_CHUNK, Event, Store};
use proptest::prelude::*;

#[test]
fn corrupt_byte_fails_range_read_and_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
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
    let store = open_store(dir.path());
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
fn small_blocks_have_no_sidecar_and_every_read_checks_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
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
    let store = open_store(dir.path());
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
fn range_errors_and_empty_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
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
        let store = open_store(dir.path());
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
