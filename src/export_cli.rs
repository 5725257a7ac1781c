//! `airdock export --repository NAME --tag TAG -o FILE`: write an imgpkg `--to-tar` tar of a
//! bundle (with everything it references), image or index, either from a running server's
//! export endpoint (`--server`, streamed to the file with progress on stderr) or straight
//! from a data directory (`--data-dir`, opened read-only: a server may be stopped, or its
//! disk mounted read-only). The file appears under its name only once complete.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use airdock_storage::{Digest, Reference, RepoName, Tag};

use crate::auth::EXPORT_PATH;
use crate::imgpkg::export::{self, Wanted};
use crate::import_cli::{admin_url, describe, http_client, human, read_token, Target};

/// Flags of `airdock export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// Repository holding the bundle, image or index.
    #[arg(long, short = 'r')]
    pub repository: Option<String>,
    /// Tag to export (`latest` when neither --tag nor --digest is given).
    #[arg(long, short = 't', conflicts_with = "digest")]
    pub tag: Option<String>,
    /// Digest to export.
    #[arg(long)]
    pub digest: Option<String>,
    /// More references into the same tar: `NAME:TAG` or `NAME@DIGEST`, repeatable.
    #[arg(long = "ref")]
    pub refs: Vec<String>,
    /// An ImagesLock (e.g. imgpkg's `--lock-output` of an images copy) listing what to
    /// export; with --repository, its digests are looked up there.
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Where to write the tar; `-` writes to stdout.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    #[command(flatten)]
    pub target: Target,
    /// Log in to --server as this user (password from $AIRDOCK_PASSWORD); pull rights on
    /// every repository exported suffice.
    #[arg(long)]
    pub user: Option<String>,
    /// How the tar names the source registry in its `Refs` when reading a data directory
    /// (a server uses the host it is reached by).
    #[arg(long, default_value = "localhost")]
    pub registry_host: String,
}

/// Runs the command.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let counter = Arc::new(AtomicU64::new(0));
    let (stream, total) = match &args.target.server {
        Some(server) => from_server(&args, server).await?,
        None => from_data_dir(&args).await?,
    };
    let progress = progress(&args, total, counter.clone());
    let result = write_out(&args.output, stream, &counter).await;
    if let Some(t) = progress {
        t.abort();
        eprint!("\r\x1b[K");
    }
    result?;
    let n = counter.load(Ordering::Relaxed);
    eprintln!(
        "exported {} to {} in {:.2} s",
        human(n),
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

type Chunks = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

fn wanted(args: &ExportArgs) -> anyhow::Result<(Vec<Wanted>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let repo = args
        .repository
        .as_deref()
        .map(RepoName::parse)
        .transpose()
        .map_err(|e| anyhow!("--repository: {e}"))?;
    if let Some(lock) = &args.lock {
        let bytes = std::fs::read(lock).with_context(|| format!("reading {}", lock.display()))?;
        return Ok((Vec::new(), Some(bytes)));
    }
    if let Some(repo) = &repo {
        let reference = match (&args.tag, &args.digest) {
            (_, Some(d)) => {
                Reference::Digest(Digest::parse(d).map_err(|e| anyhow!("--digest: {e}"))?)
            }
            (Some(t), None) => Reference::Tag(Tag::parse(t).map_err(|e| anyhow!("--tag: {e}"))?),
            (None, None) => Reference::Tag(Tag::parse("latest")?),
        };
        out.push(Wanted {
            repo: repo.clone(),
            reference,
        });
    }
    for r in &args.refs {
        let (name, reference) = match r.split_once('@') {
            Some((n, d)) => (
                n,
                Reference::Digest(Digest::parse(d).map_err(|e| anyhow!("--ref {r}: {e}"))?),
            ),
            None => match r.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (
                    n,
                    Reference::Tag(Tag::parse(t).map_err(|e| anyhow!("--ref {r}: {e}"))?),
                ),
                _ => (r.as_str(), Reference::Tag(Tag::parse("latest")?)),
            },
        };
        out.push(Wanted {
            repo: RepoName::parse(name).map_err(|e| anyhow!("--ref {r}: {e}"))?,
            reference,
        });
    }
    if out.is_empty() {
        bail!("name what to export: --repository (with --tag or --digest), --ref or --lock");
    }
    Ok((out, None))
}

