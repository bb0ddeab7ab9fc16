//! Reading a bundle file into memory and hashing it in the same pass.
//!
//! The bytes are read once into a buffer that the [`Bundle`](crate::Bundle) then owns, and the
//! hash is computed over exactly that buffer, chunk by chunk, right after each chunk is read.
//! Nothing is read twice and nothing is re-read by name.
//!
//! What a large read costs, besides copying from the page cache and hashing (benchmark B4,
//! `crates/trust/benches/verify.rs`: within 0.9x of `openssl dgst -sha256`, whose small
//! buffer is reused):
//! - Fresh memory. With 4 KiB pages a 64 MiB buffer takes about 16,000 page faults, 1.3 to 2 µs
//!   each on a virtual machine: as long as the read itself. On Linux a large buffer is therefore
//!   an anonymous mapping advised for transparent huge pages (`madvise`, which is all that
//!   `enabled = madvise` allows): about 32 faults. Where huge pages are off the advice is
//!   ignored and the buffer works as before. Once filled, the mapping is made read-only, so the
//!   hashed bytes cannot change even by mistake.
//! - One core. With a second core available the hash runs on its own thread one chunk behind
//!   the reader, so a verify costs about the hash alone. With one core (affinity or a CPU
//!   quota) the same thread reads and hashes each chunk while it is still in cache.

use std::fs::File;
use std::io::{self, Read};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::digest::ContentHash;

/// Chunk size for reading and hashing: large enough to amortize system calls and hand-offs,
/// small enough to still be in cache when it is hashed.
const READ_CHUNK: usize = 1 << 20;
/// Below this, a second thread costs more than it saves.
const PIPELINE_MIN: usize = 4 * READ_CHUNK;

/// Reads exactly `len` bytes from `file` into a new buffer and returns them with their sha256.
///
/// An early end of file is `UnexpectedEof`; the caller checks that nothing follows.
pub(crate) fn read_hashed(file: &mut File, len: usize) -> io::Result<(Bytes, ContentHash)> {
    let mut buf = Buffer::new(len)?;
    let parallel =
        len >= PIPELINE_MIN && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let hash = read_and_hash(file, buf.as_mut_slice(), parallel)?;
    // The hash covers exactly these bytes, which are frozen from here on.
    Ok((buf.freeze()?, hash))
}

/// Fills `buf` from `file` and returns the sha256 of exactly those bytes, hashing each chunk
/// right after it is read: on a second thread, one chunk behind the reader, if `parallel`.
fn read_and_hash<R: Read>(file: &mut R, buf: &mut [u8], parallel: bool) -> io::Result<ContentHash> {
    let digest = |d: Sha256| ContentHash::from_bytes(d.finalize().into());
    if !parallel {
        let mut hasher = Sha256::new();
        for chunk in buf.chunks_mut(READ_CHUNK) {
            file.read_exact(chunk)?;
            hasher.update(&*chunk);
        }
        return Ok(digest(hasher));
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<&[u8]>(4);
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(chunk);
            }
            h
        });
        for chunk in buf.chunks_mut(READ_CHUNK) {
            file.read_exact(chunk)?;
            // A filled chunk is never written again; the hasher only reads it.
            let filled: &[u8] = chunk;
            if tx.send(filled).is_err() {
                break;
            }
        }
        drop(tx);
        hasher
            .join()
            .map(digest)
            .map_err(|_| io::Error::other("the hashing thread failed"))
    })
}

/// The memory a bundle is read into.
enum Buffer {
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Pages(pages::Pages),
}

impl Buffer {
    fn new(len: usize) -> io::Result<Buffer> {
        #[cfg(target_os = "linux")]
        if len >= pages::MIN_LEN {
            return pages::Pages::new(len).map(Buffer::Pages);
        }
        // Zeroed lazily by the allocator (`calloc`), so the read is the first pass over it.
        Ok(Buffer::Heap(vec![0u8; len]))
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Buffer::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Buffer::Pages(p) => p.as_mut_slice(),
        }
    }

    fn freeze(self) -> io::Result<Bytes> {
        match self {
            Buffer::Heap(v) => Ok(Bytes::from(v)),
            #[cfg(target_os = "linux")]
            Buffer::Pages(p) => p.freeze(),
        }
    }
}

