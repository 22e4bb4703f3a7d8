//! The HTTP gateway `kdfs-gateway`: the HTTP API (README.md, "Using it") and the
//! browser page in front of the client library.
//!
//! - [`config`]: every flag, its environment variable and default.
//! - [`error`]: [`error::ApiError`] (the one error-to-status mapping) and
//!   [`error::BodyError`]; [`state`]: [`state::AppState`], what handlers share.
//! - [`http`]: the axum app: router, the guard middleware, [`run`]
//!   (what `main.rs` and the tests call) and its graceful shutdown.
//! - [`server`]: the connection loop (caps per client and in all, header and idle
//!   timeouts, graceful shutdown); [`idle`]: the idle timeouts of bodies and writes.
//! - [`auth`]: bearer tokens and the failed-attempt limit; [`audit`]: one log line per
//!   upload, delete and refused authentication; [`browser`]: what a web page cannot
//!   make a visitor's browser do (cross-origin mutations, DNS rebinding).
//! - [`routes`]: one module per resource; [`page`]: the HTML page.
//!
//! Only [`crate::client`]'s public API is used here: the gateway is one client among
//! others (the `kdfs` CLI is another).

pub mod audit;
pub mod auth;
pub mod browser;
pub mod config;
pub mod error;
pub mod http;
pub mod idle;
pub mod ip_range;
pub mod page;
pub mod routes;
pub mod server;
pub mod state;

pub use http::run;
