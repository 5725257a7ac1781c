//! The tar format, as pure functions over 512-byte blocks: header parsing (V7, USTAR, GNU,
//! PAX records, base-256 numbers) and a tiny deterministic USTAR writer.
//!
//! We parse headers ourselves rather than going through the `tar` crate because the import
//! streams an async HTTP body and has to see every header, reject what imgpkg never writes
//! (links, devices, odd names) and know exactly how many bytes each entry spans, without
//! buffering. Everything here is synchronous and allocation-bounded so it can be fuzzed.

use std::fmt;

/// Tar's block size; headers and data are padded to it.
pub const BLOCK: usize = 512;

/// Largest PAX or GNU long-name record body we are willing to buffer.
pub const MAX_META_ENTRY: u64 = 1 << 20;

/// The kind of a tar entry, from its typeflag byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
    /// A PAX extended header for the next entry (`x`).
    PaxLocal,
    /// A PAX global header (`g`).
    PaxGlobal,
    /// GNU long name for the next entry (`L`).
    GnuLongName,
    /// GNU long link name for the next entry (`K`).
    GnuLongLink,
    Other(u8),
}

impl Kind {
    fn from_flag(flag: u8) -> Kind {
        match flag {
            b'0' | b'\0' | b'7' => Kind::Regular,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Directory,
            b'6' => Kind::Fifo,
            b'x' => Kind::PaxLocal,
            b'g' => Kind::PaxGlobal,
            b'L' => Kind::GnuLongName,
            b'K' => Kind::GnuLongLink,
            other => Kind::Other(other),
        }
    }

    /// Entry kinds that never carry data, whatever their size field says (as Go's reader
    /// treats them).
    pub fn header_only(self) -> bool {
        matches!(
            self,
            Kind::HardLink
                | Kind::Symlink
                | Kind::CharDevice
                | Kind::BlockDevice
                | Kind::Directory
                | Kind::Fifo
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::Regular => "regular file",
            Kind::HardLink => "hard link",
            Kind::Symlink => "symbolic link",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Directory => "directory",
            Kind::Fifo => "FIFO",
            Kind::PaxLocal => "PAX extended header",
            Kind::PaxGlobal => "PAX global header",
            Kind::GnuLongName => "GNU long name",
            Kind::GnuLongLink => "GNU long link name",
            Kind::Other(b) => return write!(f, "entry of unknown type {:?}", char::from(*b)),
        };
        f.write_str(s)
    }
}

/// One parsed header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The raw name bytes (USTAR prefix joined); PAX/GNU overrides are applied by the reader.
    pub name: Vec<u8>,
    pub link_name: Vec<u8>,
    /// The size field; see [`Header::data_len`] for how many bytes actually follow.
    pub size: u64,
    pub kind: Kind,
}

impl Header {
    /// Number of data bytes that follow this header (before padding).
    pub fn data_len(&self) -> u64 {
        if self.kind.header_only() {
            0
        } else {
            self.size
        }
    }
}

/// What a 512-byte block turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// An all-zero block: half of the end-of-archive marker.
    Zero,
    Header(Header),
}

