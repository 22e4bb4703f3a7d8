//! Mutual TLS for every gRPC link (docs/security.md), and plain server TLS for the
//! gateway's HTTPS.
//!
//! - [`TlsArgs`]: the `--tls-cert/--tls-key/--tls-ca` flags every server and client
//!   flattens into its command line. All three turn mTLS on; none keeps plaintext (with
//!   one warning line); anything in between is a startup error.
//! - [`Tls`]: the loaded certificates as a rustls server and client configuration, with
//!   the ring provider explicitly (one crypto provider in the workspace). [`Tls::watch`]
//!   re-reads the files when their contents change (Kubernetes rotates mounted Secrets
//!   by swapping a symlink): new connections use the new configuration, connections
//!   already open keep theirs, so transfers in flight finish.
//! - [`accept`] (module `accept`): a listener's connections, handshakes bounded per
//!   listener and per source, as [`Conn`]s whose requests carry a [`PeerInfo`].
//! - [`channel`]: a lazily connecting tonic channel that, with TLS, dials through
//!   [`Connector`]: TCP, then a handshake that presents our certificate and checks that
//!   the server's certificate names the host we dialed.
//! - [`expiry`] (module `expiry`): when the certificates in force expire, as WARN lines
//!   from a month before and a `/metrics` gauge of the seconds left.
//! - [`check_names`]: the identity check on the other side — the namenode uses it to
//!   refuse a datanode whose certificate does not name the address it advertises.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kdfs_core::HumanDuration;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::transport;

mod accept;
pub mod expiry;

pub use accept::{
    Conn, HANDSHAKE_TIMEOUT, HandshakeLimits, Incoming, MAX_PENDING_HANDSHAKES,
    MAX_PENDING_HANDSHAKES_PER_SOURCE, PeerInfo, PerSource, SourceSlot, accept, accept_with,
    source_key,
};

/// How often certificate files are checked for changes unless configured.
pub const DEFAULT_RELOAD_INTERVAL: &str = "10s";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert, --tls-key and --tls-ca go together; missing: {0}")]
    Partial(String),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("the CA in --tls-ca cannot verify client certificates: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The mTLS flags of every kdfs server and client (`KDFS_TLS_*` in the environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) this process presents, as a server and as a client.
    /// Together with --tls-key and --tls-ca it turns mutual TLS on for every gRPC link.
    #[arg(long, env = "KDFS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "KDFS_TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate(s) of the CA that signs every kdfs component's certificate; peers
    /// must present a certificate it signed.
    #[arg(long, env = "KDFS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// How often the three files are checked for changes (rotation without restart).
    #[arg(long, env = "KDFS_TLS_RELOAD_INTERVAL", default_value = DEFAULT_RELOAD_INTERVAL)]
    pub tls_reload_interval: HumanDuration,
}

impl TlsArgs {
    /// The flags for these three files (what tests and `kdfs local` build).
    pub fn files(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self {
            tls_cert: Some(cert.to_owned()),
            tls_key: Some(key.to_owned()),
            tls_ca: Some(ca.to_owned()),
            tls_reload_interval: DEFAULT_RELOAD_INTERVAL.parse().expect("valid default"),
        }
    }

    /// Loads the certificates and starts watching them (call inside the runtime), or
    /// `None` with one warning line when no flag is set.
    pub fn load(&self) -> Result<Option<Arc<Tls>>, TlsError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => {
                tracing::warn!(
                    "mTLS is off: gRPC links are plaintext and unauthenticated \
                     (set --tls-cert, --tls-key and --tls-ca to turn it on)"
                );
                Ok(None)
            }
            (Some(cert), Some(key), Some(ca)) => {
                let tls = Tls::from_files(cert, key, Some(ca.clone()))?;
                tls.watch(self.tls_reload_interval.get());
                tracing::info!(
                    cert = %cert.display(),
                    ca = %ca.display(),
                    reload_every = ?self.tls_reload_interval.get(),
                    "mTLS on: peers must present a certificate signed by the CA"
                );
                Ok(Some(tls))
            }
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                    (ca.is_none(), "--tls-ca"),
                ]
                .into_iter()
                .filter_map(|(m, name)| m.then_some(name))
                .collect();
                Err(TlsError::Partial(missing.join(", ")))
            }
        }
    }
}

