//! `kdfs local`: a whole cluster on 127.0.0.1 in one process (filled in once the
//! servers' `run` functions exist).

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Where every component keeps its data (namenode/, datanode-N/).
    #[arg(long, env = "KDFS_DATA_DIR", default_value = "./kdfs-data")]
    pub data_dir: PathBuf,
    /// Number of datanodes.
    #[arg(long, env = "KDFS_DATANODES", default_value_t = 3)]
    pub datanodes: u16,
    /// Where the gateway listens.
    #[arg(long, env = "KDFS_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
}

pub async fn run(_args: LocalArgs) -> anyhow::Result<()> {
    anyhow::bail!("kdfs local is not available yet")
}
