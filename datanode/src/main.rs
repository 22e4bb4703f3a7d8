//! `kdfs-datanode`: parses the flags, sets up logging, binds the listeners and runs the
//! datanode until SIGTERM/SIGINT (exit 0 after a graceful drain).

use anyhow::Context;
use clap::Parser;
use kdfs_datanode::Config;

/// glibc malloc arenas the process may use. By default glibc gives each thread that
/// allocates under contention its own arena (up to 8 per core), and every arena keeps
/// freed 1 MiB message buffers for reuse: a datanode's peak RSS was 68–85 MiB for a
/// 1 GiB upload. With 2 arenas it was 57–62 MiB at the same throughput and CPU per byte
/// (BENCHMARKS.md, side by side). When `GLIBC_TUNABLES` is set, it decides instead.
const MALLOC_ARENAS: i32 = 2;

fn main() -> anyhow::Result<()> {
    // Before any thread exists, so every thread shares the bounded set of arenas.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
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
