//! What `deploy_dry_run.rs` needs to check deploy.sh's certificates: the real `kdfs`
//! (built by cargo), the DNS names a certificate carries, how a name covers a host, and
//! the hosts the manifests dial a namenode by.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The directory of the workspace's `kdfs`, built (or found fresh) by cargo.
pub fn kdfs_bin_dir() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "-p", "kdfs", "--bin", "kdfs"])
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build -p kdfs failed");
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> -> target/debug
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    assert!(dir.join("kdfs").is_file(), "no kdfs in {}", dir.display());
    dir
}

/// The DNS names a certificate carries (openssl reads its subjectAltName).
pub fn dns_names(cert: &Path) -> Vec<String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert)
        .output()
        .expect("openssl runs (the deploy tests need it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split([',', '\n'])
        .filter_map(|n| n.trim().strip_prefix("DNS:").map(str::to_owned))
        .collect()
}

/// Whether certificate name `pattern` (a `*.` wildcard covers one label) covers `host`.
pub fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == base),
        None => pattern == host,
    }
}

/// Every host the manifests dial a namenode by (its peers' and the clients' lists, in
/// namespace kdfs), from the manifests themselves.
pub fn namenode_hosts_dialled(applied: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for line in applied.lines() {
        let Some(value) = line.trim().strip_prefix("value: ") else {
            continue;
        };
        for entry in value.split(',') {
            let address = entry.split_once('=').map_or(entry, |(_, a)| a);
            let address = address.strip_prefix("http://").unwrap_or(address);
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            if host.starts_with("namenode") {
                hosts.push(host.replace("$(POD_NAMESPACE)", "kdfs"));
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}
