//! The canonical ustar encoding of a bundle: one writer and one strict reader.
//!
//! A bundle has exactly one valid encoding of a given set of files, so the same folder always
//! packs to the same bytes and the same content hash, and nothing in an archive can mean more
//! than the reader understands. The reader does not "fix" anything: it parses each header,
//! checks the values, then re-encodes the header with the writer's own function and requires
//! byte equality, so every field it does not use (owner names, device numbers, link name,
//! padding, number formatting) must be exactly what the writer writes.
//!
//! # Canonical encoding
//! - The archive is a sequence of 512-byte blocks: for each entry a header block and its data
//!   padded with zero bytes to a whole block; then exactly two zero blocks and nothing after
//!   them (no record padding).
//! - Entries are regular files (typeflag `'0'`); the reader also accepts directory entries
//!   (typeflag `'5'`, name ending in `/`, mode 0755, size 0), which the writer never emits.
//!   Every other typeflag (old-style `'\0'`, links, devices, FIFOs, PAX `x`/`g`, GNU `L`/`K`, ...)
//!   is refused.
//! - Paths are [`BundlePath`]s, strictly increasing bytewise by the stored name (so no duplicates),
//!   with no two entries equal ignoring ASCII case and no file used as another entry's folder.
//! - A path of up to 100 bytes is stored in `name` with an empty `prefix`. A longer path is split
//!   at the rightmost `/` that leaves at most 155 bytes before it (in `prefix`) and a non-empty
//!   rest of at most 100 bytes (in `name`); a path with no such `/` cannot be stored.
//! - `mode` is `0000644\0` or `0000755\0`; `uid` and `gid` are `0000000\0`; `size` is 11
//!   zero-padded octal digits and a NUL; `mtime` is `00000000000\0`; `chksum` is the unsigned
//!   byte sum as 7 zero-padded octal digits and a NUL; `magic` is `ustar\0` and `version` `00`;
//!   `linkname`, `uname`, `gname`, `devmajor`, `devminor`, the unused bytes of `name`/`prefix` and
//!   the 12 trailing header bytes are all zero.
//!
//! This is byte for byte what the `tar` crate writes for a `Header::new_ustar()` with those
//! values set, which the tests check.

use std::ops::Range;

use warden_manifest::{BundlePath, PathError};

use crate::limits::BundleLimits;

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// Largest size the 11 octal digits of a ustar `size` field can declare (8 GiB - 1).
pub const MAX_USTAR_SIZE: u64 = 0o777_7777_7777;

const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const LINKNAME: Range<usize> = 157..257;
const MAGIC: Range<usize> = 257..263;
const VERSION: Range<usize> = 263..265;
const UNAME: Range<usize> = 265..297;
const GNAME: Range<usize> = 297..329;
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
const PREFIX: Range<usize> = 345..500;
const PAD: Range<usize> = 500..512;

/// Header fields in order, for naming the first non-canonical one.
const FIELDS: [(&str, Range<usize>); 17] = [
    ("name", NAME),
    ("mode", MODE),
    ("uid", UID),
    ("gid", GID),
    ("size", SIZE),
    ("mtime", MTIME),
    ("chksum", CHKSUM),
    ("typeflag", TYPEFLAG..TYPEFLAG + 1),
    ("linkname", LINKNAME),
    ("magic", MAGIC),
    ("version", VERSION),
    ("uname", UNAME),
    ("gname", GNAME),
    ("devmajor", DEVMAJOR),
    ("devminor", DEVMINOR),
    ("prefix", PREFIX),
    ("header padding", PAD),
];

const TYPE_FILE: u8 = b'0';
const TYPE_DIR: u8 = b'5';
const USTAR_MAGIC: &[u8; 6] = b"ustar\0";
const USTAR_VERSION: &[u8; 2] = b"00";
const MODE_DIR: u64 = 0o755;
/// Longest path shown in an error about a header whose path is not valid.
const MAX_SHOWN_NAME: usize = 300;

/// Permission bits of a file in a bundle: only these two exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0644: a data file.
    Regular,
    /// 0755: an executable (the entry of a process extension).
    Executable,
}