/// A malformed tar structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("header checksum mismatch (not a tar archive, or corrupted)")]
    Checksum,
    #[error("malformed numeric field `{0}` in header")]
    BadNumber(&'static str),
    #[error("malformed PAX extended header: {0}")]
    BadPax(&'static str),
}

/// Padding needed after `len` data bytes to reach the next block boundary.
pub fn padding(len: u64) -> u64 {
    (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64
}

/// Parses one header block.
pub fn parse_block(b: &[u8; BLOCK]) -> Result<Block, TarError> {
    if b.iter().all(|&x| x == 0) {
        return Ok(Block::Zero);
    }
    let stored = parse_number(&b[148..156], "chksum")?;
    let (unsigned, signed) = checksums(b);
    // Historic tars summed signed chars; Go accepts both, so do we.
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err(TarError::Checksum);
    }
    let kind = Kind::from_flag(b[156]);
    let size = parse_number(&b[124..136], "size")?;
    let mut name = cstr(&b[0..100]).to_vec();
    let link_name = cstr(&b[157..257]).to_vec();
    let magic = &b[257..265];
    if magic == b"ustar\x0000" {
        // POSIX ustar: a non-empty prefix is joined to the name with '/'.
        let prefix = cstr(&b[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    Ok(Block::Header(Header {
        name,
        link_name,
        size,
        kind,
    }))
}

fn checksums(b: &[u8; BLOCK]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &x) in b.iter().enumerate() {
        // The checksum field itself counts as eight spaces.
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += u64::from(x);
        signed += i64::from(x as i8);
    }
    (unsigned, signed)
}

/// The bytes of a NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses an octal field (space/NUL padded) or a GNU base-256 field.
fn parse_number(field: &[u8], name: &'static str) -> Result<u64, TarError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            // Base-256: big-endian two's complement with the marker bit. Negative values
            // (0xff lead) are meaningless for sizes and are refused.
            if first == 0xff {
                return Err(TarError::BadNumber(name));
            }
            let mut v: u64 = u64::from(first & 0x7f);
            for &c in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(c)))
                    .ok_or(TarError::BadNumber(name))?;
            }
            return Ok(v);
        }
    }
    let trimmed = trim(field);
    if trimmed.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for &c in trimmed {
        if !(b'0'..=b'7').contains(&c) {
            return Err(TarError::BadNumber(name));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or(TarError::BadNumber(name))?;
    }
    Ok(v)
}

fn trim(b: &[u8]) -> &[u8] {
    let is_pad = |c: &u8| *c == b' ' || *c == 0;
    let start = b.iter().position(|c| !is_pad(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_pad(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

/// The PAX keys the reader honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaxOverrides {
    pub path: Option<Vec<u8>>,
    pub link_path: Option<Vec<u8>>,
    pub size: Option<u64>,
}

/// Parses PAX extended header records (`"<len> <key>=<value>\n"`).
pub fn parse_pax(mut data: &[u8]) -> Result<PaxOverrides, TarError> {
    let mut out = PaxOverrides::default();
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&c| c == b' ')
            .ok_or(TarError::BadPax("record without length"))?;
        let len_str = &data[..sp];
        if len_str.is_empty() || len_str.len() > 20 || !len_str.iter().all(u8::is_ascii_digit) {
            return Err(TarError::BadPax("bad record length"));
        }
        let len: usize = std::str::from_utf8(len_str)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(TarError::BadPax("bad record length"))?;
        if len <= sp + 1 || len > data.len() {
            return Err(TarError::BadPax("record length out of range"));
        }
        let record = &data[sp + 1..len];
        let Some((&b'\n', kv)) = record.split_last() else {
            return Err(TarError::BadPax("record not newline-terminated"));
        };
        let eq = kv
            .iter()
            .position(|&c| c == b'=')
            .ok_or(TarError::BadPax("record without '='"))?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        match key {
            b"path" => out.path = Some(value.to_vec()),
            b"linkpath" => out.link_path = Some(value.to_vec()),
            b"size" => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(TarError::BadPax("bad size record"))?;
                out.size = Some(v);
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(out)
}

/// The body of a GNU long name/link record: the name up to the first NUL.
pub fn gnu_long_name(data: &[u8]) -> Vec<u8> {
    cstr(data).to_vec()
}

/// Builds a USTAR header block exactly as Go's `archive/tar` writes one for a header with
/// only name, mode, size and typeflag set (uid/gid 0, empty user names, mtime 0): this is
/// what imgpkg's image builder produces, and reproducing it byte for byte is what makes
/// our ImageLocations layer hash to the same DiffID as imgpkg's.
///
/// Returns `None` if the name does not fit the 100-byte name field (never the case for the
/// fixed names we write).
pub fn ustar_header(name: &str, mode: u32, size: u64, kind: Kind) -> Option<[u8; BLOCK]> {
    if name.len() > 100 || size >= 1 << 33 {
        return None;
    }
    let flag = match kind {
        Kind::Regular => b'0',
        Kind::Directory => b'5',
        _ => return None,
    };
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], 0); // uid
    octal(&mut b[116..124], 0); // gid
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], 0); // mtime: Go writes the Unix epoch for a zero time
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], 0); // devmajor
    octal(&mut b[337..345], 0); // devminor
    let (sum, _) = checksums(&b);
    octal(&mut b[148..155], sum);
    b[155] = b' ';
    Some(b)
}

