//! `kdfs-gateway`: parse flags, set up logs, bind (the HTTP port and the S3 port), and run the gateway until SIGTERM.

use anyhow::Context;
use clap::Parser;
use kdfs_client_gateway::s3::config::S3Listen;
use kdfs_client_gateway::{Config, Listeners};

fn main() -> anyhow::Result<()> {
    kdfs_core::malloc::tuned_runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::parse();
    kdfs_core::telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let s3 = match config.s3.s3_listen {
        S3Listen::Off => None,
        S3Listen::At(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the S3 port {addr} (--s3-listen; `off` disables it)")
            })?)
        }
    };
    let shutdown = kdfs_core::shutdown::on_signals();
    let listeners = Listeners { http: listener, s3 };
    kdfs_client_gateway::run(config, listeners, shutdown).await?;
    Ok(())
}
