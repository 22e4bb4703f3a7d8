//! `kdfs certs`: a private certificate authority and one certificate per role
//! (namenode, datanode, gateway) for mutual TLS between kdfs processes.
//!
//! Every kdfs process uses one certificate and key both as its server identity and as
//! its client identity, so every leaf carries the extended key usages serverAuth *and*
//! clientAuth, and its role as the URI `spiffe://kdfs/role/<role>`
//! (`kdfs_proto::roles`), by which servers authorize each rpc. Its names are only the
//! ones its own role is dialed by: any `--host`, the role's Kubernetes names in
//! `--namespace` (the Services in `k8s/`; datanodes get a wildcard under their
//! headless Service, since each one advertises `<pod>.datanode.<ns>.svc.cluster.local`),
//! and the loopback names `localhost`, `127.0.0.1`, `::1` only with `--loopback` (a
//! cluster on one machine: `kdfs local`).
//!
//! A directory that already holds `ca.crt` and `ca.key` keeps its CA: running again
//! issues fresh leaves under it (rotation without touching anyone's trust), unless
//! `--force` makes a new CA. Every certificate is built and checked in memory first
//! (each leaf verified against the CA as a server for one of its names and as a
//! client), and only then written, each file to a temporary name and renamed into
//! place, keys with mode 0600: a bad argument or a foreign CA leaves the directory as
//! it was.
//!
//! [`generate`] is what `kdfs certs` and `kdfs local` call.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// File names inside the output directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Defaults of the flags (also used by `kdfs local`).
pub const DEFAULT_NAMESPACE: &str = "kdfs";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// 397 days: the longest validity browsers accept for a server certificate.
pub const DEFAULT_DAYS: u32 = 397;
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Upper bound for `--days` and `--ca-days` (a hundred years), so the dates stay sane.
const MAX_DAYS: u32 = 36_500;

/// Certificates start an hour in the past, so a peer whose clock is a little behind
/// does not reject one that was just issued.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Subject of the CA. A reused CA is rebuilt from its key and this name (rcgen cannot
/// read a certificate back), so it must never change; a CA with another subject is
/// caught by the verification of the leaves and reported.
const CA_COMMON_NAME: &str = "kdfs CA";
const ORGANIZATION: &str = "kdfs";

/// The kdfs processes that get a certificate, and the role each one carries.
pub use kdfs_proto::roles::Role;

/// The loopback names `--loopback` adds: what processes on one machine dial.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The names `role` is dialled by inside the cluster: its Service (`k8s/*.yaml`) in
/// every short form, and for datanodes and namenodes any pod under their StatefulSet's
/// Service (`<pod>.<svc>.<ns>.svc…`): an HA namenode is dialled by each of its peers
/// (and by datanodes and gateways following the leader) at its own pod's name, and
/// dials its peers with this same certificate.
fn cluster_names(role: Role, ns: &str, domain: &str) -> Vec<String> {
    let svc = role.name();
    match role {
        Role::Namenode => vec![
            svc.to_owned(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.{domain}"),
            format!("*.{svc}.{ns}.svc.{domain}"),
            format!("*.{svc}.{ns}.svc"),
        ],
        Role::Gateway => vec![
            svc.to_owned(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.{domain}"),
        ],
        Role::Datanode => vec![
            format!("*.{svc}.{ns}.svc.{domain}"),
            format!("*.{svc}.{ns}.svc"),
        ],
    }
}

/// What `kdfs certs` is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsOptions {
    /// Directory for ca.crt, ca.key and <role>.crt/.key (created if missing).
    #[arg(long, env = "KDFS_OUT")]
    pub out: PathBuf,
    /// Kubernetes namespace the cluster names are issued for.
    #[arg(long, env = "KDFS_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The cluster's DNS domain.
    #[arg(long, env = "KDFS_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// An extra DNS name (`*.example.com` allowed) or IP address for every certificate;
    /// repeat the flag for more (the variable takes a comma-separated list).
    #[arg(long = "host", env = "KDFS_HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Also name localhost, 127.0.0.1 and ::1 in every certificate: for a cluster whose
    /// processes run on one machine (`kdfs local` does this). Without it a certificate
    /// names only its own role's hosts, so it cannot pass for another process on
    /// loopback.
    #[arg(long, env = "KDFS_LOOPBACK")]
    pub loopback: bool,
    /// Validity of the role certificates, in days.
    #[arg(long, env = "KDFS_DAYS", default_value_t = DEFAULT_DAYS)]
    pub days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, env = "KDFS_CA_DAYS", default_value_t = DEFAULT_CA_DAYS)]
    pub ca_days: u32,
    /// Make a new CA even if the directory holds one (every process must then get the
    /// new ca.crt and a new certificate).
    #[arg(long, env = "KDFS_FORCE")]
    pub force: bool,
}

