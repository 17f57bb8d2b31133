//! [`OsFs`]: the production file system, on std and libc.
//!
//! Reads use `pread`, or a read-only memory map of each file when the
//! [`ReadBackend::Mmap`] backend is chosen. Batched reads go through io_uring
//! when [`ReadBackend::IoUring`] is chosen and the kernel accepts it; otherwise
//! they fall back to `pread` at run time.
//!
//! Setting the environment variable [`IO_BACKEND_ENV`]
//! (`TESSERA_IO_BACKEND`) to `pread` forces that fallback: an `OsFs` built
//! with [`ReadBackend::IoUring`] then never sets up a ring. The variable is
//! read once, in [`OsFs::new`]; it does not affect the other backends.

use super::{FileSystem, RandomAccessFile, ReadOp, WritableFile};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How [`OsFs`] serves positional reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadBackend {
    /// One `pread` per read.
    Pread,
    /// Copy out of a read-only memory map of the file.
    Mmap,
    /// `pread` for single reads; one io_uring submission for batches. The
    /// default: as fast as the others when blocks are cached, and several
    /// times faster for a slate whose blocks must come from disk
    /// (docs/benchmarks.md).
    #[default]
    IoUring,
}

/// Environment variable read by [`OsFs::new`]: the value `pread` (any ASCII
/// case) makes [`ReadBackend::IoUring`] fall back to `pread`, as if the kernel
/// had refused io_uring. Other values are ignored.
pub const IO_BACKEND_ENV: &str = "TESSERA_IO_BACKEND";

/// True if the value of [`IO_BACKEND_ENV`] forces the `pread` fallback.
pub(super) fn pread_forced(value: Option<&std::ffi::OsStr>) -> bool {
    value
        .and_then(|v| v.to_str())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("pread"))
}

/// The operating system's file system.
pub struct OsFs {
    backend: ReadBackend,
    uring: Option<super::uring::UringBatcher>,
}

impl OsFs {
    /// A file system reading with `backend`. If io_uring is asked for but the
    /// kernel refuses to set up a ring or to serve a probe read on it, or
    /// [`IO_BACKEND_ENV`] is `pread`, batches fall back to `pread`.
    pub fn new(backend: ReadBackend) -> OsFs {
        let forced = pread_forced(std::env::var_os(IO_BACKEND_ENV).as_deref());
        OsFs::with_uring_allowed(backend, !forced)
    }

    /// [`OsFs::new`] with the environment override already decided; lets
    /// tests force the fallback without mutating the process environment.
    pub(super) fn with_uring_allowed(backend: ReadBackend, uring_allowed: bool) -> OsFs {
        let uring = match backend {
            ReadBackend::IoUring if uring_allowed => super::uring::UringBatcher::new().ok(),
            _ => None,
        };
        OsFs { backend, uring }
    }

    /// The backend actually in use (io_uring may have fallen back to pread).
    pub fn effective_backend(&self) -> ReadBackend {
        match (self.backend, &self.uring) {
            (ReadBackend::IoUring, None) => ReadBackend::Pread,
            (b, _) => b,
        }
    }
}

impl Default for OsFs {
    fn default() -> Self {
        OsFs::new(ReadBackend::default())
    }
}

struct OsWritable {
    file: File,
    len: u64,
}

impl WritableFile for OsWritable {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn syncer(&self) -> io::Result<Arc<dyn super::FileSyncer>> {
        Ok(Arc::new(OsSyncer(self.file.try_clone()?)))
    }
}

/// A second descriptor of a file being appended: fdatasync on it makes the
/// data written through the first one durable.
struct OsSyncer(File);

impl super::FileSyncer for OsSyncer {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

struct PreadFile {
    file: File,
    len: u64,
}

impl RandomAccessFile for PreadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn drop_page_cache(&self) -> io::Result<()> {
        fadvise_dontneed(&self.file)
    }
}

struct MmapFile {
    file: File,
    map: Option<memmap2::Mmap>,
}

impl RandomAccessFile for MmapFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let map: &[u8] = self.map.as_deref().unwrap_or(&[]);
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = map.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn drop_page_cache(&self) -> io::Result<()> {
        fadvise_dontneed(&self.file)
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file")
}

fn fadvise_dontneed(file: &File) -> io::Result<()> {
    // SAFETY: posix_fadvise only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl FileSystem for OsFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(OsWritable { file, len: 0 }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(OsWritable { file, len }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if self.backend == ReadBackend::Mmap {
            let map = if len == 0 {
                None
            } else {
                // SAFETY: the engine maps only files it no longer writes: an SST
                // is opened for reading after its builder finished and
                // fsynced it, and nothing modifies it afterwards, so the
                // mapping cannot change under the reader.
                Some(unsafe { memmap2::Mmap::map(&file)? })
            };
            return Ok(Arc::new(MmapFile { file, map }));
        }
        Ok(Arc::new(PreadFile { file, len }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> io::Result<()> {
        match &self.uring {
            Some(uring) if ops.len() > 1 => uring.read_batch(ops),
            _ => {
                for op in ops.iter_mut() {
                    op.file.read_at(op.offset, op.buf)?;
                }
                Ok(())
            }
        }
    }

    fn backend_name(&self) -> &'static str {
        match self.effective_backend() {
            ReadBackend::Pread => "pread",
            ReadBackend::Mmap => "mmap",
            ReadBackend::IoUring => "io_uring",
        }
    }
}