/// Go's `formatOctal`: zero-padded octal digits followed by a NUL.
fn octal(field: &mut [u8], v: u64) {
    let digits = format!("{v:o}");
    let width = field.len() - 1;
    let padded = format!("{digits:0>width$}");
    field[..width].copy_from_slice(&padded.as_bytes()[padded.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(bytes: &[u8]) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(&bytes[..BLOCK]);
        b
    }

    #[test]
    fn parses_the_fixture_first_header() {
        let tar = include_bytes!("../../tests/fixtures/imgpkg/tars/guestbook-bundle.tar");
        let Block::Header(h) = parse_block(&block_of(tar)).expect("header") else {
            panic!("zero block")
        };
        assert_eq!(h.name, b"manifest.json");
        assert_eq!(h.size, 6715);
        assert_eq!(h.kind, Kind::Regular);
    }

    #[test]
    fn writer_matches_go_header_bytes() {
        // The fixture tar was written by Go's archive/tar with the same field choices
        // (mode 0644 instead of our 0600, otherwise identical).
        let tar = include_bytes!("../../tests/fixtures/imgpkg/tars/guestbook-bundle.tar");
        let ours = ustar_header("manifest.json", 0o644, 6715, Kind::Regular).expect("fits");
        assert_eq!(&ours[..], &tar[..BLOCK]);
        assert_eq!(
            parse_block(&ours),
            Ok(Block::Header(Header {
                name: b"manifest.json".to_vec(),
                link_name: vec![],
                size: 6715,
                kind: Kind::Regular
            }))
        );
    }

    #[test]
    fn rejects_bad_checksum_and_numbers() {
        let mut b = ustar_header("x", 0o644, 1, Kind::Regular).expect("fits");
        b[0] = b'y';
        assert_eq!(parse_block(&b), Err(TarError::Checksum));
        let mut b = [0u8; BLOCK];
        b[0] = b'x';
        b[124..136].copy_from_slice(b"0000000009\0\0");
        let (sum, _) = checksums(&b);
        octal(&mut b[148..155], sum);
        assert_eq!(parse_block(&b), Err(TarError::BadNumber("size")));
    }

    #[test]
    fn base256_and_prefix() {
        let mut b = ustar_header("name", 0o644, 0, Kind::Regular).expect("fits");
        b[124] = 0x80;
        b[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
        b[345..348].copy_from_slice(b"dir");
        let (sum, _) = checksums(&b);
        octal(&mut b[148..155], sum);
        let Ok(Block::Header(h)) = parse_block(&b) else {
            panic!()
        };
        assert_eq!(h.size, 2 << 16);
        assert_eq!(h.name, b"dir/name");
    }

    /// One PAX record with its self-describing length prefix.
    fn record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }

    #[test]
    fn pax_records() {
        let data = record("path", "sha256-abc.tar.gz")
            + &record("size", "8589934592")
            + &record("mtime", "1.5");
        let p = parse_pax(data.as_bytes()).expect("valid");
        assert_eq!(p.path.as_deref(), Some(&b"sha256-abc.tar.gz"[..]));
        assert_eq!(p.size, Some(8589934592));
        for bad in [
            &b"5 a=b"[..],
            b"x a=b\n",
            b"100 a=b\n",
            b"6 ab\n\n",
            b"9 size=x\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn header_only_kinds_have_no_data() {
        let h = Header {
            name: b"l".to_vec(),
            link_name: b"t".to_vec(),
            size: 100,
            kind: Kind::Symlink,
        };
        assert_eq!(h.data_len(), 0);
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
