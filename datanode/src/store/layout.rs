//! The store's directories on disk, and what a start does with them: lock the data
//! directory, empty `tmp/`, and scan `blocks/` into the index.
//!
//! ```text
//! <data>/VERSION            node id + cluster id (see `crate::version`)
//! <data>/LOCK               flock'ed while a datanode uses the directory
//! <data>/tmp/               writes in progress (named files, or unnamed ones with
//!                           `--unnamed-tmp`); emptied at every start
//! <data>/blocks/ab/cd/<id>  a block: exactly its bytes (`sha256sum` equals its name)
//! <data>/blocks/ab/cd/<id>.crc   its sidecar: CRC32C of every 64 KiB chunk (none for
//!                                 a block of at most one chunk, see `sidecar`)
//! <data>/journal/           the batch journal: batched blocks until a checkpoint
//!                           (see `batch::journal`)
//! <data>/quarantine/        replicas that failed verification, kept for inspection
//! <data>/scanner.state      when the block scanner last finished a pass
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kdfs_core::BlockId;

use super::sidecar::{SIDECAR_SUFFIX, needs_sidecar};
use crate::error::{Error, IoContext, Result};
use crate::sys::{self, sync_dir};

/// Whether a step makes what it wrote durable itself (`Now`: fsyncs of the file,
/// sidecar and directories) or leaves that to the caller's `syncfs` of the whole file
/// system (a batch, see `batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Now,
    Later,
}

/// Locks the data directory for this process (`<data>/LOCK`, `flock`ed): a second
/// datanode on the same directory fails here. Held as long as the returned file is.
pub(crate) fn lock_dir(root: &Path) -> Result<File> {
    let p = root.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .ctx(|| format!("open {}", p.display()))?;
    if let Err(e) = sys::lock_exclusive(&f) {
        return Err(Error::DataDir {
            dir: root.display().to_string(),
            reason: format!("locked by another datanode process ({e})"),
        });
    }
    Ok(f)
}

/// Removes everything inside `dir` (leftovers of interrupted writes).
pub(crate) fn clean_dir(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let p = entry.path();
        let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.ctx(|| format!("remove {}", p.display()))?;
        n += 1;
    }
    if n > 0 {
        tracing::info!(removed = n, dir = %dir.display(), "removed leftovers of interrupted writes");
    }
    Ok(n)
}

/// What the scan of `blocks/` found.
#[derive(Default)]
pub(crate) struct Scan {
    pub index: HashMap<BlockId, u64>,
    /// Blocks large enough to need a sidecar that have none.
    pub without_sidecar: Vec<BlockId>,
    /// Sidecars without a block (a crash between the two renames), removed.
    pub orphans_removed: usize,
}

/// Walks `blocks/` (`levels` shard directories deep) in parallel over the top-level
/// shards. Costs one readdir per directory and one `fstatat` per block.
pub(crate) fn scan_blocks(blocks: &Path, levels: u8) -> Result<Scan> {
    if levels == 0 {
        let mut s = Scan::default();
        scan_leaf(blocks, &mut s)?;
        return Ok(s);
    }
    let mut tops: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(blocks).ctx(|| format!("list {}", blocks.display()))? {
        let e = e.ctx(|| format!("list {}", blocks.display()))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            tops.push(e.path());
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        * 2;
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Scan>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(tops.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut acc = Scan::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(top) = tops.get(i) else { break };
                        scan_tree(top, levels - 1, &mut acc)?;
                    }
                    Ok(acc)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread does not panic"))
            .collect()
    });
    let mut all = Scan::default();
    for r in results {
        let r = r?;
        if all.index.is_empty() {
            all.index = r.index;
        } else {
            all.index.extend(r.index);
        }
        all.without_sidecar.extend(r.without_sidecar);
        all.orphans_removed += r.orphans_removed;
    }
    Ok(all)
}

fn scan_tree(dir: &Path, levels_left: u8, acc: &mut Scan) -> Result<()> {
    if levels_left == 0 {
        return scan_leaf(dir, acc);
    }
    for e in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let e = e.ctx(|| format!("list {}", dir.display()))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            scan_tree(&e.path(), levels_left - 1, acc)?;
        }
    }
    Ok(())
}

fn scan_leaf(dir: &Path, acc: &mut Scan) -> Result<()> {
    let mut blocks: Vec<(BlockId, fs::DirEntry)> = Vec::new();
    let mut sidecars: HashSet<BlockId> = HashSet::new();
    for e in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let e = e.ctx(|| format!("list {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(SIDECAR_SUFFIX) {
            if let Ok(id) = BlockId::parse(stem) {
                sidecars.insert(id);
                continue;
            }
        } else if let Ok(id) = BlockId::parse(name) {
            blocks.push((id, e));
            continue;
        }
        tracing::warn!(path = %e.path().display(), "unexpected file in the block store, ignored");
    }
    for (id, e) in blocks {
        let len = e
            .metadata()
            .ctx(|| format!("stat {}", e.path().display()))?
            .len();
        // A small block's sidecar (from an earlier version) stays and goes with it.
        if !sidecars.remove(&id) && needs_sidecar(len) {
            acc.without_sidecar.push(id);
            continue;
        }
        acc.index.insert(id, len);
    }
    for orphan in sidecars {
        let p = dir.join(format!("{orphan}{SIDECAR_SUFFIX}"));
        fs::remove_file(&p).ctx(|| format!("remove orphan sidecar {}", p.display()))?;
        acc.orphans_removed += 1;
    }
    Ok(())
}

/// Makes sure the shard directory of block path `path` under `blocks` exists,
/// fsyncing (with [`Durability::Now`]) the parent of each directory it created, and only
/// those: once the first-level shards exist, a new shard costs one directory fsync,
/// not one per level.
pub(crate) fn make_shard_dirs(blocks: &Path, path: &Path, sync: Durability) -> Result<()> {
    let dir = path.parent().expect("block paths have a parent");
    if dir.is_dir() {
        return Ok(());
    }
    // The missing levels, deepest first, up to the first one that exists.
    let mut missing = vec![dir];
    let mut d = dir;
    while let Some(parent) = d.parent() {
        if parent == blocks || parent.is_dir() {
            break;
        }
        missing.push(parent);
        d = parent;
    }
    for m in missing.iter().rev() {
        match fs::create_dir(m) {
            Ok(()) => {}
            // Made meanwhile by another writer: fsync its parent all the same.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("create {}", m.display())),
        }
        if sync == Durability::Now {
            sync_dir(m.parent().expect("shard directories have a parent"))?;
        }
    }
    Ok(())
}
