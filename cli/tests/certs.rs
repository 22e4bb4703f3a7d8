//! `kdfs certs` as a person runs it: the files it writes, their modes, that every role
//! certificate verifies against the CA with the verifiers kdfs's TLS links use (rustls +
//! webpki, as a server for its names and as a client), rotation under the same CA,
//! `--force`, and refusals that leave the directory alone.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

const KDFS: &str = env!("CARGO_BIN_EXE_kdfs");
const ROLES: [&str; 3] = ["namenode", "datanode", "gateway"];

fn certs(args: &[&str]) -> Output {
    Command::new(KDFS)
        .arg("certs")
        .args(args)
        .env_remove("KDFS_NAMESPACE")
        .output()
        .expect("kdfs runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kdfs certs failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn cert(dir: &Path, name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(dir: &Path) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert(dir, "ca.crt"))
        .expect("ca.crt is a trust anchor");
    Arc::new(roots)
}

/// Verifies `<role>.crt` against `dir`'s CA as the server `name`.
fn verify_server(dir: &Path, role: &str, name: &str) -> Result<(), rustls::Error> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(dir), provider())
            .build()
            .expect("a server verifier");
    let name = ServerName::try_from(name.to_owned()).expect("a server name");
    verifier
        .verify_server_cert(
            &cert(dir, &format!("{role}.crt")),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

/// Verifies `<role>.crt` against `dir`'s CA as a client certificate.
fn verify_client(dir: &Path, role: &str) -> Result<(), rustls::Error> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
            .build()
            .expect("a client verifier");
    verifier
        .verify_client_cert(&cert(dir, &format!("{role}.crt")), &[], UnixTime::now())
        .map(|_| ())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn certs_verify_for_their_names_as_server_and_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let d = dir.to_str().unwrap();
    let out = ok(certs(&[
        "--out",
        d,
        "--host",
        "kdfs.example.com",
        "--host",
        "10.1.2.3",
        "--host",
        "*.nodes.example.com",
    ]));
    assert!(out.contains("created a new CA"), "stdout: {out}");
    for role in ROLES {
        assert!(out.contains(&format!("{role}.crt")), "stdout: {out}");
    }

    // Files, and keys readable by their owner only.
    for f in ["ca", "namenode", "datanode", "gateway"] {
        assert!(dir.join(format!("{f}.crt")).is_file(), "{f}.crt");
        let key = dir.join(format!("{f}.key"));
        PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| panic!("{f}.key: {e}"));
        #[cfg(unix)]
        {
            assert_eq!(mode(&key), 0o600, "{f}.key mode");
            assert_eq!(mode(&dir.join(format!("{f}.crt"))), 0o644, "{f}.crt mode");
        }
    }
    #[cfg(unix)]
    assert_eq!(mode(&dir), 0o700, "a directory made for keys is private");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Every leaf: its role (issue 24 finding 2), a server for the --hosts, and a
    // client; not for loopback names unless --loopback.
    for role in ROLES {
        let der = CertificateDer::from_pem_slice(&read(&dir, &format!("{role}.crt"))).unwrap();
        assert_eq!(
            kdfs_proto::roles::role_of(&der).map(|r| r.name()),
            Ok(role),
            "{role}.crt carries its role"
        );
        for name in ["localhost", "127.0.0.1", "::1"] {
            assert!(
                verify_server(&dir, role, name).is_err(),
                "{role} names {name} without --loopback"
            );
        }
        for name in ["kdfs.example.com", "10.1.2.3", "dn7.nodes.example.com"] {
            verify_server(&dir, role, name)
                .unwrap_or_else(|e| panic!("{role} as server {name}: {e}"));
        }
        verify_client(&dir, role).unwrap_or_else(|e| panic!("{role} as a client: {e}"));
        assert!(
            verify_server(&dir, role, "other.example.com").is_err(),
            "{role} must not verify for a name it lacks"
        );
    }
    // The Kubernetes names, each for its own role only.
    for name in [
        "namenode",
        "namenode.kdfs",
        "namenode.kdfs.svc",
        "namenode.kdfs.svc.cluster.local",
    ] {
        verify_server(&dir, "namenode", name).unwrap_or_else(|e| panic!("namenode {name}: {e}"));
        assert!(
            verify_server(&dir, "gateway", name).is_err(),
            "gateway {name}"
        );
    }
    // An HA namenode's own pod name: what its peers, datanodes and gateways dial.
    for name in [
        "namenode-0.namenode.kdfs.svc.cluster.local",
        "namenode-2.namenode.kdfs.svc",
    ] {
        verify_server(&dir, "namenode", name).unwrap_or_else(|e| panic!("namenode {name}: {e}"));
        for other in ["datanode", "gateway"] {
            assert!(verify_server(&dir, other, name).is_err(), "{other} {name}");
        }
    }
    for name in [
        "datanode-0.datanode.kdfs.svc.cluster.local",
        "datanode-12.datanode.kdfs.svc",
    ] {
        verify_server(&dir, "datanode", name).unwrap_or_else(|e| panic!("datanode {name}: {e}"));
        assert!(
            verify_server(&dir, "namenode", name).is_err(),
            "namenode {name}"
        );
    }
    assert!(
        verify_server(&dir, "datanode", "a.b.datanode.kdfs.svc.cluster.local").is_err(),
        "a wildcard covers one label"
    );
    verify_server(&dir, "gateway", "gateway.kdfs.svc.cluster.local").unwrap();
}

