//! The gateway's HTTP server: router, error responses, auth, metrics and shutdown.
//!
//! Every error leaves as JSON `{"error": "..."}` with the status the HTTP API documents,
//! through one mapping ([`ApiError`]'s `From<Error>`); unknown routes (404) and wrong
//! methods (405) use the same shape.
//!
//! Every request passes the `browser` middleware first ([`crate::gateway::browser`]:
//! no cross-origin mutation, no foreign `Host` on a loopback listener). Upload and
//! delete then pass the `guard` middleware: the bearer token and the failure limit of
//! [`crate::gateway::auth`], and one line of [`crate::gateway::audit`] per request.
//! The client's address comes from the connection ([`ClientAddr`]), never from a
//! header, except `X-Forwarded-For` from a `--trusted-proxies` peer.
//!
//! The connections themselves (caps, timeouts, shutdown) are [`crate::gateway::server`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kdfs_core::FileId;
use kdfs_proto::tls::{self, HandshakeLimits, Tls};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::gateway::audit::{Action, AuditGuard, Audited};
use crate::gateway::auth::{Auth, Verdict};
use crate::gateway::config::Config;
pub use crate::gateway::error::ApiError;
use crate::gateway::routes;
pub use crate::gateway::server::ClientAddr;
use crate::gateway::server::{self, Limits};
pub use crate::gateway::state::AppState;
use crate::s3::S3Port;
use crate::s3::auth::S3Keys;
use crate::s3::service::KdfsS3;

/// The process-wide Prometheus recorder, shared with every other component of the
/// process (see [`kdfs_core::telemetry::prometheus`]).
fn prometheus() -> Option<PrometheusHandle> {
    Some(kdfs_core::telemetry::prometheus().clone())
}

/// The gateway's routes, with the JSON 404/405 fallbacks and the auth and metrics
/// middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::gateway::page::index))
        .route(
            "/upload",
            axum::routing::post(routes::upload::upload).put(routes::upload::upload),
        )
        .route("/download", get(routes::download::download))
        .route("/info", get(routes::info::info))
        .route("/files", get(routes::files::list))
        .route(
            "/files/{hash}",
            get(routes::files::get).delete(routes::files::delete),
        )
        .route("/buckets", get(routes::buckets::list_buckets))
        .route(
            "/buckets/{bucket}",
            get(routes::buckets::list_objects)
                .put(routes::buckets::create_bucket)
                .delete(routes::buckets::delete_bucket),
        )
        .route(
            "/buckets/{bucket}/objects/{*key}",
            get(routes::buckets::get_object)
                .put(routes::buckets::put_object)
                .delete(routes::buckets::delete_object),
        )
        .route(
            "/datanodes/{id}/decommission",
            axum::routing::post(routes::datanodes::decommission)
                .delete(routes::datanodes::recommission),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), browser))
        .layer(middleware::from_fn(record))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed here"),
    )
}

