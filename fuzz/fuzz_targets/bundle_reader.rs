#![no_main]
//! Any bytes as a bundle: the strict reader must reject or accept without panicking, and what
//! it accepts must be canonical (re-packing the accepted files gives the same bytes).

use libfuzzer_sys::fuzz_target;
use warden_bundle::{Bundle, BundleLimits};

fuzz_target!(|data: &[u8]| {
    let caps = BundleLimits {
        max_entries: 64,
        max_file_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
    };
    if let Ok(bundle) = Bundle::from_bytes(data.to_vec(), &caps) {
        assert_eq!(bundle.bytes(), data);
        let files: Vec<_> = bundle.files().collect();
        assert!(files.windows(2).all(|w| w[0].path < w[1].path), "accepted unsorted entries");
    }
});
