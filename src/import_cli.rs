//! `airdock import FILE --repository NAME`: import an `imgpkg copy --to-tar` tarball either
//! straight into a data directory (no server running on it) or by streaming it to a running
//! server's admin endpoint. Prints a summary (with a progress line on a terminal) or, with
//! `--json`, the server's JSON report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, BufReader};

use airdock_storage::RepoName;

use crate::admin::IMPORT_PATH;
use crate::error::RegistryError;
use crate::imgpkg::upload::Counting;
use crate::imgpkg::{ImportOptions, ImportReport};

/// Where `airdock import` and `airdock export` work: straight on a data directory, or
/// through a running server. One set of flags, so the two commands spell them alike.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Data directory to work on directly. An import needs it free (no server running on
    /// it); an export opens it read-only (a server may be stopped, or its disk read-only).
    #[arg(long, env = "AIRDOCK_DATA_DIR", default_value = "./airdock-data")]
    pub data_dir: PathBuf,
    /// Talk to a running airdock instead (`http://HOST:PORT` or `https://HOST:PORT`);
    /// takes precedence over --data-dir.
    #[arg(long, env = "AIRDOCK_SERVER")]
    pub server: Option<String>,
    /// PEM file of the CA(s) that signed an https --server's certificate, trusted besides
    /// the system's roots (e.g. the `ca.crt` of `airdock cert init`).
    #[arg(long, env = "AIRDOCK_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// File holding the admin token for --server (else $AIRDOCK_ADMIN_TOKEN; an export
    /// also takes --user).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Flags of `airdock import`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The tarball `imgpkg copy --to-tar` wrote (plain tar or .tar.gz); `-` reads stdin.
    pub file: PathBuf,
    /// Repository to import into (every image of the tar lands in it, as with imgpkg).
    #[arg(long, short = 'r')]
    pub repository: String,
    #[command(flatten)]
    pub target: Target,
    /// Registry host (`HOST:PORT`) clients will pull from, to show the relocated
    /// images.yml when importing into a data directory.
    #[arg(long)]
    pub registry_host: Option<String>,
    /// Print the JSON report (or JSON error) on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Read and verify the whole tar and report what the import would do (new and present
    /// blobs, tags created or moved, missing references); change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the command. Errors carry the message to print; the process then exits non-zero.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let repo = RepoName::parse(&args.repository).map_err(|e| anyhow!("--repository: {e}"))?;
    let (input, total) = open_input(&args.file).await?;
    let progress = Progress::start(&args, total);
    let result = match &args.target.server {
        // A file goes through a resumable upload session; stdin, which cannot be re-read
        // from an offset, in one request.
        Some(url) if args.file != Path::new("-") && total.is_some() => {
            drop(input);
            let size = total.unwrap_or(0);
            match resumable::upload(&args, url, &repo, &args.file, size, progress.counter()).await {
                // A server whose blobs cannot be read back unfinished (on S3) keeps no
                // import upload sessions: the file goes in one request instead.
                Ok(Outcome::Failed { status: 501, .. }) => {
                    let (input, total) = open_input(&args.file).await?;
                    to_server(&args, url, &repo, input, total, progress.counter()).await
                }
                other => other,
            }
        }
        Some(url) => to_server(&args, url, &repo, input, total, progress.counter()).await,
        None => to_data_dir(&args, &repo, input, progress.counter()).await,
    };
    progress.finish();
    match result? {
        Outcome::Report(body) => {
            if args.json {
                println!("{body}");
            } else {
                let report: serde_json::Value =
                    serde_json::from_str(&body).context("the server's report is not JSON")?;
                print_summary(&args.file, &report);
            }
            Ok(())
        }
        Outcome::Failed { status, body } => {
            if args.json {
                println!("{body}");
            }
            let msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("import failed ({status}): {msg}")
        }
    }
}

enum Outcome {
    /// The JSON report.
    Report(String),
    /// An HTTP-style status and the JSON error body.
    Failed { status: u16, body: String },
}

type Input = Box<dyn AsyncRead + Unpin + Send>;

async fn open_input(file: &Path) -> anyhow::Result<(Input, Option<u64>)> {
    if file == Path::new("-") {
        return Ok((Box::new(stdin_reader()), None));
    }
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata().await.ok().map(|m| m.len());
    Ok((Box::new(BufReader::with_capacity(1 << 20, f)), len))
}

/// Standard input as an async reader: a blocking thread reads it in chunks (the build has
/// no tokio `io-std`), and a bounded channel keeps at most a few MiB in flight.
fn stdin_reader() -> impl AsyncRead + Unpin + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; 1 << 20];
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.into())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    tokio_util::io::StreamReader::new(Box::pin(chunks))
}