/// Upload (`POST` or `PUT`), delete, and the namespace's puts and deletes need `Authorization: Bearer <token>` when a token is configured,
/// and are audited; with `--auth-reads`, so are reads (only their refusals audited).
/// Checked before the handler runs, so an unauthorised upload body is never read. Other
/// requests pass untouched.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let mut datanode = None;
    let mut object = None;
    let (action, file) = match *req.method() {
        Method::POST | Method::PUT if path == "/upload" => (Action::Upload, None),
        Method::PUT | Method::DELETE if path.starts_with("/buckets/") => {
            object = routes::buckets::named(path);
            let action = match *req.method() {
                Method::PUT => Action::Upload,
                _ => Action::Delete,
            };
            (action, None)
        }
        Method::DELETE if path.starts_with("/files/") => {
            (Action::Delete, FileId::parse(&path["/files/".len()..]).ok())
        }
        Method::POST | Method::DELETE if path.starts_with("/datanodes/") => {
            datanode = routes::datanodes::named(path);
            let action = match *req.method() {
                Method::POST => Action::Decommission,
                _ => Action::Recommission,
            };
            (action, None)
        }
        Method::GET | Method::HEAD
            if st.config.auth_reads && crate::gateway::auth::read_needs_token(path) =>
        {
            (Action::Read, None)
        }
        _ => return next.run(req).await,
    };
    let client = crate::gateway::auth::request_client(&req, &st.config.trusted_proxies);
    let authorization = req.headers().get(header::AUTHORIZATION);
    let verdict = st.auth.check(
        authorization.map(HeaderValue::as_bytes),
        client,
        Instant::now(),
    );
    let refused = |reason: &'static str| {
        metrics::counter!("kdfs_gateway_auth_refused_total", "reason" => reason).increment(1);
    };
    match verdict {
        // Accepted reads are not audited: only their refusals are.
        Verdict::Allowed(_) if action == Action::Read => next.run(req).await,
        Verdict::Allowed(who) => {
            let audit = AuditGuard::new(&who, client, action, file)
                .on_datanode(datanode)
                .on_object(object);
            let resp = next.run(req).await;
            audit.finish(resp.status(), resp.extensions().get::<Audited>());
            resp
        }
        Verdict::Missing | Verdict::BadToken => {
            let (who, reason) = match verdict {
                Verdict::Missing => ("none", "missing"),
                _ => ("bad-token", "bad_token"),
            };
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "this operation needs Authorization: Bearer <token>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            refused(reason);
            AuditGuard::refused(who, client, action, file).finish(r.status(), None);
            r
        }
        Verdict::Limited { retry_after, first } => {
            // Rounded up: a client that waits this long is let through.
            let secs = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed authentications from {client}; retry in {secs} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            // One audit line per client and window: a flood of refusals is counted in
            // the metric, not written out line by line.
            refused("rate_limited");
            if first {
                AuditGuard::refused("limited", client, action, file).finish(r.status(), None);
            }
            r
        }
    }
}

/// Refuses what a web page could make a visitor's browser do against the gateway
/// ([`crate::gateway::browser`]): 421 for a foreign `Host` on a loopback listener,
/// 403 for a cross-origin mutation. Before the auth guard, so such a request is never
/// counted as a failed authentication.
async fn browser(State(st): State<AppState>, req: Request, next: Next) -> Response {
    use crate::gateway::browser::{cross_origin, foreign_host};
    let refusal = if st.loopback_listener
        && let Some(why) = foreign_host(req.uri(), req.headers(), &st.config.allowed_hosts)
    {
        Some((StatusCode::MISDIRECTED_REQUEST, "foreign_host", why))
    } else {
        cross_origin(req.method(), req.uri(), req.headers())
            .map(|why| (StatusCode::FORBIDDEN, "cross_origin", why))
    };
    match refusal {
        None => next.run(req).await,
        Some((status, reason, why)) => {
            metrics::counter!("kdfs_gateway_browser_refused_total", "reason" => reason)
                .increment(1);
            info!(target: kdfs_core::telemetry::AUDIT_TARGET, reason, method = %req.method(), path = req.uri().path(), "browser request refused: {why}");
            json_error(status, why)
        }
    }
}

