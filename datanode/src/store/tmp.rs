//! Temp files of writes in progress, in `<data>/tmp/`, and how they are put into place.
//!
//! A write goes to a named file in `tmp/` renamed into place at commit, or, with
//! `--unnamed-tmp` where the file system takes it, to an unnamed inode (`O_TMPFILE`)
//! linked into place: no directory entry is added to `tmp/` and removed again, so a
//! replica costs one directory write less on ext4 without a journal. Why unnamed files
//! are off by default: see [`super::StoreConfig::unnamed_tmp`].

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::sys;

/// Creates the temp file of a write, with `O_DIRECT` where asked and the file system
/// takes it (see [`super::write::BlockWriter`]); returns the file and whether it is
/// direct.
///
/// With `unnamed` the file is an unnamed inode in `tmp` (`O_TMPFILE`), given its name
/// at commit by [`link_into_place`]. An abandoned write leaves nothing behind: the file
/// system frees an unnamed file when it is closed, or after a crash when it mounts
/// (journaled file systems; ext4 without a journal leaves that to fsck, which it needs
/// after a crash anyway). Otherwise the file is created at `path` (inside `tmp`) and
/// renamed into place.
pub(crate) fn create_tmp(
    tmp: &Path,
    path: &Path,
    unnamed: bool,
    direct: bool,
) -> Result<(File, bool)> {
    let open = |direct: bool| {
        if unnamed {
            sys::create_unnamed(tmp, direct)
        } else {
            sys::create_new(path, direct)
        }
    };
    if !direct {
        return open(false)
            .map(|f| (f, false))
            .ctx(|| format!("create {}", path.display()));
    }
    match open(true) {
        Ok(f) => Ok((f, true)),
        // tmpfs and a few others refuse O_DIRECT: buffered writes there.
        Err(e) if sys::refuses_direct(&e) => open(false)
            .map(|f| (f, false))
            .ctx(|| format!("create {}", path.display())),
        Err(e) => Err(e).ctx(|| format!("create {}", path.display())),
    }
}

/// Gives an unnamed temp file the name `dest`, atomically: `dest` appears whole or not
/// at all. A file already at `dest` is removed first (not atomically, unlike a
/// rename's replacement): callers hold the id's commit stripe and have checked the
/// index, so it can only be the leftover of a commit that failed after its link.
pub(crate) fn link_into_place(file: &File, dest: &Path) -> io::Result<()> {
    match sys::link_unnamed(file, dest) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(dest)?;
            sys::link_unnamed(file, dest)
        }
        r => r,
    }
}

/// Whether `tmp` takes unnamed temp files that [`link_into_place`] can name (kernel
/// and file system support `O_TMPFILE`, `/proc` is mounted). Leaves nothing behind.
pub(crate) fn probe_unnamed_tmp(tmp: &Path) -> bool {
    let probe = tmp.join("probe-unnamed");
    let ok = create_tmp(tmp, &probe, true, false)
        .map_err(|e| e.to_string())
        .and_then(|(mut f, _)| {
            f.write_all(b"kdfs")
                .and_then(|_| link_into_place(&f, &probe))
                .map_err(|e| e.to_string())
        });
    let _ = fs::remove_file(&probe);
    match ok {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(dir = %tmp.display(), error = %e, "no unnamed temp files here: block writes use named temp files and renames");
            false
        }
    }
}
