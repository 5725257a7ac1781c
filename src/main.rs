//! The `airdock` binary: parse flags, set up logging, run the chosen command.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use airdock::cli::{CertCommand, Cli, Command, ConfigCommand, FsckArgs, GcArgs, ServeArgs};
use airdock::config::Config;
use airdock::server::{serve_with, ServeOptions};
use airdock::{app, AppState};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `serve` sets up logging once its configuration (`log.format`) is read.
    if !matches!(cli.command, Command::Serve(_)) {
        airdock::observe::logging::init(Default::default());
    }
    match cli.command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // File I/O runs on blocking threads; past this many, work queues instead
                // of each burst leaving idle threads (and their memory) behind.
                .max_blocking_threads(64)
                .build()?;
            rt.block_on(run_serve(*args))
        }
        Command::Import(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(airdock::import_cli::run(args))
        }
        Command::Export(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(airdock::export_cli::run(args))
        }
        Command::Gc(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run_gc(args))
        }
        Command::MigrateMetadata(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let migrate = airdock::storage::migrate_metadata(&args.from_data_dir, &args.to);
            let report = rt.block_on(migrate).with_context(|| {
                format!("moving the metadata of {}", args.from_data_dir.display())
            })?;
            print_json(&report)
        }
        Command::Backup(args) => {
            refuse_s3(&args.data_dir, "backup")?;
            let report = airdock::storage::backup::backup(&args.data_dir, &args.to)
                .with_context(|| format!("backing up {}", args.data_dir.display()))?;
            print_json(&report)
        }
        Command::Restore(args) => {
            refuse_s3(&args.data_dir, "restore")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let restore = airdock::storage::backup::restore(&args.from, &args.data_dir, args.force);
            let report = rt
                .block_on(restore)
                .with_context(|| format!("restoring {}", args.from.display()))?;
            print_json(&report)
        }
        Command::Fsck(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let clean = rt.block_on(run_fsck(args))?;
            // Scripts (and the crash tests) read the exit status: 1 = problems remain.
            std::process::exit(if clean { 0 } else { 1 });
        }
        Command::Health(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(airdock::health_cli::run(args)) {
                Ok(msg) => {
                    println!("{msg}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("not ready: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let problems = check_config(&file);
            if problems.is_empty() {
                println!("{}: ok", file.display());
                return Ok(());
            }
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            anyhow::bail!("{}: {} error(s)", file.display(), problems.len())
        }
        Command::Cert(CertCommand::Init {
            dir,
            hosts,
            force,
            port,
        }) => {
            let done = airdock::tls::cert_init(&dir, &hosts, force)?;
            for f in &done.files {
                println!("wrote {}", f.display());
            }
            if done.ca_reused {
                println!(
                    "(kept the existing CA in {}; --force makes a new one)",
                    dir.display()
                );
            }
            println!();
            print!("{}", airdock::tls::trust_instructions(&dir, &hosts, port));
            Ok(())
        }
        Command::User(cmd) => {
            println!("{}", airdock::user_cli::run(cmd)?);
            Ok(())
        }
    }
}

/// Every problem `config check` finds in `file`: the file's own errors, then (when it
/// parses) those of the settings and of the certificate and user files it names. Warnings
/// (users the rules name but the user file lacks) are printed, not counted.
fn check_config(file: &std::path::Path) -> Vec<String> {
    let cfg = match airdock::config::check_file(file) {
        Ok(cfg) => cfg,
        Err(errors) => return errors.iter().map(ToString::to_string).collect(),
    };
    let settings = match cfg.settings() {
        Ok(s) => s,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if let Some((cert, key)) = &settings.tls {
        if let Err(e) = airdock::tls::load_certified_key(cert, key) {
            problems.push(format!("tls: {e:#}"));
        }
    }
    if let Some(h) = &settings.auth.htpasswd {
        match airdock::auth::htpasswd::Htpasswd::load(h) {
            Ok(users) => {
                for w in airdock::auth::unknown_users(&settings, &users) {
                    eprintln!("{}: warning: {w}", file.display());
                }
            }
            Err(e) => problems.push(format!("auth.htpasswd {}: {e}", h.display())),
        }
    }
    problems
}

/// The store of an offline command: blobs where the data dir was bound (see
/// `airdock::backend`), metadata in its journal or in the database at `metadata`.
async fn open_store(
    dir: &std::path::Path,
    metadata: Option<&str>,
) -> anyhow::Result<airdock::storage::Store> {
    airdock::backend::open_store(dir, &airdock::config::BlobBackend::Filesystem, metadata)
        .await
        .with_context(|| format!("opening data dir {}", dir.display()))
}

/// `backup` and `restore` copy blob files and the journal: refused for a data dir whose blobs
/// are on S3 or whose metadata is in PostgreSQL.
fn refuse_s3(data_dir: &std::path::Path, what: &str) -> anyhow::Result<()> {
    if let Some(db) = airdock::storage::metadata_database(data_dir)? {
        anyhow::bail!(
            "{what} of a data dir whose metadata is in PostgreSQL ({db}) is not supported yet: \
             back up the database (pg_dump) and the bucket"
        );
    }
    if airdock_storage_s3::binding::bound(data_dir)?.is_some() {
        anyhow::bail!(
            "{what} of a data dir whose blobs are on S3 is not supported yet ({} is bound to a bucket)",
            data_dir.display()
        );
    }
    Ok(())
}

/// Print `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

async fn run_gc(args: GcArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => Config::default(),
    };
    let store = open_store(&args.data_dir, args.metadata_url.as_deref()).await?;
    let mut opts = file.overlay(args.to_config()).gc_options();
    opts.dry_run = args.dry_run;
    let report = store.gc(&opts).await.context("gc")?;
    print_json(&report)
}

async fn run_fsck(args: FsckArgs) -> anyhow::Result<bool> {
    // A check writes nothing, so it works on a read-only copy or mount of a data dir.
    let store = if args.repair || args.metadata_url.is_some() {
        open_store(&args.data_dir, args.metadata_url.as_deref()).await?
    } else {
        airdock::backend::open_store_read_only(&args.data_dir)
            .await
            .with_context(|| format!("opening data dir {} to check", args.data_dir.display()))?
    };
    let report = store.fsck(args.repair).await.context("fsck")?;
    print_json(&report)?;
    Ok(report.clean)
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => Config::default(),
    };
    let settings = file.overlay(args.to_config()).settings()?;
    airdock::observe::logging::init(settings.log_format);
    let open_files = raise_open_files_limit();
    let store = airdock::backend::open_store(
        &settings.data_dir,
        &settings.blobs,
        settings.metadata_url.as_deref(),
    )
    .await
    .with_context(|| format!("opening data dir {}", settings.data_dir.display()))?;
    let configured = args.admin_token.is_some() || args.admin_token_file.is_some();
    let shared = airdock::auth::SharedSecrets::of(&store, configured)
        .await
        .context("reading the secrets replicas share from the metadata database")?;
    let tls = match &settings.tls {
        Some((cert, key)) => Some(airdock::tls::server_config(cert, key)?),
        None => None,
    };
    let (admin_token, _) = airdock::auth::admin_token::AdminToken::resolve(
        args.admin_token
            .as_deref()
            .or(shared.admin_token.as_deref()),
        args.admin_token_file.as_deref(),
        &settings.data_dir,
    )
    .context("setting up the admin token")?;
    let auth = airdock::auth::Auth::new_with_key(
        &settings.auth,
        settings.access.clone(),
        &settings.data_dir,
        shared.token_key,
    )?;
    let mut state = AppState::new(store, settings.sparse);
    state.auth = auth;
    state.admin_token = Some(admin_token);
    state.limiter = airdock::limits::Limiter::new(&settings.limits);
    state
        .store
        .set_upload_limits(airdock::storage::UploadLimits {
            max_open: settings.limits.max_open_uploads,
            max_per_owner: settings.limits.max_open_uploads_per_client,
            ..Default::default()
        });
    state.allow_referenced_blob_delete = settings.allow_referenced_blob_delete;
    state.gc = settings.gc.clone();
    state.readiness = airdock::health::Readiness::new(state.store.clone(), settings.min_free_mib);
    state.forwarding =
        airdock::forwarded::Forwarding::new(settings.trusted_proxies.clone(), tls.is_some());
    state.scrape = airdock::observe::Scrape::new(&settings.metrics);
    airdock::admin::spawn_background(state.store.clone(), state.gc.clone(), settings.gc_interval);
    let listener = bind(settings.addr).await?;
    let addr = listener.local_addr()?;
    let metrics_listener = match settings.metrics.addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the metrics address {a}"))?,
        ),
        None => None,
    };
    // Tests and scripts read this line to learn the port when started with port 0.
    println!("listening on {addr}");
    // Worded apart from the line above: scripts look for the first `listening on`.
    if let Some(l) = &metrics_listener {
        println!("metrics served on {}", l.local_addr()?);
    }
    std::io::stdout().flush()?;
    tracing::info!(
        %addr,
        data_dir = %settings.data_dir.display(),
        sparse = settings.sparse,
        tls = tls.is_some(),
        auth = state.auth.is_some(),
        open_files,
        "airdock serving"
    );
    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics_server = metrics_listener.map(|l| {
        let router = airdock::observe::scrape::router(state.clone());
        let opts = ServeOptions {
            tls: None,
            limits: settings.limits,
        };
        tokio::spawn(serve_with(l, router, stopped(stop_rx.clone()), opts))
    });
    let opts = ServeOptions {
        tls,
        limits: settings.limits,
    };
    let store = state.store.clone();
    serve_with(listener, app(state), stopped(stop_rx), opts).await?;
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    // The background tasks still hold the store: its clock is made durable here.
    if let Err(e) = store.close() {
        tracing::warn!(error = %e, "cannot save GC's clock; the next start counts every blob as used then");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Bind `addr`. The IPv6 wildcard (`:PORT`, `[::]:PORT`) means every interface; on a host
/// whose kernel has no IPv6 that is the IPv4 wildcard, so fall back to it rather than fail.
async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && no_ipv6(&e) => {
            let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(error = %e, %v4, "no IPv6 on this host: listening on IPv4 only");
            TcpListener::bind(v4)
                .await
                .with_context(|| format!("binding {v4}"))
        }
        r => r.with_context(|| format!("binding {addr}")),
    }
}

fn no_ipv6(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// Raise the soft limit on open files to the hard one and return it. Every connection is
/// a descriptor, and the usual soft default (1024) would stop a busy registry long before
/// memory does; the hard limit is the one the administrator chose.
fn raise_open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}
