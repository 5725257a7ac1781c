//! The `airdock` binary: parse flags, set up logging, run the chosen command.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use airdock::cli::{Cli, Command, FsckArgs, GcArgs, ServeArgs};
use airdock::{app, serve, AppState};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(run_serve(args)),
        Command::Gc(args) => rt.block_on(run_gc(args)),
        Command::Fsck(args) => {
            let clean = rt.block_on(run_fsck(args))?;
            // Scripts (and the crash tests) read the exit status: 1 = problems remain.
            std::process::exit(if clean { 0 } else { 1 });
        }
        Command::Import(args) => rt.block_on(airdock::import_cli::run(args)),
    }
}

async fn open_store(dir: &std::path::Path) -> anyhow::Result<airdock::storage::Store> {
    airdock::storage::Store::open(dir)
        .await
        .with_context(|| format!("opening data dir {}", dir.display()))
}

/// Print `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

async fn run_gc(args: GcArgs) -> anyhow::Result<()> {
    let store = open_store(&args.data_dir).await?;
    let mut opts = args.gc.options(args.upload_ttl);
    opts.dry_run = args.dry_run;
    let report = store.gc(&opts).await.context("gc")?;
    print_json(&report)
}

async fn run_fsck(args: FsckArgs) -> anyhow::Result<bool> {
    let store = open_store(&args.data_dir).await?;
    let report = store.fsck(args.repair).await.context("fsck")?;
    print_json(&report)?;
    Ok(report.clean)
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = open_store(&args.data_dir).await?;
    let (token, _) =
        airdock::admin::AdminToken::resolve(args.admin_token.as_deref(), &args.data_dir)
            .with_context(|| {
                format!("setting up the admin token in {}", args.data_dir.display())
            })?;
    let admin = airdock::admin::router(store.clone(), token.clone());
    let gc = args.gc.options(args.upload_ttl);
    airdock::admin_gc::spawn_background(store.clone(), gc.clone(), args.gc_interval);
    let state = AppState {
        store,
        sparse: args.sparse,
        chunk_min: None,
        allow_referenced_blob_delete: args.allow_referenced_blob_delete,
        admin_token: Some(token),
        gc,
    };
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when started with port 0.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), sparse = args.sparse, "airdock serving");
    serve(listener, app(state).merge(admin), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

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