/// Certificates loaded from files, as rustls configurations, swapped when the files
/// change.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    current: RwLock<Arc<Loaded>>,
    /// The stamp of file contents that last failed to load (warned once, not per tick).
    failed: Mutex<Option<[u8; 32]>>,
}

struct Loaded {
    /// SHA-256 over the three files' contents: what "changed" means.
    stamp: [u8; 32],
    server: Arc<ServerConfig>,
    client: Option<Arc<ClientConfig>>,
    /// Our own certificate (first of the chain).
    leaf: CertificateDer<'static>,
    /// When our certificate and the CA's expire.
    expiry: expiry::Expiry,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `cert` + `key`; with `ca`, as mutual TLS (servers require a client
    /// certificate signed by `ca`, clients trust only `ca`), without it as a plain TLS
    /// server identity (the gateway's HTTPS).
    pub fn from_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let files = read_files(&cert, &key, ca.as_deref())?;
        let loaded = build(&cert, &key, ca.as_deref(), &files)?;
        Ok(Arc::new(Self {
            cert,
            key,
            ca,
            current: RwLock::new(Arc::new(loaded)),
            failed: Mutex::new(None),
        }))
    }

    /// The server side for new connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.loaded().server.clone()
    }

    /// The certificate this process presents (the first of `--tls-cert`'s chain).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.loaded().leaf.clone()
    }

    /// The client side for new connections (`None` without a CA).
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.loaded().client.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files; swaps in a new configuration if their contents changed.
    /// `Ok(true)` when it did. On an error the previous configuration stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_files(&self.cert, &self.key, self.ca.as_deref())?;
        if files.stamp == self.loaded().stamp {
            return Ok(false);
        }
        let loaded = build(&self.cert, &self.key, self.ca.as_deref(), &files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the files every `every` and reloads them when they change, until the last
    /// handle to this `Tls` is dropped. Must be called inside a tokio runtime.
    /// It also warns of certificates near their end now, once a day and after every
    /// reload ([`expiry`]).
    pub fn watch(self: &Arc<Self>, every: Duration) {
        self.warn_if_expiring();
        let weak = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut checked = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                if checked.elapsed() >= expiry::EXPIRY_CHECK_INTERVAL {
                    checked = tokio::time::Instant::now();
                    tls.warn_if_expiring();
                }
                let outcome = tokio::task::spawn_blocking(move || {
                    let result = tls.reload();
                    (tls, result)
                })
                .await;
                let Ok((tls, result)) = outcome else { return };
                match result {
                    Ok(false) => {}
                    Ok(true) => {
                        *tls.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        tracing::info!(
                            cert = %tls.cert.display(),
                            "TLS certificates changed on disk: reloaded for new connections"
                        );
                        tls.warn_if_expiring();
                    }
                    Err(e) => tls.warn_once(&e),
                }
            }
        });
    }

    /// A rotation caught half-way (one file replaced, not yet the other) fails to load;
    /// say so once per distinct content, keep serving with the previous certificates.
    fn warn_once(&self, error: &TlsError) {
        let stamp = read_files(&self.cert, &self.key, self.ca.as_deref())
            .map(|f| f.stamp)
            .unwrap_or_default();
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if *failed != Some(stamp) {
            *failed = Some(stamp);
            tracing::warn!(
                error = %error,
                "TLS certificate files changed but cannot be loaded; keeping the previous ones"
            );
        }
    }
}

struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    stamp: [u8; 32],
}

fn read_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Files, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let (cert, key, ca) = (read(cert)?, read(key)?, ca.map(read).transpose()?);
    let mut hasher = Sha256::new();
    for part in [&cert[..], &key[..], ca.as_deref().unwrap_or_default()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Ok(Files {
        cert,
        key,
        ca,
        stamp: hasher.finalize().into(),
    })
}

