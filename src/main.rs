//! The `airdock` binary: parse flags, set up logging, run the chosen command.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use airdock::cli::{Cli, Command, ServeArgs};
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
        Command::Import(args) => rt.block_on(airdock::import_cli::run(args)),
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = airdock::storage::Store::open(&args.data_dir)
        .await
        .with_context(|| format!("opening data dir {}", args.data_dir.display()))?;
    let (token, _) =
        airdock::admin::AdminToken::resolve(args.admin_token.as_deref(), &args.data_dir)
            .with_context(|| {
                format!("setting up the admin token in {}", args.data_dir.display())
            })?;
    let admin = airdock::admin::router(store.clone(), token);
    let state = AppState {
        store,
        sparse: args.sparse,
        chunk_min: None,
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