impl Mode {
    /// The octal permission bits, 0o644 or 0o755.
    pub const fn bits(self) -> u32 {
        match self {
            Mode::Regular => 0o644,
            Mode::Executable => 0o755,
        }
    }

    /// The mode with exactly these bits, if it is one of the two allowed.
    pub const fn from_bits(bits: u64) -> Option<Mode> {
        match bits {
            0o644 => Some(Mode::Regular),
            0o755 => Some(Mode::Executable),
            _ => None,
        }
    }
}

/// What an archive entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File(Mode),
    /// A directory entry (accepted on read, never written).
    Dir,
}

/// One entry of a validated archive. `data` indexes the archive bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub path: BundlePath,
    pub kind: EntryKind,
    pub data: Range<usize>,
}

/// Why an archive was refused (or could not be written).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the bundle is {size} bytes, more than the cap of {cap} bytes (max_total_bytes)")]
    TooLarge { size: u64, cap: u64 },
    #[error(
        "the bundle is {len} bytes, not a whole number of 512-byte tar blocks: \
         it is truncated or not a tar archive"
    )]
    NotBlockAligned { len: usize },
    #[error(
        "the archive does not end with its end marker (two zero blocks right after the last \
         entry): it is truncated or malformed"
    )]
    MissingEnd,
    #[error(
        "{len} bytes follow the end marker at offset {offset}; \
         a bundle ends exactly at its end marker"
    )]
    TrailingData { offset: usize, len: usize },
    #[error(
        "the header at offset {offset} ({name:?}) has a wrong checksum: \
         the archive is corrupt or was altered"
    )]
    BadChecksum { offset: usize, name: String },
    #[error(
        "the header at offset {offset} ({name:?}) is not a POSIX ustar header \
         (old-style or GNU tar format); bundles are written by `warden pack`"
    )]
    NotUstar { offset: usize, name: String },
    #[error("entry {name:?} is {what}; a bundle holds only regular files")]
    UnsupportedEntry { name: String, what: String },
    #[error("entry {name:?} has a path that is not UTF-8")]
    NonUtf8Path { name: String },
    #[error("entry {name:?}: {source}")]
    BadPath { name: String, source: PathError },
    #[error("entry `{path}`: the {field} field is not an octal number")]
    BadNumber {
        path: BundlePath,
        field: &'static str,
    },
    #[error("entry `{path}` has mode {mode:04o}; files must be 0644 or 0755 (directories 0755)")]
    BadMode { path: BundlePath, mode: u64 },
    #[error("entry `{path}` has {field} {value}; bundle entries must have uid 0 and gid 0")]
    BadOwner {
        path: BundlePath,
        field: &'static str,
        value: u64,
    },
    #[error(
        "entry `{path}` has mtime {value}; bundle entries must have mtime 0 \
         so the same files always give the same bytes"
    )]
    BadMtime { path: BundlePath, value: u64 },
    #[error("directory entry `{path}/` declares {size} bytes of data")]
    DirectoryWithData { path: BundlePath, size: u64 },
    #[error(
        "entry `{path}`: the {field} field is not in canonical form \
         (bundles are written by `warden pack`, which leaves it empty or fixed)"
    )]
    NonCanonical {
        path: BundlePath,
        field: &'static str,
    },
    #[error("the archive has more than {cap} entries (max_entries)")]
    TooManyEntries { cap: usize },
    #[error(
        "entry `{path}` is {size} bytes, more than the per-file cap of {cap} bytes (max_file_bytes)"
    )]
    FileTooLarge {
        path: BundlePath,
        size: u64,
        cap: u64,
    },
    #[error(
        "entry `{path}` declares {size} bytes but only {available} bytes follow its header: \
         the archive is truncated"
    )]
    Truncated {
        path: BundlePath,
        size: u64,
        available: usize,
    },
    #[error("entry `{path}`: the padding after its data is not all zero bytes")]
    NonZeroPadding { path: BundlePath },
    #[error("entry `{name}` appears more than once")]
    Duplicate { name: String },
    #[error("entry `{name}` comes after `{previous}`; entries must be sorted bytewise by path")]
    Unsorted { name: String, previous: String },
    #[error(
        "entries `{first}` and `{second}` differ only in letter case; \
         they would be the same file on a case-insensitive file system"
    )]
    CaseConflict {
        first: BundlePath,
        second: BundlePath,
    },
    #[error("`{file}` is a file, but `{other}` uses it as a folder")]
    FileDirConflict { file: BundlePath, other: BundlePath },
    #[error(
        "`{path}` cannot be stored in a ustar header: a path longer than 100 bytes must split \
         at a '/' into at most 155 and 100 bytes"
    )]
    PathTooLong { path: BundlePath },
    #[error("`{path}` is {size} bytes, more than a ustar header can declare")]
    SizeTooLarge { path: BundlePath, size: u64 },
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes `value` as zero-padded octal digits filling all but the last byte, then a NUL.
/// Returns false if it does not fit.
fn put_octal(field: &mut [u8], mut value: u64) -> bool {
    let Some((last, digits)) = field.split_last_mut() else {
        return false;
    };
    *last = 0;
    for digit in digits.iter_mut().rev() {
        // `value & 7` is at most 7, so the cast cannot truncate.
        *digit = b'0' + (value & 7) as u8;
        value >>= 3;
    }
    value == 0
}

