//! The command line: `airdock serve`, `config check`, `cert init`, `user add`. Every scalar
//! configuration key has a flag here and an `AIRDOCK_*` environment twin; see README.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{AuthConfig, AuthMode, Config, LimitsConfig, TlsConfig};

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
    /// Import an `imgpkg copy --to-tar` tarball into a repository.
    Import(crate::import_cli::ImportArgs),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Certificates for a lab.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Users in an htpasswd file.
    #[command(subcommand)]
    User(UserCommand),
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

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add NAME (or replace its password); the password is read from stdin.
    Add {
        name: String,
        #[arg(long)]
        htpasswd: PathBuf,
        /// bcrypt cost.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// A YAML configuration file; flags and environment override its keys.
    #[arg(long, env = "AIRDOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port). [key: addr; default 127.0.0.1:5000]
    #[arg(long, env = "AIRDOCK_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Where blobs and metadata live. [key: data_dir; default ./airdock-data]
    #[arg(long, env = "AIRDOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Accept manifests whose layers or child manifests were deliberately left out. [key: sparse]
    #[arg(long, env = "AIRDOCK_SPARSE")]
    pub sparse: bool,
    /// Bearer token for the admin API (`/admin/v1/...`). When unset, one is generated
    /// into `<data-dir>/admin-token` (mode 0600) on first start and reused after.
    #[arg(long, env = "AIRDOCK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
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
    /// Seconds a client has to send a request head. [key: limits.header_timeout_secs]
    #[arg(long, env = "AIRDOCK_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may stall. [key: limits.body_timeout_secs]
    #[arg(long, env = "AIRDOCK_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Largest request head in bytes. [key: limits.max_header_bytes]
    #[arg(long, env = "AIRDOCK_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Blob upload requests at once. [key: limits.max_concurrent_uploads]
    #[arg(long, env = "AIRDOCK_MAX_CONCURRENT_UPLOADS")]
    pub max_concurrent_uploads: Option<usize>,
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
                max_header_bytes: self.max_header_bytes,
                max_concurrent_uploads: self.max_concurrent_uploads,
            },
        }
    }
}
