//! `kdfs-namenode`: parses the configuration, sets up logging, binds the listeners and
//! runs the namenode until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use kdfs_namenode::{Config, run};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    kdfs_core::malloc::tuned_runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::parse();
    kdfs_core::telemetry::init(config.log_format);
    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding gRPC listener {}", config.listen))?;
    let http = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP listener {}", config.http))?;
    let shutdown = kdfs_core::shutdown::on_signals();
    run(config, grpc, http, shutdown).await?;
    Ok(())
}
