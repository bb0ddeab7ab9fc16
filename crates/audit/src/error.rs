//! Why an audit record could not be stored or the log opened.

use std::io;
use std::path::PathBuf;

use crate::chain::{ChainError, MAX_LINE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the audit log in {} is damaged; run `warden audit --verify`", dir.display())]
    Chain {
        dir: PathBuf,
        #[source]
        source: ChainError,
    },
    /// The data dir or the audit key file cannot be used.
    #[error("{0}")]
    DataDir(#[from] warden_datadir::DataDirError),
    #[error("encoding an audit record")]
    Encode(#[source] serde_json::Error),
    #[error("an audit record of {len} bytes is over the line cap of {max} bytes", max = MAX_LINE_BYTES)]
    TooLarge { len: usize },
    #[error(
        "the audit log is unusable after an earlier write failure; no more records are accepted"
    )]
    Broken,
}
