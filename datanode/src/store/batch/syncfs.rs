//! Group commit of the file system: `syncfs` calls shared by the batches that ask for
//! one at the same time.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::sys;

/// `syncfs` calls shared by the batches committing at once (a group commit of the file
/// system): a caller is answered by the first `syncfs` that *started* after it asked,
/// so everything it wrote before asking is covered; a caller arriving while one runs
/// waits for the next one, which it shares with every caller arriving meanwhile. Two
/// batches at once (several gateways) then cost about one `syncfs` per step instead of
/// two. The descriptor lives as long as the store, so a write-back error of the file
/// system since the last call fails the call that reports it, and every sharer of it.
#[derive(Debug)]
pub(crate) struct SyncfsGroup {
    dir: File,
    path: PathBuf,
    state: Mutex<SyncfsState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncfsState {
    /// Calls started and finished; one runs while `started > finished`.
    started: u64,
    finished: u64,
    /// The last finished call's failure.
    failed: Option<String>,
}

impl SyncfsGroup {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: File::open(dir).ctx(|| format!("open {}", dir.display()))?,
            path: dir.to_owned(),
            state: Mutex::new(SyncfsState::default()),
            done: Condvar::new(),
        })
    }

    /// Returns once a `syncfs` that started after this call began has finished.
    pub(crate) fn sync(&self) -> Result<()> {
        let lock = || self.state.lock().expect("syncfs lock poisoned");
        let mut s = lock();
        // A call running now may have started before our writes: the one after it.
        let want = s.started + 1;
        loop {
            if s.finished >= want {
                // `finished` is the call that covers us, or one after it; either
                // way its outcome covers everything we wrote.
                return match &s.failed {
                    Some(e) => Err(Error::io(
                        format!("syncfs {}", self.path.display()),
                        io::Error::other(e.clone()),
                    )),
                    None => Ok(()),
                };
            }
            if s.started == s.finished {
                s.started += 1;
                let call = s.started;
                drop(s);
                let r = sys::syncfs(&self.dir)
                    .map_err(|e| Error::io(format!("syncfs {}", self.path.display()), e));
                s = lock();
                s.finished = call;
                s.failed = r.as_ref().err().map(ToString::to_string);
                self.done.notify_all();
                continue;
            }
            s = self.done.wait(s).expect("syncfs lock poisoned");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Callers arriving together share `syncfs` calls: each is answered, and fewer
    /// calls run than were asked for (one runs while the others queue for the next).
    #[test]
    fn concurrent_syncfs_callers_share_calls() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(SyncfsGroup::new(dir.path()).unwrap());
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, barrier) = (group.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        group.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = group.state.lock().unwrap();
        assert_eq!(s.started, s.finished);
        assert!(
            s.started >= 20,
            "every caller needs a call of its own at least"
        );
        assert!(s.started < 8 * 20, "no call was shared: {}", s.started);
    }
}
