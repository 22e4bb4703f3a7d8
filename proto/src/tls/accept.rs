//! The listener side of [`super`]: a listener's connections, TLS handshakes done
//! concurrently off the accept loop (a slow or hostile client cannot hold the
//! listener), each within a short timeout and a per-source limit ([`HandshakeLimits`]:
//! one source's idle connections cannot take the slots other clients need), every
//! refusal logged on the audit target with a reason a person can act on. The resulting
//! [`Conn`]s feed tonic's `serve_with_incoming_shutdown` (or axum, via
//! [`Incoming::next_conn`]); each request then carries a [`PeerInfo`] with the client's
//! certificate chain.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kdfs_core::telemetry::AUDIT_TARGET;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::{Tls, refusal_reason};

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

    /// The client's address for an audit line (empty when unknown).
    pub fn client_address(peer: Option<&PeerInfo>) -> String {
        peer.and_then(|p| p.remote_addr)
            .map(|a| a.to_string())
            .unwrap_or_default()
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
