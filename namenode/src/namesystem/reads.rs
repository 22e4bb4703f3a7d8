//! Reads: a file with its blocks located on live replicas (best first), and pages of
//! the newest files. A read that races a commit or a delete between the store and the
//! block map is made again once the metadata writer has caught up.

use std::sync::Arc;
use std::time::Duration;

use kdfs_core::{BlockId, FileId};

use super::{Location, MAX_NAME_LEN, NameSystem, location};
use crate::cluster::{Node, NodeState};
use crate::error::{Error, Result};
use crate::meta::{FileRecord, Lookup};

/// Default and largest page of a listing.
pub const DEFAULT_LIST_LIMIT: usize = 100;

pub const MAX_LIST_LIMIT: usize = 1000;

/// Entries one listing call may scan while filtering by name.
pub const MAX_LIST_SCAN: usize = 100_000;

/// Longest a file read waits for the metadata writer to apply a change the store
/// already shows (`NameSystem::get_file`); a batch is applied within microseconds of
/// being durable, so this only bounds a writer that stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// A block of a file with its live replicas, best first.
#[derive(Debug, Clone)]
pub struct LocatedBlock {
    pub id: BlockId,
    pub length: u64,
    pub offset: u64,
    pub replicas: Vec<Location>,
}

/// `GetFile`'s answer.
#[derive(Debug, Clone)]
pub enum FileView {
    Live {
        record: FileRecord,
        blocks: Vec<LocatedBlock>,
    },
    Deleted {
        record: FileRecord,
        deleted_ms: u64,
    },
}

impl NameSystem {
    /// A file with its located blocks, or its tombstone.
    ///
    /// A commit or a delete is visible in the store a moment before the writer applies
    /// it to the block map. A live record read in that moment has blocks the map does
    /// not hold (a new file's not yet added, a deleted one's already released): then
    /// the read waits for the writer to catch up and is made again, so a file being
    /// deleted reads as live with its replicas or as deleted, never as a live file
    /// without replicas.
    pub async fn get_file(&self, id: &FileId) -> Result<FileView> {
        self.read_settled(|| async move { self.read_file(id) })
            .await
    }

