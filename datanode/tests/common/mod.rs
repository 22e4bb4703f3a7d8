//! Test fixtures shared by the datanode's integration tests: in-process datanodes
//! (`node`), a recording namenode (`namenode`), and small helpers for data, files and
//! stores on disk.
// Each test binary uses some of these helpers, none uses all of them.
#![allow(dead_code, unused_imports)]

mod namenode;
mod node;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_datanode::store::{Store, StoreConfig};

pub use kdfs_testkit::{flip_byte, http_get, wait_for, wait_until};
pub use namenode::*;
pub use node::*;

/// `len` bytes of a pattern that differs with `seed` (and is not all one byte).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Named files in `tmp` plus the unnamed temp files this process holds open there.
pub fn temp_files(tmp: &Path) -> Vec<PathBuf> {
    let mut out = files_in(tmp);
    out.extend(kdfs_testkit::tmpfiles::open_unnamed_in(None, tmp));
    out
}

/// Every regular file below `dir`.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Opens (creating) a block store in `dir`.
pub fn open_store(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store").0
}

/// A batch for `BatchWriter::commit_all`: each block as one piece, with its id.
pub fn batch_of<B: AsRef<[u8]>>(blocks: &[B]) -> Vec<(Vec<Bytes>, BlockId)> {
    blocks
        .iter()
        .map(|b| {
            let b = b.as_ref();
            (vec![Bytes::copy_from_slice(b)], BlockId::of(b))
        })
        .collect()
}
