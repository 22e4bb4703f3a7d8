//! `kdfs`: the command line for people and scripts.
//!
//! Every subcommand but `local` and `certs` talks HTTP to a gateway (`--gateway`,
//! `KDFS_GATEWAY`), so the CLI uses exactly the public API a `curl` user has. Errors end the process with
//! a one-line message on stderr and a non-zero exit code.

mod certs;
mod gateway;
mod local;
mod transfer;

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Where the gateway listens unless told otherwise.
const DEFAULT_GATEWAY: &str = "http://localhost:8080";

#[derive(Debug, Parser)]
#[command(
    name = "kdfs",
    version,
    about = "kdfs: a Kubernetes-native, HDFS-like file store"
)]
struct Cli {
    /// Base URL of the kdfs gateway.
    #[arg(long, global = true, env = "KDFS_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// Bearer token, sent on every request, if the gateway requires one. Prefer
    /// KDFS_AUTH_TOKEN: a flag's value is visible to every local user in `ps`.
    #[arg(long, global = true, env = "KDFS_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// PEM CA certificate(s) to trust for an https:// gateway signed by a private CA
    /// (e.g. the ca.crt of `kdfs certs`).
    #[arg(long, global = true, env = "KDFS_GATEWAY_CA")]
    gateway_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload files; prints each file's hash.
    Upload {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// No progress bars (also off when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Download a file by hash, verifying its SHA-256 before it appears at the output path.
    Download {
        hash: String,
        /// Output path (default: the stored file name, reduced to a plain name that is
        /// not a dotfile, in the current directory; the hash if nothing usable is left).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists (without it, an existing file is an error).
        #[arg(long, short)]
        force: bool,
        #[arg(long, short)]
        quiet: bool,
    },
    /// List stored files, newest first.
    Ls {
        /// Print the gateway's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only names containing this.
        #[arg(long)]
        search: Option<String>,
        /// At most this many files (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Delete a file by hash.
    Rm { hash: String },
    /// Decommission a datanode for good: its blocks are copied to full replication
    /// elsewhere, after which it may stop (a datanode merely restarted needs nothing:
    /// SIGTERM puts it in maintenance). Registering again (a restart) cancels it too.
    Decommission {
        /// The datanode's id (as `kdfs info` lists it).
        id: String,
        /// Cancel a decommission: the datanode is live again.
        #[arg(long)]
        cancel: bool,
        /// Wait until it is drained.
        #[arg(long, conflicts_with = "cancel")]
        wait: bool,
    },
    /// Show the cluster: totals and every datanode.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Run a namenode, datanodes and a gateway on 127.0.0.1 until Ctrl-C.
    ///
    /// Once the cluster serves, it prints a short banner: the gateway's address (on a
    /// line of its own, `gateway: http://…`, for scripts), the browser page, the data
    /// and log directories, whether mTLS is on, and how to stop; then one line when it
    /// stops. Each component logs to <data-dir>/logs/<component>.log (namenode.log,
    /// datanode-N.log, gateway.log; kdfs.log for kdfs local's own lines), appended
    /// across restarts; --verbose also streams those lines to stderr. An error that
    /// stops the cluster (a port in use, a component failing, the ready timeout) is
    /// printed on stderr and the exit code is non-zero.
    Local(local::LocalArgs),
    /// Make a CA and a certificate per role (namenode, datanode, gateway) for mTLS;
    /// reuses the directory's CA unless --force.
    Certs(certs::CertsOptions),
    /// Measure throughput, small-file rate, heal time and the machine's ceilings.
    Bench(kdfs_bench::BenchArgs),
}

fn main() {
    // `kdfs local` and the bench's client move the same buffers as the servers.
    let runtime = match kdfs_core::malloc::tuned_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kdfs: starting the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(cli_main());
}

async fn cli_main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if matches.value_source("auth_token") == Some(ValueSource::CommandLine) {
        eprintln!(
            "kdfs: warning: --auth-token on the command line is visible to other users (ps); \
             set KDFS_AUTH_TOKEN instead"
        );
    }
    // One crypto provider for the whole workspace (ring): reqwest is built without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = run(cli).await {
        eprintln!("kdfs: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let gw = || {
        gateway::Gateway::new(
            &cli.gateway,
            cli.auth_token.clone(),
            cli.gateway_ca.as_deref(),
        )
    };
    match cli.command {
        Command::Upload { ref files, quiet } => transfer::upload(&gw()?, files, quiet).await,
        Command::Download {
            ref hash,
            ref output,
            force,
            quiet,
        } => transfer::download(&gw()?, hash, output.as_deref(), force, quiet).await,
        Command::Ls {
            json,
            ref search,
            limit,
        } => gw()?.ls(json, search.as_deref(), limit).await,
        Command::Rm { ref hash } => gw()?.rm(hash).await,
        Command::Decommission {
            ref id,
            cancel,
            wait,
        } => gw()?.decommission(id, cancel, wait).await,
        Command::Info { json } => gw()?.info(json).await,
        Command::Local(args) => local::run(args).await,
        Command::Certs(opts) => certs::run(opts),
        Command::Bench(args) => kdfs_bench::run(&cli.gateway, args).await,
    }
}
