//! The write-ahead log: a directory of numbered segment files.
//!
//! This module owns the segment file format, segment naming and listing; the
//! [`WalWriter`] appends records and [`replay_segment`] reads them back.
//! What a record's payload means (a [`crate::WriteBatch`]) is not its concern.
//!
//! A segment `n` lives at [`segment_path`]`(dir, n)` = `dir/{n:020}.wal` and is
//! a [`SEGMENT_HEADER_LEN`]-byte header (magic, format version, segment
//! number, header checksum) followed by records
//! `[payload length u32][xxh3_64(payload) u64][payload]`, little-endian.
//!
//! Invariants:
//! - a segment's header is written and synced (file and directory) before any
//!   record is appended, and never changes afterwards;
//! - a record's payload is 1 to [`MAX_WAL_RECORD_BYTES`] bytes; the writer
//!   refuses anything else, so a reader may treat any other length as damage;
//! - records are only appended; a reader's view of a segment is its longest
//!   prefix of whole, checksum-valid records (anything after is a torn or
//!   damaged tail, see [`TailPolicy`]).
//!
//! A segment has no trailer magic: it is an append-only log whose end is the
//! end of its last valid record. The byte layout is documented in
//! `docs/format.md`.

mod reader;
mod writer;

pub use reader::{replay_segment, ReplayReport, TailPolicy};
pub use writer::WalWriter;

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// Largest payload of one WAL record, in bytes. A batch is one record, so this
/// also bounds a batch's encoded size.
pub const MAX_WAL_RECORD_BYTES: usize = 64 << 20;

/// First four bytes of every segment: ASCII "TSWL" read as a little-endian u32.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"TSWL");

/// Version of the segment format this code reads and writes.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;

/// Size of the segment header: magic u32, version u32, segment number u64,
/// xxh3_64 of the preceding 16 bytes u64.
pub const SEGMENT_HEADER_LEN: usize = 4 + 4 + 8 + 8;

/// Bytes of the header covered by its checksum.
const HEADER_CHECKED_LEN: usize = 4 + 4 + 8;

/// Size of a record header: payload length u32, payload checksum u64.
pub const RECORD_HEADER_LEN: usize = 4 + 8;

/// File-name extension of segments.
const SEGMENT_EXT: &str = ".wal";

/// Digits in a segment file name: enough for any u64.
const SEGMENT_NAME_DIGITS: usize = 20;

