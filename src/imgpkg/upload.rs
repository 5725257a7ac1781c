//! The upload as every importer (imgpkg tars, docker / OCI archives) reads it: bytes counted
//! as they arrive, gzip told from the first bytes and inflated within bounds, other
//! compressions refused; and the two steps of walking its tar that both importers share
//! (the next entry, the next full chunk of an entry), with their errors mapped once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

use super::gzip::{self, Compression, GzipDecoder, InflateLimits};
use super::import::read_err;
use super::stream::{Entry, TarReader};
use super::{ErrorKind, ImportError};

/// Counts bytes read through it into a shared counter (the report's upload size, the
/// CLI's progress line).
pub struct Counting<R> {
    pub inner: R,
    pub count: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        this.count.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

/// The first (up to) 6 bytes of `body`, enough to tell the compression; they may arrive in
/// several reads.
async fn read_prefix<R: AsyncRead + Unpin>(body: &mut R) -> Result<Vec<u8>, ImportError> {
    let mut prefix = Vec::with_capacity(6);
    while prefix.len() < 6 {
        let mut b = [0u8; 6];
        let n = body.read(&mut b[..6 - prefix.len()]).await.map_err(|e| {
            ImportError::new(
                ErrorKind::Interrupted,
                None,
                format!("reading the upload: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        prefix.extend_from_slice(&b[..n]);
    }
    Ok(prefix)
}

type Counted<R> = tokio::io::Chain<io::Cursor<Vec<u8>>, Counting<R>>;

/// The tar inside an upload: as sent, or inflated.
pub enum Upload<R> {
    Plain(Counted<R>),
    /// Boxed: the decoder's state is several times the plain stream's.
    Gzip(Box<GzipDecoder<BufReader<Counted<R>>>>),
}

/// Opens `body` as a tar stream, counting what is read of it into `received`. The bytes
/// read to tell the compression are put back in front.
pub async fn open<R: AsyncRead + Unpin>(
    body: R,
    received: Arc<AtomicU64>,
    inflate: InflateLimits,
) -> Result<Upload<R>, ImportError> {
    let mut body = Counting {
        inner: body,
        count: received,
    };
    let prefix = read_prefix(&mut body).await?;
    if prefix.is_empty() {
        return Err(ImportError::new(
            ErrorKind::Tar,
            None,
            "the upload is empty",
        ));
    }
    let compression = gzip::sniff(&prefix);
    let stream = io::Cursor::new(prefix).chain(body);
    match compression {
        Compression::None => Ok(Upload::Plain(stream)),
        Compression::Gzip => Ok(Upload::Gzip(Box::new(GzipDecoder::new(
            BufReader::with_capacity(256 << 10, stream),
            inflate,
        )))),
        other => Err(ImportError::new(
            ErrorKind::Unsupported,
            None,
            format!("the upload is {other:?}-compressed; send a plain tar or a .tar.gz"),
        )),
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Upload<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upload::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Upload::Gzip(r) => Pin::new(r.as_mut()).poll_read(cx, buf),
        }
    }
}

/// The next entry of `tar`, `None` after the end-of-archive marker. `current` is the
/// entry being read (named in a read error, then set to this one's name for messages).
pub async fn next_entry<R: AsyncRead + Unpin>(
    tar: &mut TarReader<R>,
    current: &mut Option<String>,
) -> Result<Option<Entry>, ImportError> {
    match tar.next_entry().await {
        Ok(Some(e)) => {
            *current = Some(e.display_name());
            Ok(Some(e))
        }
        Ok(None) => Ok(None),
        // Past the end-of-archive marker no entry is to blame (the bytes there are padding
        // or garbage after the last one).
        Err(e) if tar.in_trailer() => Err(read_err(None, e)),
        Err(e) => Err(read_err(current.as_deref(), e)),
    }
}

/// Fills `buf` from the current entry's data (less only at its end); 0 once it is read.
pub async fn fill<R: AsyncRead + Unpin>(
    tar: &mut TarReader<R>,
    buf: &mut [u8],
    at: &str,
) -> Result<usize, ImportError> {
    let mut filled = 0;
    while filled < buf.len() {
        match tar.data().read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                return Err(match tar.take_data_error() {
                    Some(re) => read_err(Some(at), re),
                    None => ImportError::new(
                        ErrorKind::Interrupted,
                        Some(at),
                        format!("reading the upload: {e}"),
                    ),
                })
            }
        }
    }
    Ok(filled)
}
