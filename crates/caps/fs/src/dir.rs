//! Folders the host keeps for extensions and for itself: private to the operator.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::FsError;

/// Creates `dir` (and missing parents) as 0700, and refuses an existing one that is not a
/// folder or that other users can write to.
pub fn private_dir(dir: &Path) -> Result<(), FsError> {
    let io = |what, e| FsError::Io {
        what,
        path: dir.to_path_buf(),
        source: e,
    };
    // Checked first so that a file in the way is named as such, not as "File exists".
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(FsError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("creating", e))?;
        }
        Err(e) => return Err(io("reading", e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io("reading", e))?;
    if !meta.is_dir() {
        return Err(FsError::NotADirectory(dir.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(FsError::Shared {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_is_named_and_a_shared_folder_refused() {
        let t = tempfile::TempDir::new().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = private_dir(&file).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&shared).unwrap_err().to_string();
        assert!(e.contains("writable by other users (mode 777)"), "{e}");
        let made = t.path().join("a/b");
        private_dir(&made).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
