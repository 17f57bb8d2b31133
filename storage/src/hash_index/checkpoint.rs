//! The hash index checkpoint: every SST-located entry of a [`HashIndex`],
//! tagged with the manifest it matches, so a restart need not rebuild the
//! index by scanning every SST.
//!
//! Layout (little-endian; full table in `docs/format.md`):
//! a 40-byte header (magic, format version, entries per chunk, manifest id,
//! entry count, xxh3 of the preceding header bytes), then the entries, 28
//! bytes each, in chunks of `entries per chunk` (the last may be shorter),
//! each chunk followed by the xxh3 of its bytes, then an 8-byte trailer magic.
//!
//! Invariants:
//! - the file length is exactly what the header's counts imply, so truncation
//!   and trailing bytes are caught before any entry is decoded;
//! - no entry is used before its chunk checksum has been verified, and a
//!   checkpoint holds no memtable locations and no digest twice; any breach
//!   is reported as [`Error::Checksum`] or [`Error::Corruption`] naming the
//!   file and byte offset, never as data;
//! - a checkpoint is published by writing a temporary file, syncing it,
//!   renaming it over `path` and syncing the directory, so `path` always holds
//!   either the previous checkpoint or the complete new one.
//!
//! Writing snapshots each shard in turn under its read lock; entries of
//! different shards may come from different moments if writers are active.
//! The snapshot is encoded in memory first (28 bytes per SST entry, about
//! the file's size) because the header must carry the exact entry count.

use super::{shard_index, HashIndex, MEM_FLAG};
use crate::fs::{FileSystem, RandomAccessFile};
use crate::{Digest, Error, Result, Timestamp};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// First 8 bytes of a checkpoint.
const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"TSHIXCKP");
/// Last 8 bytes of a checkpoint.
const TRAILER_MAGIC: u64 = u64::from_le_bytes(*b"TSHIXEND");
/// The only format version this code reads and writes.
const FORMAT_VERSION: u32 = 1;

/// Header bytes: magic 8, version 4, chunk entries 4, manifest id 8,
/// entry count 8, header checksum 8.
const HEADER_LEN: usize = 40;
const VERSION_OFFSET: u64 = 8;
const CHUNK_ENTRIES_OFFSET: u64 = 12;
const COUNT_OFFSET: u64 = 24;
/// Offset of the header checksum, which covers every header byte before it.
const HEADER_SUM_OFFSET: usize = 32;

/// Bytes per entry: digest hi 8, digest lo 4, event_ts 8, packed location 8.
const ENTRY_LEN: usize = 28;
/// Offset of the packed location within an entry.
const ENTRY_LOC_OFFSET: u64 = 20;
/// Bytes of the checksum after each chunk.
const CHUNK_SUM_LEN: usize = 8;
const TRAILER_LEN: usize = 8;

/// Entries per chunk written by this version (1.75 MiB of entries).
const CHUNK_ENTRIES: u32 = 1 << 16;
/// Largest chunk a reader accepts, bounding its buffer to 28 MiB.
const MAX_CHUNK_ENTRIES: u32 = 1 << 20;

impl HashIndex {
    /// Writes a checkpoint of every entry whose loc is Sst (Mem entries are
    /// skipped: after a restart the WAL replay re-creates them). tmp file +
    /// sync + rename + sync dir (through FileSystem).
    ///
    /// On error the previous checkpoint at `path`, if any, is left in place
    /// and the temporary file is removed on a best-effort basis.
    pub fn write_checkpoint(
        &self,
        fs: &dyn FileSystem,
        path: &Path,
        manifest_id: u64,
    ) -> Result<()> {
        let body = self.encode_sst_entries();
        publish(fs, path, manifest_id, CHUNK_ENTRIES, &body)
    }