impl CertsOptions {
    /// The defaults of every flag, writing into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        CertsOptions {
            out: out.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            hosts: Vec::new(),
            loopback: false,
            days: DEFAULT_DAYS,
            ca_days: DEFAULT_CA_DAYS,
            force: false,
        }
    }
}

/// A certificate and its key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where everything lives in an output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub ca: KeyPairPaths,
    pub namenode: KeyPairPaths,
    pub datanode: KeyPairPaths,
    pub gateway: KeyPairPaths,
}

impl CertPaths {
    pub fn in_dir(dir: &Path) -> Self {
        let pair = |name: &str| KeyPairPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        CertPaths {
            ca: KeyPairPaths {
                cert: dir.join(CA_CERT),
                key: dir.join(CA_KEY),
            },
            namenode: pair("namenode"),
            datanode: pair("datanode"),
            gateway: pair("gateway"),
        }
    }

    pub fn role(&self, role: Role) -> &KeyPairPaths {
        match role {
            Role::Namenode => &self.namenode,
            Role::Datanode => &self.datanode,
            Role::Gateway => &self.gateway,
        }
    }

    fn all_files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca, &self.namenode, &self.datanode, &self.gateway]
            .into_iter()
            .flat_map(|p| [p.cert.as_path(), p.key.as_path()])
    }
}

/// What happened to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaAction {
    /// There was none: a new one was made.
    Created,
    /// The directory's CA signed the new leaves.
    Reused,
    /// `--force`: a new CA replaced the directory's.
    Replaced,
}

/// One issued role certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub role: Role,
    /// Its subject alternative names, in order.
    pub names: Vec<String>,
}

/// The result of [`generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    pub paths: CertPaths,
    pub ca: CaAction,
    pub leaves: Vec<Issued>,
}

impl Generated {
    /// The report `kdfs certs` prints.
    pub fn summary(&self, opts: &CertsOptions) -> String {
        let dir = opts.out.display();
        let mut s = match self.ca {
            CaAction::Created => format!(
                "created a new CA in {dir} ({CA_CERT}, {CA_KEY}; valid {} days)\n",
                opts.ca_days
            ),
            CaAction::Reused => format!(
                "reused the CA in {dir} ({CA_CERT}, {CA_KEY}): the new certificates are \
                 trusted wherever the old ones were\n"
            ),
            CaAction::Replaced => format!(
                "replaced the CA in {dir} (--force; valid {} days): every process needs \
                 the new {CA_CERT} and a new certificate\n",
                opts.ca_days
            ),
        };
        for leaf in &self.leaves {
            let p = self.paths.role(leaf.role);
            s.push_str(&format!(
                "issued {} and {} (role {}, valid {} days) for {}\n",
                p.cert.display(),
                p.key.display(),
                leaf.role,
                opts.days,
                leaf.names.join(", ")
            ));
        }
        s
    }
}

/// Checks a DNS name as a TLS client will match it (webpki's rules): a valid name, or
/// `*.` followed by a valid name of at least two labels. Returns it in lowercase.
fn dns_name(name: &str, what: &str) -> anyhow::Result<String> {
    let lower = name.to_ascii_lowercase();
    let (wild, base) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    // Host names proper (letters, digits, hyphens: RFC 1123), which is stricter than
    // what webpki tolerates (it lets `_` through for compatibility).
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let valid = base.len() <= 253
        && base.split('.').all(label_ok)
        && base.parse::<IpAddr>().is_err()
        && matches!(ServerName::try_from(base), Ok(ServerName::DnsName(_)));
    ensure!(
        valid,
        "{what} {name:?} is neither an IP address nor a valid DNS name \
         (letters, digits, '-' and '.', labels of 1 to 63 characters; '*.' only as the \
         first label)"
    );
    ensure!(
        !wild || base.contains('.'),
        "{what} {name:?}: a wildcard needs at least two labels after it (like *.example.com)"
    );
    Ok(lower)
}