/// `{"error": message}` with `status`, without the log line of [`ApiError`] (the audit
/// line says it, once).
fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The `method` label of a request: a method the API knows, or `other`, so that made-up
/// methods (any token is a valid HTTP method) cannot add label values without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts requests and their latency per method, route and status. Every label has a
/// bounded set of values: [`method_label`], the matched route's pattern (or
/// `unmatched`) and the status code.
async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("kdfs_gateway_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("kdfs_gateway_http_request_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// The sockets the gateway serves: its HTTP port and, unless `--s3-listen off`, its S3
/// port. A bare listener converts into one without an S3 port.
pub struct Listeners {
    pub http: TcpListener,
    pub s3: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(http: TcpListener) -> Self {
        Self { http, s3: None }
    }
}

/// Serves the gateway on `listeners` (HTTPS only, with `--https-cert`) until `shutdown`
/// is cancelled, then drains in-flight requests for at most `--drain-timeout`. Fails at
/// once if the token file, the S3 credentials file or the certificate cannot be read.
pub async fn run(
    config: Config,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
) -> Result<()> {
    let Listeners {
        http: listener,
        s3: s3_listener,
    } = listeners.into();
    // mTLS to the namenode and datanodes (`--tls-*`): every block and metadata call.
    let grpc_tls = config
        .tls
        .load()
        .map_err(|e| Error::Config(e.to_string()))?;
    if let Some(tls) = &grpc_tls {
        // The namenode and datanodes refuse every call from a certificate without the
        // gateway role: fail now, in words.
        kdfs_proto::roles::require_own(&tls.certificate(), kdfs_proto::roles::Role::Gateway)
            .map_err(Error::Config)?;
    }
    let mut tls_in_force: Vec<(&'static str, Arc<Tls>)> = Vec::new();
    if let Some(tls) = &grpc_tls {
        tls_in_force.push(("mtls", tls.clone()));
    }
    let options = ClientOptions {
        upload_budget: config.upload_budget,
        stall_timeout: config.stall_timeout.get().max(Duration::from_millis(100)),
        spool_dir: Some(config.spool_dir.clone().unwrap_or_else(std::env::temp_dir)),
        tls: grpc_tls,
        batch_small_files: config.batch_small_files,
        batch_linger: config.batch_linger.get(),
        ..ClientOptions::default()
    };
    let client = Client::new(&config.namenode, options)?;
    let auth = Arc::new(Auth::from_config(&config).await?);
    let https = match config.https() {
        None => None,
        Some((cert, key)) => {
            let tls = Tls::from_files(cert, key, None)
                .map_err(|e| Error::Config(format!("HTTPS (--https-cert, --https-key): {e}")))?;
            // The watcher stops by itself once the last handle (the accept loop's) goes.
            tls.watch(config.https_reload_interval.get());
            tls_in_force.push(("https", tls.clone()));
            Some(tls)
        }
    };
    // Background workers stop with the server, whichever way `run` returns.
    let workers = shutdown.child_token();
    let _stop_workers = workers.clone().drop_guard();
    auth.watch(config.auth_token_reload_interval.get(), workers.clone());
    let addr = listener.local_addr()?;
    let client_for_s3 = client.clone();
    let state = AppState {
        client,
        config: Arc::new(config.clone()),
        auth: Arc::clone(&auth),
        metrics: prometheus(),
        tls: tls_in_force,
        started: Instant::now(),
        loopback_listener: addr.ip().is_loopback(),
    };
    let app = router(state);
    info!(
        %addr,
        scheme = if https.is_some() { "https" } else { "http" },
        namenode = %config.namenode,
        auth = auth.enabled(),
        tokens = ?auth.token_ids().iter().map(ToString::to_string).collect::<Vec<_>>(),
        token_file = ?auth.token_file(),
        max_upload = ?config.max_upload.map(|b| b.to_string()),
        max_connections = config.max_connections,
        idle_timeout = ?config.idle_timeout.get(),
        "gateway ready"
    );
    let handshakes = HandshakeLimits {
        timeout: config.https_handshake_timeout.get(),
        ..HandshakeLimits::default()
    };
    let limits = Limits {
        max_connections: config.max_connections,
        max_connections_per_client: config.max_connections_per_client,
        header_read_timeout: config.header_read_timeout.get(),
        idle_timeout: config.idle_timeout.get(),
    };
    let s3_port = match s3_listener {
        None => None,
        Some(s3_listener) => {
            let keys = Arc::new(S3Keys::from_args(&config.s3).await?);
            keys.watch(
                config.s3.s3_credentials_reload_interval.get(),
                workers.clone(),
            );
            let port = S3Port {
                service: KdfsS3 {
                    client: client_for_s3,
                    max_object: config.max_upload.map(|b| b.bytes()),
                    region: config.s3.s3_region.clone(),
                    complete_keepalive_after: config.s3.s3_complete_keepalive_after.get(),
                },
                keys,
                domains: config.s3.s3_domain.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                https: https.clone(),
                handshakes,
                limits,
                drain: config.drain_timeout.get(),
                throttle: Arc::new(crate::s3::throttle::Throttle::new(
                    config.auth_max_failures,
                    config.auth_failure_window.get(),
                )),
            };
            Some(crate::s3::serve(port, s3_listener, shutdown.clone()))
        }
    };
    let incoming = tls::accept_with(listener, https, handshakes);
    let http = server::serve(incoming, app, limits, shutdown, config.drain_timeout.get());
    match s3_port {
        Some(s3) => {
            tokio::join!(http, s3);
        }
        None => http.await,
    }
    info!("gateway stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        fn check(method: &str, expected: &str) {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&m), expected, "{method}");
        }
        for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
            check(m, m);
        }
        check("PATCH", "other");
        check("TRACE", "other");
        check("get", "other");
        check("ZQX0001RND", "other");
    }
}
