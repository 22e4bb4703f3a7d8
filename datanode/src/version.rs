//! The data directory's identity: `<data>/VERSION`, a small JSON file holding the
//! datanode's persistent id and the cluster the disk belongs to.
//!
//! The node id is generated once, when a fresh directory is first opened, so a restarted
//! pod with the same volume is the same datanode. The cluster id is empty until the first
//! registration adopts the namenode's; from then on a namenode of another cluster is
//! refused, so a disk moved between clusters never mixes their blocks.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kdfs_core::DatanodeId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// File name of the identity file inside the data directory.
pub const VERSION_FILE: &str = "VERSION";
/// The on-disk layout this code reads and writes.
pub const LAYOUT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OnDisk {
    datanode_id: String,
    cluster_id: String,
    layout: u32,
    created_ms: u64,
}

/// The identity of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub datanode_id: DatanodeId,
    /// Empty until the first registration.
    pub cluster_id: String,
    pub created_ms: u64,
}

fn path(root: &Path) -> PathBuf {
    root.join(VERSION_FILE)
}

/// A cluster id is a short token of safe characters (it is logged and compared, never
/// used as a path, but a namenode's reply is still untrusted input).
pub fn check_cluster_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "namenode sent an invalid cluster id {id:?}"
        )))
    }
}

impl Version {
    /// Reads `<root>/VERSION`, or creates it with a fresh node id and no cluster.
    pub fn load_or_create(root: &Path) -> Result<Self> {
        let p = path(root);
        match fs::read(&p) {
            Ok(raw) => {
                let bad = |reason: String| Error::DataDir {
                    dir: root.display().to_string(),
                    reason,
                };
                let d: OnDisk = serde_json::from_slice(&raw)
                    .map_err(|e| bad(format!("{VERSION_FILE} is not valid: {e}")))?;
                if d.layout != LAYOUT {
                    return Err(bad(format!(
                        "layout {} is not supported (this build reads layout {LAYOUT})",
                        d.layout
                    )));
                }
                let datanode_id = DatanodeId::parse(&d.datanode_id)
                    .map_err(|e| bad(format!("{VERSION_FILE}: {e}")))?;
                if !d.cluster_id.is_empty() {
                    check_cluster_id(&d.cluster_id)
                        .map_err(|e| bad(format!("{VERSION_FILE}: {e}")))?;
                }
                Ok(Self {
                    datanode_id,
                    cluster_id: d.cluster_id,
                    created_ms: d.created_ms,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let v = Self {
                    datanode_id: DatanodeId::random(),
                    cluster_id: String::new(),
                    created_ms: now_ms(),
                };
                v.persist(root)?;
                tracing::info!(datanode = %v.datanode_id, "new data directory: generated node id");
                Ok(v)
            }
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    /// Adopts `cluster_id` and makes it durable.
    pub fn adopt_cluster(&mut self, root: &Path, cluster_id: &str) -> Result<()> {
        check_cluster_id(cluster_id)?;
        self.cluster_id = cluster_id.to_owned();
        self.persist(root)
    }

    /// Writes the file atomically: temp file, fsync, rename, fsync of the directory.
    fn persist(&self, root: &Path) -> Result<()> {
        let d = OnDisk {
            datanode_id: self.datanode_id.to_string(),
            cluster_id: self.cluster_id.clone(),
            layout: LAYOUT,
            created_ms: self.created_ms,
        };
        let json = serde_json::to_vec_pretty(&d).expect("plain struct serialises");
        let tmp = root.join(format!("{VERSION_FILE}.tmp"));
        let mut f = fs::File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, path(root)).ctx(|| format!("rename {}", tmp.display()))?;
        crate::sys::sync_dir(root)
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_generated_once_and_cluster_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Version::load_or_create(dir.path()).unwrap();
        assert!(v.cluster_id.is_empty());
        let again = Version::load_or_create(dir.path()).unwrap();
        assert_eq!(again, v);
        v.adopt_cluster(dir.path(), "cluster-1").unwrap();
        let again = Version::load_or_create(dir.path()).unwrap();
        assert_eq!(again.cluster_id, "cluster-1");
        assert_eq!(again.datanode_id, v.datanode_id);
        assert!(v.adopt_cluster(dir.path(), "../x").is_err());
    }

    #[test]
    fn garbage_version_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(VERSION_FILE), b"{nope").unwrap();
        assert!(matches!(
            Version::load_or_create(dir.path()),
            Err(Error::DataDir { .. })
        ));
    }
}
