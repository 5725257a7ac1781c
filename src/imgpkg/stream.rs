//! A streaming tar reader over `AsyncRead`: yields entry headers one by one and lends out
//! each entry's data as an `AsyncRead`, so blobs flow from the HTTP body into the store
//! without the archive (or any blob) ever being held in memory or spooled to disk.
//!
//! It is deliberately policy-free (it reports links, devices, directories as they are);
//! the import decides what is acceptable. It is strict about structure: a stream that ends
//! anywhere before the two-block end-of-archive marker is an error, which is what lets the
//! import reject a tar truncated at any byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::names::truncate;
use super::tarfmt::{self, Block, Kind, PaxOverrides, TarError, BLOCK, MAX_META_ENTRY};

/// An entry header, with PAX / GNU long-name overrides applied.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub link_name: Vec<u8>,
    pub kind: Kind,
    /// Data bytes that follow the header.
    pub size: u64,
    /// Byte offset of the entry's (first) header in the tar stream.
    pub offset: u64,
}

impl Entry {
    /// The name for messages: lossy UTF-8, shortened.
    pub fn display_name(&self) -> String {
        truncate(&String::from_utf8_lossy(&self.name), 200)
    }
}

/// What went wrong while reading the archive structure.
#[derive(Debug, thiserror::Error)]
pub enum ReadErrorKind {
    #[error("archive truncated: {0}")]
    Truncated(&'static str),
    #[error(transparent)]
    Format(#[from] TarError),
    #[error("{0} of {1} bytes exceeds the {MAX_META_ENTRY}-byte limit")]
    MetaTooLarge(Kind, u64),
    #[error("corrupt end-of-archive marker (a zero block followed by data)")]
    BadEndMarker,
    /// Only zero padding may follow the end-of-archive marker (tar pads to its record size,
    /// `dd` from a raw device to the device's end); anything else is not part of the tar.
    #[error(
        "non-zero byte 0x{byte:02x} {after} bytes after the end-of-archive marker (which \
         ends at tar offset {marker_end}); only zero padding may follow the marker"
    )]
    TrailingData {
        byte: u8,
        at: u64,
        after: u64,
        marker_end: u64,
    },
    #[error("{0} without a following entry")]
    DanglingMeta(Kind),
    /// The underlying stream failed (client disconnect, gzip error, size limit...).
    #[error("{0}")]
    Source(io::Error),
}

/// A read error and where in the tar stream it happened.
#[derive(Debug, thiserror::Error)]
#[error("{kind} (at tar offset {offset})")]
pub struct ReadError {
    pub offset: u64,
    pub kind: ReadErrorKind,
}

/// Streaming reader; see the module docs.
pub struct TarReader<R> {
    inner: R,
    offset: u64,
    remaining: u64,
    pad: u64,
    /// The first error met while an entry's data was being read through [`EntryData`];
    /// kept so the caller can tell "the tar broke" from "the consumer failed".
    data_error: Option<ReadError>,
    /// The first block of the end-of-archive marker has been read: every entry is behind us.
    in_trailer: bool,
    ended: bool,
}