/// The unsigned sum of the header bytes with the checksum field counted as spaces.
fn checksum(header: &[u8; BLOCK]) -> u64 {
    header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if CHKSUM.contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// Splits a stored name into (`prefix`, `name`) by the one canonical rule (see the module docs).
fn split_name(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    if stored.len() <= NAME.len() {
        return Some((&[], stored));
    }
    let cut = stored
        .iter()
        .enumerate()
        .rev()
        .find(|&(i, &b)| b == b'/' && i <= PREFIX.len() && i + 1 < stored.len())
        .map(|(i, _)| i)?;
    let prefix = stored.get(..cut)?;
    let name = stored.get(cut + 1..)?;
    (!prefix.is_empty() && name.len() <= NAME.len()).then_some((prefix, name))
}

fn copy_into(dst: &mut [u8], src: &[u8]) -> Option<()> {
    dst.get_mut(..src.len())?.copy_from_slice(src);
    Some(())
}

/// The canonical header for an entry, or `None` if the name cannot be split or the size does
/// not fit. `stored` is the path as stored (with a trailing `/` for a directory).
fn encode_header(stored: &[u8], mode: u64, size: u64, typeflag: u8) -> Option<[u8; BLOCK]> {
    let mut h = [0u8; BLOCK];
    let (prefix, name) = split_name(stored)?;
    copy_into(&mut h[NAME], name)?;
    copy_into(&mut h[PREFIX], prefix)?;
    let numbers_fit = put_octal(&mut h[MODE], mode)
        && put_octal(&mut h[UID], 0)
        && put_octal(&mut h[GID], 0)
        && put_octal(&mut h[SIZE], size)
        && put_octal(&mut h[MTIME], 0);
    if !numbers_fit {
        return None;
    }
    h[TYPEFLAG] = typeflag;
    h[MAGIC].copy_from_slice(USTAR_MAGIC);
    h[VERSION].copy_from_slice(USTAR_VERSION);
    let sum = checksum(&h);
    // The largest possible sum (512 * 255) fits easily in 7 octal digits.
    put_octal(&mut h[CHKSUM], sum).then_some(h)
}

fn padded_len(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(BLOCK)
}

/// Builds a canonical bundle archive. Files must be added in strictly increasing bytewise
/// order of their paths; [`ArchiveWriter::finish`] appends the end marker.
///
/// The writer enforces the encoding, not the caps or what a bundle must contain: `pack_dir`
/// checks the caps and re-reads the result with [`crate::Bundle`]'s own reader.
#[derive(Debug, Default)]
pub struct ArchiveWriter {
    out: Vec<u8>,
    last: Option<BundlePath>,
}

impl ArchiveWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose buffer starts with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        ArchiveWriter {
            out: Vec::with_capacity(bytes),
            last: None,
        }
    }

    /// The size, in bytes, of the archive entry for a file of `size` bytes (header and padded
    /// data), or `None` on overflow.
    pub fn entry_len(size: u64) -> Option<u64> {
        size.checked_next_multiple_of(BLOCK as u64)?
            .checked_add(BLOCK as u64)
    }

    /// The size of the end marker every archive ends with.
    pub const END_LEN: u64 = 2 * BLOCK as u64;

    /// Appends a regular file.
    pub fn add_file(
        &mut self,
        path: &BundlePath,
        mode: Mode,
        data: &[u8],
    ) -> Result<(), ArchiveError> {
        if let Some(last) = &self.last {
            if path == last {
                return Err(ArchiveError::Duplicate {
                    name: path.to_string(),
                });
            }
            if path < last {
                return Err(ArchiveError::Unsorted {
                    name: path.to_string(),
                    previous: last.to_string(),
                });
            }
        }
        let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if size > MAX_USTAR_SIZE {
            return Err(ArchiveError::SizeTooLarge {
                path: path.clone(),
                size,
            });
        }
        let header = encode_header(
            path.as_str().as_bytes(),
            u64::from(mode.bits()),
            size,
            TYPE_FILE,
        )
        .ok_or_else(|| ArchiveError::PathTooLong { path: path.clone() })?;
        let padded = padded_len(data.len()).ok_or(ArchiveError::SizeTooLarge {
            path: path.clone(),
            size,
        })?;
        self.out.extend_from_slice(&header);
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len() + (padded - data.len()), 0);
        self.last = Some(path.clone());
        Ok(())
    }

    /// Appends the end marker and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.resize(self.out.len() + 2 * BLOCK, 0);
        self.out
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Parses a numeric header field leniently (leading spaces, octal digits, then NULs or spaces),
/// so that errors can say what a value is; canonical form is enforced separately by
/// re-encoding. Non-octal characters, base-256 values and overflow give `None`.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ')?;
    let rest = field.get(start..)?;
    let digits_end = rest
        .iter()
        .position(|b| !(b'0'..=b'7').contains(b))
        .unwrap_or(rest.len());
    if digits_end == 0 {
        return None;
    }
    let (digits, tail) = rest.split_at_checked(digits_end)?;
    if !tail.iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

