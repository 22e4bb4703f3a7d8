//! The gateway's HTTP server: router, error responses, auth, metrics and shutdown.
//!
//! Every error leaves as JSON `{"error": "..."}` with the status DESIGN.md §8 names,
//! through one mapping ([`ApiError`]'s `From<Error>`); unknown routes (404) and wrong
//! methods (405) use the same shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::{Client, ClientOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::routes;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub config: Arc<Config>,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
}

/// An HTTP error: a status and a message sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = %self.status, error = %self.message, "request failed");
        } else {
            info!(status = %self.status, error = %self.message, "request refused");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Deleted(_) => StatusCode::GONE,
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::NotEnoughDatanodes(_) | Error::NotEnoughReplicas { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::NamenodeUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unreadable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Rpc { status, .. } => match status.code() {
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::InvalidArgument => StatusCode::BAD_REQUEST,
                Code::FailedPrecondition => StatusCode::CONFLICT,
                Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Error::Source(src) => match src.downcast_ref::<routes::upload::BodyError>() {
                Some(b) => b.status(),
                None => StatusCode::BAD_REQUEST,
            },
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            Error::Source(src) => src.to_string(),
            e => e.to_string(),
        };
        Self::new(status, message)
    }
}

/// The process-wide Prometheus recorder, shared with every other component of the
/// process (see [`kdfs_core::telemetry::prometheus`]).
fn prometheus() -> Option<PrometheusHandle> {
    Some(kdfs_core::telemetry::prometheus().clone())
}

/// The gateway's routes, with the JSON 404/405 fallbacks and the auth and metrics
/// middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::page::index))
        .route("/upload", axum::routing::post(routes::upload::upload))
        .route("/download", get(routes::download::download))
        .route("/info", get(routes::info::info))
        .route("/files", get(routes::files::list))
        .route(
            "/files/{hash}",
            get(routes::files::get).delete(routes::files::delete),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
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

/// Upload and delete need `Authorization: Bearer <token>` when a token is configured.
/// Checked before the handler runs, so an unauthorised upload body is never read.
async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = st.config.auth_token() else {
        return next.run(req).await;
    };
    let guarded = (req.method() == Method::POST && req.uri().path() == "/upload")
        || (req.method() == Method::DELETE && req.uri().path().starts_with("/files/"));
    if !guarded {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this operation needs Authorization: Bearer <token>",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Compares without an early exit on the first differing byte (the length may leak;
/// the token's content does not).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts requests and their latency per route and status.
async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("kdfs_gateway_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("kdfs_gateway_http_request_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then drains
/// in-flight requests for at most `--drain-timeout`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let options = ClientOptions {
        upload_budget: config.upload_budget,
        stall_timeout: config.stall_timeout.get().max(Duration::from_millis(100)),
        spool_dir: Some(config.spool_dir.clone().unwrap_or_else(std::env::temp_dir)),
        ..ClientOptions::default()
    };
    let client = Client::new(&config.namenode, options)?;
    let drain = config.drain_timeout.get();
    let state = AppState {
        client,
        config: Arc::new(config.clone()),
        metrics: prometheus(),
        started: Instant::now(),
    };
    let app = router(state);
    let addr = listener.local_addr()?;
    info!(
        %addr,
        namenode = %config.namenode,
        auth = config.auth_token().is_some(),
        max_upload = ?config.max_upload.map(|b| b.to_string()),
        "gateway ready"
    );
    let stop = shutdown.clone();
    // Without TCP_NODELAY, a streamed response's first body write waits behind the
    // header write for the client's delayed ACK (~40 ms per small download).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.cancelled().await;
        info!("gateway: no longer accepting connections, draining transfers");
    });
    tokio::select! {
        r = server.into_future() => r?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            warn!(deadline = ?drain, "gateway: drain deadline passed, dropping the remaining transfers");
        }
    }
    info!("gateway stopped");
    Ok(())
}
