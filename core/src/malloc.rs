//! glibc malloc settings every kdfs process starts with ([`tune`]).
//!
//! The data path moves ~1 MiB buffers (messages, chunks, read pieces) between threads.
//! By default glibc gives each thread that allocates under contention an arena of its
//! own (up to 8 per core), and every arena keeps its freed 1 MiB buffers, so peak RSS
//! wanders upwards with the thread count. [`ARENAS`] bounds it at the same throughput
//! (docs/decisions/0006-malloc-arenas.md). Every server and the `kdfs` command (which
//! runs `kdfs local` and the bench's client) start with the same bound.
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
