//! A datanode's disk seen from outside: the block files under `blocks/`, corrupt ones,
//! quarantined replicas, temp files of writes in progress, and flipping a byte of a
//! block to corrupt it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::cluster::ProcessCluster;
use crate::data::sha256_hex;
use crate::tmpfiles::open_unnamed_in;

impl ProcessCluster {
    /// Datanode `i`'s data directory.
    pub fn datanode_dir(&self, i: usize) -> &Path {
        &self.datanodes[i].dir
    }

    /// Block ids stored on datanode `i`'s disk (files under `blocks/`, sidecars excluded).
    pub fn blocks_on_disk(&self, i: usize) -> BTreeSet<String> {
        block_names(&self.datanode_dir(i).join("blocks"))
    }

    /// The bytes of the block files on datanode `i`'s disk (sidecars excluded).
    pub fn block_bytes_on_disk(&self, i: usize) -> u64 {
        self.blocks_on_disk(i)
            .iter()
            .filter_map(|id| self.block_path(i, id)?.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Block files on datanode `i`'s disk whose bytes do not hash to their name.
    pub fn corrupt_blocks_on_disk(&self, i: usize) -> Vec<String> {
        self.blocks_on_disk(i)
            .into_iter()
            .filter(|id| {
                self.block_path(i, id)
                    .and_then(|p| std::fs::read(p).ok())
                    // A block renamed away between the listing and the read is not corrupt.
                    .is_some_and(|bytes| sha256_hex(&bytes) != *id)
            })
            .collect()
    }

    /// Replicas datanode `i` has quarantined (block files in `quarantine/`, sidecars
    /// not counted).
    pub fn quarantined(&self, i: usize) -> usize {
        self.files_under(i, "quarantine")
            .iter()
            .filter(|p| p.extension().is_none_or(|e| e != "crc"))
            .count()
    }

    /// Files under datanode `i`'s `dir` (e.g. `quarantine`, `tmp`).
    pub fn files_under(&self, i: usize, dir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.datanode_dir(i).join(dir), &mut |p| {
            out.push(p.to_owned())
        });
        out
    }

    /// Temp files of datanode `i`'s writes in progress: named files in its `tmp/`,
    /// and the unnamed (`O_TMPFILE`) ones its process holds open there.
    pub fn temp_files(&self, i: usize) -> Vec<PathBuf> {
        let mut out = self.files_under(i, "tmp");
        if let Some(pid) = self.datanodes[i].pid() {
            let tmp = self.datanode_dir(i).join("tmp");
            out.extend(open_unnamed_in(Some(pid), &tmp));
        }
        out
    }

    /// The path of block `id` on datanode `i`, if it is there.
    pub fn block_path(&self, i: usize, id: &str) -> Option<PathBuf> {
        let p = self
            .datanode_dir(i)
            .join("blocks")
            .join(&id[0..2])
            .join(&id[2..4])
            .join(id);
        p.is_file().then_some(p)
    }
}

/// Calls `f` with every file under `dir`, recursively; a missing `dir` has none.
fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, f),
            Ok(_) => f(&p),
            Err(_) => {}
        }
    }
}

/// Block ids of the block files under a datanode's `blocks/` directory (sidecars and
/// anything else excluded).
pub fn block_names(blocks: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(blocks, &mut |p| {
        if let Some(name) = p.file_name().and_then(|n| n.to_str())
            && name.len() == 64
            && name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.insert(name.to_owned());
        }
    });
    out
}

/// The first file named exactly `name` under `dir`, searched recursively (a block by
/// its id, wherever the layout shards it).
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut found = None;
    walk(dir, &mut |p| {
        if found.is_none() && p.file_name().is_some_and(|n| n == name) {
            found = Some(p.to_owned());
        }
    });
    found
}

/// Flips one byte of the file at `path`, at `offset`, in place.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} to corrupt it: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read the byte");
    b[0] ^= 0xFF;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write the flipped byte");
    f.sync_all().expect("fsync the corrupted block");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_byte_changes_exactly_one_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("b");
        std::fs::write(&p, [1u8, 2, 3]).expect("write");
        flip_byte(&p, 1);
        assert_eq!(std::fs::read(&p).expect("read"), vec![1, !2, 3]);
    }

    #[test]
    fn walk_finds_files_at_every_depth() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top"), b"").unwrap();
        std::fs::write(dir.path().join("a/b/deep"), b"").unwrap();
        let mut seen = Vec::new();
        walk(dir.path(), &mut |p| {
            seen.push(p.file_name().unwrap().to_string_lossy().into_owned())
        });
        seen.sort();
        assert_eq!(seen, ["deep", "top"]);
        assert_eq!(
            find_file(dir.path(), "deep"),
            Some(dir.path().join("a/b/deep"))
        );
        assert_eq!(
            find_file(dir.path(), "b"),
            None,
            "directories are not files"
        );
        walk(&dir.path().join("missing"), &mut |_| panic!("nothing"));
    }
}
