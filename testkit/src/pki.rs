//! Certificates for the mTLS scenarios, made with rcgen: a CA and leaves it signs (the
//! good ones: [`RoleCerts`], one per role), and the bad ones a refusal test needs —
//! another CA's, an expired one, one naming another host, one with no role or several.
//!
//! A role is the SAN URI `spiffe://kdfs/role/<role>` (kdfs_proto::roles, written out
//! here since the test kit links no kdfs crate).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

/// The URI prefix of a role; the role's name follows.
pub const ROLE_URI_PREFIX: &str = "spiffe://kdfs/role/";

/// A certificate and its key, written as PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// `--tls-cert=… --tls-key=… --tls-ca=…` for a process presenting this leaf.
    pub fn flags(&self, ca: &Path) -> Vec<(String, String)> {
        vec![
            ("--tls-cert".into(), self.cert.display().to_string()),
            ("--tls-key".into(), self.key.display().to_string()),
            ("--tls-ca".into(), ca.display().to_string()),
        ]
    }

    /// The DER bytes of the certificate (to compare with what a server presents).
    pub fn der(&self) -> Vec<u8> {
        let pem = std::fs::read_to_string(&self.cert).expect("reading a test certificate");
        pem_to_der(&pem)
    }
}

/// A test CA: it signs leaves into its directory.
pub struct Ca {
    pub dir: PathBuf,
    /// `ca.crt` in `dir`.
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA named `name`, written to `dir/ca.crt`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("creating the pki dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signing the CA");
        let path = dir.join("ca.crt");
        std::fs::write(&path, cert.pem()).expect("writing ca.crt");
        Self {
            dir: dir.to_owned(),
            cert: path,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IPs), valid now, usable as server and client,
    /// without a role (kdfs servers refuse every rpc from it).
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.leaf_valid(file, &[], names, |_| {})
    }

    /// A leaf carrying `role` (`namenode`, `datanode` or `gateway`) for `names`.
    pub fn role_leaf(&self, file: &str, role: &str, names: &[&str]) -> Leaf {
        self.leaf_valid(file, &[role], names, |_| {})
    }

    /// A leaf carrying every one of `roles` (several roles: kdfs counts it as none).
    pub fn leaf_with_roles(&self, file: &str, roles: &[&str], names: &[&str]) -> Leaf {
        self.leaf_valid(file, roles, names, |_| {})
    }

    /// A leaf carrying `role` whose validity ended in 2021.
    pub fn expired_leaf(&self, file: &str, role: &str, names: &[&str]) -> Leaf {
        self.leaf_valid(file, &[role], names, |p| {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    /// A leaf carrying `role` that expires `days` days from now (a short-lived one, to
    /// see the expiry warnings and gauge).
    pub fn leaf_expiring_in(&self, file: &str, role: &str, names: &[&str], days: u64) -> Leaf {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970");
        let end = date_time_ymd(1970, 1, 1) + now + std::time::Duration::from_secs(days * 86_400);
        self.leaf_valid(file, &[role], names, |p| p.not_after = end)
    }

    fn leaf_valid(
        &self,
        file: &str,
        roles: &[&str],
        names: &[&str],
        validity: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        for role in roles {
            let uri = format!("{ROLE_URI_PREFIX}{role}");
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("an ASCII URI")));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, format!("kdfs test {file}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        write_atomically(&leaf.cert, cert.pem().as_bytes());
        write_atomically(&leaf.key, key.serialize_pem().as_bytes());
        leaf
    }
}

/// A CA and one leaf per role signed by it, each for `names`: what the processes of a
/// test cluster present.
pub struct RoleCerts {
    pub ca: Ca,
    pub namenode: Leaf,
    pub datanode: Leaf,
    pub gateway: Leaf,
}

impl RoleCerts {
    /// A new CA in `dir` and `namenode`, `datanode`, `gateway` leaves beside it.
    pub fn new(dir: &Path, names: &[&str]) -> Self {
        let ca = Ca::new(dir, "kdfs test CA");
        Self {
            namenode: ca.role_leaf("namenode", "namenode", names),
            datanode: ca.role_leaf("datanode", "datanode", names),
            gateway: ca.role_leaf("gateway", "gateway", names),
            ca,
        }
    }

    /// The `--tls-*` flags (as `--flag=value`) of a process of `role`.
    pub fn flags(&self, role: &str) -> Vec<String> {
        let leaf = match role {
            "namenode" => &self.namenode,
            "datanode" => &self.datanode,
            "gateway" => &self.gateway,
            other => panic!("{other:?} is not a kdfs role"),
        };
        leaf.flags(&self.ca.cert)
            .into_iter()
            .map(|(flag, value)| format!("{flag}={value}"))
            .collect()
    }
}

/// Replaces `path` in one rename, as Kubernetes' secret volume swap does: a reader sees
/// the old or the new file, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).expect("writing a temp file");
    std::fs::rename(&tmp, path).expect("renaming into place");
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_is_written_beside_its_ca_with_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "test CA");
        let leaf = ca.leaf("node", &["localhost", "127.0.0.1"]);
        assert!(ca.cert.is_file() && leaf.cert.is_file() && leaf.key.is_file());
        assert!(!leaf.der().is_empty());
        let flags = leaf.flags(&ca.cert);
        let names: Vec<&str> = flags.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["--tls-cert", "--tls-key", "--tls-ca"]);
        let expired = ca.expired_leaf("old", "gateway", &["localhost"]);
        assert_ne!(expired.der(), leaf.der());
    }

    #[test]
    fn role_leaves_carry_their_role_uri() {
        let dir = tempfile::tempdir().unwrap();
        let certs = RoleCerts::new(dir.path(), &["127.0.0.1"]);
        let der = certs.gateway.der();
        let uri = b"spiffe://kdfs/role/gateway";
        assert!(der.windows(uri.len()).any(|w| w == uri));
        assert!(certs.flags("datanode")[0].ends_with("datanode.crt"));
    }

    #[test]
    fn an_atomic_write_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.pem");
        write_atomically(&p, b"one");
        write_atomically(&p, b"two");
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
