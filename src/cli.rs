//! The command line: `airdock serve` and friends. Flags and environment mean the same.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Collect garbage in a data dir no server is using; prints a JSON report.
    Gc(GcArgs),
    /// Check (and with --repair, fix) a data dir no server is using; prints a JSON report
    /// and exits 1 when problems remain.
    Fsck(FsckArgs),
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
    /// Let `DELETE /v2/<name>/blobs/<digest>` remove a blob that manifests of the
    /// repository still reference (CNCF Distribution's behaviour; those images stop
    /// pulling). By default such a delete is refused with 405 DENIED.
    #[arg(long, env = "AIRDOCK_ALLOW_REFERENCED_BLOB_DELETE")]
    pub allow_referenced_blob_delete: bool,
    /// Bearer token for the admin API (`/admin/v1/...`). When unset, one is generated
    /// into `<data-dir>/admin-token` (mode 0600) on first start and reused after.
    #[arg(long, env = "AIRDOCK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Run GC this often while serving (e.g. `30m`; `0` = never).
    #[arg(long, env = "AIRDOCK_GC_INTERVAL", default_value = "0", value_parser = parse_duration)]
    pub gc_interval: Duration,
    #[command(flatten)]
    pub gc: GcPolicy,
    /// Expire upload sessions not written to for this long (`0` = never).
    #[arg(long, env = "AIRDOCK_UPLOAD_TTL", default_value = "24h", value_parser = parse_duration)]
    pub upload_ttl: Duration,
}

/// What GC may remove; shared by `serve` and `gc`.
#[derive(clap::Args, Debug, Clone)]
pub struct GcPolicy {
    /// Never remove anything written, touched or linked more recently than this.
    #[arg(long, env = "AIRDOCK_GC_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub gc_grace: Duration,
    /// Let GC delete manifests no tag keeps (directly, as an index child or a referrer).
    #[arg(long, env = "AIRDOCK_GC_DELETE_UNTAGGED")]
    pub gc_delete_untagged: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GcArgs {
    /// The data dir to collect.
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Report what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub gc: GcPolicy,
    /// Also expire upload sessions idle this long (`0` = keep them).
    #[arg(long, env = "AIRDOCK_UPLOAD_TTL", default_value = "24h", value_parser = parse_duration)]
    pub upload_ttl: Duration,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FsckArgs {
    /// The data dir to check.
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Quarantine corrupt blobs and drop links and manifests that name missing or corrupt
    /// files. Good data is never deleted.
    #[arg(long)]
    pub repair: bool,
}

impl GcPolicy {
    pub fn options(&self, upload_ttl: Duration) -> airdock_storage::GcOptions {
        airdock_storage::GcOptions {
            grace: self.gc_grace,
            delete_untagged: self.gc_delete_untagged,
            dry_run: false,
            upload_ttl: (!upload_ttl.is_zero()).then_some(upload_ttl),
        }
    }
}

/// `90s`, `15m`, `2h`, `7d`, `250ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 15m, 2h or 7d"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "" | "s" => secs(1),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(format!(
            "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
