//! The file I/O boundary of the engine.
//!
//! Every byte the engine reads or writes goes through [`FileSystem`], so tests
//! can substitute an implementation that injects faults (EIO, ENOSPC, torn
//! writes, lost unsynced data) — see [`fault::FaultFs`]. The production
//! implementation is [`OsFs`].
//!
//! Invariants the engine relies on:
//! - [`WritableFile::append`] writes all bytes or returns an error;
//! - data is durable only after [`WritableFile::sync`] returns `Ok`;
//! - a rename is durable only after [`FileSystem::sync_dir`] on its directory;
//! - [`RandomAccessFile::read_at`] fills the whole buffer or returns an error
//!   (`UnexpectedEof` when the file is shorter).

pub mod fault;
mod os;
mod uring;

pub use os::{OsFs, ReadBackend, IO_BACKEND_ENV};

use std::io;
use std::path::Path;
use std::sync::Arc;

/// Makes a file's appended data durable from another thread than the one
/// appending (the interval sync thread, so appends never wait on fsync).
pub trait FileSyncer: Send + Sync {
    /// Makes everything appended to the file so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// A file opened for appending.
pub trait WritableFile: Send + Sync {
    /// Appends all of `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends continue from there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Current length in bytes, including unsynced appends.
    fn len(&self) -> u64;
    /// A handle that syncs this file from another thread, where the
    /// implementation supports it (`Unsupported` otherwise: callers then
    /// sync through [`WritableFile::sync`]).
    fn syncer(&self) -> io::Result<Arc<dyn FileSyncer>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no cross-thread sync for this file",
        ))
    }
    /// True if nothing has been written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file opened for positional reads; shared between threads.
pub trait RandomAccessFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// File length in bytes at open time.
    fn len(&self) -> u64;
    /// True if the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The raw descriptor, for backends (io_uring) that submit reads themselves.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Asks the kernel to drop this file's cached pages. Used by cold-read
    /// benchmarks; a no-op where unsupported.
    fn drop_page_cache(&self) -> io::Result<()> {
        Ok(())
    }
}

/// One positional read within a batch submitted by [`FileSystem::read_batch`].
pub struct ReadOp<'a> {
    /// The file to read.
    pub file: &'a dyn RandomAccessFile,
    /// Byte offset in the file.
    pub offset: u64,
    /// Destination; filled completely on success.
    pub buf: &'a mut [u8],
}

/// The engine's view of a file system.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens a file for positional reads.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Lists the names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// True if the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Performs several reads, possibly concurrently (io_uring). The default
    /// issues them one after another. Fails on the first failed read.
    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> io::Result<()> {
        for op in ops.iter_mut() {
            op.file.read_at(op.offset, op.buf)?;
        }
        Ok(())
    }

    /// Reads a whole file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open_read(path)?;
        let len = usize::try_from(file.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0u8; len];
        file.read_at(0, &mut buf)?;
        Ok(buf)
    }

    /// Name of the read backend in use, for reports.
    fn backend_name(&self) -> &'static str {
        "custom"
    }
}