async fn from_data_dir(args: &ExportArgs) -> anyhow::Result<(Chunks, Option<u64>)> {
    let (mut wanted, lock) = wanted(args)?;
    if let Some(bytes) = lock {
        let repo = args
            .repository
            .as_deref()
            .map(RepoName::parse)
            .transpose()?;
        wanted = export::wanted_from_lock(&bytes, repo.as_ref())?;
    }
    let store = crate::backend::open_store_read_only(&args.target.data_dir)
        .await
        .with_context(|| format!("opening data dir {}", args.target.data_dir.display()))?;
    let plan = export::plan(&store, &args.registry_host, &wanted, &|_| true).await?;
    let len = plan.tar_len();
    Ok((Box::pin(plan.into_stream(store)), Some(len)))
}

async fn from_server(args: &ExportArgs, server: &str) -> anyhow::Result<(Chunks, Option<u64>)> {
    let (wanted, lock) = wanted(args)?;
    let mut url = admin_url(server, EXPORT_PATH)?;
    {
        let mut q = url.query_pairs_mut();
        if lock.is_some() {
            if let Some(r) = &args.repository {
                q.append_pair("repository", r);
            }
        }
        for w in &wanted {
            let sep = if matches!(w.reference, Reference::Digest(_)) {
                "@"
            } else {
                ":"
            };
            q.append_pair("ref", &format!("{}{sep}{}", w.repo, w.reference));
        }
    }
    let client = http_client(args.target.ca_cert.as_deref())?;
    let request = match lock {
        Some(body) => client.post(url).body(body),
        None => client.get(url),
    };
    let request = match (
        &args.target.token_file,
        std::env::var("AIRDOCK_ADMIN_TOKEN"),
        &args.user,
    ) {
        (None, Err(_), Some(user)) => {
            let password = std::env::var("AIRDOCK_PASSWORD")
                .map_err(|_| anyhow!("--user needs the password in $AIRDOCK_PASSWORD"))?;
            request.basic_auth(user, Some(password))
        }
        _ => request.bearer_auth(read_token(args.target.token_file.as_deref())?),
    };
    let response = request
        .send()
        .await
        .map_err(|e| describe(&e, &format!("asking {server} for the export")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        bail!("export failed ({}): {msg}", status.as_u16());
    }
    let total = response.content_length();
    let stream = response
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other));
    Ok((Box::pin(stream), total))
}

/// Writes the stream to `path` through `<path>.part`, renamed once complete and synced, so
/// a cut transfer never leaves a plausible tar behind. `-` is stdout.
async fn write_out(path: &Path, mut stream: Chunks, counter: &AtomicU64) -> anyhow::Result<()> {
    if path == Path::new("-") {
        // No tokio `io-std` in this build; a CLI may block its own thread on a pipe.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("receiving the tar")?;
            out.write_all(&chunk).context("writing to stdout")?;
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        out.flush()?;
        return Ok(());
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let copied = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("receiving the tar")?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", part.display()))?;
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        file.sync_all().await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, path)
        .await
        .with_context(|| format!("renaming {} to {}", part.display(), path.display()))?;
    Ok(())
}

/// A progress line on stderr while it is a terminal.
fn progress(
    args: &ExportArgs,
    total: Option<u64>,
    counter: Arc<AtomicU64>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let name = args.output.display().to_string();
    Some(tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = counter.load(Ordering::Relaxed);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            let pct = total
                .filter(|&t| t > 0)
                .map(|t| format!(" ({:.0}%)", done as f64 * 100.0 / t as f64))
                .unwrap_or_default();
            eprint!(
                "\r\x1b[Kexporting to {name}: {}{pct} at {}/s",
                human(done),
                human(rate as u64)
            );
        }
    }))
}
