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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use airdock_storage::{RepoName, Store};

use crate::admin::IMPORT_PATH;
use crate::error::RegistryError;
use crate::imgpkg::import::Counting;
use crate::imgpkg::{self, ImportOptions, ImportReport};

/// Flags of `airdock import`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The tarball `imgpkg copy --to-tar` wrote (plain tar or .tar.gz); `-` reads stdin.
    pub file: PathBuf,
    /// Repository to import into (every image of the tar lands in it, as with imgpkg).
    #[arg(long, short = 'r')]
    pub repository: String,
    /// Data directory to write into directly. No server may be running on it.
    #[arg(long, env = "AIRDOCK_DATA_DIR", default_value = "./airdock-data")]
    pub data_dir: PathBuf,
    /// Stream the tar to a running airdock instead (`http://HOST:PORT`); takes precedence
    /// over --data-dir.
    #[arg(long, env = "AIRDOCK_SERVER")]
    pub server: Option<String>,
    /// File holding the admin token for --server (else $AIRDOCK_ADMIN_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Registry host (`HOST:PORT`) clients will pull from, to show the relocated
    /// images.yml when importing into a data directory.
    #[arg(long)]
    pub registry_host: Option<String>,
    /// Print the JSON report (or JSON error) on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command. Errors carry the message to print; the process then exits non-zero.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let repo = RepoName::parse(&args.repository).map_err(|e| anyhow!("--repository: {e}"))?;
    let (input, total) = open_input(&args.file).await?;
    let progress = Progress::start(&args, total);
    let result = match &args.server {
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
    let store = Store::open(&args.data_dir)
        .await
        .with_context(|| format!("opening data dir {}", args.data_dir.display()))?;
    let options = ImportOptions {
        registry_host: args.registry_host.clone(),
        ..ImportOptions::default()
    };
    let reader = Counting {
        inner: input,
        count: counter,
    };
    match imgpkg::import(&store, repo, reader, &options).await {
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
fn read_token(args: &ImportArgs) -> anyhow::Result<String> {
    let secret = match &args.token_file {
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

/// `http://host[:port][/prefix]` split into the address to dial, the Host header and the
/// path prefix. Only plain HTTP: airdock serves HTTP and the binary carries no TLS stack.
fn parse_server(url: &str) -> anyhow::Result<(String, String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("--server {url:?}: only http:// URLs are supported (for https, use curl -T)")
    })?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        bail!("--server {url:?}: expected http://HOST[:PORT]");
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()) && !p.is_empty())
        && !authority.ends_with(']');
    let dial = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((dial, authority.to_owned(), prefix.to_owned()))
}

async fn to_server(
    args: &ImportArgs,
    url: &str,
    repo: &RepoName,
    mut input: Input,
    total: Option<u64>,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let token = read_token(args)?;
    let (dial, host, prefix) = parse_server(url)?;
    let stream = TcpStream::connect(&dial)
        .await
        .with_context(|| format!("connecting to {dial}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let length_header = match total {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    let head = format!(
        "POST {prefix}{IMPORT_PATH}?repository={repo} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-tar\r\nUser-Agent: airdock-import\r\n{length_header}Connection: close\r\n\r\n",
        token
    );
    let chunked = total.is_none();
    // Send and receive concurrently: the server answers as soon as it refuses a tar, and
    // then stops reading, so a sequential client would block or lose the answer.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if chunked {
                wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            }
            wr.write_all(&buf[..n]).await?;
            if chunked {
                wr.write_all(b"\r\n").await?;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        wr.flush().await?;
        // Keep the write half open: shutting it down could be read as an aborted request.
        Ok::<_, std::io::Error>(wr)
    });
    let mut response = Vec::new();
    let read = rd.read_to_end(&mut response).await;
    let sent = writer.await;
    if response.is_empty() {
        if let Ok(Err(e)) = sent {
            bail!("sending the tar to {dial}: {e}");
        }
        read.with_context(|| format!("reading the response from {dial}"))?;
        bail!("{dial} closed the connection without a response");
    }
    let (status, body) = parse_response(&response)?;
    if status == 201 {
        Ok(Outcome::Report(body))
    } else {
        Ok(Outcome::Failed { status, body })
    }
}

/// Status and body of an HTTP/1.1 response read to connection close.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(n) = length {
        body.truncate(n);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("malformed chunked body"))?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("malformed chunk size"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

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

fn human(n: u64) -> String {
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
        "imported {} into {} in {:.2} s ({})",
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
    if let Some(yml) = r["images_yml"].as_str() {
        println!("\n.imgpkg/images.yml after `imgpkg pull` from this registry:\n{yml}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server("http://127.0.0.1:5000").expect("ok"),
            (
                "127.0.0.1:5000".into(),
                "127.0.0.1:5000".into(),
                String::new()
            )
        );
        assert_eq!(
            parse_server("http://reg.local/").expect("ok"),
            ("reg.local:80".into(), "reg.local".into(), String::new())
        );
        assert_eq!(parse_server("http://h:1/x/").expect("ok").2, "/x");
        assert!(parse_server("https://h").is_err());
        assert!(parse_server("http://").is_err());
    }

    #[test]
    fn responses() {
        let (s, b) =
            parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").expect("ok");
        assert_eq!((s, b.as_str()), (201, "{}"));
        let (s, b) = parse_response(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").expect("ok");
        assert_eq!((s, b.as_str()), (400, "abcde"));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
