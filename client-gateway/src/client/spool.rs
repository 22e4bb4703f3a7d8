//! Keeping a block's chunks until its pipeline acknowledges it, so that a failed
//! pipeline can be replaced without re-reading the source.
//!
//! The first [`MEMORY_PREFIX`] bytes of a block stay in memory; the rest is written, by
//! a blocking task, from the start of an unlinked temp file in
//! [`crate::ClientOptions::spool_dir`] and read back only if the block must be re-sent.
//! When the block is done its file goes back to the client's [`SpoolFiles`] for a later
//! block to overwrite. The block's SHA-256 was computed over the original bytes, so a
//! spool that changed them makes every datanode refuse the re-sent block.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::warn;

use super::QUEUE_CHUNKS;

/// Bytes of each block kept in memory for a re-send; the rest goes to the spool file.
/// Small, because every block in flight of every upload holds this much: with reused
/// spool files a larger prefix costs memory and saves nothing
/// (docs/decisions/0002-64-mib-blocks.md).
pub const MEMORY_PREFIX: u64 = 2 << 20;

/// Set once a spool file could not be created, so the fallback is logged only once.
static SPOOL_WARNED: AtomicBool = AtomicBool::new(false);

/// Idle spool files a client keeps for later blocks (each up to a block's size on disk).
pub const SPOOL_FILES_KEPT: usize = 4;

/// Spool files of finished blocks, kept so that the next block overwrites pages that
/// are already in the page cache instead of filling fresh ones, which costs far more
/// CPU (docs/decisions/0002-64-mib-blocks.md). The files stay unlinked; what a block
/// reads back is only what it wrote itself (its chunks' offsets and lengths).
#[derive(Debug, Default)]
pub(crate) struct SpoolFiles {
    idle: std::sync::Mutex<Vec<File>>,
}

impl SpoolFiles {
    /// An idle file, if one is kept.
    fn take(&self) -> Option<File> {
        self.idle.lock().expect("spool file list poisoned").pop()
    }

    /// Keeps `file` for another block, unless enough are kept already.
    fn give_back(&self, file: File) {
        let mut idle = self.idle.lock().expect("spool file list poisoned");
        if idle.len() < SPOOL_FILES_KEPT {
            idle.push(file);
        }
    }

    /// Idle files kept now (tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().expect("spool file list poisoned").len()
    }
}

/// A block's chunks, kept until the block is acknowledged (see [`super::upload`],
/// "Memory bound").
pub(crate) struct Retained {
    /// The first chunks (at least up to `prefix` bytes), in memory.
    head: Vec<Bytes>,
    head_bytes: u64,
    prefix: u64,
    /// Where the rest goes; `None` keeps everything in memory.
    dir: Option<PathBuf>,
    /// The client's idle spool files: one is taken for this block's spool and given
    /// back when the block is done with it.
    files: Arc<SpoolFiles>,
    spool: Option<Spool>,
    /// Why the spool lost bytes: the block can then not be re-sent.
    broken: Option<String>,
}

/// The chunks after the memory prefix, written from offset 0 of an unlinked file (new,
/// or one a finished block gave back) by a blocking task.
struct Spool {
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<File>>>,
    file: Option<Arc<File>>,
    /// Offset and length of every spooled chunk.
    chunks: Vec<(u64, usize)>,
    len: u64,
}

impl Drop for Retained {
    /// Gives the spool file back for another block once its writer is done (a file
    /// whose writer failed is dropped with its error).
    fn drop(&mut self) {
        let Some(spool) = self.spool.take() else {
            return;
        };
        if self.broken.is_some() {
            return;
        }
        let files = self.files.clone();
        drop(spool.tx); // The writer ends after what it was sent.
        if let Some(task) = spool.task {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Ok(Ok(file)) = task.await {
                        files.give_back(file);
                    }
                });
            }
        } else if let Some(file) = spool.file.and_then(|f| Arc::try_unwrap(f).ok()) {
            files.give_back(file);
        }
    }
}

impl Retained {
    pub(crate) fn new(dir: Option<PathBuf>, prefix: u64, files: Arc<SpoolFiles>) -> Self {
        Self {
            head: Vec::new(),
            head_bytes: 0,
            prefix,
            dir,
            files,
            spool: None,
            broken: None,
        }
    }

    fn keep_in_memory(&mut self, chunk: Bytes) {
        self.head_bytes += chunk.len() as u64;
        self.head.push(chunk);
    }

