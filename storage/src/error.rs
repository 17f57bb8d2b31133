//! The storage engine's error type.
//!
//! Every failure the engine can report is one of these variants. Corruption is
//! always an error naming the file and byte offset; it is never returned as data
//! and never causes a panic.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// What the engine was doing ("write", "fsync", "read", "rename", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A stored checksum does not match the bytes read.
    #[error("checksum mismatch in {} at offset {offset}: stored {stored:#018x}, computed {computed:#018x}", path.display())]
    Checksum {
        /// The file holding the damaged bytes.
        path: PathBuf,
        /// Byte offset of the checksummed region.
        offset: u64,
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum computed over the bytes read.
        computed: u64,
    },

    /// A file's structure is invalid: bad magic, unknown version, an impossible
    /// length, a truncated record in the middle of a file, and so on.
    #[error("corruption in {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The caller passed an argument the engine cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An earlier write-ahead-log fsync failed; the engine refuses writes
    /// because it can no longer promise durability.
    #[error("engine is read-only after a failed fsync: {0}")]
    ReadOnly(String),

    /// A background flush keeps failing, so memtable space cannot be freed.
    #[error("{0}")]
    Background(String),

    /// The engine has been closed.
    #[error("engine is closed")]
    Closed,
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Corruption`].
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for the variants that mean stored bytes are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Checksum { .. } | Error::Corruption { .. })
    }
}
