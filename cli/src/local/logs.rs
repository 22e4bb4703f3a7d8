//! Where `kdfs local` writes its log lines: one file per component under
//! `<data-dir>/logs/` (`namenode.log`, `datanode-N.log`, `gateway.log`), and `kdfs.log`
//! for the lines of `kdfs local` itself and any a component cannot be told from.
//!
//! A line goes to the component whose runtime thread emitted it: every component runs
//! on a tokio runtime of its own whose worker and blocking threads carry the
//! component's name (see [`super::component`]), so the line of a task spawned without a
//! span, or of tonic's and hyper's connection tasks, still lands in the right file.
//! Spans would not do: a task spawned without `.instrument` loses them. A line from a
//! thread a component started by hand (the namenode's metadata writer) falls back to its
//! crate's target where that names one component (namenode, gateway), else to
//! `kdfs.log`: nothing is dropped. Files are opened for appending, so a restart adds to
//! them.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

/// The file of lines no component claims.
pub(crate) const OTHER: &str = "kdfs";

/// Components whose crate's lines can be told by their target alone: there is only one
/// of each in a `kdfs local` cluster (with `--namenodes 3` there is no `namenode`
/// component, so a namenode's hand-started threads write to `kdfs.log`).
const SINGLE_TARGETS: [(&str, &str); 2] = [
    ("kdfs_namenode", "namenode"),
    ("kdfs_client_gateway", "gateway"),
];

/// The open log files, one per component plus [`OTHER`]; a [`MakeWriter`] that hands
/// each line the file it belongs to.
pub(crate) struct Logs {
    components: Vec<(String, File)>,
    other: File,
}

impl Logs {
    /// Creates `dir` if missing and opens (appending) a file for each component.
    pub(crate) fn open(dir: &Path, components: &[String]) -> anyhow::Result<Logs> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the logs directory {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<File> {
            let path = dir.join(format!("{name}.log"));
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))
        };
        Ok(Logs {
            components: components
                .iter()
                .map(|c| Ok((c.clone(), open(c)?)))
                .collect::<anyhow::Result<_>>()?,
            other: open(OTHER)?,
        })
    }

    /// The path of a component's log file.
    pub(crate) fn path_of(dir: &Path, component: &str) -> PathBuf {
        dir.join(format!("{component}.log"))
    }

    fn file(&self, component: Option<&str>) -> &File {
        component
            .and_then(|c| self.components.iter().find(|(name, _)| name == c))
            .map_or(&self.other, |(_, f)| f)
    }
}

/// The component a line belongs to: the emitting thread's name when it is a
/// component's, else the component of its target's crate, else none (`kdfs.log`).
fn route<'a>(thread: Option<&'a str>, target: &str) -> Option<&'a str> {
    if let Some(t) = thread.filter(|t| is_component(t)) {
        return Some(t);
    }
    let krate = target.split("::").next().unwrap_or(target);
    SINGLE_TARGETS
        .iter()
        .find(|(k, _)| *k == krate)
        .map(|(_, c)| *c)
}

/// Whether `name` names a component: `namenode`, `gateway`, `namenode-N` (HA) or
/// `datanode-N`.
fn is_component(name: &str) -> bool {
    matches!(name, "namenode" | "gateway")
        || ["datanode-", "namenode-"].iter().any(|prefix| {
            name.strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = &'a File;

    fn make_writer(&'a self) -> &'a File {
        &self.other
    }

    /// One `write` of the whole formatted line to a file opened with `O_APPEND`, so
    /// lines from many threads do not interleave and need no lock.
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> &'a File {
        let thread = std::thread::current();
        self.file(route(thread.name(), meta.target()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(thread: Option<&str>, target: &str, expected: Option<&str>) {
        assert_eq!(
            route(thread, target),
            expected,
            "thread {thread:?}, target {target}"
        );
    }

    #[test]
    fn lines_go_to_the_emitting_component() {
        // A component's own thread wins over the target: tonic, h2 and kdfs_core lines
        // belong to the component whose runtime ran them.
        check(
            Some("datanode-2"),
            "kdfs_datanode::link",
            Some("datanode-2"),
        );
        check(Some("datanode-0"), "h2::proto", Some("datanode-0"));
        check(Some("namenode"), "kdfs_proto::tls", Some("namenode"));
        check(Some("namenode-2"), "openraft::core", Some("namenode-2"));
        check(Some("gateway"), "kdfs::audit", Some("gateway"));
        check(Some("gateway"), "kdfs_namenode", Some("gateway"));
        // Threads started by hand inside a component: by target, where there is one.
        check(
            Some("kdfs-meta-writer"),
            "kdfs_namenode::meta",
            Some("namenode"),
        );
        check(None, "kdfs_client_gateway::gateway::http", Some("gateway"));
        // Neither: kdfs local itself, and what cannot be told.
        check(Some("main"), "kdfs::local", None);
        check(None, "kdfs_datanode::store", None);
        check(Some("tokio-runtime-worker"), "tonic::transport", None);
        check(Some("datanode-"), "kdfs_core", None);
        check(Some("datanode-x"), "kdfs_core", None);
        check(Some("gateway-1"), "kdfs_core", None);
    }

    #[test]
    fn files_are_created_and_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let logs_dir = dir.path().join("logs");
        let names = vec!["namenode".to_owned(), "datanode-0".to_owned()];
        for round in 0..2 {
            let logs = Logs::open(&logs_dir, &names).unwrap();
            std::io::Write::write_all(&mut logs.file(Some("datanode-0")), b"line\n").unwrap();
            std::io::Write::write_all(&mut logs.file(None), b"other\n").unwrap();
            let text = std::fs::read_to_string(Logs::path_of(&logs_dir, "datanode-0")).unwrap();
            assert_eq!(text.lines().count(), round + 1, "appended, not truncated");
        }
        for f in ["namenode", "datanode-0", OTHER] {
            assert!(Logs::path_of(&logs_dir, f).is_file(), "{f}.log");
        }
        let other = std::fs::read_to_string(Logs::path_of(&logs_dir, OTHER)).unwrap();
        assert_eq!(other, "other\nother\n");
    }
}