    pub(crate) async fn push(&mut self, chunk: Bytes) {
        if self.spool.is_none() && (self.dir.is_none() || self.head_bytes < self.prefix) {
            return self.keep_in_memory(chunk);
        }
        if self.spool.is_none() {
            let created = match self.files.take() {
                Some(file) => Ok(file),
                None => {
                    let dir = self.dir.clone().expect("checked above");
                    tokio::task::spawn_blocking(move || tempfile::tempfile_in(&dir))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            match created {
                Ok(file) => {
                    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
                    let task = tokio::task::spawn_blocking(move || {
                        let mut at = 0u64;
                        while let Some(b) = rx.blocking_recv() {
                            file.write_all_at(&b, at)?;
                            at += b.len() as u64;
                        }
                        Ok(file)
                    });
                    self.spool = Some(Spool {
                        tx: Some(tx),
                        task: Some(task),
                        file: None,
                        chunks: Vec::new(),
                        len: 0,
                    });
                }
                Err(why) => {
                    if !SPOOL_WARNED.swap(true, Ordering::Relaxed) {
                        warn!(dir = %self.dir.as_ref().expect("checked above").display(), error = %why,
                            "cannot create a spool file: blocks awaiting their ack stay in memory");
                    }
                    self.dir = None;
                    return self.keep_in_memory(chunk);
                }
            }
        }
        let spool = self.spool.as_mut().expect("created above");
        spool.chunks.push((spool.len, chunk.len()));
        spool.len += chunk.len() as u64;
        let sent = match &spool.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if !sent && self.broken.is_none() {
            // The writer stopped: its error says why.
            spool.tx = None;
            let why = match spool.task.take() {
                Some(t) => match t.await {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "spool writer stopped".to_owned(),
                    Err(e) => e.to_string(),
                },
                None => "spool writer stopped".to_owned(),
            };
            warn!(error = %why, "spooling a block failed: it cannot be re-sent if its pipeline fails");
            self.broken = Some(format!("spool file: {why}"));
        }
    }

    /// Number of chunks kept.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.spool.as_ref().map_or(0, |s| s.chunks.len())
    }

    /// Chunk `i` (in the order pushed), read back from the spool if it is there.
    pub(crate) async fn get(&mut self, i: usize) -> std::result::Result<Bytes, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if let Some(c) = self.head.get(i) {
            return Ok(c.clone());
        }
        let spool = self.spool.as_mut().ok_or("no such chunk")?;
        let (offset, len) = *spool
            .chunks
            .get(i - self.head.len())
            .ok_or("no such chunk")?;
        if spool.file.is_none() {
            // Everything is pushed by now: let the writer finish and take its file.
            spool.tx = None;
            let task = spool.task.take().ok_or("spool writer lost")?;
            let file = match task.await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return Err(format!("spool file: {e}")),
                Err(e) => return Err(format!("spool writer: {e}")),
            };
            spool.file = Some(Arc::new(file));
        }
        let file = spool.file.clone().expect("set above");
        tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(len);
            file.read_exact_at(&mut buf, offset).map(|()| buf.freeze())
        })
        .await
        .map_err(|e| format!("spool reader: {e}"))?
        .map_err(|e| format!("reading the spool file: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn retained_chunks_come_back_from_memory_and_spool() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Bytes> = (0..6u8)
            .map(|i| Bytes::from(vec![i; 1000 + i as usize]))
            .collect();
        for (spool_dir, prefix) in [
            (Some(dir.path().to_path_buf()), 0),
            (Some(dir.path().to_path_buf()), 2500),
            (None, 0),
            (Some(dir.path().join("missing")), 0),
        ] {
            let mut r = Retained::new(spool_dir.clone(), prefix, Arc::default());
            for c in &chunks {
                r.push(c.clone()).await;
            }
            assert_eq!(r.len(), chunks.len());
            let spooled = r.spool.as_ref().map_or(0, |s| s.chunks.len());
            let want_spooled = match (&spool_dir, prefix) {
                (Some(d), 0) if d.exists() => 6,
                (Some(d), _) if d.exists() => 3, // 1000 + 1001 + 1002 reach 2500
                _ => 0,
            };
            assert_eq!(spooled, want_spooled, "{spool_dir:?} {prefix}");
            // Twice: a second re-send reads the same bytes again.
            for _ in 0..2 {
                for (i, c) in chunks.iter().enumerate() {
                    assert_eq!(&r.get(i).await.unwrap(), c, "chunk {i}");
                }
            }
        }
    }

    /// Waits (with a deadline) until `files` holds `n` idle spool files.
    async fn idle_files(files: &SpoolFiles, n: usize) {
        let what = format!("{n} idle spool files");
        kdfs_testkit::wait_for(&what, Duration::from_secs(10), || files.idle() == n).await;
    }

    #[tokio::test]
    async fn a_spool_file_given_back_serves_the_next_block_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(SpoolFiles::default());
        let spool = Some(dir.path().to_path_buf());
        // A long block leaves its bytes in the file it gives back.
        let mut a = Retained::new(spool.clone(), 0, files.clone());
        for i in 0..4u8 {
            a.push(Bytes::from(vec![0xA0 + i; 5000])).await;
        }
        assert_eq!(&a.get(3).await.unwrap()[..], &[0xA3; 5000][..]);
        drop(a); // Given back after its last get (the writer was joined then).
        idle_files(&files, 1).await;
        // A shorter block overwrites the same file from its start and reads back only
        // its own chunks, also after the writer is joined by a first re-send.
        let mut b = Retained::new(spool.clone(), 0, files.clone());
        let chunks: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![0xB0 + i; 700 + i as usize]))
            .collect();
        for c in &chunks {
            b.push(c.clone()).await;
        }
        idle_files(&files, 0).await; // b took it.
        for _ in 0..2 {
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(&b.get(i).await.unwrap(), c, "chunk {i}");
            }
        }
        // A block dropped while its writer may still run gives the file back too, and
        // no more than SPOOL_FILES_KEPT are kept.
        drop(b);
        idle_files(&files, 1).await;
        let many: Vec<Retained> = futures::future::join_all((0..SPOOL_FILES_KEPT + 2).map(|_| {
            let (spool, files) = (spool.clone(), files.clone());
            async move {
                let mut r = Retained::new(spool, 0, files);
                r.push(Bytes::from_static(b"x")).await;
                r
            }
        }))
        .await;
        drop(many);
        idle_files(&files, SPOOL_FILES_KEPT).await;
        // Nothing was left under the spool directory: the files are unlinked.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