/// Path of segment `no` in `dir`: `dir/{no:020}.wal`.
pub fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!(
        "{no:0width$}{SEGMENT_EXT}",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// Numbers of the segments in `dir`, ascending. Names other than exactly
/// [`segment_path`]'s form are ignored.
pub fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>> {
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut numbers: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// The segment number named by `name`, if it is a canonical segment name.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Fails for 20-digit numbers above u64::MAX.
    digits.parse().ok()
}

/// The header of segment `no`.
fn encode_segment_header(no: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&no.to_le_bytes());
    let sum = xxh3_64(&h[..HEADER_CHECKED_LEN]);
    h[HEADER_CHECKED_LEN..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Checks the header at the start of `file` (which must hold at least
/// [`SEGMENT_HEADER_LEN`] bytes) of segment `no` at `path`: magic, version,
/// checksum and that it names segment `no` (a renamed or misplaced file is
/// not silently replayed under the wrong number).
fn check_segment_header(file: &[u8], path: &Path, no: u64) -> Result<()> {
    let mut d = Decoder::new(file, path, 0);
    let checked = d.take(HEADER_CHECKED_LEN, "segment header")?;
    let stored_sum = d.u64("header checksum")?;
    let mut h = Decoder::new(checked, path, 0);
    let magic = h.u32("segment magic")?;
    if magic != SEGMENT_MAGIC {
        return Err(h.error_at(0, format!("bad magic {magic:#010x}: not a WAL segment")));
    }
    let version = h.u32("segment format version")?;
    if version != SEGMENT_FORMAT_VERSION {
        return Err(h.error_at(4, format!("unsupported WAL format version {version}")));
    }
    let computed = xxh3_64(checked);
    if stored_sum != computed {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            offset: 0,
            stored: stored_sum,
            computed,
        });
    }
    let stored_no = h.u64("segment number")?;
    if stored_no != no {
        return Err(h.error_at(
            8,
            format!("header names segment {stored_no}, file name says {no}"),
        ));
    }
    Ok(())
}

/// A file system wrapper that injects write and sync failures, for tests of
/// the WAL and the manifest.
#[cfg(test)]
pub(crate) mod fault_fs {
    use crate::fs::{FileSystem, OsFs, RandomAccessFile, WritableFile};
    use parking_lot::Mutex;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    /// Which operations fail.
    #[derive(Default)]
    pub(crate) struct Plan {
        /// Appends to files whose name ends with this suffix write only the
        /// given number of bytes and then fail (a torn write).
        pub torn_append: Option<(String, usize)>,
        /// Syncs of files whose name ends with this suffix fail.
        pub failing_sync: Option<String>,
    }

    /// [`OsFs`] with failures injected per [`Plan`].
    #[derive(Default)]
    pub(crate) struct FaultFs {
        inner: OsFs,
        /// The current plan; change it between operations.
        pub plan: Arc<Mutex<Plan>>,
    }

    fn injected() -> io::Error {
        io::Error::other("injected failure")
    }

    fn matches(path: &Path, suffix: Option<&str>) -> bool {
        suffix.is_some_and(|s| path.to_string_lossy().ends_with(s))
    }

    struct FaultFile {
        inner: Box<dyn WritableFile>,
        path: PathBuf,
        plan: Arc<Mutex<Plan>>,
    }

    impl WritableFile for FaultFile {
        fn append(&mut self, data: &[u8]) -> io::Result<()> {
            let torn = self.plan.lock().torn_append.clone();
            match torn {
                Some((suffix, keep)) if matches(&self.path, Some(&suffix)) => {
                    self.inner.append(&data[..keep.min(data.len())])?;
                    Err(injected())
                }
                _ => self.inner.append(data),
            }
        }

        fn sync(&mut self) -> io::Result<()> {
            if matches(&self.path, self.plan.lock().failing_sync.as_deref()) {
                return Err(injected());
            }
            self.inner.sync()
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }

        fn len(&self) -> u64 {
            self.inner.len()
        }
    }

    impl FaultFs {
        fn wrap(&self, path: &Path, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
            Box::new(FaultFile {
                inner,
                path: path.to_path_buf(),
                plan: self.plan.clone(),
            })
        }
    }

    impl FileSystem for FaultFs {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir_all(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
            Ok(self.wrap(path, self.inner.create(path)?))
        }
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
            Ok(self.wrap(path, self.inner.open_append(path)?))
        }
        fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
            self.inner.open_read(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.inner.remove(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.inner.list(dir)
        }
        fn exists(&self, path: &Path) -> bool {
            self.inner.exists(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.inner.sync_dir(dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;

    #[test]
    fn segment_names_round_trip() {
        let dir = Path::new("/db/wal");
        assert_eq!(
            segment_path(dir, 42),
            Path::new("/db/wal/00000000000000000042.wal")
        );
        for no in [0, 1, 42, u64::MAX] {
            let p = segment_path(dir, no);
            let name = p.file_name().and_then(|n| n.to_str()).unwrap();
            assert_eq!(parse_segment_name(name), Some(no));
        }
    }

    #[test]
    fn list_segments_sorts_and_ignores_junk() {
        let dir = tempfile::tempdir().unwrap();
        for no in [10u64, 2, u64::MAX, 0] {
            std::fs::write(segment_path(dir.path(), no), b"").unwrap();
        }
        let junk = [
            "MANIFEST",
            "3.wal",
            "0000000000000000001.wal",
            "000000000000000000001.wal",
            "99999999999999999999.wal",
            "0000000000000000000a.wal",
            "00000000000000000005.wal.tmp",
            "00000000000000000005.sst",
            "+0000000000000000005.wal",
        ];
        for name in junk {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            list_segments(&OsFs::default(), dir.path()).unwrap(),
            vec![0, 2, 10, u64::MAX]
        );
    }

    #[test]
    fn list_segments_of_missing_dir_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = list_segments(&OsFs::default(), &dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, Error::Io { op: "list", .. }));
    }

    #[test]
    fn header_checks() {
        let path = Path::new("x.wal");
        let good = encode_segment_header(7);
        check_segment_header(&good, path, 7).unwrap();
        assert!(matches!(
            check_segment_header(&good, path, 8),
            Err(Error::Corruption { offset: 8, .. })
        ));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = good;
            bad[i] ^= 0x04;
            assert!(
                check_segment_header(&bad, path, 7)
                    .unwrap_err()
                    .is_corruption(),
                "flip at {i}"
            );
        }
    }
}
