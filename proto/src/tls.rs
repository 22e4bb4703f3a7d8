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
//! - [`accept`]: a listener's connections, TLS handshakes done concurrently off the
//!   accept loop (a slow or hostile client cannot hold the listener), each within a
//!   short timeout and a per-source limit ([`HandshakeLimits`]: one source's idle
//!   connections cannot take the slots other clients need), every refusal
//!   logged on the audit target with a reason a person can act on. The resulting
//!   [`Conn`]s feed tonic's `serve_with_incoming_shutdown` (or axum, via
//!   [`Incoming::next_conn`]); each request then carries a [`PeerInfo`] with the
//!   client's certificate chain.
//! - [`channel`]: a lazily connecting tonic channel that, with TLS, dials through
//!   [`Connector`]: TCP, then a handshake that presents our certificate and checks that
//!   the server's certificate names the host we dialed.
//! - [`check_names`]: the identity check on the other side — the namenode uses it to
//!   refuse a datanode whose certificate does not name the address it advertises.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kdfs_core::HumanDuration;
use kdfs_core::telemetry::AUDIT_TARGET;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::Channel;

use crate::transport;

/// How often certificate files are checked for changes unless configured.
pub const DEFAULT_RELOAD_INTERVAL: &str = "10s";
/// A client that has not finished its handshake by then is dropped (a TLS handshake
/// takes a few round trips: far below a second on any network kdfs runs on).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once per listener; more connections are dropped at once
/// (bounds the memory a flood of half-open connections can take).
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one source address (an IPv4 address or an IPv6
/// /64), so that one source cannot take every slot of [`MAX_PENDING_HANDSHAKES`].
pub const MAX_PENDING_HANDSHAKES_PER_SOURCE: usize = 16;
/// Established connections waiting for the server to pick them up.
const ACCEPT_QUEUE: usize = 64;

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
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
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
        return Ok(Loaded {
            stamp: files.stamp,
            server: Arc::new(server),
            client: None,
            leaf,
        });
    };

    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca) {
        let der = der.map_err(|e| pem_error(ca_path, format!("not a PEM certificate: {e}")))?;
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
    Ok(Loaded {
        stamp: files.stamp,
        server: Arc::new(server),
        client: Some(Arc::new(client)),
        leaf,
    })
}

/// Connections accepted from one listener, TLS already established when configured.
pub struct Incoming {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: io::Result<SocketAddr>,
}

impl Incoming {
    /// The next connection and its peer address; `None` once the listener failed for
    /// good.
    pub async fn next_conn(&mut self) -> Option<(Conn, SocketAddr)> {
        self.rx.recv().await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(|(conn, _)| Ok(conn)))
    }
}

/// How many TLS handshakes a listener runs at once, and for how long each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// A client that has not finished its handshake by then is dropped.
    pub timeout: Duration,
    /// Handshakes in progress at once on the listener.
    pub max_pending: usize,
    /// Handshakes in progress at once from one source address (IPv4, or IPv6 /64).
    pub max_pending_per_source: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            timeout: HANDSHAKE_TIMEOUT,
            max_pending: MAX_PENDING_HANDSHAKES,
            max_pending_per_source: MAX_PENDING_HANDSHAKES_PER_SOURCE,
        }
    }
}

/// Serves `listener`'s connections: with `tls`, each one only after a successful
/// handshake (a client certificate signed by the CA when `tls` has one), within the
/// default [`HandshakeLimits`]. Accepted sockets get `TCP_NODELAY` (1 MiB messages
/// stall behind Nagle otherwise). The accept loop ends when the returned [`Incoming`]
/// is dropped (the server stopped).
pub fn accept(listener: TcpListener, tls: Option<Arc<Tls>>) -> Incoming {
    accept_with(listener, tls, HandshakeLimits::default())
}

/// As [`accept`], with the handshakes bounded by `limits`.
pub fn accept_with(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    limits: HandshakeLimits,
) -> Incoming {
    let local = listener.local_addr();
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(accept_loop(listener, tls, tx, limits));
    Incoming { rx, local }
}

/// The source a per-source limit counts by: an IPv4 address, or an IPv6 /64 (one host
/// commonly owns a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Counts what is in progress per source, up to a limit each; a [`SourceSlot`] holds
/// one count until dropped.
#[derive(Debug, Clone)]
pub struct PerSource {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerSource {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            counts: Arc::default(),
        }
    }

    /// A slot for `ip`'s source, or `None` when it already holds `limit` of them.
    pub fn try_take(&self, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            key,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Sources holding at least one slot (tests, metrics).
    pub fn sources(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One slot of a [`PerSource`]; given back on drop (the map forgets a source at zero,
/// so it holds only sources with something in progress).
#[derive(Debug)]
pub struct SourceSlot {
    key: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    tx: mpsc::Sender<(Conn, SocketAddr)>,
    limits: HandshakeLimits,
) {
    let pending = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    let per_source = PerSource::new(limits.max_pending_per_source);
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &tls else {
            if tx.send((Conn::Plain(tcp), peer)).await.is_err() {
                return;
            }
            continue;
        };
        // The source's own limit first: a flood from one source is dropped without
        // touching the slots other sources need.
        let Some(slot) = per_source.try_take(peer.ip()) else {
            tracing::debug!(client = %peer, "too many TLS handshakes in progress from this source: connection dropped");
            continue;
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "too many TLS handshakes in progress: connection dropped");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let tx = tx.clone();
        let timeout = limits.timeout;
        tokio::spawn(async move {
            let held = (permit, slot);
            let reason = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    drop(held);
                    let _ = tx.send((Conn::Tls(Box::new(stream)), peer)).await;
                    return;
                }
                Ok(Err(e)) => refusal_reason(&e),
                Err(_) => format!("no handshake within {timeout:?}"),
            };
            drop(held);
            tracing::info!(
                target: AUDIT_TARGET,
                action = "tls-handshake",
                who = "none",
                client = %peer,
                result = "refused",
                reason = %reason,
                "TLS connection refused: {reason}"
            );
        });
    }
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

/// One accepted connection: plain TCP, or TLS over TCP.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What a server knows about a request's peer; tonic puts it in every request's
/// extensions (`PeerInfo::of(&request)`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, leaf first (TLS only).
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl PeerInfo {
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }

    /// The client's own certificate, when it presented one.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.certs.as_deref().and_then(|c| c.first())
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(tcp) => PeerInfo {
                remote_addr: tcp.peer_addr().ok(),
                certs: None,
            },
            Conn::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                PeerInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    certs: session
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
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
