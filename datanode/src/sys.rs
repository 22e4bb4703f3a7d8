//! Every system call the datanode makes beyond what `std` offers, in one place.
//!
//! Most go through `rustix`, which wraps them safely. Two `unsafe` blocks remain, each
//! with its reason: `sync_file_range(2)` (not in `rustix`) and the length of a buffer
//! that a direct read filled without zeroing it first. Callers get `io::Result`s and
//! decide what a failure means (most of these are optimisations whose failure only
//! costs speed).

use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::path::Path;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};

use crate::error::{IoContext, Result};

/// fsyncs a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// Whether an open failed because the file system refuses `O_DIRECT` (tmpfs and a few
/// others answer `EINVAL`): the caller then opens the file buffered.
pub fn refuses_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// `O_DIRECT` if `direct`, else nothing.
fn direct_flag(direct: bool) -> OFlags {
    if direct {
        OFlags::DIRECT
    } else {
        OFlags::empty()
    }
}

/// Creates `path` for writing; fails if it exists (`O_EXCL`). With `direct`, writes
/// bypass the page cache (`O_DIRECT`).
pub fn create_new(path: &Path, direct: bool) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags | direct_flag(direct), Mode::from(0o666))?;
    Ok(File::from(fd))
}

/// Opens a new unnamed file in `dir` for writing (`O_TMPFILE`, plus `O_DIRECT` with
/// `direct`): it has no name until [`link_unnamed`] gives it one, and vanishes when
/// closed without one.
pub fn create_unnamed(dir: &Path, direct: bool) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags | direct_flag(direct), Mode::from(0o644))?;
    Ok(File::from(fd))
}

/// Opens `path` for reading with `O_DIRECT`.
pub fn open_direct(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::DIRECT;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// Gives the unnamed file `file` the name `dest` (`linkat(2)`), atomically: `dest`
/// appears whole or not at all. Through `/proc/self/fd`, which needs no privilege
/// (`AT_EMPTY_PATH` would need `CAP_DAC_READ_SEARCH`). Fails if `dest` exists.
pub fn link_unnamed(file: &File, dest: &Path) -> io::Result<()> {
    let src = format!("/proc/self/fd/{}", file.as_raw_fd());
    let cwd = rustix::fs::CWD;
    Ok(rustix::fs::linkat(
        cwd,
        src.as_str(),
        cwd,
        dest,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

/// Takes an exclusive `flock(2)` on `file` without waiting; fails if another process
/// holds one.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    Ok(rustix::fs::flock(
        file,
        FlockOperation::NonBlockingLockExclusive,
    )?)
}

/// `syncfs(2)` of the file system holding `file`.
pub fn syncfs(file: &File) -> io::Result<()> {
    Ok(rustix::fs::syncfs(file)?)
}

/// Total and free bytes of the file system holding `path` (free as seen by non-root).
pub fn statvfs(path: &Path) -> io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    Ok((
        st.f_blocks.saturating_mul(st.f_frsize),
        st.f_bavail.saturating_mul(st.f_frsize),
    ))
}

/// Tells the kernel that `len` bytes at `offset` are about to be read from start to end
/// (`posix_fadvise` `SEQUENTIAL`, then `WILLNEED`). Advice only: failures are ignored.
pub fn advise_sequential_read(file: &File, offset: u64, len: u64) {
    for advice in [rustix::fs::Advice::Sequential, rustix::fs::Advice::WillNeed] {
        let _ = rustix::fs::fadvise(file, offset, NonZeroU64::new(len), advice);
    }
}

/// Starts the kernel's writeback of `len` bytes at `offset` without waiting for it
/// (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`). A failure only loses the head
/// start: a later fsync still makes the data durable, so it is ignored.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: a plain syscall on a descriptor `file` keeps open; no memory is passed.
    // (`rustix` does not wrap `sync_file_range`.)
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Reads at most `n` bytes at `offset` into the spare capacity of `buf` (which must
/// have room for them), appending what was read without zeroing the buffer first.
/// Returns the bytes read (0 at the end of the file). Retries when interrupted.
pub fn pread_append(file: &File, buf: &mut Vec<u8>, n: usize, offset: u64) -> io::Result<usize> {
    let spare = &mut buf.spare_capacity_mut()[..n];
    let read = loop {
        match rustix::io::pread(file, &mut *spare, offset) {
            Ok((init, _)) => break init.len(),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: `pread` initialised the first `read` bytes of the spare capacity, which
    // start right at the current length.
    unsafe { buf.set_len(buf.len() + read) };
    Ok(read)
}
