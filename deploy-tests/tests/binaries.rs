//! The manifests against the binaries they run: every `--flag` and `KDFS_*` variable
//! passed must exist in the binary's clap `Config` (wherever its crate defines it, following
//! `#[command(flatten)]`), so a renamed flag fails here rather than in a crash-looping
//! pod; and the image (Dockerfile) runs as the manifests' user and holds every binary
//! they run.

mod common;

use common::clap_flags::*;
use common::*;

#[test]
fn flag_reader_finds_the_known_flags() {
    // The reader itself, so a parsing slip cannot make the next test vacuous.
    let nn = flags_of_binary("kdfs-namenode");
    for f in [
        "listen",
        "http",
        "data-dir",
        "heartbeat-interval",
        "dead-after",
        "maintenance-timeout",
        "kubernetes",
        "log-format",
    ] {
        assert!(
            nn.long.contains(f),
            "namenode --{f} not found: {:?}",
            nn.long
        );
    }
    assert!(nn.env.contains("KDFS_DEAD_AFTER"));
    let dn = flags_of_binary("kdfs-datanode");
    for f in [
        "listen",
        "advertise",
        "namenode",
        "data-dir",
        "reserved",
        "shutdown-grace",
        "drain-timeout",
        "pod-name",
    ] {
        assert!(
            dn.long.contains(f),
            "datanode --{f} not found: {:?}",
            dn.long
        );
    }
    assert_eq!(
        dn.defaults
            .get("DEFAULT_SHUTDOWN_GRACE")
            .map(String::as_str),
        Some("20s")
    );
    let gw = flags_of_binary("kdfs-gateway");
    for f in [
        "listen",
        "namenode",
        "max-upload",
        "auth-token",
        "s3-listen",
        "s3-credentials-file",
    ] {
        assert!(
            gw.long.contains(f),
            "gateway --{f} not found: {:?}",
            gw.long
        );
    }
    assert!(
        !gw.long.contains("data-dir"),
        "the gateway has no --data-dir"
    );
    // A flattened struct (the mTLS flags every binary shares) is followed.
    let mut tls = Flags::default();
    read_clap_flags(&struct_source("TlsArgs"), &mut tls);
    for var in ["KDFS_TLS_CERT", "KDFS_TLS_KEY", "KDFS_TLS_CA"] {
        assert!(tls.env.contains(var), "TlsArgs: no {var}: {:?}", tls.env);
    }
    assert!(tls.long.contains("tls-reload-interval"));
    assert_eq!(seconds("20s"), 20);
    assert_eq!(seconds("2m"), 120);
    assert_eq!(seconds("500ms"), 1);
}

#[test]
fn every_flag_and_kdfs_variable_in_the_manifests_exists_in_its_binary() {
    let m = load();
    let mut checked = 0;
    for (name, t) in m.templates() {
        for c in &pod(t).containers {
            let bin = binary(c);
            let flags = flags_of_binary(bin);
            for a in args(c) {
                if let Some(f) = a.strip_prefix("--") {
                    let f = f.split_once('=').map_or(f, |(f, _)| f);
                    assert!(
                        flags.long.contains(f),
                        "{name}: {bin} has no --{f} (known: {:?})",
                        flags.long
                    );
                    checked += 1;
                }
            }
            for e in c.env.iter().flatten() {
                if e.name.starts_with("KDFS_") {
                    assert!(
                        flags.env.contains(&e.name),
                        "{name}: {bin} reads no {}",
                        e.name
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} flags checked: the manifests pass fewer than expected"
    );
}

#[test]
fn the_image_runs_as_the_manifests_user_and_holds_every_binary_they_run() {
    let m = load();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // The last USER line is the runtime stage's.
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the Dockerfile sets a USER");
    let (uid, gid) = user
        .trim()
        .split_once(':')
        .unwrap_or((user.trim(), user.trim()));
    let uid: i64 = uid
        .parse()
        .expect("USER is a numeric uid (runAsNonRoot needs one)");
    let gid: i64 = gid.parse().expect("USER group is numeric");
    assert_ne!(uid, 0, "the image runs as root");
    for (name, t) in m.templates() {
        let spec = pod(t);
        let sc = spec.security_context.as_ref().expect("pod securityContext");
        assert_eq!(
            sc.run_as_user,
            Some(uid),
            "{name}: runAsUser is not the image's uid"
        );
        assert_eq!(
            sc.run_as_group,
            Some(gid),
            "{name}: runAsGroup is not the image's gid"
        );
        let has_volume = pod(t)
            .containers
            .iter()
            .any(|c| c.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()));
        if has_volume {
            assert_eq!(
                sc.fs_group,
                Some(gid),
                "{name}: fsGroup must make its volume writable"
            );
        }
        for c in &spec.containers {
            let bin = binary(c);
            assert!(
                dockerfile.contains(&format!("target/release/{bin}")),
                "{name}: runs {bin}, which the Dockerfile does not copy into the image"
            );
        }
    }
}