#[cfg(target_os = "linux")]
mod pages {
    //! A buffer of transparent huge pages (2 MiB on x86-64 and aarch64 with 4 KiB base pages),
    //! through `memmap2`'s safe anonymous mappings.

    use std::io;
    use std::ops::Range;

    use bytes::Bytes;
    use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

    /// The huge page size the buffer is aligned to.
    const HUGE_PAGE: usize = 2 << 20;
    /// Smaller bundles stay on the heap: a mapping and its system calls cost more than the few
    /// faults they would save.
    pub(super) const MIN_LEN: usize = 2 * HUGE_PAGE;

    /// An anonymous mapping with room to start the buffer on a huge page boundary.
    pub(super) struct Pages {
        map: MmapMut,
        range: Range<usize>,
    }

    impl Pages {
        pub(super) fn new(len: usize) -> io::Result<Pages> {
            let too_large = || io::Error::from(io::ErrorKind::OutOfMemory);
            let padded = len
                .checked_next_multiple_of(HUGE_PAGE)
                .and_then(|n| n.checked_add(HUGE_PAGE))
                .ok_or_else(too_large)?;
            let map = MmapOptions::new().len(padded).map_anon()?;
            // A hint: where transparent huge pages are off, the kernel ignores or refuses it and
            // the buffer is made of ordinary pages, as a heap buffer would be.
            let _ = map.advise(Advice::HugePage);
            // Unused bytes before and after the buffer are never touched, so never backed.
            let start = (HUGE_PAGE - map.as_ptr().addr() % HUGE_PAGE) % HUGE_PAGE;
            let end = start.checked_add(len).ok_or_else(too_large)?;
            Ok(Pages {
                map,
                range: start..end,
            })
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
            self.map.get_mut(self.range.clone()).unwrap_or(&mut [])
        }

        /// The buffer as [`Bytes`], its pages made read-only first.
        pub(super) fn freeze(self) -> io::Result<Bytes> {
            let map = self.map.make_read_only()?;
            Ok(Bytes::from_owner(Frozen {
                map,
                range: self.range,
            }))
        }
    }

    /// A read-only mapping that owns the bytes of a [`Bytes`].
    struct Frozen {
        map: Mmap,
        range: Range<usize>,
    }

    impl AsRef<[u8]> for Frozen {
        fn as_ref(&self) -> &[u8] {
            self.map.get(self.range.clone()).unwrap_or(&[])
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn both_paths_hash_exactly_what_they_read() {
        for len in [0, 1, READ_CHUNK - 1, READ_CHUNK, 3 * READ_CHUNK + 17] {
            let src = data(len);
            for parallel in [false, true] {
                let mut buf = vec![0u8; len];
                let hash = read_and_hash(&mut &src[..], &mut buf, parallel).unwrap();
                assert_eq!(buf, src, "len {len}, parallel {parallel}");
                assert_eq!(
                    hash,
                    ContentHash::of(&src),
                    "len {len}, parallel {parallel}"
                );
            }
        }
    }

    #[test]
    fn a_short_read_is_an_early_end() {
        for parallel in [false, true] {
            let src = data(2 * READ_CHUNK);
            let mut buf = vec![0u8; 2 * READ_CHUNK + 1];
            let err = read_and_hash(&mut &src[..], &mut buf, parallel).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn files_small_and_large_read_whole() {
        // Around the heap/mapping threshold and above the second-thread threshold.
        for len in [0, 4096, (4 << 20) - 1, 4 << 20, (9 << 20) + 511] {
            let src = data(len);
            let mut tmp = tempfile::tempfile().unwrap();
            tmp.write_all(&src).unwrap();
            let mut file = tmp.try_clone().unwrap();
            std::io::Seek::rewind(&mut file).unwrap();
            let (bytes, hash) = read_hashed(&mut file, len).unwrap();
            assert_eq!(bytes.len(), len);
            assert!(bytes[..] == src[..], "len {len}");
            assert_eq!(hash, ContentHash::of(&src));
            // The bytes outlive every handle that made them.
            let copy = bytes.clone();
            drop(bytes);
            assert_eq!(ContentHash::of(&copy), hash);
        }
    }
}
