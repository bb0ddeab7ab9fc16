use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use warden_bundle::{BundleLimits, pack_dir_with_progress};

use crate::files::write_atomic;

pub fn run(dir: &Path, out: &Path) -> Result<()> {
    let on_terminal = std::io::stderr().is_terminal();
    let mut last_shown = 0u64;
    let mut progress = |done: u64, total: u64| {
        // Only large packs on a terminal show progress; pipes and logs stay quiet.
        if on_terminal && total >= 16 << 20 && (done == total || done - last_shown >= 8 << 20) {
            last_shown = done;
            eprint!("\rpacking {} / {} MiB", done >> 20, total >> 20);
            if done == total {
                eprintln!();
            }
        }
    };
    let packed = pack_dir_with_progress(dir, &BundleLimits::default(), &mut progress)
        .with_context(|| format!("packing {}", dir.display()))?;
    write_atomic(out, &packed.bytes)?;
    let m = &packed.manifest.extension;
    eprintln!(
        "packed {} {} ({} bytes) into {}",
        m.id,
        m.version,
        packed.bytes.len(),
        out.display()
    );
    outln!("{}", packed.hash);
    Ok(())
}
