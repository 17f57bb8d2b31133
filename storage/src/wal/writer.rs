//! [`WalWriter`]: appends records to one WAL segment.
//!
//! Invariants: the segment's header is durable before the writer is returned;
//! every append is one `WritableFile::append` call holding whole records, so
//! a group commit reaches the file as one write; after any failed append or
//! sync the writer refuses further work, because the file's tail and its
//! durability are then unknown (replay will cut whatever partial record the
//! failure left).

use super::{
    check_segment_header, encode_segment_header, segment_path, MAX_WAL_RECORD_BYTES,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::error::{Error, Result};
use crate::fs::{FileSystem, WritableFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// After a group commit larger than this, the staging buffer is released
/// rather than kept, so one huge commit does not pin its memory forever.
const RETAINED_BUFFER_BYTES: usize = 4 << 20;

/// Appends records to one WAL segment.
pub struct WalWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    segment_no: u64,
    /// Staging buffer for one group commit's records.
    buf: Vec<u8>,
    /// Why the writer stopped accepting work, after a failed append or sync.
    failure: Option<String>,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("path", &self.path)
            .field("segment_no", &self.segment_no)
            .field("bytes", &self.file.len())
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl WalWriter {
    /// Creates segment `segment_no` in `dir` (which must exist), writes its
    /// header and makes file and directory entry durable. Fails if the segment
    /// already exists: creating it again would destroy its records.
    pub fn create(fs: Arc<dyn FileSystem>, dir: &Path, segment_no: u64) -> Result<WalWriter> {
        let path = segment_path(dir, segment_no);
        if fs.exists(&path) {
            return Err(Error::InvalidArgument(format!(
                "WAL segment {} already exists",
                path.display()
            )));
        }
        let file = fs
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let writer = Self::with_header(file, path, segment_no)?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync dir", dir, e))?;
        Ok(writer)
    }

    /// Reopens existing segment `segment_no` in `dir` to append after its
    /// last record.
    ///
    /// The segment must first have been replayed with
    /// [`super::TailPolicy::Truncate`], so that it ends on a record boundary;
    /// this only re-checks the header. A segment that replay emptied because
    /// its header was torn gets a fresh header.
    pub fn open_append(fs: Arc<dyn FileSystem>, dir: &Path, segment_no: u64) -> Result<WalWriter> {
        let path = segment_path(dir, segment_no);
        let reader = fs
            .open_read(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = reader.len();
        if len == 0 {
            let file = fs
                .open_append(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            let writer = Self::with_header(file, path, segment_no)?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("sync dir", dir, e))?;
            return Ok(writer);
        }
        if len < SEGMENT_HEADER_LEN as u64 {
            return Err(Error::corruption(
                &path,
                0,
                format!("torn {len}-byte segment header; replay the segment with TailPolicy::Truncate first"),
            ));
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        reader
            .read_at(0, &mut header)
            .map_err(|e| Error::io("read", &path, e))?;
        check_segment_header(&header, &path, segment_no)?;
        let file = fs
            .open_append(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Self::new(file, path, segment_no))
    }

    /// Appends several records with ONE write call (group commit: the leader
    /// appends every waiting writer's batch at once). Each payload must be 1
    /// to [`MAX_WAL_RECORD_BYTES`] bytes; otherwise nothing is written and the
    /// writer stays usable. On an I/O error nothing is acknowledged and the
    /// writer is broken: every later call fails.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<()> {
        self.check_usable("append")?;
        check_payload_sizes(payloads)?;
        if payloads.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for payload in payloads {
            encode_record(payload, &mut self.buf);
        }
        let written = self.file.append(&self.buf);
        if self.buf.capacity() > RETAINED_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        written.map_err(|e| self.fail("append", e))
    }

    /// Makes every appended record durable. On error the writer is broken.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable("fsync")?;
        let synced = self.file.sync();
        synced.map_err(|e| self.fail("fsync", e))
    }

    /// A handle that syncs this segment from another thread, if the file
    /// system supports it.
    pub fn syncer(&self) -> Option<std::sync::Arc<dyn crate::fs::FileSyncer>> {
        self.file.syncer().ok()
    }

    /// The number of the segment being written.
    pub fn segment_no(&self) -> u64 {
        self.segment_no
    }

    /// Size of the segment in bytes, header included, counting unsynced
    /// appends.
    pub fn bytes(&self) -> u64 {
        self.file.len()
    }

    fn new(file: Box<dyn WritableFile>, path: PathBuf, segment_no: u64) -> WalWriter {
        WalWriter {
            file,
            path,
            segment_no,
            buf: Vec::new(),
            failure: None,
        }
    }

    /// Writes and syncs the header into the empty `file`.
    fn with_header(
        mut file: Box<dyn WritableFile>,
        path: PathBuf,
        segment_no: u64,
    ) -> Result<WalWriter> {
        let header = encode_segment_header(segment_no);
        file.append(&header)
            .map_err(|e| Error::io("append segment header", &path, e))?;
        file.sync()
            .map_err(|e| Error::io("fsync segment header", &path, e))?;
        Ok(Self::new(file, path, segment_no))
    }

    fn check_usable(&self, op: &'static str) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(why) => Err(Error::io(
                op,
                &self.path,
                io::Error::other(format!(
                    "WAL writer is unusable after an earlier failure: {why}"
                )),
            )),
        }
    }

    /// Marks the writer broken by `e` and returns the error to report.
    fn fail(&mut self, op: &'static str, e: io::Error) -> Error {
        self.failure = Some(format!("{op}: {e}"));
        Error::io(op, &self.path, e)
    }
}

