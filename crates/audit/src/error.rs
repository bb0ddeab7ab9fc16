//! Why an audit record could not be stored or the log opened.

use std::io;
use std::path::PathBuf;

use warden_datadir::DataDirError;

use crate::chain::{ChainError, MAX_LINE_BYTES, copy_io};

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
    DataDir(#[from] DataDirError),
    #[error("encoding an audit record")]
    Encode(#[source] serde_json::Error),
    #[error("an audit record of {len} bytes is over the line cap of {max} bytes", max = MAX_LINE_BYTES)]
    TooLarge { len: usize },
    #[error(
        "the audit log is unusable after an earlier write failure; no more records are accepted"
    )]
    Broken,
    /// Records given to the log whose callers had stopped waiting were not stored (nobody else
    /// will store them), or some given so far still wait for the log.
    #[error("{}", unstored(*lost, *waiting))]
    Unstored { lost: u64, waiting: u64 },
}

fn unstored(lost: u64, waiting: u64) -> String {
    let n = |k: u64| {
        if k == 1 {
            "1 audit record".to_owned()
        } else {
            format!("{k} audit records")
        }
    };
    match (lost, waiting) {
        (0, w) => format!("{} still waiting for the audit log", n(w)),
        (l, 0) => format!("{} could not be stored", n(l)),
        (l, w) => format!(
            "{} could not be stored, and {} still wait for the audit log",
            n(l),
            n(w)
        ),
    }
}

impl AuditError {
    /// An equal error for another caller: one failure of a group commit (the head could not be
    /// read, the write or the sync failed) is the answer of every record in the round, and
    /// errors (holding `io::Error`s) cannot be cloned.
    pub(crate) fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Io {
                action,
                path,
                source,
            } => AuditError::Io {
                action,
                path: path.clone(),
                source: copy_io(source),
            },
            AuditError::Chain { dir, source } => AuditError::Chain {
                dir: dir.clone(),
                source: source.duplicate(),
            },
            AuditError::DataDir(e) => AuditError::DataDir(copy_data_dir(e)),
            AuditError::Encode(e) => {
                AuditError::Encode(<serde_json::Error as serde::ser::Error>::custom(e))
            }
            AuditError::TooLarge { len } => AuditError::TooLarge { len: *len },
            AuditError::Broken => AuditError::Broken,
            AuditError::Unstored { lost, waiting } => AuditError::Unstored {
                lost: *lost,
                waiting: *waiting,
            },
        }
    }
}

fn copy_data_dir(e: &DataDirError) -> DataDirError {
    match e {
        DataDirError::Io { what, path, source } => DataDirError::Io {
            what,
            path: path.clone(),
            source: copy_io(source),
        },
        DataDirError::NotADirectory(p) => DataDirError::NotADirectory(p.clone()),
        DataDirError::SharedDir { path, mode } => DataDirError::SharedDir {
            path: path.clone(),
            mode: *mode,
        },
        DataDirError::NotAFile(p) => DataDirError::NotAFile(p.clone()),
        DataDirError::SharedFile { path, mode } => DataDirError::SharedFile {
            path: path.clone(),
            mode: *mode,
        },
        DataDirError::Changed(p) => DataDirError::Changed(p.clone()),
        DataDirError::KeyLength { path, found, more } => DataDirError::KeyLength {
            path: path.clone(),
            found: *found,
            more: *more,
        },
    }
}
