//! The command line: `airdock serve`, `config check`, `cert init`, `user …`, `health`. Every scalar
//! configuration key has a flag here and an `AIRDOCK_*` environment twin; see README.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{
    parse_duration, AuthConfig, AuthMode, Config, DurationValue, GcConfig, LimitsConfig, LogConfig,
    LogFormat, MetadataConfig, MetricsConfig, S3Keys, StorageConfig, StorageDriver, TlsConfig,
    UploadsConfig,
};

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
    Serve(Box<ServeArgs>),
    /// Collect garbage in a data dir no server is using; prints a JSON report.
    Gc(GcArgs),
    /// Check (and with --repair, fix) a data dir no server is using; prints a JSON report
    /// and exits 1 when problems remain.
    Fsck(FsckArgs),
    /// Import an `imgpkg copy --to-tar` tarball into a repository.
    Import(crate::import_cli::ImportArgs),
    /// Copy a data dir, served or not, into one tar (metadata snapshot + every blob it
    /// references); prints a JSON report.
    Backup(BackupArgs),
    /// Bring a backup back into an empty data dir, verifying every blob; prints a JSON report.
    Restore(RestoreArgs),
    /// Move a data dir's metadata (no server using it) into an empty PostgreSQL database,
    /// so that replicas can serve it (`--metadata-url`); prints a JSON report.
    MigrateMetadata(MigrateMetadataArgs),
    /// Export a bundle (with everything it references), image or index as an imgpkg
    /// `--to-tar` tarball, from a server or a data dir.
    Export(crate::export_cli::ExportArgs),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Certificates for a lab.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Users in an htpasswd file.
    #[command(subcommand)]
    User(crate::user_cli::UserCommand),
    /// Ask a server's `/readyz`: exit 0 when ready, 1 otherwise (exec probes, HEALTHCHECK).
    Health(crate::health_cli::HealthArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parse and validate FILE; name the bad key and its line.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create a lab CA (ca.crt, ca.key) and a server certificate (tls.crt, tls.key).
    Init {
        /// Where the four files go (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// A DNS name or IP address the server is reached by (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Replace existing files (the CA is kept unless this is given).
        #[arg(long)]
        force: bool,
        /// The port shown in the trust instructions.
        #[arg(long, default_value_t = 5000)]
        port: u16,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// A YAML configuration file; flags and environment override its keys.
    #[arg(long, env = "AIRDOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on: IP:PORT, [IPv6]:PORT, localhost:PORT or :PORT (every
    /// interface); port 0 picks a free port. [key: addr; default 127.0.0.1:5000]
    #[arg(long, env = "AIRDOCK_ADDR", value_parser = crate::config::parse_listen_addr)]
    pub addr: Option<SocketAddr>,
    /// Where blobs and metadata live. [key: data_dir; default ./airdock-data]
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Accept manifests whose layers or child manifests were deliberately left out. [key: sparse]
    #[arg(long, env = "AIRDOCK_SPARSE")]
    pub sparse: bool,
    /// Let `DELETE /v2/<name>/blobs/<digest>` remove a blob that manifests of the
    /// repository still reference (CNCF Distribution's behaviour; those images stop
    /// pulling). By default such a delete is refused with 405 DENIED.
    /// [key: storage.allow_referenced_blob_delete]
    #[arg(long, env = "AIRDOCK_ALLOW_REFERENCED_BLOB_DELETE")]
    pub allow_referenced_blob_delete: bool,
    /// `GET /readyz` answers 503 while less than this many MiB are free on the data dir's
    /// filesystem (default 256). [key: storage.min_free_mib]
    #[arg(long, env = "AIRDOCK_MIN_FREE_MIB")]
    pub min_free_mib: Option<u64>,
    /// `postgres://user:password@host:port/dbname`: keep repository metadata in PostgreSQL,
    /// shared by every airdock given the same URL (replicas behind a load balancer, each with
    /// its own --data-dir). Unset: the journal in the data dir. [key: metadata.url]
    #[arg(long, env = "AIRDOCK_METADATA_URL")]
    pub metadata_url: Option<String>,
    /// Where blobs live: `filesystem` (under --data-dir) or `s3`. [key: storage.driver]
    #[arg(long = "storage", env = "AIRDOCK_STORAGE")]
    pub storage_driver: Option<StorageDriver>,
    /// `http(s)://host:port` of an S3-compatible server (default: AWS S3).
    /// [key: storage.s3.endpoint]
    #[arg(long, env = "AIRDOCK_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket blobs go to with `--storage s3`. [key: storage.s3.bucket]
    #[arg(long, env = "AIRDOCK_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The bucket's region (default us-east-1). [key: storage.s3.region]
    #[arg(long, env = "AIRDOCK_S3_REGION")]
    pub s3_region: Option<String>,
    /// Keep keys under this prefix of the bucket. [key: storage.s3.prefix]
    #[arg(long, env = "AIRDOCK_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// `true`: the bucket goes in the URL path, not the host name (default: true with
    /// --s3-endpoint). [key: storage.s3.path_style]
    #[arg(long, env = "AIRDOCK_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Answer blob GETs with a redirect to a presigned S3 URL rather than streaming them.
    /// [key: storage.s3.redirect]
    #[arg(long, env = "AIRDOCK_S3_REDIRECT")]
    pub s3_redirect: bool,
    /// Bearer token for the admin API (`/admin/v1/...`). When unset, one is generated
    /// into `<data-dir>/admin-token` (mode 0600) on first start and reused after.
    #[arg(long, env = "AIRDOCK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token (default `<data-dir>/admin-token`, generated there if
    /// missing). Re-read when it changes: writing a new token rotates it within 2 s.
    /// `--admin-token` wins over it.
    #[arg(long, env = "AIRDOCK_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM certificate chain; serve HTTPS. [key: tls.cert]
    #[arg(long, env = "AIRDOCK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. [key: tls.key]
    #[arg(long, env = "AIRDOCK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// htpasswd file (bcrypt); turns authentication on. [key: auth.htpasswd]
    #[arg(long, env = "AIRDOCK_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,
    /// `token` (Bearer challenges, built-in token endpoint) or `basic`. [key: auth.mode]
    #[arg(long, env = "AIRDOCK_AUTH_MODE")]
    pub auth_mode: Option<AuthMode>,
    /// Token endpoint URL announced to clients. [key: auth.realm]
    #[arg(long, env = "AIRDOCK_AUTH_REALM")]
    pub auth_realm: Option<String>,
    /// Service name in challenges and tokens. [key: auth.service]
    #[arg(long, env = "AIRDOCK_AUTH_SERVICE")]
    pub auth_service: Option<String>,
    /// Token lifetime in seconds. [key: auth.token_ttl_secs]
    #[arg(long, env = "AIRDOCK_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Failed logins from one address before 429. [key: auth.max_failures]
    #[arg(long, env = "AIRDOCK_MAX_FAILURES")]
    pub max_failures: Option<u32>,
    /// Seconds an address stays refused. [key: auth.lockout_secs]
    #[arg(long, env = "AIRDOCK_LOCKOUT_SECS")]
    pub lockout_secs: Option<u64>,
    /// Reverse proxies (addresses or CIDRs, comma-separated) whose `Forwarded` and
    /// `X-Forwarded-*` headers name the client and the URL it used. [key: trusted_proxies]
    #[arg(long, env = "AIRDOCK_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::forwarded::TrustedNet>,
    /// Seconds from accept to a connection's first complete request head (TLS handshake
    /// included), and to send any later head. [key: limits.header_timeout_secs]
    #[arg(long, env = "AIRDOCK_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may stall. [key: limits.body_timeout_secs]
    #[arg(long, env = "AIRDOCK_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Seconds a connection may stay open with no request in flight.
    /// [key: limits.idle_timeout_secs]
    #[arg(long, env = "AIRDOCK_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Largest request head in bytes. [key: limits.max_header_bytes]
    #[arg(long, env = "AIRDOCK_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Blob upload requests at once. [key: limits.max_concurrent_uploads]
    #[arg(long, env = "AIRDOCK_MAX_CONCURRENT_UPLOADS")]
    pub max_concurrent_uploads: Option<usize>,
    /// Upload sessions open at once; more POSTs get 429 (`0` = no cap, default 1024).
    /// [key: limits.max_open_uploads]
    #[arg(long, env = "AIRDOCK_MAX_OPEN_UPLOADS")]
    pub max_open_uploads: Option<usize>,
    /// Upload sessions one user (or client address, for anonymous pushes) may hold; past it
    /// their own idle sessions expire or they get 429 (`0` = no cap, default 128).
    /// [key: limits.max_open_uploads_per_client]
    #[arg(long, env = "AIRDOCK_MAX_OPEN_UPLOADS_PER_CLIENT")]
    pub max_open_uploads_per_client: Option<usize>,
    /// Run GC this often while serving, e.g. `30m` (default: never). [key: gc.interval]
    #[arg(long, env = "AIRDOCK_GC_INTERVAL", value_parser = parse_duration)]
    pub gc_interval: Option<Duration>,
    #[command(flatten)]
    pub gc: GcPolicy,
    /// Expire upload sessions not written to for this long (default 24h; `0` = never).
    /// [key: uploads.ttl]
    #[arg(long, env = "AIRDOCK_UPLOAD_TTL", value_parser = parse_duration)]
    pub upload_ttl: Option<Duration>,
    /// `text` (default) or `json`: one JSON object per log line. [key: log.format]
    #[arg(long, env = "AIRDOCK_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Also serve `/metrics` on this address, without credentials: bind it to a private
    /// address (a pod IP, a management network). [key: metrics.addr]
    #[arg(long, env = "AIRDOCK_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve `/metrics` on the main port without credentials (default: admins only).
    /// [key: metrics.anonymous]
    #[arg(long, env = "AIRDOCK_METRICS_ANONYMOUS")]
    pub metrics_anonymous: bool,
    /// Repositories with their own per-repository series, the largest first (default 20);
    /// the rest are summed as `repository="_other"`. [key: metrics.top_repositories]
    #[arg(long, env = "AIRDOCK_METRICS_TOP_REPOSITORIES")]
    pub metrics_top_repositories: Option<usize>,
}

impl ServeArgs {
    /// The flags (and their environment twins) as a [`Config`] to overlay on the file.
    pub fn to_config(&self) -> Config {
        Config {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            // A flag cannot say "false": only a set flag overrides the file.
            sparse: self.sparse.then_some(true),
            tls: TlsConfig {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
            },
            auth: AuthConfig {
                htpasswd: self.htpasswd.clone(),
                mode: self.auth_mode,
                realm: self.auth_realm.clone(),
                service: self.auth_service.clone(),
                token_ttl_secs: self.token_ttl_secs,
                admins: Vec::new(),
                max_failures: self.max_failures,
                lockout_secs: self.lockout_secs,
            },
            access: Vec::new(),
            limits: LimitsConfig {
                header_timeout_secs: self.header_timeout_secs,
                body_timeout_secs: self.body_timeout_secs,
                idle_timeout_secs: self.idle_timeout_secs,
                max_header_bytes: self.max_header_bytes,
                max_concurrent_uploads: self.max_concurrent_uploads,
                max_open_uploads: self.max_open_uploads,
                max_open_uploads_per_client: self.max_open_uploads_per_client,
            },
            gc: self.gc.to_config(self.gc_interval),
            uploads: UploadsConfig {
                ttl: self.upload_ttl.map(DurationValue),
            },
            storage: StorageConfig {
                allow_referenced_blob_delete: self.allow_referenced_blob_delete.then_some(true),
                min_free_mib: self.min_free_mib,
                driver: self.storage_driver,
                s3: S3Keys {
                    endpoint: self.s3_endpoint.clone(),
                    bucket: self.s3_bucket.clone(),
                    region: self.s3_region.clone(),
                    prefix: self.s3_prefix.clone(),
                    path_style: self.s3_path_style,
                    redirect: self.s3_redirect.then_some(true),
                    // From AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the file, never a
                    // flag: a secret on a command line shows in `ps`.
                    access_key_id: None,
                    secret_access_key: None,
                },
            },
            metadata: MetadataConfig {
                url: self.metadata_url.clone(),
            },
            retention: Vec::new(),
            trusted_proxies: self.trusted_proxies.clone(),
            log: LogConfig {
                format: self.log_format,
            },
            metrics: MetricsConfig {
                addr: self.metrics_addr,
                anonymous: self.metrics_anonymous.then_some(true),
                top_repositories: self.metrics_top_repositories,
            },
        }
    }
}

/// What GC may remove; shared by `serve` and `gc`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GcPolicy {
    /// Never remove anything written, touched or linked more recently than this
    /// (default 1h). [key: gc.grace]
    #[arg(long, env = "AIRDOCK_GC_GRACE", value_parser = parse_duration)]
    pub gc_grace: Option<Duration>,
    /// Let GC delete manifests no tag keeps (directly, as an index child or a referrer).
    /// [key: gc.delete_untagged]
    #[arg(long, env = "AIRDOCK_GC_DELETE_UNTAGGED")]
    pub gc_delete_untagged: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GcArgs {
    /// The data dir to collect.
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A configuration file whose `gc`, `uploads` and `retention` keys apply (flags win).
    #[arg(long, env = "AIRDOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Report what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub gc: GcPolicy,
    /// Also expire upload sessions idle this long (default 24h; `0` = keep them).
    #[arg(long, env = "AIRDOCK_UPLOAD_TTL", value_parser = parse_duration)]
    pub upload_ttl: Option<Duration>,
    /// The PostgreSQL database of a replica's data dir (its metadata is there).
    #[arg(long, env = "AIRDOCK_METADATA_URL")]
    pub metadata_url: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// The data dir to back up (a server may be using it).
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The tar to write (replaced atomically when complete).
    #[arg(long)]
    pub to: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup tar.
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to restore into: new or empty, and no server using it.
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Restore into a non-empty data dir: its metadata is replaced by the backup's; blobs
    /// it held that the backup does not reference are left to GC.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateMetadataArgs {
    /// The data dir whose journal moves (no server may be using it). It is then bound to
    /// the database: serve it with `--metadata-url`.
    #[arg(long)]
    pub from_data_dir: PathBuf,
    /// `postgres://user:password@host:port/db` of an empty database (tables are created).
    #[arg(long, env = "AIRDOCK_METADATA_URL")]
    pub to: String,
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
    /// The PostgreSQL database of a replica's data dir (its metadata is there). The data
    /// dir is then opened for writing (its lock taken), also for a check.
    #[arg(long, env = "AIRDOCK_METADATA_URL")]
    pub metadata_url: Option<String>,
}

impl GcPolicy {
    /// These flags as the `gc` keys of a [`Config`] (a flag cannot say "false": only a set
    /// flag overrides the file).
    pub fn to_config(&self, interval: Option<Duration>) -> GcConfig {
        GcConfig {
            interval: interval.map(DurationValue),
            grace: self.gc_grace.map(DurationValue),
            delete_untagged: self.gc_delete_untagged.then_some(true),
        }
    }
}

impl GcArgs {
    /// The flags as a [`Config`] to overlay on the file.
    pub fn to_config(&self) -> Config {
        Config {
            gc: self.gc.to_config(None),
            uploads: UploadsConfig {
                ttl: self.upload_ttl.map(DurationValue),
            },
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_flag_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["airdock", "serve", "--trusted-proxies", "10.0.0.0/8,::1"])
            .expect("parse");
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.to_config().trusted_proxies.len(), 2);
        let e = Cli::try_parse_from(["airdock", "serve", "--trusted-proxies", "proxy.lab"])
            .expect_err("a name is not an address");
        assert!(e.to_string().contains("proxy.lab"), "{e}");
    }
}
