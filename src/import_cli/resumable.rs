//! `airdock import FILE --server URL` through a resumable upload session
//! (`/admin/v1/imports/uploads/`): the file goes in chunks; after a dropped connection, a
//! timeout or a server restart the client asks the server how much it holds (`GET`) and
//! sends the rest, so a flaky link never costs more than one chunk again. The final `PUT`
//! imports; a server-side failure there keeps the session, and the `PUT` is retried.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use airdock_storage::RepoName;

use super::{admin_url, describe, http_client, read_token, repo_url, ImportArgs, Outcome};
use crate::admin::import_uploads::UPLOADS_PATH;

/// Bytes per `PATCH`: what a drop can cost again, and the request count (a 10 GiB tar is
/// 160 requests).
const CHUNK: u64 = 64 << 20;
/// Failed attempts in a row (no byte of progress) before giving up.
const MAX_FAILURES: u32 = 10;

/// Waits before attempt `n` (1-based): 0.5 s doubling, capped at 10 s (≈ 50 s over all
/// attempts: enough for a server restart).
fn backoff(n: u32) -> Duration {
    let ms = 500u64.saturating_mul(1 << n.min(5).saturating_sub(1));
    Duration::from_millis(ms.min(10_000))
}

/// `Range: 0-<last>` → the bytes held. The spec's `0-0` also stands for an empty session;
/// [`Session::offset`] reads it as 0 (a wrong guess gets 416 and the true offset).
fn held(resp: &reqwest::Response) -> Option<u64> {
    let r = resp.headers().get(reqwest::header::RANGE)?.to_str().ok()?;
    let (_, end) = r.split_once('-')?;
    let end: u64 = end.trim().parse().ok()?;
    end.checked_add(1)
}

struct Session {
    client: reqwest::Client,
    token: String,
    url: reqwest::Url,
    server: String,
}

impl Session {
    /// How many bytes the server holds; `Ok(None)` if the session is gone.
    async fn offset(&self) -> anyhow::Result<Option<u64>> {
        let resp = self
            .client
            .get(self.url.clone())
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                describe(
                    &e,
                    &format!("asking {} for the upload's offset", self.server),
                )
            })?;
        match resp.status().as_u16() {
            204 => {
                // `0-0` is ambiguous (0 or 1 byte); 0 is safe: the PATCH then starts at 0
                // and, if the server holds 1 byte, gets 416 with the true offset.
                let h = held(&resp).unwrap_or(0);
                Ok(Some(if h == 1 { 0 } else { h }))
            }
            404 => Ok(None),
            s => bail!("asking {} for the upload's offset: status {s}", self.server),
        }
    }

    /// Sends bytes `[start, end)` of `file`.
    async fn patch(
        &self,
        file: &Path,
        start: u64,
        end: u64,
    ) -> Result<reqwest::Response, anyhow::Error> {
        let mut f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        f.seek(std::io::SeekFrom::Start(start)).await?;
        let body = tokio_util::io::ReaderStream::with_capacity(f.take(end - start), 1 << 20);
        self.client
            .patch(self.url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(
                reqwest::header::CONTENT_RANGE,
                format!("{start}-{}", end - 1),
            )
            .header(reqwest::header::CONTENT_LENGTH, end - start)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| {
                describe(
                    &e,
                    &format!("sending bytes {start}-{end} to {}", self.server),
                )
            })
    }
}

/// Uploads `file` (`total` bytes) through a session and imports it.
pub(super) async fn upload(
    args: &ImportArgs,
    server: &str,
    repo: &RepoName,
    file: &Path,
    total: u64,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let token = read_token(args.target.token_file.as_deref())?;
    let client = http_client(args.target.ca_cert.as_deref())?;
    let start_url = repo_url(server, UPLOADS_PATH, repo)?;
    // Opening the session is not retried: an unreachable or untrusted server at the start is
    // a mistake to report at once, not a flaky link (the retries begin once bytes are moving).
    let resp = client
        .post(start_url)
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| describe(&e, &format!("opening an upload session on {server}")))?;
    if resp.status().as_u16() != 202 {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        return Ok(Outcome::Failed { status, body });
    }
    let id = resp
        .headers()
        .get("docker-upload-uuid")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| airdock_storage::UploadId::parse(id).ok())
        .ok_or_else(|| {
            anyhow!("{server} opened no upload session (no valid Docker-Upload-UUID)")
        })?;
    // The session's URL under the same prefix as --server (a `Location` is server-absolute,
    // which a path-prefixing proxy would not route).
    let url = admin_url(server, &format!("{UPLOADS_PATH}{id}"))?;
    let session = Session {
        client,
        token,
        url,
        server: server.to_owned(),
    };

    let mut offset = 0u64;
    let mut failures = 0u32;
    while offset < total {
        let end = offset.saturating_add(CHUNK).min(total);
        let outcome = session.patch(file, offset, end).await;
        let last_error = match outcome {
            Ok(resp) if resp.status().as_u16() == 202 => {
                offset = held(&resp).unwrap_or(end);
                counter.store(offset, Ordering::Relaxed);
                failures = 0;
                continue;
            }
            // Not where the server stands (a chunk it rolled back): resume from its offset.
            Ok(resp) if resp.status().as_u16() == 416 => {
                format!("chunk at {offset} refused: not where the upload stands")
            }
            Ok(resp)
                if resp.status().is_client_error()
                    && resp.status().as_u16() != 408
                    && resp.status().as_u16() != 429 =>
            {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                return Ok(Outcome::Failed { status, body });
            }
            Ok(resp) => format!("status {}", resp.status()),
            Err(e) => format!("{e:#}"),
        };
        failures += 1;
        if failures >= MAX_FAILURES {
            bail!("uploading to {server}: {failures} attempts in a row failed; last: {last_error}");
        }
        tokio::time::sleep(backoff(failures)).await;
        match session.offset().await {
            Ok(Some(held)) => {
                offset = held;
                counter.store(offset, Ordering::Relaxed);
            }
            Ok(None) => bail!("the upload session on {server} is gone (expired, cancelled or its repository deleted); start again"),
            // Server still away: the next PATCH finds out where things stand (416 if not here).
            Err(_) => {}
        }
    }

    // The import itself: retried on a server-side failure or a dropped connection while the
    // session still exists.
    let mut put_url = session.url.clone();
    if let Some(name) = super::tar_file_name(file) {
        // For the import record (`GET /admin/v1/imports`), as a one-request import sends it.
        put_url.query_pairs_mut().append_pair("name", &name);
    }
    let mut failures = 0u32;
    loop {
        let sent = session
            .client
            .put(put_url.clone())
            .bearer_auth(&session.token)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await;
        let error = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp
                    .text()
                    .await
                    .map_err(|e| describe(&e, &format!("reading the answer of {server}")));
                match (status, body) {
                    (201, Ok(body)) => return Ok(Outcome::Report(body)),
                    (s, Ok(body)) if s < 500 => return Ok(Outcome::Failed { status, body }),
                    (s, Ok(_)) => format!("status {s}"),
                    (_, Err(e)) => format!("{e:#}"),
                }
            }
            Err(e) => format!("{:#}", describe(&e, &format!("importing on {server}"))),
        };
        failures += 1;
        if failures >= MAX_FAILURES {
            bail!("importing on {server}: {failures} attempts failed; last: {error}");
        }
        tokio::time::sleep(backoff(failures)).await;
        if let Ok(None) = session.offset().await {
            bail!("lost the answer to the import ({error}) and the upload session is gone: the import probably completed; see GET /admin/v1/imports on {server}");
        }
    }
}
