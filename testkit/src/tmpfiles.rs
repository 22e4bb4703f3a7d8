//! Unnamed temp files (`O_TMPFILE`) seen from outside the process that holds them.
//!
//! A datanode writes each block into an unnamed inode in its `tmp/` directory and links
//! it into place at commit, so a write in progress has no name to list. Tests and
//! diagnostics that ask "is a write in progress here?" look at the process's open file
//! descriptors instead, which the kernel shows as `<dir>/#<inode> (deleted)`.

use std::path::{Path, PathBuf};

/// The unnamed temp files in `dir` that process `pid` (`None`: this process) holds
/// open, as `/proc/<pid>/fd/<n>` paths: `std::fs::metadata` of one follows the
/// descriptor to the file (its size is what the write has reached). Empty if the
/// process is gone or its descriptors cannot be read.
pub fn open_unnamed_in(pid: Option<u32>, dir: &Path) -> Vec<PathBuf> {
    let fds = PathBuf::from(format!("/proc/{}/fd", pid.unwrap_or_else(std::process::id)));
    let Ok(entries) = std::fs::read_dir(fds) else {
        return Vec::new();
    };
    // The kernel shows the resolved path.
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|fd| std::fs::read_link(fd).is_ok_and(|target| is_unnamed_in(&target, &dir)))
        .collect()
}

/// Whether a descriptor's link target names an unnamed file directly in `dir`.
fn is_unnamed_in(target: &Path, dir: &Path) -> bool {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return false;
    };
    let name = name.to_string_lossy();
    parent == dir && name.starts_with('#') && name.ends_with(" (deleted)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn an_open_unnamed_file_is_seen_until_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("named"), b"x").unwrap();
        assert!(open_unnamed_in(None, dir.path()).is_empty());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir.path())
            .expect("O_TMPFILE in a temp dir");
        std::io::Write::write_all(&mut &f, b"12345").unwrap();
        let seen = open_unnamed_in(None, dir.path());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            std::fs::metadata(&seen[0]).unwrap().len(),
            5,
            "stats the file"
        );
        assert!(open_unnamed_in(None, other.path()).is_empty());
        assert_eq!(
            open_unnamed_in(Some(std::process::id()), dir.path()),
            seen,
            "by pid as by self"
        );
        drop(f);
        assert!(open_unnamed_in(None, dir.path()).is_empty());
    }

    #[test]
    fn only_unnamed_entries_of_the_dir_itself_count() {
        let dir = Path::new("/data/tmp");
        assert!(is_unnamed_in(Path::new("/data/tmp/#1234 (deleted)"), dir));
        assert!(!is_unnamed_in(Path::new("/data/tmp/w00000001"), dir));
        assert!(!is_unnamed_in(
            Path::new("/data/tmp/w00000001 (deleted)"),
            dir
        ));
        assert!(!is_unnamed_in(Path::new("/data/tmp/sub/#1 (deleted)"), dir));
        assert!(!is_unnamed_in(Path::new("/data/tmpx/#1 (deleted)"), dir));
    }
}
