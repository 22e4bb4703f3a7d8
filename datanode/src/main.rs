//! `kdfs-datanode`: parses the flags, sets up logging, binds the listeners and runs the
//! datanode until SIGTERM/SIGINT (exit 0 after a graceful drain).

use anyhow::Context;
use clap::Parser;
use kdfs_datanode::Config;

fn main() -> anyhow::Result<()> {
    kdfs_core::malloc::tuned_runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::parse();
    kdfs_core::telemetry::init(config.log_format);
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding gRPC listener {}", config.listen))?;
    let http = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP listener {}", config.http))?;
    let shutdown = kdfs_core::shutdown::on_signals();
    kdfs_datanode::run(config, grpc, http, shutdown)
        .await
        .context("datanode failed")
}
