//! Write generations: what makes a namenode's delete unable to destroy a replica
//! written after the namenode decided it (docs/decisions/0009-delete-generations.md).
//!
//! Every write of a block that completes here, a new one or one of a block already
//! held (a re-upload of the same content, a copy), gives the replica the next
//! generation of this node's counter, under the block's stripe lock. The counter's
//! current value is sent with every registration and heartbeat; a delete command
//! names a value the node reported before any upload still open began
//! (`below_generation`), and a replica is deleted only if its generation is below it.
//!
//! Generations stay monotonic across restarts: the high bits are an epoch, persisted
//! in `<data>/GENERATION` and bumped (durably) at every open, so a delete decided
//! before a restart never reaches a replica written after it. Replicas found on disk
//! at open take the epoch's first value, newer than anything of an earlier boot.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kdfs_core::BlockId;

use crate::error::{Error, IoContext, Result};
use crate::sys::sync_dir;

/// File name of the persisted epoch inside the data directory.
pub const GENERATION_FILE: &str = "GENERATION";
/// Bits of a generation counted within one epoch (one boot).
const EPOCH_SHIFT: u32 = 40;
/// Largest epoch a data directory may reach.
const MAX_EPOCH: u64 = (1 << (64 - EPOCH_SHIFT)) - 1;

/// The node's generation counter and the generations of replicas written this boot.
#[derive(Debug)]
pub(crate) struct Generations {
    /// The generation of every replica found at open.
    base: u64,
    /// The next generation handed out; every replica's is below it.
    next: AtomicU64,
    /// Replicas written since open (the others are at `base`).
    written: Mutex<HashMap<BlockId, u64>>,
}

impl Generations {
    /// Reads `<root>/GENERATION` (missing: epoch 0), persists the next epoch, and
    /// starts this boot's counter at it.
    pub(crate) fn open(root: &Path) -> Result<Self> {
        let path = root.join(GENERATION_FILE);
        let bad = |reason: String| Error::DataDir {
            dir: root.display().to_string(),
            reason,
        };
        let previous = match fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| bad(format!("{GENERATION_FILE} is not a number: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let epoch = previous + 1;
        if epoch > MAX_EPOCH {
            return Err(bad(format!(
                "{GENERATION_FILE} reached its largest epoch {MAX_EPOCH}"
            )));
        }
        let tmp = root.join(format!("{GENERATION_FILE}.tmp"));
        let mut f = fs::File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(format!("{epoch}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &path).ctx(|| format!("rename {}", tmp.display()))?;
        // Durable before any replica of this epoch is acknowledged.
        sync_dir(root)?;
        let base = epoch << EPOCH_SHIFT;
        Ok(Self {
            base,
            next: AtomicU64::new(base + 1),
            written: Mutex::new(HashMap::new()),
        })
    }

    /// The counter now: every replica's generation is below it, and every write that
    /// completes later gets one at least as high.
    pub(crate) fn current(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// A write of `id` completed: its replica's new generation. The caller holds the
    /// block's stripe lock.
    pub(crate) fn bump(&self, id: &BlockId) -> u64 {
        let g = self.next.fetch_add(1, Ordering::SeqCst);
        self.lock().insert(*id, g);
        g
    }

    /// The generation of the replica of `id` (if there is one).
    pub(crate) fn of(&self, id: &BlockId) -> u64 {
        self.lock().get(id).copied().unwrap_or(self.base)
    }

    /// The replica of `id` is gone. The caller holds the block's stripe lock.
    pub(crate) fn forget(&self, id: &BlockId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, u64>> {
        self.written.lock().expect("generation lock poisoned")
    }
}

/// Whether a delete naming `below` may remove a replica at `generation`: only a
/// replica the namenode could have known of when it decided.
pub fn delete_allowed(generation: u64, below: u64) -> bool {
    generation < below
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_within_a_boot_and_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = BlockId::of(b"a");
        let first = Generations::open(dir.path()).unwrap();
        let before = first.current();
        let g1 = first.bump(&a);
        let g2 = first.bump(&a);
        assert!(before <= g1 && g1 < g2 && g2 < first.current());
        assert_eq!(first.of(&a), g2);
        drop(first);
        let second = Generations::open(dir.path()).unwrap();
        // Found at open: newer than anything written before the restart.
        assert!(second.of(&a) > g2);
        assert!(second.current() > second.of(&a));
        second.forget(&a);
        assert_eq!(second.of(&a), second.base);
    }

    #[test]
    fn a_damaged_generation_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(GENERATION_FILE), "nonsense").unwrap();
        let e = Generations::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("GENERATION"), "{e}");
    }

    #[test]
    fn delete_rule_table() {
        // A replica at `generation`; a delete naming `below`: may it go?
        for (what, generation, below, allowed) in [
            ("written before the namenode's watermark", 5, 9, true),
            ("written right at the watermark", 9, 9, false),
            ("rewritten since", 12, 9, false),
            ("a delete naming no generation", 5, 0, false),
        ] {
            assert_eq!(delete_allowed(generation, below), allowed, "{what}");
        }
    }
}
