//! Hard caps on a bundle, checked before the work they bound is done.

/// Default for [`BundleLimits::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default for [`BundleLimits::max_file_bytes`]: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default for [`BundleLimits::max_total_bytes`]: 256 MiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// Limits on what a bundle may contain. Reading and packing refuse anything beyond them, and
/// every cap is checked *before* the memory or time it bounds is spent: the total size before a
/// byte is read or hashed, the entry count as entries are met (never from a declared count), and
/// each file's declared size before its data is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Most archive entries (files and directory entries) a bundle may hold.
    ///
    /// Default 10,000 ([`DEFAULT_MAX_ENTRIES`]): far more than a component, its assets and a
    /// static UI need, while an archive of millions of tiny entries (an "entry bomb" that costs
    /// time and memory per entry) stops at the first entry beyond the cap.
    pub max_entries: usize,
    /// Largest single file, in bytes.
    ///
    /// Default 64 MiB ([`DEFAULT_MAX_FILE_BYTES`]): comfortably above a large component or
    /// native executable, and small enough that a header declaring a huge size is refused
    /// before anything is allocated or sliced for it.
    pub max_file_bytes: u64,
    /// Largest whole bundle (the `.wext` file), in bytes.
    ///
    /// Default 256 MiB ([`DEFAULT_MAX_TOTAL_BYTES`]): a bundle is held in memory while it is
    /// verified and loaded (the bytes hashed are the bytes loaded), so this bounds the memory one
    /// install or load can take. Checked from the file's size before reading it.
    pub max_total_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}
