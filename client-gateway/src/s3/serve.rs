//! The S3 port: s3s's service (signature checks, routing, XML) around
//! [`super::service::KdfsS3`], behind the [`super::observe`] middleware, served by the
//! gateway's own connection loop ([`crate::gateway::server::serve`]) with the same
//! caps, timeouts, HTTPS certificate and graceful shutdown as the HTTP port.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleError;
use axum::middleware;
use kdfs_proto::tls::{self, HandshakeLimits, Tls};
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::auth::{Access, NO_CREDENTIALS, S3Keys, Secrets};
use super::host::Domains;
use super::observe::{Observe, observe};
use super::service::KdfsS3;
use crate::gateway::server::{self, Limits};

/// Largest XML request body (CompleteMultipartUpload of 10,000 parts, DeleteObjects of
/// 1,000 keys of 1,024 bytes): s3s reads these whole before the operation runs.
pub const MAX_XML_BODY: usize = 4 << 20;

/// Everything the S3 port needs besides its listener.
pub struct S3Port {
    pub service: KdfsS3,
    pub keys: Arc<S3Keys>,
    pub domains: Vec<String>,
    pub trusted_proxies: Vec<crate::gateway::ip_range::IpRange>,
    pub https: Option<Arc<Tls>>,
    pub handshakes: HandshakeLimits,
    pub limits: Limits,
    pub drain: Duration,
    /// The failed-authentication limit (`--auth-max-failures`, `--auth-failure-window`).
    pub throttle: Arc<super::throttle::Throttle>,
}

/// The axum app of the S3 port: every path goes to s3s.
fn app(port: &S3Port) -> Router {
    let mut config = S3Config::default();
    config.xml_max_body_size = MAX_XML_BODY;
    // POST uploads (browser forms) are not served: s3s would gather such a file in
    // memory before the operation could refuse it.
    config.post_object_max_file_size = 0;
    let mut builder = S3ServiceBuilder::new(port.service.clone());
    builder.set_config(Arc::new(StaticConfigProvider::new(Arc::new(config))));
    builder.set_auth(Secrets(Arc::clone(&port.keys)));
    builder.set_access(Access(Arc::clone(&port.keys)));
    builder.set_host(Domains::new(&port.domains));
    let s3 = builder.build();
    let s3 = HandleError::new(s3, |e: s3s::HttpError| async move {
        warn!(error = ?e, "S3 request failed before an S3 answer could be made");
        (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal error in the S3 layer",
        )
    });
    let observed = Observe {
        trusted_proxies: Arc::new(port.trusted_proxies.clone()),
        throttle: Arc::clone(&port.throttle),
    };
    Router::new()
        .fallback_service(s3)
        .layer(middleware::from_fn_with_state(observed, observe))
}

/// Serves the S3 port on `listener` until `shutdown`, then drains like the HTTP port.
pub async fn serve(port: S3Port, listener: TcpListener, shutdown: CancellationToken) {
    let addr = listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string());
    let app = app(&port);
    if port.keys.configured() {
        info!(
            %addr,
            scheme = if port.https.is_some() { "https" } else { "http" },
            region = port.keys.region(),
            access_keys = ?port.keys.access_keys(),
            credentials_file = ?port.keys.credentials_file(),
            domains = ?port.domains,
            "S3 port ready"
        );
    } else {
        warn!(%addr, "S3 port ready, but {NO_CREDENTIALS}");
    }
    let incoming = tls::accept_with(listener, port.https.clone(), port.handshakes);
    server::serve(incoming, app, port.limits, shutdown, port.drain).await;
    info!("S3 port stopped");
}