    /// None if the file is absent. Any damage → Error::Checksum/Corruption
    /// naming path and offset. Returns the manifest id the checkpoint was
    /// written for, and the index it holds.
    pub fn load_checkpoint(fs: &dyn FileSystem, path: &Path) -> Result<Option<(u64, HashIndex)>> {
        let file = match fs.open_read(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let reader = Reader { file: &*file, path };
        let header = reader.header()?;
        let entities = usize::try_from(header.count)
            .map_err(|_| Error::corruption(path, COUNT_OFFSET, "entry count exceeds memory"))?;
        let mut index = HashIndex::with_capacity(entities);
        reader.load_entries(&header, &mut index)?;
        Ok(Some((header.manifest_id, index)))
    }

    /// Encodes every SST-located entry, shard by shard in slot order (which
    /// is nearly home-slot order, so loading fills tables almost sequentially).
    fn encode_sst_entries(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.len().saturating_mul(ENTRY_LEN));
        self.for_each(|d, e| {
            if e.loc.is_sst() {
                encode_entry(&mut body, d, e.event_ts, e.loc.pack());
            }
        });
        body
    }
}

fn encode_entry(out: &mut Vec<u8>, d: Digest, event_ts: Timestamp, loc: u64) {
    out.extend_from_slice(&d.hi.to_le_bytes());
    out.extend_from_slice(&d.lo.to_le_bytes());
    out.extend_from_slice(&event_ts.to_le_bytes());
    out.extend_from_slice(&loc.to_le_bytes());
}

fn encode_header(manifest_id: u64, chunk_entries: u32, count: u64) -> [u8; HEADER_LEN] {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&chunk_entries.to_le_bytes());
    h.extend_from_slice(&manifest_id.to_le_bytes());
    h.extend_from_slice(&count.to_le_bytes());
    let sum = xxh3_64(&h);
    h.extend_from_slice(&sum.to_le_bytes());
    let mut out = [0u8; HEADER_LEN];
    out.copy_from_slice(&h);
    out
}

/// Writes `body` (encoded entries) as a checkpoint at a temporary path and
/// atomically moves it to `path`.
fn publish(
    fs: &dyn FileSystem,
    path: &Path,
    manifest_id: u64,
    chunk_entries: u32,
    body: &[u8],
) -> Result<()> {
    let tmp = tmp_path(path);
    let result = write_file(fs, &tmp, manifest_id, chunk_entries, body)
        .and_then(|()| {
            fs.rename(&tmp, path)
                .map_err(|e| Error::io("rename", &tmp, e))
        })
        .and_then(|()| {
            let dir = parent_dir(path);
            fs.sync_dir(dir).map_err(|e| Error::io("sync_dir", dir, e))
        });
    if result.is_err() {
        // Best effort: the temporary file is garbage either way, and after a
        // successful rename it no longer exists.
        let _ = fs.remove(&tmp);
    }
    result
}

fn write_file(
    fs: &dyn FileSystem,
    tmp: &Path,
    manifest_id: u64,
    chunk_entries: u32,
    body: &[u8],
) -> Result<()> {
    let count = (body.len() / ENTRY_LEN) as u64;
    let chunk_bytes = chunk_entries as usize * ENTRY_LEN;
    let mut file = fs.create(tmp).map_err(|e| Error::io("create", tmp, e))?;
    let write_err = |e| Error::io("write", tmp, e);
    file.append(&encode_header(manifest_id, chunk_entries, count))
        .map_err(write_err)?;
    for chunk in body.chunks(chunk_bytes) {
        file.append(chunk).map_err(write_err)?;
        file.append(&xxh3_64(chunk).to_le_bytes())
            .map_err(write_err)?;
    }
    file.append(&TRAILER_MAGIC.to_le_bytes())
        .map_err(write_err)?;
    file.sync().map_err(|e| Error::io("fsync", tmp, e))
}

/// `<path>.tmp`, in the same directory so the rename is atomic.
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".tmp");
    PathBuf::from(s)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Exact file length for `count` entries in chunks of `chunk_entries`, or
/// None if it does not fit in a u64.
fn expected_file_len(count: u64, chunk_entries: u32) -> Option<u64> {
    let chunks = count.div_ceil(u64::from(chunk_entries));
    let entries = count.checked_mul(ENTRY_LEN as u64)?;
    let sums = chunks.checked_mul(CHUNK_SUM_LEN as u64)?;
    entries
        .checked_add(sums)?
        .checked_add((HEADER_LEN + TRAILER_LEN) as u64)
}

/// Takes fixed-size little-endian fields off the front of a byte slice.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// The validated header.
struct Header {
    chunk_entries: u32,
    manifest_id: u64,
    count: u64,
}

/// Header fields as stored, before validation.
struct RawHeader {
    magic: u64,
    version: u32,
    chunk_entries: u32,
    manifest_id: u64,
    count: u64,
    checksum: u64,
}