    /// Reads with `read`, which also says whether the block map held every block of
    /// what it read; a read that was not (a commit or delete between the store and the
    /// map) is made again once the writer has caught up, waiting at most
    /// [`SETTLE_LIMIT`].
    pub(super) async fn read_settled<T, Fut>(&self, read: impl Fn() -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<(T, bool)>>,
    {
        let (value, consistent) = read().await?;
        if consistent || !self.writer.settled(SETTLE_LIMIT).await {
            return Ok(value);
        }
        Ok(read().await?.0)
    }

    /// [`NameSystem::get_file`]'s read, and whether the block map held every block of
    /// a live record.
    fn read_file(&self, id: &FileId) -> Result<(FileView, bool)> {
        let mut consistent = true;
        let view = match self.store.lookup(id)? {
            None => return Err(Error::NotFound(format!("file {id} not found"))),
            Some(Lookup::Deleted { record, deleted_ms }) => {
                FileView::Deleted { record, deleted_ms }
            }
            Some(Lookup::Live(record)) => {
                let cluster = self.cluster();
                let mut offset = 0;
                let mut blocks = Vec::with_capacity(record.blocks.len());
                for (b, len) in &record.blocks {
                    let mut nodes: Vec<&Node> = match self.shared.blocks.get(b) {
                        Some(i) => i.locs.iter().filter_map(|n| cluster.node(*n)).collect(),
                        None => {
                            consistent = false;
                            Vec::new()
                        }
                    };
                    nodes.retain(|n| n.state != NodeState::Dead);
                    nodes.sort_by_key(|n| (n.state != NodeState::Live, n.load.in_flight));
                    // Unconfirmed replicas last: a reader verifies every byte, so one
                    // that lies only costs a failover, and a real one may be the
                    // last copy.
                    nodes.extend(
                        self.shared
                            .blocks
                            .unconfirmed(b)
                            .iter()
                            .filter_map(|n| cluster.node(*n))
                            .filter(|n| n.state != NodeState::Dead),
                    );
                    blocks.push(LocatedBlock {
                        id: *b,
                        length: *len,
                        offset,
                        replicas: nodes.into_iter().map(location).collect(),
                    });
                    offset += len;
                }
                FileView::Live { record, blocks }
            }
        };
        Ok((view, consistent))
    }

    /// Fewest live replicas over a file's blocks; `None` if the block map lacks one of
    /// them (a commit or delete between the store and the map: see
    /// [`NameSystem::get_file`]).
    fn min_live_replicas(&self, record: &FileRecord) -> Option<u32> {
        let mut min = None::<u32>;
        for (b, _) in &record.blocks {
            let n = self.shared.blocks.get(b)?.locs.len() as u32;
            min = Some(min.map_or(n, |m| m.min(n)));
        }
        Some(min.unwrap_or(0))
    }

    /// A newest-first page of live files ([`NameSystem::list`]), each with the fewest
    /// live replicas over its blocks. As in [`NameSystem::get_file`], a page read while
    /// a commit or a delete was between the store and the block map is read again once
    /// the writer has caught up ([`NameSystem::read_settled`]): a file being deleted is listed with its replicas or
    /// not at all, never with none.
    pub async fn list_with_replicas(
        self: &Arc<Self>,
        limit: u32,
        after: &str,
        name_contains: &str,
    ) -> Result<(Vec<(FileRecord, u32)>, String)> {
        self.read_settled(|| self.read_page(limit, after, name_contains))
            .await
    }

    /// [`NameSystem::list_with_replicas`]'s read (off the runtime: it reads the store),
    /// and whether the block map held every block of every file listed.
    async fn read_page(
        self: &Arc<Self>,
        limit: u32,
        after: &str,
        name_contains: &str,
    ) -> Result<((Vec<(FileRecord, u32)>, String), bool)> {
        let ns = self.clone();
        let (after, name_contains) = (after.to_owned(), name_contains.to_owned());
        tokio::task::spawn_blocking(move || {
            let (files, next) = ns.list(limit, &after, &name_contains)?;
            let mut consistent = true;
            let files = files
                .into_iter()
                .map(|f| {
                    let n = ns.min_live_replicas(&f);
                    consistent &= n.is_some();
                    (f, n.unwrap_or(0))
                })
                .collect();
            Ok(((files, next), consistent))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("listing task failed: {e}")))?
    }

    /// A newest-first page of live files; `after` is the opaque cursor.
    pub fn list(
        &self,
        limit: u32,
        after: &str,
        name_contains: &str,
    ) -> Result<(Vec<FileRecord>, String)> {
        let limit = match limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let before = if after.is_empty() {
            None
        } else {
            let raw = hex::decode(after)
                .ok()
                .and_then(|v| <[u8; 40]>::try_from(v).ok())
                .ok_or_else(|| {
                    Error::InvalidArgument("after: not a cursor this server issued".into())
                })?;
            Some(raw)
        };
        if name_contains.len() > MAX_NAME_LEN {
            return Err(Error::InvalidArgument("name_contains is too long".into()));
        }
        let needle = name_contains.to_lowercase();
        let (files, next) = self.store.list(before, limit, MAX_LIST_SCAN, |r| {
            needle.is_empty() || r.name.to_lowercase().contains(&needle)
        })?;
        Ok((files, next.map(hex::encode).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kdfs_core::FileId;

    use super::super::test_fixtures::*;
    use super::FileView;

    /// Stores 150 one-block files on two nodes, then deletes them one by one, each while
    /// `observer(sim, id)` runs in a task of its own; returns the sum of what the observers
    /// return (how many of their looks found the file still there).
    async fn delete_each_while<F, Fut>(tag: &str, observer: F) -> u64
    where
        F: Fn(Arc<Sim>, FileId) -> Fut,
        Fut: std::future::Future<Output = u64> + Send + 'static,
    {
        let sim = Arc::new(Sim::new(&[]).with_nodes(2));
        sim.tick();
        let contents: Vec<Vec<u8>> = (0..150)
            .map(|i| format!("{tag} {i}").into_bytes())
            .collect();
        for c in &contents {
            sim.upload(c, &[0, 1]).await;
        }
        let mut seen = 0u64;
        for c in &contents {
            let id = file(c);
            let observer = tokio::spawn(observer(sim.clone(), id));
            tokio::task::yield_now().await;
            assert!(sim.ns.delete(id).await.unwrap());
            seen += observer.await.unwrap();
        }
        seen
    }

    /// A file being deleted is read as live with its replicas, or as deleted: never as a
    /// live record whose blocks are already gone from the block map (the tombstone is in
    /// the store a moment before the writer releases the blocks in memory; a reader in
    /// between would see "no live replica", and the gateway would answer 503, not 410).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_being_deleted_reads_as_live_with_replicas_or_as_deleted() {
        let live_reads = delete_each_while("being deleted", |sim, id| async move {
            let mut live = 0u64;
            loop {
                match sim.ns.get_file(&id).await.unwrap() {
                    FileView::Live { blocks, .. } => {
                        assert!(
                            blocks.iter().all(|b| !b.replicas.is_empty()),
                            "a live view of {id} with a block without replicas"
                        );
                        live += 1;
                    }
                    FileView::Deleted { .. } => return live,
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(live_reads > 0, "the reads overlapped the deletes");
    }

    /// The listing's side of the same moment: a file being deleted is listed with its
    /// replicas or not at all, never with none (the browser page showed such a file as
    /// having lost every replica).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_being_deleted_is_listed_with_replicas_or_not_at_all() {
        let listed = delete_each_while("listed while deleted", |sim, id| async move {
            let mut seen = 0u64;
            loop {
                let (page, _) = sim.ns.list_with_replicas(1000, "", "").await.unwrap();
                match page.iter().find(|(f, _)| f.id == id) {
                    Some((_, replicas)) => {
                        assert!(*replicas > 0, "{id} listed without replicas");
                        seen += 1;
                    }
                    None => return seen,
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(listed > 0, "the listings overlapped the deletes");
    }
}
