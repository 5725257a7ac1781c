//! gzip for the import: an async streaming decoder with a decompression-ratio guard, format
//! sniffing, and a deterministic "stored" gzip writer for the ImageLocations layer.
//!
//! The decoder drives `flate2`'s raw inflate state machine from `poll_read` so an upload can
//! be a `.tar.gz` without a blocking thread or an extra crate; we parse the gzip framing
//! (RFC 1952) ourselves and check CRC-32 and length of every member.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use flate2::{Crc, Decompress, FlushDecompress, Status};
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

enum State {
    Header,
    Body,
    Trailer,
    /// After a member: either EOF, another member or zero padding.
    Between,
    /// Zero bytes after the last member, up to EOF (`dd` of a `.tar.gz` from a raw device).
    ZeroPad,
    Done,
}

/// Streams the decompressed bytes of a (possibly multi-member) gzip stream.
pub struct GzipDecoder<R> {
    inner: R,
    state: State,
    header: Vec<u8>,
    trailer: Vec<u8>,
    inflate: Decompress,
    crc: Crc,
    limits: InflateLimits,
    total_in: u64,
    total_out: u64,
}

impl<R: AsyncBufRead + Unpin> GzipDecoder<R> {
    pub fn new(inner: R, limits: InflateLimits) -> Self {
        GzipDecoder {
            inner,
            state: State::Header,
            header: Vec::new(),
            trailer: Vec::new(),
            inflate: Decompress::new(false),
            crc: Crc::new(),
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

/// Length of a complete gzip member header at the start of `h`, `None` if more bytes are
/// needed, or an error.
fn header_len(h: &[u8]) -> io::Result<Option<usize>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if h.len() < 10 {
        if h.len() >= 2 && h[..2] != [0x1f, 0x8b] {
            return Err(invalid("bad magic"));
        }
        return Ok(None);
    }
    if h[..2] != [0x1f, 0x8b] {
        return Err(invalid("bad magic"));
    }
    if h[2] != 8 {
        return Err(invalid("unsupported compression method"));
    }
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err(invalid("reserved header flags set"));
    }
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = h.get(pos..pos + 2) else {
            return Ok(None);
        };
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
        if h.len() < pos {
            return Ok(None);
        }
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match h[pos.min(h.len())..].iter().position(|&c| c == 0) {
                Some(nul) => pos += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
        if h.len() < pos {
            return Ok(None);
        }
    }
    Ok(Some(pos))
}

/// Most output produced per `poll_read` call.
const OUT_WINDOW: usize = 128 << 10;

/// Longest gzip header we accept (file names and comments are attacker-sized).
const MAX_HEADER: usize = 64 << 10;

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
            match this.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Header => {
                    // Byte-at-a-time is fine: headers are a few bytes and rare.
                    let avail = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
                    if avail.is_empty() {
                        return Poll::Ready(Err(truncated()));
                    }
                    let take = avail.len().min(MAX_HEADER + 1 - this.header.len());
                    this.header.extend_from_slice(&avail[..take]);
                    match header_len(&this.header)? {
                        Some(n) => {
                            // Consume only the header's share of this chunk; the rest
                            // is deflate data for the Body state.
                            let before = this.header.len() - take;
                            let used = n - before;
                            Pin::new(&mut this.inner).consume(used);
                            this.total_in += used as u64;
                            this.header.clear();
                            this.state = State::Body;
                        }
                        None => {
                            if this.header.len() > MAX_HEADER {
                                return Poll::Ready(Err(invalid("header too long")));
                            }
                            Pin::new(&mut this.inner).consume(take);
                            this.total_in += take as u64;
                        }
                    }
                }
                State::Body => {
                    let input = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
                    let eof = input.is_empty();
                    let before_in = this.inflate.total_in();
                    let before_out = this.inflate.total_out();
                    // Initialise (zero) only a bounded window per call: callers often hand
                    // in large fresh buffers, and zeroing all of each would dominate.
                    let out = buf.initialize_unfilled_to(buf.remaining().min(OUT_WINDOW));
                    let status = this
                        .inflate
                        .decompress(input, out, FlushDecompress::None)
                        .map_err(|e| invalid(&e.to_string()))?;
                    let used = usize::try_from(this.inflate.total_in() - before_in)
                        .map_err(|_| invalid("counter overflow"))?;
                    let produced = usize::try_from(this.inflate.total_out() - before_out)
                        .map_err(|_| invalid("counter overflow"))?;
                    Pin::new(&mut this.inner).consume(used);
                    this.total_in += used as u64;
                    this.total_out += produced as u64;
                    // Checked before handing the bytes out: a reader must not both fill the
                    // buffer and fail.
                    this.check_limits()?;
                    this.crc.update(&out[..produced]);
                    buf.advance(produced);
                    if status == Status::StreamEnd {
                        this.state = State::Trailer;
                        if produced > 0 {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    if produced > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    if eof {
                        return Poll::Ready(Err(truncated()));
                    }
                    if used == 0 {
                        // No progress with input available and room for output: corrupt.
                        return Poll::Ready(Err(invalid("inflate made no progress")));
                    }
                }
                State::Trailer => {
                    let avail = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
                    if avail.is_empty() {
                        return Poll::Ready(Err(truncated()));
                    }
                    let take = avail.len().min(8 - this.trailer.len());
                    this.trailer.extend_from_slice(&avail[..take]);
                    Pin::new(&mut this.inner).consume(take);
                    this.total_in += take as u64;
                    if this.trailer.len() == 8 {
                        let t = &this.trailer;
                        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                        if crc != this.crc.sum() {
                            return Poll::Ready(Err(invalid("CRC mismatch")));
                        }
                        // ISIZE is the member length modulo 2^32.
                        if isize != this.crc.amount() {
                            return Poll::Ready(Err(invalid("length mismatch")));
                        }
                        this.trailer.clear();
                        this.state = State::Between;
                    }
                }
                State::Between => {
                    let avail = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
                    if avail.is_empty() {
                        this.state = State::Done;
                    } else if avail[0] == 0x1f {
                        // Concatenated members are one stream (RFC 1952 §2.2).
                        this.inflate.reset(false);
                        this.crc.reset();
                        this.state = State::Header;
                    } else if avail[0] == 0 {
                        // RFC 1952 defines no padding, but GNU gzip accepts (and warns
                        // about) trailing zeros, and a medium padded to its block size
                        // adds nothing else; a NUL cannot start a member, so it is
                        // unambiguous. Anything else stays an error.
                        this.state = State::ZeroPad;
                    } else {
                        return Poll::Ready(Err(invalid(&format!(
                            "byte 0x{:02x} at compressed offset {} after the end of the gzip \
                             stream: only another gzip member or zero padding may follow",
                            avail[0], this.total_in
                        ))));
                    }
                }
                State::ZeroPad => {
                    let avail = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
                    if avail.is_empty() {
                        this.state = State::Done;
                    } else if let Some(i) = avail.iter().position(|&c| c != 0) {
                        return Poll::Ready(Err(invalid(&format!(
                            "byte 0x{:02x} at compressed offset {} in the zero padding after \
                             the gzip stream: only zero bytes may follow it",
                            avail[i],
                            this.total_in + i as u64
                        ))));
                    } else {
                        let n = avail.len();
                        Pin::new(&mut this.inner).consume(n);
                        this.total_in += n as u64;
                    }
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
