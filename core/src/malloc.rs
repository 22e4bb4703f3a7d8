//! glibc malloc settings every kdfs process starts with ([`tune`]).
//!
//! The data path moves ~1 MiB buffers (messages, chunks, read pieces) between threads.
//! By default glibc gives each thread that allocates under contention an arena of its
//! own (up to 8 per core), and every arena keeps its freed 1 MiB buffers: a datanode's
//! peak RSS wandered between 68 and 85 MiB for a 1 GiB upload, and 57–62 MiB with
//! [`ARENAS`] at the same throughput and CPU per byte (BENCHMARKS.md, "Datanode
//! memory"). Every server and the `kdfs` command (which runs `kdfs local` and the
//! bench's client) start with the same bound.
//!
//! Also measured and not taken (BENCHMARKS.md, "Malloc thresholds"): fixing glibc's
//! mmap threshold at 8 MiB and raising its trim threshold halved the page faults of an
//! upload, but moved no CPU figure beyond the noise and raised peak RSS towards the
//! 64 MiB target.
//!
//! When `GLIBC_TUNABLES` is set, it decides instead (nothing here is changed).

/// glibc malloc arenas a process may use.
pub const ARENAS: i32 = 2;

/// The multi-threaded tokio runtime every kdfs binary runs on, built after [`tune`] so
/// that its worker threads share the bounded arenas. Call it first in `main`.
pub fn tuned_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Applies the settings above. Call it first in `main`, before any thread starts
/// (the arena bound only holds for threads created after it).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
