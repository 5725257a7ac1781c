//! The command line: `airdock serve` and friends. Flags and environment mean the same.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "airdock",
    version,
    about = "A single-binary OCI registry with imgpkg tarball import"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the registry.
    Serve(ServeArgs),
    /// Import an `imgpkg copy --to-tar` tarball into a repository.
    Import(crate::import_cli::ImportArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "AIRDOCK_ADDR", default_value = "127.0.0.1:5000")]
    pub addr: SocketAddr,
    /// Where blobs and metadata live.
    #[arg(long, env = "AIRDOCK_DATA_DIR", default_value = "./airdock-data")]
    pub data_dir: PathBuf,
    /// Accept manifests whose layers or child manifests were deliberately left out.
    #[arg(long, env = "AIRDOCK_SPARSE")]
    pub sparse: bool,
    /// Bearer token for the admin API (`/admin/v1/...`). When unset, one is generated
    /// into `<data-dir>/admin-token` (mode 0600) on first start and reused after.
    #[arg(long, env = "AIRDOCK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}