async fn to_data_dir(
    args: &ImportArgs,
    repo: &RepoName,
    input: Input,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    // A dry run writes nothing: the data dir is opened read-only.
    let store = if args.dry_run {
        crate::backend::open_store_read_only(&args.target.data_dir).await
    } else {
        crate::backend::open_store(
            &args.target.data_dir,
            &crate::config::BlobBackend::Filesystem,
            None,
        )
        .await
    }
    .with_context(|| format!("opening data dir {}", args.target.data_dir.display()))?;
    let options = ImportOptions {
        registry_host: args.registry_host.clone(),
        tar_name: tar_file_name(&args.file),
        // No server, no admin principal: the record says it was written locally, by whom
        // the environment says.
        imported_by: Some(match std::env::var("USER") {
            Ok(u) if !u.is_empty() => format!("local:{u}"),
            _ => "local".to_owned(),
        }),
        dry_run: args.dry_run,
        ..ImportOptions::default()
    };
    let reader = Counting {
        inner: input,
        count: counter,
    };
    match crate::archive::import(&store, repo, reader, &options).await {
        Ok(report) => Ok(Outcome::Report(report_json(&report))),
        // The same status and body the server would answer with.
        Err(error) => {
            let (status, body) = RegistryError::Import {
                repository: repo.clone(),
                error,
            }
            .status_and_body();
            Ok(Outcome::Failed {
                status: status.as_u16(),
                body,
            })
        }
    }
}

fn report_json(report: &ImportReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".to_owned())
}

/// The admin token to send: the file's text or the variable's value without surrounding
/// whitespace (the server reads its token file the same way).
pub(crate) fn read_token(token_file: Option<&Path>) -> anyhow::Result<String> {
    let secret = match token_file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => std::env::var("AIRDOCK_ADMIN_TOKEN").map_err(|_| {
            anyhow!("--server needs the admin token: pass --token-file or set AIRDOCK_ADMIN_TOKEN")
        })?,
    };
    let secret = secret.trim();
    if secret.is_empty() {
        bail!("the admin token is empty");
    }
    Ok(secret.to_owned())
}

/// The tar's file name for the import record (none for stdin).
fn tar_file_name(file: &Path) -> Option<String> {
    if file == Path::new("-") {
        return None;
    }
    file.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// `http[s]://host[:port][/prefix]` and the repository → the import endpoint's URL.
fn import_url(server: &str, repo: &RepoName) -> anyhow::Result<reqwest::Url> {
    repo_url(server, IMPORT_PATH, repo)
}

/// `http[s]://host[:port][/prefix]` + an admin path + `?repository=`.
pub(crate) fn repo_url(
    server: &str,
    admin_path: &str,
    repo: &RepoName,
) -> anyhow::Result<reqwest::Url> {
    let mut url = admin_url(server, admin_path)?;
    // Repository names are `[a-z0-9._/-]` only: nothing to escape.
    url.set_query(Some(&format!("repository={repo}")));
    Ok(url)
}

/// `http[s]://host[:port][/prefix]` and an admin path → that endpoint's URL (no query).
pub(crate) fn admin_url(server: &str, admin_path: &str) -> anyhow::Result<reqwest::Url> {
    let expected = "expected http[s]://HOST[:PORT][/PREFIX]";
    let mut url = reqwest::Url::parse(server).map_err(|e| anyhow!("--server {server:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        bail!("--server {server:?}: {expected}");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("--server {server:?}: no credentials in the URL; pass --token-file");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--server {server:?}: {expected}");
    }
    let path = format!("{}{admin_path}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// The HTTP client: HTTP/1.1 over TCP or TLS (rustls), trusting the system's roots and, with
/// `--ca-cert`, the CAs of that PEM file (e.g. the `ca.crt` of `airdock cert init`).
pub(crate) fn http_client(ca_cert: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("airdock-import/", env!("CARGO_PKG_VERSION")))
        // Bounds on a dead network or peer; none on the whole exchange, which lasts as long
        // as the tar takes to send and import.
        .connect_timeout(Duration::from_secs(30))
        .tcp_keepalive(Duration::from_secs(30));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-cert {}: not a PEM certificate", path.display()))?;
        if certs.is_empty() {
            bail!("--ca-cert {}: no certificate in the file", path.display());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("setting up the HTTP client")
}

/// A failed exchange as one line: what was being done and the chain of causes (reqwest's
/// own message repeats the URL and hides the cause), with what to do when the server's
/// certificate was not trusted.
pub(crate) fn describe(e: &reqwest::Error, doing: &str) -> anyhow::Error {
    let mut msg = doing.to_owned();
    let mut cause = std::error::Error::source(e);
    if cause.is_none() {
        msg.push_str(&format!(": {e}"));
    }
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    if msg.contains("certificate") {
        msg.push_str(
            "\n(the server's certificate is not trusted: pass --ca-cert with the CA that signed \
             it, e.g. the ca.crt of `airdock cert init`)",
        );
    }
    anyhow!(msg)
}

async fn to_server(
    args: &ImportArgs,
    server: &str,
    repo: &RepoName,
    input: Input,
    total: Option<u64>,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let token = read_token(args.target.token_file.as_deref())?;
    let mut url = import_url(server, repo)?;
    if let Some(name) = tar_file_name(&args.file) {
        // For the import record (`GET /admin/v1/imports`).
        url.query_pairs_mut().append_pair("name", &name);
    }
    if args.dry_run {
        url.query_pairs_mut().append_pair("dry_run", "true");
    }
    let client = http_client(args.target.ca_cert.as_deref())?;
    // Streamed in 1 MiB reads; the progress line counts what was handed to the connection.
    let chunks = tokio_util::io::ReaderStream::with_capacity(input, 1 << 20).inspect(move |c| {
        if let Ok(c) = c {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
    });
    let mut request = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar");
    // A known length is sent as such (the server can refuse an oversized tar at once);
    // stdin goes chunked.
    if let Some(n) = total {
        request = request.header(reqwest::header::CONTENT_LENGTH, n);
    }
    // The server answers as soon as it refuses a tar, while the rest is still on its way;
    // hyper hands that answer over rather than the error of the unfinished upload.
    let response = request
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .map_err(|e| describe(&e, &format!("sending the tar to {server}")))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| describe(&e, &format!("reading the answer of {server}")))?;
    if status == 201 || (args.dry_run && status == 200) {
        Ok(Outcome::Report(body))
    } else {
        Ok(Outcome::Failed { status, body })
    }
}

mod resumable;

/// A progress line on stderr, only when it is a terminal.
struct Progress {
    counter: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(args: &ImportArgs, total: Option<u64>) -> Progress {
        let counter = Arc::new(AtomicU64::new(0));
        let task = (std::io::stderr().is_terminal() && !args.json).then(|| {
            let c = counter.clone();
            let name = args.file.display().to_string();
            tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let done = c.load(Ordering::Relaxed);
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                    let pct = total
                        .filter(|&t| t > 0)
                        .map(|t| format!(" ({:.0}%)", done as f64 * 100.0 / t as f64))
                        .unwrap_or_default();
                    eprint!(
                        "\r\x1b[Kimporting {name}: {}{pct} at {}/s",
                        human(done),
                        human(rate as u64)
                    );
                }
            })
        });
        Progress { counter, task }
    }

    fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
}

pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_summary(file: &Path, r: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "{} {} into {} in {:.2} s ({})",
        if r["dry_run"].is_object() {
            "checked"
        } else {
            "imported"
        },
        file.display(),
        s(&r["repository"]),
        r["seconds"].as_f64().unwrap_or(0.0),
        human(n(&r["tar_bytes"]))
    );
    if let Some(root) = r["root_bundle"].as_object() {
        println!(
            "root bundle: {} (tag {})",
            root.get("digest").map(s).unwrap_or_default(),
            root.get("tag").and_then(|t| t.as_str()).unwrap_or("-")
        );
    }
    for img in r["images"].as_array().into_iter().flatten() {
        let tags: Vec<String> = img["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        if tags.is_empty() {
            continue;
        }
        let origin = img["original_ref"].as_str().unwrap_or("(generated)");
        println!(
            "  {:<15} {}  {}\n                  tags: {}",
            s(&img["kind"]),
            s(&img["digest"]),
            origin,
            tags.join(", ")
        );
    }
    let b = &r["blobs"];
    println!(
        "blobs: {} new ({}), {} already present{}",
        n(&b["new"]),
        human(n(&b["new_bytes"])),
        n(&b["present"]),
        match n(&b["skipped_non_distributable"]) {
            0 => String::new(),
            k => format!(", {k} non-distributable left out"),
        }
    );
    if let Some(dry) = r["dry_run"].as_object() {
        println!("dry run: nothing was changed");
        for t in dry
            .get("tags")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            // Only a move says where from (an unchanged tag is already where it would go).
            let from = t["from"]
                .as_str()
                .filter(|_| t["change"] == "move")
                .map(|f| format!(" (from {f})"))
                .unwrap_or_default();
            println!(
                "  tag {} would {}: {}{from}",
                s(&t["tag"]),
                match t["change"].as_str() {
                    Some("create") => "be created",
                    Some("move") => "move",
                    _ => "stay",
                },
                s(&t["digest"])
            );
        }
        for m in dry
            .get("missing")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            println!("  missing: {}: {}", s(&m["entry"]), s(&m["message"]));
        }
    }
    if let Some(yml) = r["images_yml"].as_str() {
        println!("\n.imgpkg/images.yml after `imgpkg pull` from this registry:\n{yml}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let repo = RepoName::parse("lib/app").expect("name");
        let url = |s: &str| import_url(s, &repo).map(String::from);
        assert_eq!(
            url("http://127.0.0.1:5000").expect("ok"),
            "http://127.0.0.1:5000/admin/v1/import?repository=lib/app"
        );
        assert_eq!(
            url("https://reg.local/").expect("ok"),
            "https://reg.local/admin/v1/import?repository=lib/app"
        );
        assert_eq!(
            url("https://[::1]:8443/x/").expect("ok"),
            "https://[::1]:8443/x/admin/v1/import?repository=lib/app"
        );
        for bad in [
            "ftp://h",
            "http://",
            "h:5000",
            "https://u:p@h",
            "http://h/?a=b",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