/// Checks a `--host`: an IP address (kept in its canonical form) or a DNS name.
fn host(h: &str) -> anyhow::Result<String> {
    let h = h.trim();
    // Accept the bracketed form people copy from URLs.
    let bare = h
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    dns_name(h, "--host")
}

/// A Kubernetes namespace: a DNS label (RFC 1123), 1 to 63 characters.
fn namespace(ns: &str) -> anyhow::Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    ensure!(
        ok,
        "--namespace {ns:?} is not a Kubernetes namespace (lowercase letters, digits and \
         '-', 1 to 63 characters, starting and ending with a letter or digit)"
    );
    Ok(())
}

/// The subject alternative names of one role's certificate, without duplicates.
fn names_for(role: Role, opts: &CertsOptions, hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let local = LOOPBACK_NAMES
        .into_iter()
        .filter(|_| opts.loopback)
        .map(String::from);
    let cluster = cluster_names(role, &opts.namespace, &opts.cluster_domain);
    for n in local.chain(hosts.iter().cloned()).chain(cluster) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Sets `not_before` an hour ago and `not_after` `days` from now.
fn set_validity(params: &mut CertificateParams, days: u32) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
    Ok(())
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

/// The CA's parameters. Only its subject, key usages and key-identifier method reach the
/// leaves (through [`Issuer`]), so a reused CA is rebuilt from these and its key.
fn ca_params(days: u32) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject(CA_COMMON_NAME);
    // The CA signs leaves only, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, days)?;
    Ok(p)
}

fn leaf_params(role: Role, names: &[String], days: u32) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    for n in names {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.as_str()
                    .try_into()
                    .with_context(|| format!("{n:?} is not an ASCII DNS name"))?,
            ),
        };
        p.subject_alt_names.push(san);
    }
    let uri = role.uri();
    p.subject_alt_names.push(SanType::URI(
        uri.as_str()
            .try_into()
            .with_context(|| format!("{uri:?} is not an ASCII URI"))?,
    ));
    p.distinguished_name = subject(&format!("kdfs {role}"));
    p.is_ca = IsCa::ExplicitNoCa;
    // ECDSA signs the handshake; it never encrypts a key, so no keyEncipherment.
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // One certificate is both the server and the client identity of a process.
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, days)?;
    Ok(p)
}