#[test]
fn namespace_and_cluster_domain_shape_the_cluster_names() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    ok(certs(&[
        "--out",
        d,
        "--namespace",
        "store",
        "--cluster-domain",
        "corp.internal",
    ]));
    verify_server(tmp.path(), "namenode", "namenode.store.svc.corp.internal").unwrap();
    verify_server(
        tmp.path(),
        "datanode",
        "datanode-1.datanode.store.svc.corp.internal",
    )
    .unwrap();
    assert!(verify_server(tmp.path(), "namenode", "namenode.kdfs").is_err());
}

#[test]
fn rerunning_reuses_the_ca_and_replaces_the_leaves_and_force_makes_a_new_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.to_str().unwrap();
    ok(certs(&["--out", d, "--loopback"]));
    let ca = (read(dir, "ca.crt"), read(dir, "ca.key"));
    let leaves: Vec<_> = ROLES
        .iter()
        .map(|r| {
            (
                read(dir, &format!("{r}.crt")),
                read(dir, &format!("{r}.key")),
            )
        })
        .collect();

    // Rotation: same CA, new leaves that it still verifies.
    let out = ok(certs(&["--out", d, "--days", "30", "--loopback"]));
    assert!(out.contains("reused the CA"), "stdout: {out}");
    assert_eq!(
        (read(dir, "ca.crt"), read(dir, "ca.key")),
        ca,
        "CA unchanged"
    );
    for (role, (crt, key)) in ROLES.iter().zip(&leaves) {
        assert_ne!(
            &read(dir, &format!("{role}.crt")),
            crt,
            "{role}.crt reissued"
        );
        assert_ne!(
            &read(dir, &format!("{role}.key")),
            key,
            "{role}.key renewed"
        );
        for name in ["localhost", "127.0.0.1", "::1"] {
            verify_server(dir, role, name).unwrap_or_else(|e| panic!("{role} {name}: {e}"));
        }
        verify_client(dir, role).unwrap();
    }

    // --force: a new CA, and leaves under it.
    let old_ca = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("ca.crt"), old_ca.path().join("ca.crt")).unwrap();
    std::fs::copy(dir.join("namenode.crt"), old_ca.path().join("namenode.crt")).unwrap();
    let out = ok(certs(&["--out", d, "--force", "--loopback"]));
    assert!(out.contains("replaced the CA"), "stdout: {out}");
    assert_ne!(read(dir, "ca.crt"), ca.0, "a new CA certificate");
    assert_ne!(read(dir, "ca.key"), ca.1, "a new CA key");
    verify_server(dir, "namenode", "localhost").unwrap();
    // The old CA does not trust the new certificates.
    std::fs::copy(dir.join("namenode.crt"), old_ca.path().join("namenode.crt")).unwrap();
    assert!(verify_server(old_ca.path(), "namenode", "localhost").is_err());
}

/// Every file in `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    let f = fresh.to_str().unwrap();
    for (args, says) in [
        (vec!["--host", "bad host"], "--host \"bad host\""),
        (vec!["--host", "*.com"], "wildcard"),
        (
            vec!["--host", "ok.example.com", "--host", "a_b"],
            "--host \"a_b\"",
        ),
        (vec!["--namespace", "Not-A-Namespace"], "--namespace"),
        (vec!["--cluster-domain", "bad domain"], "--cluster-domain"),
        (vec!["--days", "0"], "--days"),
    ] {
        let mut all = vec!["--out", f];
        all.extend(&args);
        let out = certs(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(says),
            "{args:?}: stderr {stderr:?} lacks {says:?}"
        );
        assert!(!fresh.exists(), "{args:?}: created {}", fresh.display());
    }

    // An existing set is left exactly as it was.
    let dir = tmp.path().join("set");
    let d = dir.to_str().unwrap();
    ok(certs(&["--out", d]));
    let before = snapshot(&dir);
    let out = certs(&["--out", d, "--host", "no spaces"]);
    assert!(!out.status.success());
    assert_eq!(
        snapshot(&dir),
        before,
        "a refused run changed the directory"
    );

    // Half a CA is refused unless --force.
    std::fs::remove_file(dir.join("ca.key")).unwrap();
    let before = snapshot(&dir);
    let out = certs(&["--out", d]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ca.crt but not ca.key") && stderr.contains("--force"),
        "stderr: {stderr}"
    );
    assert_eq!(snapshot(&dir), before);

    // A CA key that does not belong to ca.crt is caught before anything is written.
    let other = tmp.path().join("other");
    ok(certs(&["--out", other.to_str().unwrap()]));
    std::fs::copy(other.join("ca.key"), dir.join("ca.key")).unwrap();
    let before = snapshot(&dir);
    let out = certs(&["--out", d]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not verify"), "stderr: {stderr}");
    assert_eq!(snapshot(&dir), before);
}
