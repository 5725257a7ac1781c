//! gzip for the import: an async streaming decoder with a decompression-ratio guard, format
//! sniffing, and a deterministic "stored" gzip writer for the ImageLocations layer.
//!
//! The gzip framing (RFC 1952 headers, concatenated members, CRC-32 and length trailers) is
//! flate2's `bufread::MultiGzDecoder`, driven from `poll_read` without a blocking thread: it
//! reads through [`Input`], which answers `WouldBlock` while the async body has nothing
//! buffered, and flate2 keeps its place (header, body or trailer) across that. What is ours
//! is the bound (output is checked against the input consumed before it is handed out) and
//! what may follow a member: another member, zero padding, or nothing.

use std::io::{self, BufRead, Read};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use flate2::bufread::GzDecoder as Member;
use flate2::Crc;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// What the first bytes of an upload say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

/// Recognises compressed formats by their magic numbers; anything else is taken as tar.
pub fn sniff(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if prefix.starts_with(b"BZh") {
        Compression::Bzip2
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else {
        Compression::None
    }
}

/// Bounds on how much a gzip stream may expand.
#[derive(Clone, Copy, Debug)]
pub struct InflateLimits {
    /// Output allowed regardless of ratio (small archives of text compress very well).
    pub free_bytes: u64,
    /// Past `free_bytes`, output may be at most this many times the input consumed.
    pub max_ratio: u64,
    /// Hard cap on total output, if any.
    pub max_output: Option<u64>,
}

impl Default for InflateLimits {
    fn default() -> Self {
        // Container layers are already compressed, so an imgpkg tar barely shrinks under
        // gzip; 100:1 past the first 64 MiB only stops streams of nothing (gzip bombs).
        InflateLimits {
            free_bytes: 64 << 20,
            max_ratio: 100,
            max_output: None,
        }
    }
}

/// Marker placed inside the `io::Error` when a limit trips, so callers can tell a bomb
/// (client error, 413) from a broken stream.
#[derive(Debug, thiserror::Error)]
#[error("decompressed size exceeds the limit ({out} bytes from {input} compressed bytes)")]
pub struct InflateLimitExceeded {
    pub out: u64,
    pub input: u64,
}

/// The async input seen as a `BufRead` for flate2, during one `poll_read`.
struct Input<R> {
    inner: R,
    /// The waker of the `poll_read` in progress; `None` outside one (flate2's constructor
    /// then sees `WouldBlock` and starts reading at the first `poll_read`).
    waker: Option<Waker>,
    /// The inner reader returned `Pending` (so `WouldBlock` means "wait", not an error).
    pending: bool,
    /// Compressed bytes consumed.
    consumed: u64,
}

impl<R: AsyncBufRead + Unpin> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: AsyncBufRead + Unpin> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let Some(waker) = &self.waker else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut cx = Context::from_waker(waker);
        match Pin::new(&mut self.inner).poll_fill_buf(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => {
                self.pending = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.consumed += n as u64;
        Pin::new(&mut self.inner).consume(n);
    }
}

/// Where the decoder is in the stream.
enum Stage<R> {
    /// Inside a member: flate2 parses its header, inflates it and checks its trailer.
    Member(Member<Input<R>>),
    /// After a member: either EOF, another member or zero padding.
    Between(Input<R>),
    /// Zero bytes after the last member, up to EOF (`dd` of a `.tar.gz` from a raw device).
    ZeroPad(Input<R>),
    Done(Input<R>),
}

/// Streams the decompressed bytes of a (possibly multi-member) gzip stream.
pub struct GzipDecoder<R> {
    /// `None` only while moving from one stage to the next inside `poll_read`.
    stage: Option<Stage<R>>,
    limits: InflateLimits,
    total_in: u64,
    total_out: u64,
}

impl<R: AsyncBufRead + Unpin> GzipDecoder<R> {
    pub fn new(inner: R, limits: InflateLimits) -> Self {
        let input = Input {
            inner,
            waker: None,
            pending: false,
            consumed: 0,
        };
        GzipDecoder {
            stage: Some(Stage::Member(Member::new(input))),
            limits,
            total_in: 0,
            total_out: 0,
        }
    }

    /// Compressed bytes consumed so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.total_in
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip: {msg}"))
}

/// flate2 reports bad streams as `InvalidInput`; callers expect `InvalidData` for a corrupt
/// upload and `UnexpectedEof` for a truncated one.
fn member_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return truncated();
    }
    invalid(&e.to_string())
}

