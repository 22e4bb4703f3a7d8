//! The disk's limits for what a datanode does to it: fsync'd sequential writes, and
//! durable small-file commits (temp file, write, fdatasync, rename, directory fsync)
//! one after another or by many threads at once, into shard directories that exist
//! or that each commit must make.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::machine;
use crate::stats::mbps;

/// Threads of the parallel durable-commit ceiling (the `small` scenario's clients).
pub(crate) const COMMIT_THREADS: usize = 16;
/// Bytes per file of the durable-commit ceiling (the `small` scenario's default size).
pub(crate) const SMALL_COMMIT: usize = 4 << 10;
/// Files per durable-commit run.
const SMALL_COMMITS: usize = 300;
/// Bytes a 16-thread durable-commit run writes at most (fewer files when they are
/// large; at least 8 per thread).
const COMMIT_BYTES: usize = 64 << 20;

/// Where [`commit_files`] puts its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shards {
    /// All into one directory that exists: a store whose shard directories all exist.
    Existing,
    /// Each into a directory made for it (made, then its parent fsynced, as the store
    /// does for a new `ab/cd` directory): a new store, where nearly every block of a
    /// small run opens one of the 65,536 shard directories.
    New,
}

/// MB/s of writing `chunks` copies of `buf` to a new file in `dir` and fsyncing it.
pub(crate) fn disk_write(dir: &Path, buf: &[u8], chunks: u64) -> anyhow::Result<f64> {
    let p = dir.join("ceiling.bin");
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&p)?;
    for _ in 0..chunks {
        f.write_all(buf)?;
    }
    f.sync_all()?;
    let d = t0.elapsed();
    std::fs::remove_file(&p)?;
    Ok(mbps(chunks * buf.len() as u64, d))
}

/// The least a replica of a small block costs on this disk, one after another on one
/// thread: create a temp file, write it, fdatasync, rename it into a directory, fsync
/// the directory (what a datanode must do at the least before acknowledging; its
/// checksum sidecar and the namenode's commit come on top). Returns files/s and the
/// thread's CPU µs per file.
pub(crate) fn durable_commits(dir: &Path, run: usize, data: &[u8]) -> anyhow::Result<(f64, f64)> {
    let cpu0 = machine::cpu_seconds("thread-self");
    let t0 = Instant::now();
    commit_files(
        dir,
        &format!("commit-{run}"),
        SMALL_COMMITS,
        data,
        Shards::Existing,
    )?;
    let rate = SMALL_COMMITS as f64 / t0.elapsed().as_secs_f64();
    let cpu_us = match (cpu0, machine::cpu_seconds("thread-self")) {
        (Some(a), Some(b)) => (b - a) * 1e6 / SMALL_COMMITS as f64,
        _ => f64::NAN,
    };
    Ok((rate, cpu_us))
}

/// [`durable_commits`] by [`COMMIT_THREADS`] threads at once, as the datanodes do
/// them under the `small` scenario's load (concurrent flushes can be merged by the
/// block layer). Returns files/s and the whole machine's CPU µs per file, which also
/// counts the interrupts and kernel threads that complete the I/O (so it includes
/// whatever else the machine does meanwhile: run it on a quiet machine).
pub(crate) fn parallel_durable_commits(
    dir: &Path,
    run: &str,
    data: &[u8],
    shards: Shards,
) -> anyhow::Result<(f64, f64)> {
    // At most COMMIT_BYTES in all (a large --file-size must not write gigabytes).
    let per_thread = (SMALL_COMMITS / 2)
        .min(COMMIT_BYTES / (data.len().max(1) * COMMIT_THREADS))
        .max(8);
    let cpu0 = machine::machine_cpu_seconds();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..COMMIT_THREADS)
            .map(|t| {
                s.spawn(move || commit_files(dir, &format!("{run}-{t}"), per_thread, data, shards))
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("commit thread panicked"))
    })?;
    let files = (per_thread * COMMIT_THREADS) as f64;
    let rate = files / t0.elapsed().as_secs_f64();
    let cpu_us = match (cpu0, machine::machine_cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) * 1e6 / files,
        _ => f64::NAN,
    };
    Ok((rate, cpu_us))
}

/// Commits `count` files of `data` durably, one after another, into `dir/<name>`, the
/// way the datanode store commits a replica by default: a named temp file in
/// `dir/<name>-tmp`, write, fdatasync, rename into place, fsync the directory.
fn commit_files(
    dir: &Path,
    name: &str,
    count: usize,
    data: &[u8],
    shards: Shards,
) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{name}-tmp"));
    let dest = dir.join(name);
    std::fs::create_dir(&tmp)?;
    std::fs::create_dir(&dest)?;
    for i in 0..count {
        let from = tmp.join(i.to_string());
        let mut f = std::fs::File::create(&from)?;
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        let place = match shards {
            Shards::Existing => dest.clone(),
            Shards::New => {
                let d = dest.join(format!("d{i}"));
                std::fs::create_dir(&d)?;
                std::fs::File::open(&dest)?.sync_all()?;
                d
            }
        };
        std::fs::rename(&from, place.join(i.to_string()))?;
        std::fs::File::open(&place)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_land_where_the_layout_says() {
        let dir = tempfile::tempdir().unwrap();
        commit_files(dir.path(), "flat", 3, b"abc", Shards::Existing).unwrap();
        commit_files(dir.path(), "sharded", 2, b"abc", Shards::New).unwrap();
        assert_eq!(std::fs::read(dir.path().join("flat/2")).unwrap(), b"abc");
        assert_eq!(
            std::fs::read(dir.path().join("sharded/d1/1")).unwrap(),
            b"abc"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("flat-tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}