/// Checks that `leaf` chains to `ca` now, as a server certificate for `name` and as a
/// client certificate, with the verifiers kdfs's TLS links use (rustls + webpki).
pub fn verify_leaf(ca: &[u8], leaf: &[u8], name: &str) -> anyhow::Result<()> {
    let ca = CertificateDer::from_pem_slice(ca).context("reading the CA certificate")?;
    let leaf = CertificateDer::from_pem_slice(leaf).context("reading the certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .context("the CA certificate is not a usable trust anchor")?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()?;
    let name = ServerName::try_from(name.to_owned())
        .with_context(|| format!("{name:?} is not a server name"))?;
    use rustls::client::danger::ServerCertVerifier;
    server
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map_err(|e| anyhow::anyhow!("as the server {name:?}: {e}"))?;
    let client =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
    client
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .map_err(|e| anyhow::anyhow!("as a client: {e}"))?;
    Ok(())
}

/// Names to check a leaf for: its first and its last (a role's cluster name), a
/// wildcard's `*` replaced by a label.
fn probe_names(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names
        .first()
        .into_iter()
        .chain(names.last())
        .cloned()
        .collect();
    v.dedup();
    v.iter().map(|n| n.replacen('*', "probe", 1)).collect()
}

/// Builds the CA (new or reused) and the three role certificates, checks them, and
/// only then writes them into `opts.out`.
pub fn generate(opts: &CertsOptions) -> anyhow::Result<Generated> {
    // 1. Arguments, before anything is touched.
    namespace(&opts.namespace)?;
    let domain = dns_name(&opts.cluster_domain, "--cluster-domain")?;
    ensure!(
        !domain.starts_with("*."),
        "--cluster-domain {:?} may not be a wildcard",
        opts.cluster_domain
    );
    let hosts = opts
        .hosts
        .iter()
        .map(|h| host(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (flag, days) in [("--days", opts.days), ("--ca-days", opts.ca_days)] {
        ensure!(
            (1..=MAX_DAYS).contains(&days),
            "{flag} {days}: give 1 to {MAX_DAYS} days"
        );
    }
    let opts = &CertsOptions {
        cluster_domain: domain,
        ..opts.clone()
    };
    let dir = &opts.out;
    if dir.exists() && !dir.is_dir() {
        bail!("--out {} exists and is not a directory", dir.display());
    }
    let paths = CertPaths::in_dir(dir);

    // 2. The CA: the directory's, or a new one.
    let (has_cert, has_key) = (paths.ca.cert.exists(), paths.ca.key.exists());
    let action = match (has_cert, has_key, opts.force) {
        (true, true, false) => CaAction::Reused,
        (false, false, _) => CaAction::Created,
        (_, _, true) => CaAction::Replaced,
        (true, false, false) | (false, true, false) => bail!(
            "{} holds {} but not {}: restore the missing file, or pass --force to make a \
             new CA (every process then needs the new {CA_CERT} and a new certificate)",
            dir.display(),
            if has_cert { CA_CERT } else { CA_KEY },
            if has_cert { CA_KEY } else { CA_CERT },
        ),
    };
    let (ca_key, ca_cert_pem, new_ca) = if action == CaAction::Reused {
        let key_pem = std::fs::read_to_string(&paths.ca.key)
            .with_context(|| format!("reading {}", paths.ca.key.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a PEM private key", paths.ca.key.display()))?;
        let cert = std::fs::read_to_string(&paths.ca.cert)
            .with_context(|| format!("reading {}", paths.ca.cert.display()))?;
        (key, cert, false)
    } else {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params(opts.ca_days)?.self_signed(&key)?.pem();
        (key, cert, true)
    };
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params(opts.ca_days)?, ca_key);

    // 3. The leaves, each checked against the CA before anything is written.
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    if new_ca {
        files.push((paths.ca.cert.clone(), ca_cert_pem.clone(), false));
        files.push((paths.ca.key.clone(), ca_key_pem, true));
    }
    let mut leaves = Vec::new();
    for role in Role::ALL {
        let names = names_for(role, opts, &hosts);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = leaf_params(role, &names, opts.days)?
            .signed_by(&key, &issuer)?
            .pem();
        for name in probe_names(&names) {
            verify_leaf(ca_cert_pem.as_bytes(), cert.as_bytes(), &name).with_context(|| {
                format!(
                    "the {role} certificate does not verify against {}{}",
                    paths.ca.cert.display(),
                    if new_ca {
                        ""
                    } else {
                        " (was this CA made by `kdfs certs`, and does ca.key belong to \
                         ca.crt? --force makes a new CA)"
                    }
                )
            })?;
        }
        // The role as the servers will read it, by the same parser.
        let der = CertificateDer::from_pem_slice(cert.as_bytes())
            .context("reading back the issued certificate")?;
        let carried = kdfs_proto::roles::role_of(&der)
            .map_err(|e| anyhow::anyhow!("the {role} certificate: {e}"))?;
        ensure!(
            carried == role,
            "the {role} certificate carries the role {carried}"
        );
        let p = paths.role(role);
        files.push((p.cert.clone(), cert, false));
        files.push((p.key.clone(), key.serialize_pem(), true));
        leaves.push(Issued { role, names });
    }

    // 4. Write: temp file + fsync + rename each, then fsync the directory.
    create_private_dir(dir)?;
    for (path, contents, secret) in &files {
        write_atomically(path, contents.as_bytes(), *secret)?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(Generated {
        paths,
        ca: action,
        leaves,
    })
}

/// For `kdfs local`: the certificates in `dir` if they are all there, valid for
/// `127.0.0.1` now and each carrying its role; otherwise new ones with the loopback
/// names (under the directory's CA if it has one). Returns what was issued, if anything.
pub fn ensure_local(dir: &Path) -> anyhow::Result<(CertPaths, Option<Generated>)> {
    let paths = CertPaths::in_dir(dir);
    if paths.all_files().all(Path::exists) && local_set_is_valid(&paths) {
        return Ok((paths, None));
    }
    let opts = CertsOptions {
        loopback: true,
        ..CertsOptions::new(dir)
    };
    let generated = generate(&opts)?;
    Ok((paths, Some(generated)))
}

fn local_set_is_valid(paths: &CertPaths) -> bool {
    let Ok(ca) = std::fs::read(&paths.ca.cert) else {
        return false;
    };
    Role::ALL.iter().all(|&role| {
        std::fs::read(&paths.role(role).cert)
            .ok()
            .is_some_and(|leaf| {
                verify_leaf(&ca, &leaf, "127.0.0.1").is_ok()
                    && CertificateDer::from_pem_slice(&leaf)
                        .is_ok_and(|der| kdfs_proto::roles::role_of(&der) == Ok(role))
            })
    })
}

/// Creates `dir` (and its parents) if missing; a directory this creates is private
/// (0700), since it holds keys. An existing one is left as it is.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `contents` to a temporary file beside `path` (mode 0600 for a key, 0644
/// otherwise), fsyncs it and renames it over `path`: a reader sees the old file or the
/// new one, never a part.
fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    let dir = path.parent().context("a file has a directory")?;
    let name = path.file_name().context("a file has a name")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `kdfs certs`.
pub fn run(opts: CertsOptions) -> anyhow::Result<()> {
    let generated = generate(&opts)?;
    print!("{}", generated.summary(&opts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ips_or_webpki_dns_names() {
        for (input, want) in [
            ("example.com", Some("example.com")),
            ("Node-1.Example.COM", Some("node-1.example.com")),
            ("*.example.com", Some("*.example.com")),
            ("10.0.0.1", Some("10.0.0.1")),
            ("[::1]", Some("::1")),
            ("fe80:0:0:0:0:0:0:1", Some("fe80::1")),
            ("single", Some("single")),
            ("*.com", None),
            ("*", None),
            ("a.*.com", None),
            ("bad host", None),
            ("under_score.example", None),
            ("", None),
            ("-lead.example.com", None),
            ("trailing.", None),
            ("ünïcode.example", None),
            ("http://example.com", None),
        ] {
            assert_eq!(host(input).ok().as_deref(), want, "--host {input:?}");
        }
    }

    #[test]
    fn namespaces_are_dns_labels() {
        for ok in ["kdfs", "a", "team-1"] {
            assert!(namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Kdfs", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_the_roles_own_hosts_and_loopback_only_when_asked() {
        let mut opts = CertsOptions::new("/unused");
        opts.namespace = "ns".into();
        let hosts = vec!["kdfs.example.com".to_owned(), "10.0.0.7".to_owned()];
        assert_eq!(
            names_for(Role::Namenode, &opts, &hosts),
            [
                "kdfs.example.com",
                "10.0.0.7",
                "namenode",
                "namenode.ns",
                "namenode.ns.svc",
                "namenode.ns.svc.cluster.local",
                "*.namenode.ns.svc.cluster.local",
                "*.namenode.ns.svc"
            ]
        );
        assert_eq!(
            names_for(Role::Datanode, &opts, &[]),
            ["*.datanode.ns.svc.cluster.local", "*.datanode.ns.svc"]
        );
        assert_eq!(
            names_for(Role::Gateway, &opts, &[]),
            [
                "gateway",
                "gateway.ns",
                "gateway.ns.svc",
                "gateway.ns.svc.cluster.local"
            ]
        );
        opts.loopback = true;
        assert_eq!(
            names_for(Role::Datanode, &opts, &["127.0.0.1".to_owned()]),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "*.datanode.ns.svc.cluster.local",
                "*.datanode.ns.svc"
            ]
        );
    }
}
