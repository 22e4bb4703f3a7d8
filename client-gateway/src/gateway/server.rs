//! The gateway's connection loop: hyper serving the router on every accepted
//! connection, within the limits that keep slow and hostile clients from holding the
//! gateway (issue 24, finding 9; docs/security.md, "Slow clients").
//!
//! - **Connection caps**: at most `--max-connections` open at once, and
//!   `--max-connections-per-client` from one source address (IPv4, or IPv6 /64); a
//!   connection over either cap is closed at once.
//! - **Header read timeout** (`--header-read-timeout`): a request's head must arrive
//!   whole within it (hyper's own timer), and an idle keep-alive connection is closed
//!   after it too.
//! - **Idle timeout** (`--idle-timeout`, [`super::idle`]): a request body that sends
//!   nothing for that long fails (an upload is abandoned and its lease given back), and
//!   a connection whose client reads nothing of its answer for that long is closed
//!   (a stalled download and what it had read ahead are dropped).
//! - **HTTP/1.1 only**: one response per connection, so the caps bound the stalled
//!   downloads too, and a stalled one is always a write that waits (HTTP/2 flow
//!   control would let a client stall streams without that).
//!
//! Shutdown: stop accepting, tell every connection to finish its requests
//! (hyper's graceful shutdown), then wait at most `--drain-timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use kdfs_proto::tls::{self, PerSource};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, error, info, warn};

use super::idle::{IdleBody, WriteStall};

/// The TCP peer of a request's connection (axum's `ConnectInfo`), for plain and HTTPS
/// listeners alike.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// What bounds the gateway's connections (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `app` on `incoming`'s connections within `limits` until `shutdown`, then
/// drains for at most `drain`.
pub async fn serve(
    mut incoming: tls::Incoming,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = PerSource::new(limits.max_connections_per_client);
    let mut connections = JoinSet::new();
    loop {
        let (conn, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            next = incoming.next_conn() => match next {
                Some(c) => c,
                None => {
                    // The accept loop only ends when `Incoming` is dropped, so this is a
                    // bug; stop accepting rather than spin.
                    error!("the gateway's accept loop ended: no new connections");
                    shutdown.cancelled().await;
                    break;
                }
            },
        };
        let Some(slot) = per_client.try_take(peer.ip()) else {
            metrics::counter!("kdfs_gateway_connections_refused_total", "reason" => "per_client")
                .increment(1);
            debug!(client = %peer, "too many connections from this client: closed");
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("kdfs_gateway_connections_refused_total", "reason" => "max_connections")
                .increment(1);
            warn!(client = %peer, max = limits.max_connections, "too many connections: closed");
            continue;
        };
        let app = app.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _held = (slot, permit);
            metrics::gauge!("kdfs_gateway_connections").increment(1.0);
            serve_connection(conn, peer, app, limits, stop).await;
            metrics::gauge!("kdfs_gateway_connections").decrement(1.0);
        });
    }
    drop(incoming);
    info!(
        connections = connections.len(),
        "gateway: no longer accepting connections, draining transfers"
    );
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(deadline = ?drain, "gateway: drain deadline passed, dropping the remaining transfers");
    }
}

/// One connection, HTTP/1.1, until the client closes it, a limit ends it, or a
/// shutdown has let its requests finish.
async fn serve_connection(
    conn: tls::Conn,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let idle = limits.idle_timeout;
    let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut req = req.map(|b| Body::new(IdleBody::new(b, idle)));
        req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
        app.clone().oneshot(req)
    });
    // HTTP/1.1 only: with HTTP/2 a client can stall a stream through flow control
    // without any write of ours waiting, so the idle timeout would not see it, and one
    // connection could hold many stalled downloads.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let io = TokioIo::new(WriteStall::new(conn, idle));
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(client = %peer, error = %e, "connection ended");
                }
                return;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
