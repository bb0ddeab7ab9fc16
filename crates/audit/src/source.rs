//! [`AuditSource`]: the read side of an audit log (listing, verifying, checkpoints), whatever
//! stores it. [`FileAuditSource`] reads the files of an audit folder.

use std::path::{Path, PathBuf};

use crate::chain::ChainError;
use crate::files::AUDIT_DIR;
use crate::key::AuditKey;
use crate::read::{self, Filter, Reader, VerifyReport};

/// Where an audit log is read from. [`crate::checkpoint::take_from`] and
/// [`crate::checkpoint::check_from`] work over any source.
pub trait AuditSource: Send + Sync {
    /// Names the log in messages: a folder, a database.
    fn location(&self) -> String;

    /// Lists records with `filter`, from the first on, each line checked. The reader returns
    /// `None` at the current end and yields the records appended since when called again
    /// (`--follow`), if the source can see them.
    fn read(&self, filter: Filter) -> Result<Reader, ChainError>;

    /// Checks the whole log against its head, from one consistent snapshot (see
    /// [`crate::verify_with`] and [`crate::verify_lines`]): the head's MAC with `key` (a head
    /// without one is then an error), every record and its link, the end against the head.
    /// `seen` is shown each record's (seq, hash) as it is checked.
    fn verify(
        &self,
        key: Option<&AuditKey>,
        seen: &mut dyn FnMut(u64, &str),
    ) -> Result<VerifyReport, ChainError>;
}

/// The log in the files of an audit folder (`audit.jsonl`, `audit.head`): what
/// [`crate::AuditLog`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAuditSource {
    pub dir: PathBuf,
}

impl FileAuditSource {
    /// The log in the audit folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> FileAuditSource {
        FileAuditSource { dir: dir.into() }
    }

    /// The log of a data dir: `DATA/audit`, as [`crate::AuditLog::open_in`] opens it.
    pub fn in_data_dir(data: &Path) -> FileAuditSource {
        FileAuditSource::new(data.join(AUDIT_DIR))
    }
}

impl AuditSource for FileAuditSource {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn read(&self, filter: Filter) -> Result<Reader, ChainError> {
        read::read(&self.dir, filter)
    }

    fn verify(
        &self,
        key: Option<&AuditKey>,
        seen: &mut dyn FnMut(u64, &str),
    ) -> Result<VerifyReport, ChainError> {
        read::verify_with(&self.dir, key, seen)
    }
}