impl RawHeader {
    fn parse(buf: &[u8; HEADER_LEN]) -> Option<RawHeader> {
        let mut f = Fields(buf);
        Some(RawHeader {
            magic: f.u64()?,
            version: f.u32()?,
            chunk_entries: f.u32()?,
            manifest_id: f.u64()?,
            count: f.u64()?,
            checksum: f.u64()?,
        })
    }
}

/// One decoded entry.
struct RawEntry {
    digest: Digest,
    event_ts: Timestamp,
    loc: u64,
}

impl RawEntry {
    fn parse(buf: &[u8]) -> Option<RawEntry> {
        let mut f = Fields(buf);
        let hi = f.u64()?;
        let lo = f.u32()?;
        Some(RawEntry {
            digest: Digest { hi, lo },
            event_ts: Timestamp::from_le_bytes(f.take()?),
            loc: f.u64()?,
        })
    }
}

/// Reads and validates one checkpoint file.
struct Reader<'a> {
    file: &'a dyn RandomAccessFile,
    path: &'a Path,
}

impl Reader<'_> {
    fn corruption(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::corruption(self.path, offset, reason)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_at(offset, buf)
            .map_err(|e| Error::io("read", self.path, e))
    }

    /// Reads and checks the header, the file length and the trailer.
    fn header(&self) -> Result<Header> {
        let len = self.file.len();
        let min_len = (HEADER_LEN + TRAILER_LEN) as u64;
        if len < min_len {
            return Err(self.corruption(
                len,
                format!("file is {len} bytes; a checkpoint has at least {min_len}"),
            ));
        }
        let mut buf = [0u8; HEADER_LEN];
        self.read(0, &mut buf)?;
        let raw = RawHeader::parse(&buf).ok_or_else(|| self.corruption(0, "short header"))?;
        if raw.magic != HEADER_MAGIC {
            return Err(self.corruption(0, format!("bad header magic {:#018x}", raw.magic)));
        }
        if raw.version != FORMAT_VERSION {
            return Err(self.corruption(
                VERSION_OFFSET,
                format!("unsupported format version {}", raw.version),
            ));
        }
        let computed = xxh3_64(&buf[..HEADER_SUM_OFFSET]);
        if raw.checksum != computed {
            return Err(Error::Checksum {
                path: self.path.to_path_buf(),
                offset: 0,
                stored: raw.checksum,
                computed,
            });
        }
        if raw.chunk_entries == 0 || raw.chunk_entries > MAX_CHUNK_ENTRIES {
            return Err(self.corruption(
                CHUNK_ENTRIES_OFFSET,
                format!("{} entries per chunk is out of range", raw.chunk_entries),
            ));
        }
        self.check_length(len, raw.count, raw.chunk_entries)?;
        self.check_trailer(len)?;
        Ok(Header {
            chunk_entries: raw.chunk_entries,
            manifest_id: raw.manifest_id,
            count: raw.count,
        })
    }

    fn check_length(&self, len: u64, count: u64, chunk_entries: u32) -> Result<()> {
        let Some(expected) = expected_file_len(count, chunk_entries) else {
            return Err(self.corruption(COUNT_OFFSET, format!("entry count {count} is impossible")));
        };
        if len != expected {
            return Err(self.corruption(
                len.min(expected),
                format!("file is {len} bytes but its header implies {expected} ({count} entries)"),
            ));
        }
        Ok(())
    }

    fn check_trailer(&self, len: u64) -> Result<()> {
        let offset = len - TRAILER_LEN as u64;
        let mut buf = [0u8; TRAILER_LEN];
        self.read(offset, &mut buf)?;
        let magic = u64::from_le_bytes(buf);
        if magic != TRAILER_MAGIC {
            return Err(self.corruption(offset, format!("bad trailer magic {magic:#018x}")));
        }
        Ok(())
    }

    /// Verifies each chunk's checksum, then inserts its entries into `index`.
    fn load_entries(&self, header: &Header, index: &mut HashIndex) -> Result<()> {
        let per_chunk = u64::from(header.chunk_entries).min(header.count);
        // per_chunk <= MAX_CHUNK_ENTRIES, so the buffer is bounded.
        let mut buf = vec![0u8; per_chunk as usize * ENTRY_LEN + CHUNK_SUM_LEN];
        let mut offset = HEADER_LEN as u64;
        let mut remaining = header.count;
        while remaining > 0 {
            let n = remaining.min(per_chunk);
            let data_len = n as usize * ENTRY_LEN;
            let chunk = buf
                .get_mut(..data_len + CHUNK_SUM_LEN)
                .ok_or_else(|| self.corruption(offset, "chunk larger than its buffer"))?;
            self.read(offset, chunk)?;
            let (data, sum) = chunk.split_at(data_len);
            self.verify_chunk(offset, data, sum)?;
            self.insert_chunk(offset, data, index)?;
            offset += (data_len + CHUNK_SUM_LEN) as u64;
            remaining -= n;
        }
        Ok(())
    }

    fn verify_chunk(&self, offset: u64, data: &[u8], sum: &[u8]) -> Result<()> {
        let stored = Fields(sum)
            .u64()
            .ok_or_else(|| self.corruption(offset, "chunk checksum missing"))?;
        let computed = xxh3_64(data);
        if stored != computed {
            return Err(Error::Checksum {
                path: self.path.to_path_buf(),
                offset,
                stored,
                computed,
            });
        }
        Ok(())
    }

    fn insert_chunk(&self, offset: u64, data: &[u8], index: &mut HashIndex) -> Result<()> {
        for (k, raw) in data.chunks_exact(ENTRY_LEN).enumerate() {
            let at = offset + (k * ENTRY_LEN) as u64;
            let e = RawEntry::parse(raw).ok_or_else(|| self.corruption(at, "short entry"))?;
            if e.loc & MEM_FLAG != 0 {
                return Err(
                    self.corruption(at + ENTRY_LOC_OFFSET, "memtable location in a checkpoint")
                );
            }
            // The loader owns the index, so no lock is taken.
            let table = index.shards[shard_index(e.digest)].0.get_mut();
            if !table.insert_new(e.digest, e.event_ts, e.loc) {
                return Err(self.corruption(at, "digest appears twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IndexEntry, Location, MAX_BLOCKS_PER_SST, MAX_FILE_NO};
    use super::*;
    use crate::fs::{OsFs, WritableFile};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn digest(i: u64) -> Digest {
        if i == 0 {
            return Digest { hi: 0, lo: 0 }; // the reserved digest
        }
        let h = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
        Digest {
            hi: (h >> 64) as u64,
            lo: h as u32,
        }
    }

    fn sst_entry(i: u64) -> IndexEntry {
        IndexEntry {
            event_ts: i as i64 - 1000,
            loc: Location::Sst {
                file_no: i * 7 % (MAX_FILE_NO + 1),
                block: (i % u64::from(MAX_BLOCKS_PER_SST)) as u32,
            },
        }
    }

    /// `n` SST entries (digests 0..n) plus `n / 3` memtable entries.
    fn sample_index(n: u64) -> HashIndex {
        let ix = HashIndex::new();
        for i in 0..n {
            ix.insert(digest(i), sst_entry(i));
        }
        for i in n..n + n / 3 {
            ix.insert(
                digest(i),
                IndexEntry {
                    event_ts: 1,
                    loc: Location::Mem { gen: i, slot: 0 },
                },
            );
        }
        ix
    }

    fn contents(ix: &HashIndex) -> HashMap<Digest, IndexEntry> {
        let mut m = HashMap::new();
        ix.for_each(|d, e| {
            m.insert(d, e);
        });
        m
    }

    fn sst_contents(ix: &HashIndex) -> HashMap<Digest, IndexEntry> {
        let mut m = contents(ix);
        m.retain(|_, e| e.loc.is_sst());
        m
    }

    #[test]
    fn round_trip_skips_memtable_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.ckpt");
        let fs = OsFs::default();
        let ix = sample_index(3000);
        ix.write_checkpoint(&fs, &path, 42).expect("write");
        assert!(!fs.exists(&tmp_path(&path)));
        let (manifest_id, loaded) = HashIndex::load_checkpoint(&fs, &path)
            .expect("load")
            .expect("present");
        assert_eq!(manifest_id, 42);
        assert_eq!(loaded.len(), 3000);
        assert_eq!(contents(&loaded), sst_contents(&ix));
        assert_eq!(loaded.get(digest(0)), Some(sst_entry(0)));
        assert_eq!(loaded.get(digest(3001)), None);
        let len = fs.open_read(&path).expect("open").len();
        assert_eq!(Some(len), expected_file_len(3000, CHUNK_ENTRIES));
    }

    #[test]
    fn absent_file_is_none_and_empty_index_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = OsFs::default();
        let path = dir.path().join("index.ckpt");
        assert!(HashIndex::load_checkpoint(&fs, &path)
            .expect("load")
            .is_none());
        HashIndex::new()
            .write_checkpoint(&fs, &path, 9)
            .expect("write");
        let (id, ix) = HashIndex::load_checkpoint(&fs, &path)
            .expect("load")
            .expect("present");
        assert_eq!((id, ix.len()), (9, 0));
    }

    #[test]
    fn loaded_index_is_within_the_memory_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = OsFs::default();
        let path = dir.path().join("index.ckpt");
        let ix = HashIndex::new();
        for i in 1..=150_000 {
            ix.insert(digest(i), sst_entry(i));
        }
        ix.write_checkpoint(&fs, &path, 1).expect("write");
        let (_, loaded) = HashIndex::load_checkpoint(&fs, &path)
            .expect("load")
            .expect("present");
        let per = loaded.memory_bytes() as f64 / loaded.len() as f64;
        assert!(per <= 48.0, "{per:.2} bytes/entity after load");
    }

    /// A small checkpoint with several chunks, the last one partial.
    fn small_multi_chunk_file(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = dir.join("small.ckpt");
        let ix = sample_index(40);
        publish(&OsFs::default(), &path, 5, 7, &ix.encode_sst_entries()).expect("write");
        let bytes = std::fs::read(&path).expect("read back");
        assert_eq!(Some(bytes.len() as u64), expected_file_len(40, 7));
        (path, bytes)
    }

    /// Loads `bytes` as a checkpoint named like `path`. Each copy is a new
    /// file: ext4 flushes a file rewritten in place on close, which would
    /// make thousands of damaged copies slow.
    fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Option<(u64, HashIndex)>> {
        let copy = tmp_path(path);
        std::fs::write(&copy, bytes).expect("write damaged copy");
        let result = HashIndex::load_checkpoint(&OsFs::default(), &copy);
        std::fs::remove_file(&copy).expect("remove damaged copy");
        result
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, good) = small_multi_chunk_file(dir.path());
        let (_, ix) = load_bytes(&path, &good).expect("load").expect("present");
        assert_eq!(ix.len(), 40);
        for pos in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[pos] ^= mask;
                match load_bytes(&path, &bad) {
                    Err(e) if e.is_corruption() => {
                        assert!(e.to_string().contains("small.ckpt"), "{e}");
                    }
                    other => panic!(
                        "flip {mask:#x} at {pos}: {:?}",
                        other.map(|o| o.map(|(id, _)| id))
                    ),
                }
            }
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, good) = small_multi_chunk_file(dir.path());
        for len in 0..good.len() {
            let err = load_bytes(&path, &good[..len])
                .map(|_| ())
                .expect_err("truncated");
            assert!(err.is_corruption(), "len {len}: {err}");
        }
        let mut longer = good.clone();
        longer.extend_from_slice(&[0u8; 28]);
        assert!(load_bytes(&path, &longer)
            .map(|_| ())
            .expect_err("extended")
            .is_corruption());
    }

    /// Files whose checksums are right but whose contents are not a valid
    /// checkpoint (as a buggy writer would produce) are still rejected.
    #[test]
    fn checksummed_but_invalid_contents_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = OsFs::default();
        let path = dir.path().join("bad.ckpt");
        let d = digest(1);
        let mut body = Vec::new();
        encode_entry(&mut body, d, 1, Location::Mem { gen: 3, slot: 0 }.pack());
        publish(&fs, &path, 1, 4, &body).expect("write");
        let err = HashIndex::load_checkpoint(&fs, &path)
            .map(|_| ())
            .expect_err("mem loc");
        assert!(err.to_string().contains("memtable location"), "{err}");

        let mut body = Vec::new();
        encode_entry(&mut body, d, 1, 5);
        encode_entry(&mut body, d, 2, 6);
        publish(&fs, &path, 1, 4, &body).expect("write");
        let err = HashIndex::load_checkpoint(&fs, &path)
            .map(|_| ())
            .expect_err("duplicate");
        assert!(err.to_string().contains("twice"), "{err}");

        publish(&fs, &path, 1, MAX_CHUNK_ENTRIES + 1, &[]).expect("write");
        let err = HashIndex::load_checkpoint(&fs, &path)
            .map(|_| ())
            .expect_err("chunk size");
        assert!(err.to_string().contains("per chunk"), "{err}");
    }

    /// Forwards to [`OsFs`] but can fail a file sync or a rename.
    struct FaultyFs {
        inner: OsFs,
        fail_sync: AtomicBool,
        fail_rename: AtomicBool,
    }

    struct FaultyFile {
        inner: Box<dyn WritableFile>,
        fail_sync: bool,
    }

    fn injected() -> io::Error {
        io::Error::other("injected fault")
    }

    impl WritableFile for FaultyFile {
        fn append(&mut self, data: &[u8]) -> io::Result<()> {
            self.inner.append(data)
        }
        fn sync(&mut self) -> io::Result<()> {
            if self.fail_sync {
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

    impl FileSystem for FaultyFs {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir_all(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
            let inner = self.inner.create(path)?;
            let fail_sync = self.fail_sync.load(Ordering::Relaxed);
            Ok(Box::new(FaultyFile { inner, fail_sync }))
        }
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
            self.inner.open_append(path)
        }
        fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
            self.inner.open_read(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            if self.fail_rename.load(Ordering::Relaxed) {
                return Err(injected());
            }
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

    #[test]
    fn failed_write_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.ckpt");
        let fs = FaultyFs {
            inner: OsFs::default(),
            fail_sync: AtomicBool::new(false),
            fail_rename: AtomicBool::new(false),
        };
        let old = sample_index(100);
        old.write_checkpoint(&fs, &path, 1).expect("first write");
        let new = sample_index(200);
        for flag in [&fs.fail_sync, &fs.fail_rename] {
            flag.store(true, Ordering::Relaxed);
            let err = new.write_checkpoint(&fs, &path, 2).expect_err("injected");
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(!fs.exists(&tmp_path(&path)), "temporary file left behind");
            let (id, loaded) = HashIndex::load_checkpoint(&fs, &path)
                .expect("load")
                .expect("present");
            assert_eq!((id, contents(&loaded)), (1, sst_contents(&old)));
            flag.store(false, Ordering::Relaxed);
        }
        new.write_checkpoint(&fs, &path, 2).expect("second write");
        let (id, loaded) = HashIndex::load_checkpoint(&fs, &path)
            .expect("load")
            .expect("present");
        assert_eq!((id, contents(&loaded)), (2, sst_contents(&new)));
    }

    fn arb_entry() -> impl Strategy<Value = (Digest, IndexEntry)> {
        let loc = prop_oneof![
            (0..=MAX_FILE_NO, 0..MAX_BLOCKS_PER_SST)
                .prop_map(|(file_no, block)| Location::Sst { file_no, block }),
            (0..=crate::hash_index::MAX_MEM_GEN, any::<u32>())
                .prop_map(|(gen, slot)| Location::Mem { gen, slot }),
        ];
        let d = prop_oneof![
            1 => Just(Digest { hi: 0, lo: 0 }),
            20 => (any::<u64>(), any::<u32>()).prop_map(|(hi, lo)| Digest { hi, lo }),
        ];
        (d, any::<i64>(), loc).prop_map(|(d, event_ts, loc)| (d, IndexEntry { event_ts, loc }))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn arbitrary_indexes_round_trip(
            entries in proptest::collection::vec(arb_entry(), 0..400),
            chunk_entries in 1u32..50,
            manifest_id in any::<u64>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("p.ckpt");
            let fs = OsFs::default();
            let ix = HashIndex::new();
            for (d, e) in entries {
                ix.insert(d, e);
            }
            publish(&fs, &path, manifest_id, chunk_entries, &ix.encode_sst_entries()).expect("write");
            let (id, loaded) = HashIndex::load_checkpoint(&fs, &path).expect("load").expect("present");
            prop_assert_eq!(id, manifest_id);
            prop_assert_eq!(contents(&loaded), sst_contents(&ix));
        }
    }
}