/// Most output produced per `poll_read` call.
const OUT_WINDOW: usize = 128 << 10;

impl<R: AsyncBufRead + Unpin> AsyncRead for GzipDecoder<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let Some(stage) = this.stage.take() else {
                return Poll::Ready(Err(invalid("read after an error")));
            };
            match stage {
                Stage::Member(mut member) => {
                    let input = member.get_mut();
                    input.waker = Some(cx.waker().clone());
                    input.pending = false;
                    // Initialise (zero) only a bounded window per call: callers often hand
                    // in large fresh buffers, and zeroing all of each would dominate.
                    let out = buf.initialize_unfilled_to(buf.remaining().min(OUT_WINDOW));
                    let result = member.read(out);
                    let input = member.get_mut();
                    input.waker = None;
                    let pending = input.pending;
                    this.total_in = input.consumed;
                    let n = match result {
                        Ok(0) => {
                            // flate2 has checked the trailer; it reads nothing past it.
                            this.stage = Some(Stage::Between(member.into_inner()));
                            continue;
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && pending => {
                            this.stage = Some(Stage::Member(member));
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(Err(member_error(e))),
                    };
                    this.stage = Some(Stage::Member(member));
                    this.total_out += n as u64;
                    // Checked before handing the bytes out: a reader must not both fill the
                    // buffer and fail.
                    this.check_limits()?;
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Stage::Between(mut input) => {
                    let first = match Pin::new(&mut input.inner).poll_fill_buf(cx) {
                        Poll::Pending => {
                            this.stage = Some(Stage::Between(input));
                            return Poll::Pending;
                        }
                        Poll::Ready(r) => r?.first().copied(),
                    };
                    this.stage = Some(match first {
                        None => Stage::Done(input),
                        // Concatenated members are one stream (RFC 1952 §2.2).
                        Some(0x1f) => Stage::Member(Member::new(input)),
                        // RFC 1952 defines no padding, but GNU gzip accepts (and warns
                        // about) trailing zeros, and a medium padded to its block size adds
                        // nothing else; a NUL cannot start a member, so it is unambiguous.
                        // Anything else stays an error.
                        Some(0) => Stage::ZeroPad(input),
                        Some(b) => {
                            return Poll::Ready(Err(invalid(&format!(
                                "byte 0x{b:02x} at compressed offset {} after the end of the gzip \
                                 stream: only another gzip member or zero padding may follow",
                                input.consumed
                            ))))
                        }
                    });
                }
                Stage::ZeroPad(mut input) => {
                    let avail = match Pin::new(&mut input.inner).poll_fill_buf(cx) {
                        Poll::Pending => {
                            this.stage = Some(Stage::ZeroPad(input));
                            return Poll::Pending;
                        }
                        Poll::Ready(r) => r?,
                    };
                    if avail.is_empty() {
                        this.stage = Some(Stage::Done(input));
                    } else if let Some(i) = avail.iter().position(|&c| c != 0) {
                        return Poll::Ready(Err(invalid(&format!(
                            "byte 0x{:02x} at compressed offset {} in the zero padding after \
                             the gzip stream: only zero bytes may follow it",
                            avail[i],
                            input.consumed + i as u64
                        ))));
                    } else {
                        let n = avail.len();
                        input.consume(n);
                        this.total_in = input.consumed;
                        this.stage = Some(Stage::ZeroPad(input));
                    }
                }
                Stage::Done(input) => {
                    this.stage = Some(Stage::Done(input));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<R> GzipDecoder<R> {
    fn check_limits(&self) -> io::Result<()> {
        let l = &self.limits;
        let over_ratio = self.total_out > l.free_bytes
            && self.total_out > self.total_in.saturating_mul(l.max_ratio);
        let over_cap = l.max_output.is_some_and(|m| self.total_out > m);
        if over_ratio || over_cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                InflateLimitExceeded {
                    out: self.total_out,
                    input: self.total_in,
                },
            ));
        }
        Ok(())
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "gzip: stream truncated")
}

/// gzip-wraps `data` using only stored (uncompressed) deflate blocks.
///
/// The ImageLocations layer is a couple of KiB; what matters is that its bytes, and so its
/// digest, never change between airdock builds (a changed digest would leave a stale
/// `sha256-<old>.imgpkg` tag behind on re-import). Stored blocks are fully specified by
/// RFC 1951, unlike any compressor's output. The header mimics Go's (no name, mtime 0,
/// OS "unknown").
pub fn stored_gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        // Each chunk is at most 0xffff bytes, so the cast cannot truncate.
        let len = chunk.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, BufReader};

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    async fn inflate(bytes: &[u8], limits: InflateLimits) -> io::Result<Vec<u8>> {
        // A 7-byte buffer exercises every state across read boundaries.
        let mut d = GzipDecoder::new(BufReader::with_capacity(7, bytes), limits);
        let mut out = Vec::new();
        d.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn round_trips_and_multi_member() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            inflate(&gz(&data), InflateLimits::default())
                .await
                .expect("ok"),
            data
        );
        let mut two = gz(b"hello ");
        two.extend(gz(b"world"));
        assert_eq!(
            inflate(&two, InflateLimits::default()).await.expect("ok"),
            b"hello world"
        );
        assert_eq!(
            inflate(&stored_gzip(&data), InflateLimits::default())
                .await
                .expect("ok"),
            data
        );
        assert_eq!(
            inflate(&stored_gzip(b""), InflateLimits::default())
                .await
                .expect("ok"),
            b""
        );
    }

    #[tokio::test]
    async fn stored_gzip_is_valid_for_flate2_too() {
        let data = vec![7u8; 200_000];
        let gz = stored_gzip(&data);
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).expect("valid gzip");
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn rejects_truncation_and_corruption() {
        let g = gz(b"some data that is long enough to matter, some data that is long");
        for cut in 0..g.len() {
            if cut < 2 {
                continue;
            }
            assert!(
                inflate(&g[..cut], InflateLimits::default()).await.is_err(),
                "cut {cut}"
            );
        }
        let mut bad = g.clone();
        let n = bad.len();
        bad[n - 6] ^= 1; // CRC byte
        assert!(inflate(&bad, InflateLimits::default()).await.is_err());
        let mut trailing = g.clone();
        trailing.extend_from_slice(b"junk");
        assert!(inflate(&trailing, InflateLimits::default()).await.is_err());
    }

    /// The hand-written header parser skipped FHCRC; flate2 checks it.
    #[tokio::test]
    async fn rejects_a_wrong_header_crc() {
        let body = &gz(b"data")[10..];
        let mut good = vec![0x1f, 0x8b, 8, 2, 0, 0, 0, 0, 0, 0xff];
        let mut crc = Crc::new();
        crc.update(&good);
        // FHCRC is the low 16 bits of the CRC-32 of the header bytes before it.
        good.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        let mut bad = good.clone();
        bad[10] ^= 0xff;
        good.extend_from_slice(body);
        bad.extend_from_slice(body);
        assert_eq!(
            inflate(&good, InflateLimits::default())
                .await
                .expect("valid"),
            b"data"
        );
        let err = inflate(&bad, InflateLimits::default())
            .await
            .expect_err("bad");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn zero_padding_after_the_last_member_is_valid_other_bytes_not() {
        let g = gz(b"payload");
        let mut padded = g.clone();
        padded.resize(g.len() + (1 << 20) + 3, 0);
        assert_eq!(
            inflate(&padded, InflateLimits::default())
                .await
                .expect("ok"),
            b"payload"
        );
        padded.push(b'x');
        let err = inflate(&padded, InflateLimits::default())
            .await
            .expect_err("garbage after the padding");
        let at = format!("compressed offset {}", padded.len() - 1);
        assert!(
            err.to_string().contains("0x78") && err.to_string().contains(&at),
            "{err}"
        );
        let mut garbage = g.clone();
        garbage.push(7);
        let err = inflate(&garbage, InflateLimits::default())
            .await
            .expect_err("garbage");
        let at = format!("compressed offset {}", g.len());
        assert!(
            err.to_string().contains("0x07") && err.to_string().contains(&at),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stops_bombs() {
        let bomb = gz(&vec![0u8; 50 << 20]);
        let limits = InflateLimits {
            free_bytes: 1 << 20,
            max_ratio: 100,
            max_output: None,
        };
        let err = inflate(&bomb, limits).await.expect_err("bomb");
        assert!(
            err.get_ref()
                .is_some_and(|e| e.is::<InflateLimitExceeded>()),
            "{err}"
        );
    }

    #[test]
    fn sniffs() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(b"manifest.json"), Compression::None);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"BZh9"), Compression::Bzip2);
    }
}