fn until_nul(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field.get(..end).unwrap_or(field)
}

/// The path a header stores: `prefix/name`, or `name` when the prefix is empty.
fn stored_name(h: &[u8; BLOCK]) -> Vec<u8> {
    let prefix = until_nul(&h[PREFIX]);
    let name = until_nul(&h[NAME]);
    let mut out = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        out.extend_from_slice(prefix);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// A header's path for an error message (bounded; shown with `{:?}`, which escapes it).
fn shown(stored: &[u8]) -> String {
    String::from_utf8_lossy(stored)
        .chars()
        .take(MAX_SHOWN_NAME)
        .collect()
}

fn describe_type(typeflag: u8, link: &str) -> String {
    match typeflag {
        0 => "an old-style (pre-POSIX) file entry".into(),
        b'1' => format!("a hard link (to {link:?})"),
        b'2' => format!("a symbolic link (to {link:?})"),
        b'3' => "a character device".into(),
        b'4' => "a block device".into(),
        b'6' => "a FIFO (named pipe)".into(),
        b'7' => "a contiguous file".into(),
        b'x' => {
            "a PAX extended header (it would change the next entry's path or attributes)".into()
        }
        b'g' => "a PAX global header (it would change every later entry)".into(),
        b'L' => "a GNU long-name header (it would rename the next entry)".into(),
        b'K' => "a GNU long-link-name header".into(),
        b'S' => "a GNU sparse file".into(),
        b'D' => "a GNU directory dump".into(),
        b'M' => "a GNU multi-volume continuation".into(),
        b'V' => "a GNU volume label".into(),
        other => format!("an entry of unknown type {:?}", char::from(other)),
    }
}

fn block_at(bytes: &[u8], pos: usize) -> Option<&[u8; BLOCK]> {
    let end = pos.checked_add(BLOCK)?;
    bytes.get(pos..end)?.try_into().ok()
}

/// Reads and validates a whole archive. Every cap in `caps` is checked before the work it
/// bounds; nothing is allocated per declared count or size.
pub fn read(bytes: &[u8], caps: &BundleLimits) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    let len = bytes.len();
    let len64 = u64::try_from(len).unwrap_or(u64::MAX);
    if len64 > caps.max_total_bytes {
        return Err(ArchiveError::TooLarge {
            size: len64,
            cap: caps.max_total_bytes,
        });
    }
    if !len.is_multiple_of(BLOCK) {
        return Err(ArchiveError::NotBlockAligned { len });
    }
    let mut entries: Vec<ArchiveEntry> = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    loop {
        let block = block_at(bytes, pos).ok_or(ArchiveError::MissingEnd)?;
        if block.iter().all(|&b| b == 0) {
            let second = pos.checked_add(BLOCK).ok_or(ArchiveError::MissingEnd)?;
            match block_at(bytes, second) {
                Some(b) if b.iter().all(|&b| b == 0) => {}
                _ => return Err(ArchiveError::MissingEnd),
            }
            let end = second.checked_add(BLOCK).ok_or(ArchiveError::MissingEnd)?;
            if end != len {
                return Err(ArchiveError::TrailingData {
                    offset: end,
                    len: len.saturating_sub(end),
                });
            }
            break;
        }
        if entries.len() >= caps.max_entries {
            return Err(ArchiveError::TooManyEntries {
                cap: caps.max_entries,
            });
        }
        let (entry, stored, next) = read_entry(bytes, pos, block, caps)?;
        if let Some(prev) = &previous {
            if stored == *prev {
                return Err(ArchiveError::Duplicate {
                    name: shown(&stored),
                });
            }
            if stored < *prev {
                return Err(ArchiveError::Unsorted {
                    name: shown(&stored),
                    previous: shown(prev),
                });
            }
        }
        previous = Some(stored);
        entries.push(entry);
        pos = next;
    }
    check_conflicts(&entries)?;
    Ok(entries)
}

