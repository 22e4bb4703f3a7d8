//! Where the server binaries a [`crate::ProcessCluster`] runs come from.
//!
//! The fault suite runs the workspace's `target/debug/` builds (building them once if
//! one is missing, or always with `KDFS_FAULT_BUILD=1`) through a private snapshot, so
//! a concurrent `cargo build` by someone else cannot swap them mid-test. `kdfs bench
//! --local` runs the ones installed beside the running `kdfs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The three server binaries a cluster runs.
pub const BINARIES: [&str; 3] = ["kdfs-namenode", "kdfs-datanode", "kdfs-gateway"];

/// Where to take the server binaries from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binaries {
    /// The workspace's `target/<profile>/`, found from the running test executable,
    /// hard-linked into a snapshot directory once per process (see [`workspace_dir`]).
    Workspace,
    /// The directory of the running executable (`kdfs bench --local`: the binaries are
    /// installed together).
    BesideExe,
    /// A directory given explicitly.
    Dir(PathBuf),
}

impl Binaries {
    /// The directory holding [`BINARIES`]; an error names the one that is missing.
    pub fn dir(&self) -> Result<PathBuf, String> {
        let dir = match self {
            Self::Workspace => return Ok(workspace_dir().to_owned()),
            Self::BesideExe => std::env::current_exe()
                .map_err(|e| format!("locating the running executable: {e}"))?
                .parent()
                .ok_or("the running executable has no directory")?
                .to_owned(),
            Self::Dir(d) => d.clone(),
        };
        match BINARIES.iter().map(|b| dir.join(b)).find(|p| !p.is_file()) {
            Some(missing) => Err(format!(
                "{} not found: build every binary first (cargo build --release)",
                missing.display()
            )),
            None => Ok(dir),
        }
    }
}

/// The directory holding the server binaries, hard-linked (or copied) once per process
/// from the workspace's target directory, building them first if any is missing (or
/// `KDFS_FAULT_BUILD` is set, so the suite never runs stale binaries).
pub fn workspace_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current test executable");
        // target/debug/deps/<test> -> target/debug
        let mut target = exe.parent().expect("exe dir").to_path_buf();
        if target.ends_with("deps") {
            target.pop();
        }
        let missing = BINARIES.iter().any(|b| !target.join(b).is_file());
        if missing || std::env::var_os("KDFS_FAULT_BUILD").is_some() {
            build_binaries();
        }
        let root = target.join("fault-tests-bin");
        remove_stale_snapshots(&root);
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("creating the binaries snapshot dir");
        for b in BINARIES {
            let (from, to) = (target.join(b), dir.join(b));
            let _ = std::fs::remove_file(&to);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .unwrap_or_else(|e| panic!("copying {} failed: {e}", from.display()));
            }
        }
        dir
    })
}

fn build_binaries() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    eprintln!("building the kdfs server binaries for the test cluster");
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "-p",
            "kdfs-namenode",
            "-p",
            "kdfs-datanode",
            "-p",
            "kdfs-client-gateway",
        ])
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the server binaries failed"
    );
}

/// Removes snapshots left by test processes that are gone.
fn remove_stale_snapshots(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let alive = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            // SAFETY: kill with signal 0 only checks that the pid exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_dir_must_hold_every_binary() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::Dir(dir.path().to_owned()).dir().unwrap_err();
        assert!(err.contains("kdfs-namenode not found"), "{err}");
        for b in BINARIES {
            std::fs::write(dir.path().join(b), b"").unwrap();
        }
        assert_eq!(
            Binaries::Dir(dir.path().to_owned()).dir().unwrap(),
            dir.path()
        );
    }
}