fn build(
    cert_path: &Path,
    key_path: &Path,
    ca_path: Option<&Path>,
    files: &Files,
) -> Result<Loaded, TlsError> {
    let pem_error = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(cert_path, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .map_err(|e| pem_error(key_path, format!("not a PEM private key: {e}")))?;
    let leaf = chain[0].clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let Some((ca_path, ca)) = ca_path.zip(files.ca.as_deref()) else {
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // The gateway serves HTTP/1.1 only: its slow-client bounds need one response
        // per connection (docs/security.md, "Slow clients").
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let expiry = expiry::expiry_of(&leaf, &[]).map_err(|e| pem_error(cert_path, e))?;
        return Ok(Loaded {
            stamp: files.stamp,
            server: Arc::new(server),
            client: None,
            leaf,
            expiry,
        });
    };

    let mut roots = RootCertStore::empty();
    let mut ca_certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(ca) {
        let der = der.map_err(|e| pem_error(ca_path, format!("not a PEM certificate: {e}")))?;
        ca_certs.push(der.clone());
        roots
            .add(der)
            .map_err(|e| pem_error(ca_path, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(pem_error(ca_path, "holds no certificate".into()));
    }
    let roots = Arc::new(roots);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    let expiry = expiry::expiry_of(&leaf, &ca_certs).map_err(|e| pem_error(cert_path, e))?;
    Ok(Loaded {
        stamp: files.stamp,
        server: Arc::new(server),
        client: Some(Arc::new(client)),
        leaf,
        expiry,
    })
}

/// A handshake failure in words an operator can act on.
pub fn refusal_reason(error: &io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof => "the peer closed the connection during the handshake \
                                             (it may not trust our certificate)"
                .into(),
            _ => error.to_string(),
        };
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "the client presented no certificate".into(),
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "the certificate is not signed by the trusted CA".into()
            }
            CertificateError::BadSignature => "the certificate is not signed by the trusted CA \
                                               (bad signature: another CA of the same name?)"
                .into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the certificate does not name the host dialed".into()
            }
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) => {
            "not a TLS handshake (a plaintext client on a TLS port?)".into()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the peer refused the handshake ({alert:?}): it may not trust our certificate")
        }
        other => other.to_string(),
    }
}

/// Whether `cert` names `host` (a DNS name, wildcards per RFC 6125 as browsers apply
/// them, or an IP address): the identity check a client makes of a server, made by a
/// server of a client that claims an address.
pub fn check_names(cert: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare)
        .map_err(|_| format!("{host:?} is neither a DNS name nor an IP address"))?;
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    rustls::client::verify_server_name(&parsed, &name)
        .map_err(|_| format!("the certificate does not name {bare}"))
}

/// The host part of `host:port`, `[v6]:port` or a URI.
pub fn host_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// A lazily connecting channel to `address`; through TLS when `tls` is set (the scheme
/// of `address` does not matter then: `http://` and `https://` both mean "our TLS").
pub fn channel(address: &str, tls: Option<&Arc<Tls>>) -> Result<Channel, tonic::transport::Error> {
    let Some(tls) = tls else {
        return transport::lazy_channel(address);
    };
    let plain = match address.split_once("://") {
        Some((_, rest)) => format!("http://{rest}"),
        None => format!("http://{address}"),
    };
    Ok(transport::endpoint(&plain)?.connect_with_connector_lazy(Connector { tls: tls.clone() }))
}

/// Dials TCP and runs the client handshake: presents our certificate and requires the
/// server's to be signed by the CA and to name the host in the URI.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<Tls>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.client_config();
        Box::pin(async move {
            let config = config.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "TLS client without a CA")
            })?;
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{host:?} is neither a DNS name nor an IP address"),
                )
            })?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "TLS handshake with {host}:{port} failed: {}",
                            refusal_reason(&e)
                        ),
                    )
                })?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_scheme_port_and_brackets() {
        assert_eq!(
            host_of("dn-0.datanode.kdfs.svc:9866"),
            "dn-0.datanode.kdfs.svc"
        );
        assert_eq!(host_of("http://namenode:8020"), "namenode");
        assert_eq!(host_of("https://127.0.0.1:8020/"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9866"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn partial_flags_are_an_error_naming_what_is_missing() {
        let args = TlsArgs {
            tls_cert: Some("c.pem".into()),
            ..TlsArgs::default()
        };
        let err = args.load().unwrap_err().to_string();
        assert!(err.ends_with("missing: --tls-key, --tls-ca"), "{err}");
    }
}
