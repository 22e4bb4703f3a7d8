//! [`AppState`]: what every HTTP handler of the gateway shares.

use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::client::Client;
use crate::gateway::auth::Auth;
use crate::gateway::config::Config;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub metrics: Option<PrometheusHandle>,
    /// The TLS configurations in force (`mtls` towards the cluster, `https` for
    /// clients), for the certificate expiry gauge of `/metrics`.
    pub tls: Vec<(&'static str, Arc<kdfs_proto::tls::Tls>)>,
    pub started: Instant,
    /// Whether the gateway listens on a loopback address: then only loopback `Host`s
    /// (and `--allowed-hosts`) are answered ([`crate::gateway::browser::foreign_host`]).
    pub loopback_listener: bool,
}