impl<R: AsyncRead + Unpin> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            offset: 0,
            remaining: 0,
            pad: 0,
            data_error: None,
            in_trailer: false,
            ended: false,
        }
    }

    /// Bytes of tar stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Data bytes of the current entry not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether reading has reached the end-of-archive marker, so that an error from here on
    /// concerns what follows the entries, not the last entry read.
    pub fn in_trailer(&self) -> bool {
        self.in_trailer
    }

    /// The error recorded while entry data was being read, if any.
    pub fn take_data_error(&mut self) -> Option<ReadError> {
        self.data_error.take()
    }

    /// Gives back the underlying reader (for example to drain a gzip trailer).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn err(&self, kind: ReadErrorKind) -> ReadError {
        ReadError {
            offset: self.offset,
            kind,
        }
    }

    /// Reads one block; `Ok(None)` on a clean EOF at a block boundary.
    async fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, ReadError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self
                .inner
                .read(&mut block[filled..])
                .await
                .map_err(|e| self.err(ReadErrorKind::Source(e)))?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(self.err(ReadErrorKind::Truncated("partial header block")));
            }
            filled += n;
            self.offset += n as u64;
        }
        Ok(Some(block))
    }

    async fn skip(&mut self, mut n: u64, what: &'static str) -> Result<(), ReadError> {
        let mut buf = vec![0u8; n.min(64 << 10) as usize];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self
                .inner
                .read(&mut buf[..want])
                .await
                .map_err(|e| self.err(ReadErrorKind::Source(e)))?;
            if got == 0 {
                return Err(self.err(ReadErrorKind::Truncated(what)));
            }
            n -= got as u64;
            self.offset += got as u64;
        }
        Ok(())
    }

    async fn read_exact_vec(&mut self, len: u64) -> Result<Vec<u8>, ReadError> {
        let mut v = vec![0u8; len as usize];
        let mut filled = 0;
        while filled < v.len() {
            let n = self
                .inner
                .read(&mut v[filled..])
                .await
                .map_err(|e| self.err(ReadErrorKind::Source(e)))?;
            if n == 0 {
                return Err(self.err(ReadErrorKind::Truncated("entry data cut short")));
            }
            filled += n;
            self.offset += n as u64;
        }
        Ok(v)
    }

    /// Advances to the next entry, skipping whatever is left of the current one.
    /// `Ok(None)` once the end-of-archive marker (and any zero padding) has been read.
    pub async fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        if self.ended {
            return Ok(None);
        }
        // Two skips, not one sum: a size near 2^64 (base-256 or PAX) plus its padding
        // would overflow.
        let (rest, pad) = (self.remaining, self.pad);
        self.remaining = 0;
        self.pad = 0;
        self.skip(rest, "entry data cut short").await?;
        self.skip(pad, "entry padding cut short").await?;

        let mut pax = PaxOverrides::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pending_meta: Option<Kind> = None;
        loop {
            let header_offset = self.offset;
            let Some(block) = self.read_block().await? else {
                return Err(self.err(ReadErrorKind::Truncated("no end-of-archive marker")));
            };
            let header = match tarfmt::parse_block(&block) {
                Ok(Block::Zero) => {
                    if let Some(kind) = pending_meta {
                        return Err(self.err(ReadErrorKind::DanglingMeta(kind)));
                    }
                    self.in_trailer = true;
                    self.finish_after_zero_block().await?;
                    return Ok(None);
                }
                Ok(Block::Header(h)) => h,
                Err(e) => {
                    return Err(ReadError {
                        offset: header_offset,
                        kind: e.into(),
                    })
                }
            };
            match header.kind {
                Kind::PaxLocal | Kind::GnuLongName | Kind::GnuLongLink => {
                    if header.size > MAX_META_ENTRY {
                        return Err(self.err(ReadErrorKind::MetaTooLarge(header.kind, header.size)));
                    }
                    let data = self.read_exact_vec(header.size).await?;
                    self.skip(tarfmt::padding(header.size), "entry padding cut short")
                        .await?;
                    match header.kind {
                        Kind::PaxLocal => {
                            pax = tarfmt::parse_pax(&data).map_err(|e| ReadError {
                                offset: header_offset,
                                kind: e.into(),
                            })?;
                        }
                        Kind::GnuLongName => long_name = Some(tarfmt::gnu_long_name(&data)),
                        _ => long_link = Some(tarfmt::gnu_long_name(&data)),
                    }
                    pending_meta = Some(header.kind);
                    continue;
                }
                _ => {}
            }
            let kind = header.kind;
            let mut size = header.data_len();
            if let (Some(s), false) = (pax.size, kind.header_only()) {
                size = s;
            }
            let name = pax.path.take().or(long_name.take()).unwrap_or(header.name);
            let link_name = pax
                .link_path
                .take()
                .or(long_link.take())
                .unwrap_or(header.link_name);
            self.remaining = size;
            self.pad = tarfmt::padding(size);
            return Ok(Some(Entry {
                name,
                link_name,
                kind,
                size,
                offset: header_offset,
            }));
        }
    }

    /// After the first zero block: require the second, then allow only zero padding up to
    /// EOF (reading to EOF also lets a gzip layer verify its trailer).
    async fn finish_after_zero_block(&mut self) -> Result<(), ReadError> {
        match self.read_block().await? {
            None => {
                return Err(self.err(ReadErrorKind::Truncated("end-of-archive marker cut short")))
            }
            Some(b) if b.iter().any(|&c| c != 0) => {
                return Err(self.err(ReadErrorKind::BadEndMarker));
            }
            Some(_) => {}
        }
        // Zero padding of any length is valid, so there is no cap: memory stays one buffer,
        // and the time per byte one comparison. A body that never ends is the HTTP layer's
        // business (body timeouts), as for any other upload.
        let marker_end = self.offset;
        let mut buf = [0u8; 8192];
        loop {
            let n = self
                .inner
                .read(&mut buf)
                .await
                .map_err(|e| self.err(ReadErrorKind::Source(e)))?;
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().position(|&c| c != 0) {
                let at = self.offset + i as u64;
                return Err(ReadError {
                    offset: at,
                    kind: ReadErrorKind::TrailingData {
                        byte: buf[i],
                        at,
                        after: at - marker_end,
                        marker_end,
                    },
                });
            }
            self.offset += n as u64;
        }
        self.ended = true;
        Ok(())
    }

    /// Reads the whole current entry into memory; the caller bounds `size` beforehand.
    pub async fn read_entry_to_vec(&mut self) -> Result<Vec<u8>, ReadError> {
        let len = self.remaining;
        let v = self.read_exact_vec(len).await?;
        self.remaining = 0;
        Ok(v)
    }

    /// The current entry's data as a stream.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { tar: self }
    }
}