/// Rejects payloads a reader would take for damage: empty or over the limit.
fn check_payload_sizes(payloads: &[&[u8]]) -> Result<()> {
    for (i, p) in payloads.iter().enumerate() {
        if p.is_empty() || p.len() > MAX_WAL_RECORD_BYTES {
            return Err(Error::InvalidArgument(format!(
                "WAL payload {i} is {} bytes; payloads must be 1 to {MAX_WAL_RECORD_BYTES} bytes",
                p.len()
            )));
        }
    }
    Ok(())
}

/// Appends `[len u32][xxh3_64(payload) u64][payload]` to `out`.
fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(RECORD_HEADER_LEN + payload.len());
    // Fits: check_payload_sizes bounds the length by MAX_WAL_RECORD_BYTES.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

// Record lengths are stored as a u32.
const _: () = assert!(MAX_WAL_RECORD_BYTES <= u32::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;
    use crate::wal::fault_fs::FaultFs;
    use crate::wal::{replay_segment, TailPolicy};

    fn os() -> Arc<dyn FileSystem> {
        Arc::new(OsFs::default())
    }

    fn replay_all(fs: &dyn FileSystem, dir: &Path, no: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        replay_segment(fs, dir, no, TailPolicy::Strict, &mut |p, _| {
            out.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn create_writes_a_durable_header() {
        let dir = tempfile::tempdir().unwrap();
        let w = WalWriter::create(os(), dir.path(), 3).unwrap();
        assert_eq!(w.segment_no(), 3);
        assert_eq!(w.bytes(), SEGMENT_HEADER_LEN as u64);
        let on_disk = std::fs::read(segment_path(dir.path(), 3)).unwrap();
        assert_eq!(on_disk, encode_segment_header(3));
    }

    #[test]
    fn create_refuses_an_existing_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(os(), dir.path(), 1).unwrap();
        w.append(&[b"keep me"]).unwrap();
        let e = WalWriter::create(os(), dir.path(), 1).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)));
        assert_eq!(replay_all(&*os(), dir.path(), 1), vec![b"keep me".to_vec()]);
    }

    #[test]
    fn group_append_is_one_write_of_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(os(), dir.path(), 1).unwrap();
        w.append(&[b"a", b"bb", b"ccc"]).unwrap();
        w.append(&[]).unwrap();
        w.append(&[b"d"]).unwrap();
        w.sync().unwrap();
        let expected = SEGMENT_HEADER_LEN + 4 * RECORD_HEADER_LEN + 7;
        assert_eq!(w.bytes(), expected as u64);
        let got = replay_all(&*os(), dir.path(), 1);
        assert_eq!(
            got,
            vec![
                b"a".to_vec(),
                b"bb".to_vec(),
                b"ccc".to_vec(),
                b"d".to_vec()
            ]
        );
    }

    #[test]
    fn invalid_payloads_are_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(os(), dir.path(), 1).unwrap();
        let too_big = vec![0u8; MAX_WAL_RECORD_BYTES + 1];
        assert!(matches!(
            w.append(&[b"ok", b""]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            w.append(&[b"ok", &too_big]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(w.bytes(), SEGMENT_HEADER_LEN as u64);
        w.append(&[b"still usable"]).unwrap();
        assert_eq!(
            replay_all(&*os(), dir.path(), 1),
            vec![b"still usable".to_vec()]
        );
    }

    #[test]
    fn failed_append_breaks_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FaultFs::default());
        let mut w = WalWriter::create(fs.clone(), dir.path(), 1).unwrap();
        w.append(&[b"acked"]).unwrap();
        fs.plan.lock().torn_append = Some((".wal".into(), 5));
        assert!(matches!(
            w.append(&[b"lost record"]),
            Err(Error::Io { op: "append", .. })
        ));
        fs.plan.lock().torn_append = None;
        assert!(w.append(&[b"more"]).is_err());
        assert!(w.sync().is_err());
        // The torn record is cut by replay; the acknowledged one survives.
        let mut got = Vec::new();
        let report = replay_segment(&*fs, dir.path(), 1, TailPolicy::Truncate, &mut |p, _| {
            got.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![b"acked".to_vec()]);
        assert_eq!(report.truncated_bytes, 5);
    }

    #[test]
    fn failed_sync_breaks_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FaultFs::default());
        let mut w = WalWriter::create(fs.clone(), dir.path(), 1).unwrap();
        w.append(&[b"x"]).unwrap();
        fs.plan.lock().failing_sync = Some(".wal".into());
        assert!(matches!(w.sync(), Err(Error::Io { op: "fsync", .. })));
        fs.plan.lock().failing_sync = None;
        assert!(w.sync().is_err());
        assert!(w.append(&[b"y"]).is_err());
    }

    #[test]
    fn create_fails_if_the_header_cannot_be_synced() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FaultFs::default());
        fs.plan.lock().failing_sync = Some(".wal".into());
        assert!(WalWriter::create(fs.clone(), dir.path(), 1).is_err());
    }

    #[test]
    fn open_append_continues_after_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(os(), dir.path(), 9).unwrap();
        w.append(&[b"one"]).unwrap();
        drop(w);
        let mut w = WalWriter::open_append(os(), dir.path(), 9).unwrap();
        assert_eq!(
            w.bytes(),
            (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 3) as u64
        );
        w.append(&[b"two"]).unwrap();
        w.sync().unwrap();
        assert_eq!(
            replay_all(&*os(), dir.path(), 9),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
    }

    #[test]
    fn open_append_checks_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 4);
        assert!(matches!(
            WalWriter::open_append(os(), dir.path(), 4),
            Err(Error::Io { .. })
        ));
        std::fs::write(&path, encode_segment_header(5)).unwrap();
        assert!(WalWriter::open_append(os(), dir.path(), 4)
            .unwrap_err()
            .is_corruption());
        std::fs::write(&path, &encode_segment_header(4)[..10]).unwrap();
        assert!(WalWriter::open_append(os(), dir.path(), 4)
            .unwrap_err()
            .is_corruption());
        // An emptied segment gets a fresh header.
        std::fs::write(&path, b"").unwrap();
        let mut w = WalWriter::open_append(os(), dir.path(), 4).unwrap();
        w.append(&[b"r"]).unwrap();
        assert_eq!(replay_all(&*os(), dir.path(), 4), vec![b"r".to_vec()]);
    }

    #[test]
    fn large_group_commit_releases_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(os(), dir.path(), 1).unwrap();
        let big = vec![1u8; RETAINED_BUFFER_BYTES + 1];
        w.append(&[&big]).unwrap();
        assert_eq!(w.buf.capacity(), 0);
        w.append(&[b"small"]).unwrap();
        assert!(w.buf.capacity() > 0);
    }
}
