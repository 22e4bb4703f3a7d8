//! `kdfs-gateway`: parse flags, set up logs, bind, and run the gateway until SIGTERM.

use anyhow::Context;
use clap::Parser;
use kdfs_client_gateway::Config;

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
    let shutdown = kdfs_core::shutdown::on_signals();
    kdfs_client_gateway::run(config, listener, shutdown).await?;
    Ok(())
}
