//! The binaries' flags, read from their clap configs (the file of each server crate
//! that defines `pub struct Config`), so the manifests can be checked against what each
//! binary accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::root;

/// Long flags (`--kebab-case`) and `KDFS_*` variables of one clap `Config`.
#[derive(Debug, Default)]
pub struct Flags {
    pub long: BTreeSet<String>,
    pub env: BTreeSet<String>,
    /// `pub const DEFAULT_X: &str = "…";` values, by constant name.
    pub defaults: BTreeMap<String, String>,
}

/// Reads a clap config's source file: every field under an `#[arg(...)]` with `long` (or
/// `long = "name"`) is a flag; `env = "KDFS_X"` its variable. Attributes may span lines.
/// A field under `#[command(flatten)]` brings in the flags of its type's struct, found
/// by name in the workspace's sources (e.g. `kdfs_proto::tls::TlsArgs`).
pub fn clap_flags(path: &Path) -> Flags {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut flags = Flags {
        long: ["help", "version"].map(String::from).into(),
        ..Flags::default()
    };
    read_clap_flags(&text, &mut flags);
    flags
}

/// Every `.rs` file under `dir`, sorted, so a search finds the same file every time.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// The file of `krate`'s sources (in any module) that defines `pub struct <name>`, and
/// its text.
fn defining_file(krate: &str, name: &str) -> Option<(PathBuf, String)> {
    let opening = format!("pub struct {name} {{");
    rust_files(&root().join(krate).join("src"))
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("source is readable UTF-8");
            (f, text)
        })
        .find(|(_, text)| text.contains(&opening))
}

/// The source of `pub struct <name>` (to its closing brace) in one of the crates the
/// binaries are built from.
pub fn struct_source(name: &str) -> String {
    let opening = format!("pub struct {name} {{");
    for krate in ["core", "proto", "namenode", "datanode", "client-gateway"] {
        if let Some((_, text)) = defining_file(krate, name) {
            let body = &text[text.find(&opening).expect("found above")..];
            let end = body.find("\n}").map_or(body.len(), |e| e + 2);
            return body[..end].to_owned();
        }
    }
    panic!("a config flattens {name}, but no crate defines `pub struct {name}`")
}

pub fn read_clap_flags(text: &str, flags: &mut Flags) {
    let mut attr = String::new();
    let mut in_attr = false;
    let mut pending: Vec<String> = Vec::new();
    let mut flatten = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#[command(flatten") || t.starts_with("#[clap(flatten") {
            flatten = true;
            continue;
        }
        if flatten
            && let Some(rest) = t.strip_prefix("pub ")
            && let Some((_, ty)) = rest.split_once(':')
        {
            let ty = ty.trim().trim_end_matches(',');
            let ty = ty.rsplit("::").next().unwrap_or(ty);
            read_clap_flags(&struct_source(ty), flags);
            flatten = false;
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub const ")
            && let Some((name, value)) = rest.split_once(": &str = ")
        {
            let value = value.trim_end_matches(';').trim_matches('"');
            flags.defaults.insert(name.to_owned(), value.to_owned());
        }
        if t.starts_with("#[arg(") {
            in_attr = true;
            attr.clear();
        }
        if in_attr {
            attr.push_str(t);
            attr.push(' ');
            if t.ends_with(")]") {
                in_attr = false;
                pending.push(std::mem::take(&mut attr));
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub ")
            && let Some((field, _)) = rest.split_once(':')
            && !pending.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            for a in pending.drain(..) {
                let inner = a
                    .trim()
                    .trim_start_matches("#[arg(")
                    .trim_end()
                    .trim_end_matches(")]");
                for part in inner.split(',').map(str::trim) {
                    if part == "long" {
                        flags.long.insert(field.replace('_', "-"));
                    } else if let Some(v) = part.strip_prefix("long =") {
                        flags.long.insert(v.trim().trim_matches('"').to_owned());
                    } else if let Some(v) = part.strip_prefix("env =") {
                        flags.env.insert(v.trim().trim_matches('"').to_owned());
                    }
                }
            }
        }
        if !t.starts_with("#[") && !t.starts_with("///") && !t.is_empty() {
            pending.clear();
        }
    }
}

/// The clap config of the binary a container runs.
pub fn flags_of_binary(binary: &str) -> Flags {
    let crate_dir = match binary {
        "kdfs-namenode" => "namenode",
        "kdfs-datanode" => "datanode",
        "kdfs-gateway" => "client-gateway",
        other => panic!("a container runs {other}, not a known kdfs server binary"),
    };
    let (path, _) = defining_file(crate_dir, "Config")
        .unwrap_or_else(|| panic!("{crate_dir} defines no `pub struct Config`"));
    clap_flags(&path)
}
