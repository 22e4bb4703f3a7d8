//! Quarantine: replicas that failed verification leave the index and `blocks/` for
//! `<data>/quarantine/`, named `<id>.<unix ms>`, where an operator can inspect them;
//! once `--quarantine-retention` has passed they are deleted, so a failing disk's
//! rejects cannot fill it for good.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kdfs_core::BlockId;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::events::Event;
use super::sidecar::{SIDECAR_SUFFIX, sidecar_of};
use crate::error::{Error, IoContext, Result};
use crate::sys::sync_dir;
use crate::version::now_ms;

/// What [`Store::prune_quarantine`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Files: replicas and sidecars.
    pub files: usize,
    pub bytes: u64,
}

/// The quarantine time of a file named `<block id>.<unix ms>` or
/// `<block id>.<unix ms>.crc` (its sidecar); `None` for any other name.
fn quarantined_at(name: &str) -> Option<u64> {
    let name = name.strip_suffix(SIDECAR_SUFFIX).unwrap_or(name);
    let (id, ms) = name.split_once('.')?;
    BlockId::parse(id).ok()?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok()
}

impl Store {
    /// Deletes the replicas (and their sidecars) quarantined before `cutoff_ms`, Unix
    /// milliseconds: their names end in the time they were quarantined (see
    /// `Store::quarantine_locked`). A file whose name does not have that form was not put
    /// there by a store and is left alone. Kept replicas are for inspection only
    /// (nothing reads them), so the pass needs no lock.
    pub fn prune_quarantine(&self, cutoff_ms: u64) -> Result<Pruned> {
        let dir = &self.inner.quarantine;
        let mut pruned = Pruned::default();
        let entries = fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("list {}", dir.display()))?;
            let name = entry.file_name();
            let Some(at_ms) = name.to_str().and_then(quarantined_at) else {
                continue;
            };
            if at_ms >= cutoff_ms {
                continue;
            }
            let path = entry.path();
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    pruned.files += 1;
                    pruned.bytes += len;
                }
                // Removed meanwhile (another pass, an operator): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(format!("remove {}", path.display()), e));
                }
            }
        }
        Ok(pruned)
    }

    /// Moves a replica to `quarantine/` because it failed verification. `ino` guards
    /// against quarantining a fresh, good copy written after the reader opened the bad
    /// one. Logs, counts and records the event.
    pub(crate) fn quarantine_checked(&self, id: &BlockId, ino: Option<u64>, reason: &str) {
        let path = self.block_path(id);
        let _g = self.stripe(id);
        if let Some(ino) = ino
            && fs::metadata(&path).map(|m| m.ino()).ok() != Some(ino)
        {
            return;
        }
        self.quarantine_locked(id, &path, reason);
    }

    pub(crate) fn quarantine_file(&self, id: &BlockId, path: &Path, reason: &str) {
        let _g = self.stripe(id);
        self.quarantine_locked(id, path, reason);
    }

    fn quarantine_locked(&self, id: &BlockId, path: &Path, reason: &str) {
        if let Some(len) = self
            .inner
            .index
            .write()
            .expect("index lock poisoned")
            .remove(id)
        {
            self.inner.used.fetch_sub(len, Ordering::Relaxed);
        }
        self.inner.generations.forget(id);
        let dest = self
            .inner
            .quarantine
            .join(format!("{id}.{}", crate::version::now_ms()));
        if let Err(e) = fs::rename(path, &dest) {
            tracing::error!(block = %id, error = %e, "cannot move corrupt replica to quarantine; removing it");
            let _ = fs::remove_file(path);
        }
        let _ = fs::rename(sidecar_of(path), sidecar_of(&dest));
        if let Some(dir) = path.parent() {
            let _ = sync_dir(dir);
        }
        tracing::warn!(block = %id, reason, quarantine = %dest.display(), "corrupt replica quarantined");
        self.inner
            .stats
            .corrupt_found
            .fetch_add(1, Ordering::Relaxed);
        self.inner.events.push(Event::Corrupt(*id));
    }
}

/// Deletes quarantined replicas once they are `retention` old, until `cancel`; how
/// often to look is derived from it (a quarter of it, between a second and an hour).
pub async fn run_quarantine_pruning(
    store: Store,
    retention: Duration,
    cancel: CancellationToken,
) -> Result<()> {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        prune_tick(&store, retention).await?;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass of [`run_quarantine_pruning`]: fails only if its blocking task does.
#[tracing::instrument(name = "quarantine_prune", skip_all)]
async fn prune_tick(store: &Store, retention: Duration) -> Result<()> {
    let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.prune_quarantine(cutoff))
        .await
        .map_err(|e| Error::io("quarantine task", std::io::Error::other(e)))?
    {
        Ok(p) if p.files > 0 => {
            tracing::info!(
                files = p.files,
                bytes = p.bytes,
                retention_s = retention.as_secs(),
                "old quarantined replicas deleted"
            );
        }
        Ok(_) => {}
        // A full or failing disk must not stop the datanode: try again later.
        Err(e) => tracing::warn!(error = %e, "cannot prune the quarantine"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only names a store gave its quarantined files are pruned.
    #[test]
    fn quarantine_times_come_from_names_a_store_gives() {
        let id = BlockId::of(b"x");
        let check = |name: String, want: Option<u64>| {
            assert_eq!(quarantined_at(&name), want, "{name}");
        };
        check(format!("{id}.1700000000000"), Some(1_700_000_000_000));
        check(format!("{id}.42.crc"), Some(42));
        check(format!("{id}"), None);
        check(format!("{id}."), None);
        check(format!("{id}.12a"), None);
        check(format!("{id}.+12"), None);
        check(format!("{id}.1.2"), None);
        check(format!("{id}.99999999999999999999999"), None);
        check("notablock.123".into(), None);
    }
}