/// Validates the header at `pos` and its data. Returns the entry, its stored name (for the
/// ordering check) and the offset of the next header.
fn read_entry(
    bytes: &[u8],
    pos: usize,
    h: &[u8; BLOCK],
    caps: &BundleLimits,
) -> Result<(ArchiveEntry, Vec<u8>, usize), ArchiveError> {
    let stored = stored_name(h);
    // Nothing in a header is trusted before its checksum is.
    if parse_octal(&h[CHKSUM]) != Some(checksum(h)) {
        return Err(ArchiveError::BadChecksum {
            offset: pos,
            name: shown(&stored),
        });
    }
    if h[MAGIC] != *USTAR_MAGIC || h[VERSION] != *USTAR_VERSION {
        return Err(ArchiveError::NotUstar {
            offset: pos,
            name: shown(&stored),
        });
    }
    let typeflag = h[TYPEFLAG];
    if typeflag != TYPE_FILE && typeflag != TYPE_DIR {
        let link = shown(until_nul(&h[LINKNAME]));
        return Err(ArchiveError::UnsupportedEntry {
            name: shown(&stored),
            what: describe_type(typeflag, &link),
        });
    }
    let is_dir = typeflag == TYPE_DIR;
    let text = std::str::from_utf8(&stored).map_err(|_| ArchiveError::NonUtf8Path {
        name: shown(&stored),
    })?;
    let path_text = if is_dir {
        text.strip_suffix('/').unwrap_or("")
    } else {
        text
    };
    let path: BundlePath = path_text.parse().map_err(|source| ArchiveError::BadPath {
        name: shown(&stored),
        source,
    })?;

    let number = |range: Range<usize>, field: &'static str| {
        parse_octal(&h[range]).ok_or_else(|| ArchiveError::BadNumber {
            path: path.clone(),
            field,
        })
    };
    let mode = number(MODE, "mode")?;
    let uid = number(UID, "uid")?;
    let gid = number(GID, "gid")?;
    let size = number(SIZE, "size")?;
    let mtime = number(MTIME, "mtime")?;

    let kind = if is_dir {
        if mode != MODE_DIR {
            return Err(ArchiveError::BadMode { path, mode });
        }
        if size != 0 {
            return Err(ArchiveError::DirectoryWithData { path, size });
        }
        EntryKind::Dir
    } else {
        EntryKind::File(Mode::from_bits(mode).ok_or(ArchiveError::BadMode {
            path: path.clone(),
            mode,
        })?)
    };
    for (field, value) in [("uid", uid), ("gid", gid)] {
        if value != 0 {
            return Err(ArchiveError::BadOwner { path, field, value });
        }
    }
    if mtime != 0 {
        return Err(ArchiveError::BadMtime { path, value: mtime });
    }
    if size > caps.max_file_bytes {
        return Err(ArchiveError::FileTooLarge {
            path,
            size,
            cap: caps.max_file_bytes,
        });
    }

    let data_start = pos.checked_add(BLOCK).ok_or(ArchiveError::MissingEnd)?;
    let available = bytes.len().saturating_sub(data_start);
    let truncated = || ArchiveError::Truncated {
        path: path.clone(),
        size,
        available,
    };
    let size_usize = usize::try_from(size).map_err(|_| truncated())?;
    if size_usize > available {
        return Err(truncated());
    }
    let data_end = data_start.checked_add(size_usize).ok_or_else(truncated)?;
    let next = padded_len(size_usize)
        .and_then(|p| data_start.checked_add(p))
        .ok_or_else(truncated)?;
    let padding = bytes.get(data_end..next).ok_or_else(truncated)?;

    // Everything the reader does not use must be exactly what the writer writes.
    let canonical = encode_header(&stored, mode, size, typeflag);
    if canonical.as_ref() != Some(h) {
        // The checksum differs whenever anything else does, so it is named only when it is
        // the sole difference (a checksum written in another format).
        let field = canonical
            .and_then(|c| {
                FIELDS
                    .iter()
                    .filter(|(name, _)| *name != "chksum")
                    .find(|(_, r)| c.get(r.clone()) != h.get(r.clone()))
                    .map(|(name, _)| *name)
                    .or(Some("chksum"))
            })
            .unwrap_or("name");
        return Err(ArchiveError::NonCanonical { path, field });
    }
    if padding.iter().any(|&b| b != 0) {
        return Err(ArchiveError::NonZeroPadding { path });
    }
    Ok((
        ArchiveEntry {
            path,
            kind,
            data: data_start..data_end,
        },
        stored,
        next,
    ))
}