/// `AsyncRead` over the current entry's remaining data; EOF at the entry's end.
pub struct EntryData<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: AsyncRead + Unpin> AsyncRead for EntryData<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tar = &mut *self.get_mut().tar;
        if tar.remaining == 0 || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let limit = usize::try_from(tar.remaining).unwrap_or(usize::MAX);
        let result = if limit >= buf.remaining() {
            // The entry outlasts the buffer: read straight into it (the common case, and
            // the fast one: no zero-filling of uninitialised memory).
            let before = buf.filled().len();
            match Pin::new(&mut tar.inner).poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map(|()| buf.filled().len() - before),
            }
        } else {
            // Near the entry's end: read through an initialised window of exactly the
            // bytes left (safe code cannot hand out an uninitialised sub-buffer).
            let mut window = ReadBuf::new(buf.initialize_unfilled_to(limit));
            match Pin::new(&mut tar.inner).poll_read(cx, &mut window) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    let n = window.filled().len();
                    r.map(|()| {
                        buf.advance(n);
                        n
                    })
                }
            }
        };
        match result {
            Err(e) => {
                let surfaced = io::Error::new(e.kind(), e.to_string());
                tar.data_error.get_or_insert(ReadError {
                    offset: tar.offset,
                    kind: ReadErrorKind::Source(e),
                });
                Poll::Ready(Err(surfaced))
            }
            Ok(0) => {
                tar.data_error.get_or_insert(ReadError {
                    offset: tar.offset,
                    kind: ReadErrorKind::Truncated("entry data cut short"),
                });
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tar entry data cut short",
                )))
            }
            Ok(n) => {
                tar.remaining -= n as u64;
                tar.offset += n as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imgpkg::synth::tar as tar_of;

    async fn list(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry().await? {
            let data = r.read_entry_to_vec().await?;
            out.push((e.display_name(), data));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_fixture_tar() {
        let tar = include_bytes!("../../tests/fixtures/imgpkg/tars/multi-image.tar");
        let entries = list(tar).await.expect("valid");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0, "manifest.json");
        assert_eq!(entries[0].1.len(), 3550);
    }

    #[tokio::test]
    async fn every_truncation_fails() {
        let tar = tar_of(&[("a", b"hello"), ("b", &[1u8; 700])]);
        assert!(list(&tar).await.is_ok());
        for cut in 0..tar.len() {
            assert!(list(&tar[..cut]).await.is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn trailing_zeros_ok_garbage_not() {
        let mut tar = tar_of(&[("a", b"x")]);
        let marker_end = tar.len() as u64;
        tar.resize(10240, 0);
        assert!(list(&tar).await.is_ok());
        tar.push(1);
        let err = list(&tar).await.expect_err("garbage after the marker");
        assert_eq!(err.offset, 10240);
        assert!(matches!(
            err.kind,
            ReadErrorKind::TrailingData { byte: 1, at: 10240, after, marker_end: m }
                if m == marker_end && after == 10240 - marker_end
        ));
        let message = err.to_string();
        assert!(
            message.contains("0x01")
                && message.contains("offset 10240")
                && message.contains("end-of-archive marker"),
            "{message}"
        );
    }

    /// `dd` from a raw USB stick: the tar, then zeros to the device's end (well past 1 MiB).
    #[tokio::test]
    async fn megabytes_of_zero_padding_after_the_marker_are_valid() {
        let mut tar = tar_of(&[("a", b"x")]);
        tar.resize(tar.len() + (3 << 20) + 7, 0);
        let entries = list(&tar).await.expect("zero padding is valid");
        assert_eq!(entries.len(), 1);
        let mut r = TarReader::new(&tar[..]);
        while r.next_entry().await.expect("valid").is_some() {}
        assert_eq!(r.offset(), tar.len() as u64, "read through the padding");
    }

    #[tokio::test]
    async fn entry_size_near_u64_max_is_truncation_not_overflow() {
        let mut tar =
            crate::imgpkg::synth::raw_header("big", Kind::Regular, u64::MAX, b"").to_vec();
        tar.extend_from_slice(&[7u8; 100]);
        let mut r = TarReader::new(&tar[..]);
        let e = r.next_entry().await.expect("header").expect("entry");
        assert_eq!(e.size, u64::MAX);
        let err = r.next_entry().await.expect_err("cut short");
        assert!(matches!(err.kind, ReadErrorKind::Truncated(_)), "{err}");
    }

    #[tokio::test]
    async fn pax_path_and_size_apply() {
        /// A PAX record with its self-describing length.
        fn record(kv: &str) -> String {
            let body = format!(" {kv}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            format!("{len}{body}")
        }
        let name = format!("sha512-{}.tar.gz", "a".repeat(128));
        // As Go writes a blob of 8 GiB or more: the real size only in the PAX record.
        let rec = record(&format!("path={name}")) + &record("size=4");
        let mut tar = Vec::new();
        tar.extend_from_slice(&crate::imgpkg::synth::raw_header(
            "PaxHeaders.0/x",
            Kind::PaxLocal,
            rec.len() as u64,
            b"",
        ));
        tar.extend_from_slice(rec.as_bytes());
        tar.resize(tar.len() + tarfmt::padding(rec.len() as u64) as usize, 0);
        tar.extend_from_slice(&crate::imgpkg::synth::raw_header(
            "short",
            Kind::Regular,
            0,
            b"",
        ));
        tar.extend_from_slice(b"data");
        tar.resize(tar.len() + 508, 0);
        tar.extend_from_slice(&tar_of(&[("next", b"x")]));
        let entries = list(&tar).await.expect("valid");
        assert_eq!(entries[0].0, name);
        assert_eq!(entries[0].1, b"data");
        assert_eq!(entries[1].0, "next");
    }
}