/// Refuses entries that would collide when extracted: equal ignoring ASCII case, or a file
/// that another entry uses as a folder (also ignoring case).
///
/// Keys are the lowercased paths with `/` mapped below every other byte, so after sorting, the
/// entries below a path come directly after it and only neighbours need comparing.
fn check_conflicts(entries: &[ArchiveEntry]) -> Result<(), ArchiveError> {
    let mut keys: Vec<(Vec<u8>, &ArchiveEntry)> = entries
        .iter()
        .map(|e| {
            let key = e
                .path
                .as_str()
                .bytes()
                .map(|b| if b == b'/' { 0 } else { b.to_ascii_lowercase() })
                .collect();
            (key, e)
        })
        .collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for pair in keys.windows(2) {
        let [(ka, a), (kb, b)] = pair else { continue };
        let is_file = |e: &ArchiveEntry| matches!(e.kind, EntryKind::File(_));
        if ka == kb {
            if is_file(a) != is_file(b) {
                let (file, other) = if is_file(a) { (a, b) } else { (b, a) };
                return Err(ArchiveError::FileDirConflict {
                    file: file.path.clone(),
                    other: other.path.clone(),
                });
            }
            return Err(ArchiveError::CaseConflict {
                first: a.path.clone(),
                second: b.path.clone(),
            });
        }
        if is_file(a) && kb.get(ka.len()) == Some(&0) && kb.starts_with(ka) {
            return Err(ArchiveError::FileDirConflict {
                file: a.path.clone(),
                other: b.path.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn p(s: &str) -> BundlePath {
        s.parse().unwrap()
    }

    #[test]
    fn octal_parsing() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"    644 "), Some(0o644));
        assert_eq!(parse_octal(b"00000000000\0"), Some(0));
        assert_eq!(parse_octal(b"77777777777\0"), Some(MAX_USTAR_SIZE));
        assert_eq!(parse_octal(b"0000648\0"), None);
        assert_eq!(parse_octal(b"00006 4\0"), None);
        assert_eq!(parse_octal(b"\0\0\0\0\0\0\0\0"), None);
        assert_eq!(parse_octal(b"        "), None);
        assert_eq!(parse_octal(b"-000644\0"), None);
        assert_eq!(parse_octal(&[0x80, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(parse_octal(&[b'7'; 40]), None, "overflow");
    }

    #[test]
    fn octal_writing() {
        let mut f = [0xffu8; 8];
        assert!(put_octal(&mut f, 0o644));
        assert_eq!(&f, b"0000644\0");
        let mut f = [0u8; 12];
        assert!(!put_octal(&mut f, MAX_USTAR_SIZE + 1));
        assert!(put_octal(&mut f, MAX_USTAR_SIZE));
    }

    #[test]
    fn name_split_rule() {
        let short = "a".repeat(100);
        assert_eq!(
            split_name(short.as_bytes()),
            Some((&b""[..], short.as_bytes()))
        );
        // Rightmost '/' with the prefix at most 155 bytes.
        let long = format!("{}/{}/{}", "a".repeat(60), "b".repeat(60), "c".repeat(20));
        let (prefix, name) = split_name(long.as_bytes()).unwrap();
        assert_eq!(prefix.len(), 121);
        assert_eq!(name, "c".repeat(20).as_bytes());
        // One 101-byte segment cannot be stored.
        assert_eq!(split_name("x".repeat(101).as_bytes()), None);
        let no_fit = format!("{}/{}", "a".repeat(10), "b".repeat(101));
        assert_eq!(split_name(no_fit.as_bytes()), None);
        let prefix_too_long = format!("{}/{}", "a".repeat(156), "b".repeat(10));
        assert_eq!(split_name(prefix_too_long.as_bytes()), None);
        let max = format!("{}/{}", "a".repeat(155), "b".repeat(99));
        assert_eq!(max.len(), 255);
        assert!(split_name(max.as_bytes()).is_some());
    }

    #[test]
    fn writer_round_trip_and_order() {
        let mut w = ArchiveWriter::new();
        w.add_file(&p("a"), Mode::Regular, b"hello").unwrap();
        w.add_file(&p("b/c"), Mode::Executable, &[7u8; 512])
            .unwrap();
        assert!(matches!(
            w.add_file(&p("b/c"), Mode::Regular, b""),
            Err(ArchiveError::Duplicate { .. })
        ));
        assert!(matches!(
            w.add_file(&p("a0"), Mode::Regular, b""),
            Err(ArchiveError::Unsorted { .. })
        ));
        let bytes = w.finish();
        assert_eq!(bytes.len(), 512 * 2 + 512 * 2 + 1024);
        let entries = read(&bytes, &BundleLimits::default()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].kind, EntryKind::File(Mode::Regular));
        assert_eq!(&bytes[entries[0].data.clone()], b"hello");
        assert_eq!(entries[1].kind, EntryKind::File(Mode::Executable));
        assert_eq!(&bytes[entries[1].data.clone()], &[7u8; 512][..]);
    }

    #[test]
    fn writer_refuses_unsplittable_path() {
        let mut w = ArchiveWriter::new();
        let long = p(&"x".repeat(150));
        assert!(matches!(
            w.add_file(&long, Mode::Regular, b""),
            Err(ArchiveError::PathTooLong { .. })
        ));
    }

    #[test]
    fn empty_archive_is_just_the_end_marker() {
        let bytes = ArchiveWriter::new().finish();
        assert_eq!(bytes, vec![0u8; 1024]);
        assert!(read(&bytes, &BundleLimits::default()).unwrap().is_empty());
        assert!(matches!(
            read(&[], &BundleLimits::default()),
            Err(ArchiveError::MissingEnd)
        ));
        assert!(matches!(
            read(&[0u8; 512], &BundleLimits::default()),
            Err(ArchiveError::MissingEnd)
        ));
    }
}
