//! The manifest: the set of live SSTs and the engine's durable metadata.
//!
//! It is one file, [`MANIFEST_FILE`], rewritten whole on every change: the new
//! state is written to [`MANIFEST_TMP_FILE`], synced, renamed over the old
//! manifest and the directory synced. A crash at any point leaves either the
//! old or the new manifest, never a mix; a leftover temporary file is ignored
//! by [`load`] and removed by the next [`commit`].
//!
//! File layout: magic, format version, body length, body, xxh3_64 of
//! everything before the checksum; all little-endian. See
//! `docs/format.md` for the byte tables.
//!
//! Invariants, checked by [`commit`] (which refuses to write a state that
//! [`load`] would reject) and again by [`load`]:
//! - file numbers are unique and below `next_file_no` (so they are never
//!   reused);
//! - each file's key range, sequence range and event-time range is ordered
//!   (smallest ≤ largest, min ≤ max), and its boundary keys are within
//!   [`MAX_KEY_LEN`].

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::options::TableOptions;
use crate::types::{cmp_entity, SeqNo, TableId, Timestamp, MAX_KEY_LEN};
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// Name of the manifest file in the database directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Name of the temporary file a new manifest is written to before the rename.
pub const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
/// First four bytes of the manifest: ASCII "TSMF" read as a little-endian u32.
pub const MANIFEST_MAGIC: u32 = u32::from_le_bytes(*b"TSMF");
/// Version of the manifest format this code reads and writes.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Bytes before the body: magic u32, version u32, body length u64.
const PREFIX_LEN: usize = 4 + 4 + 8;
/// Bytes after the body: xxh3_64 checksum u64.
const CHECKSUM_LEN: usize = 8;
/// Encoded size of one table entry: id u32, flags u8, ttl i64, retention i64.
const TABLE_ENTRY_LEN: usize = 4 + 1 + 8 + 8;
/// Encoded size of a file entry without its two boundary keys.
const FILE_ENTRY_FIXED_LEN: usize = 8 + 4 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 4 + 2 + 4 + 2;
/// Table flag: `ttl_us` is present.
const TABLE_HAS_TTL: u8 = 1 << 0;
/// Table flag: `retention_us` is present.
const TABLE_HAS_RETENTION: u8 = 1 << 1;
/// Every defined table flag.
const TABLE_KNOWN_FLAGS: u8 = TABLE_HAS_TTL | TABLE_HAS_RETENTION;

/// File number of the first file of a new database; 0 is never allocated.
const FIRST_FILE_NO: u64 = 1;

// Boundary key lengths are stored as a u16.
const _: () = assert!(MAX_KEY_LEN <= u16::MAX as usize);

/// One live SST.
#[derive(Clone, Debug, PartialEq)]
pub struct FileMeta {
    /// The SST's file number (names the file).
    pub file_no: u64,
    /// LSM level, 0 for flushed memtables.
    pub level: u32,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Number of stored versions.
    pub entries: u64,
    /// First `(table, key)` in the file.
    pub smallest: (TableId, Bytes),
    /// Last `(table, key)` in the file.
    pub largest: (TableId, Bytes),
    /// Lowest sequence number in the file.
    pub min_seq: SeqNo,
    /// Highest sequence number in the file.
    pub max_seq: SeqNo,
    /// Earliest event time in the file.
    pub min_event_ts: Timestamp,
    /// Latest event time in the file.
    pub max_event_ts: Timestamp,
    /// Uncompressed size of the file's entries, in bytes.
    pub raw_bytes: u64,
}

/// Cumulative I/O counters, for write amplification reports.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Counters {
    /// Bytes of user data committed.
    pub user_bytes: u64,
    /// Bytes written by memtable flushes.
    pub flush_bytes: u64,
    /// Bytes read by compactions.
    pub compaction_read_bytes: u64,
    /// Bytes written by compactions.
    pub compaction_write_bytes: u64,
}

/// Everything the manifest records.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestState {
    /// Commit counter, set by the caller; increases with every commit.
    pub id: u64,
    /// Seed of the entity digests, chosen when the database is created.
    pub digest_seed: u64,
    /// Next file number to allocate; every live file's number is below it.
    pub next_file_no: u64,
    /// Oldest WAL segment still needed for recovery.
    pub wal_min_segment: u64,
    /// Last sequence number durably covered by this state.
    pub last_seq: SeqNo,
    /// Last ingest time assigned, so time never runs backwards across restarts.
    pub last_ingest_ts: Timestamp,
    /// Per-table options.
    pub tables: BTreeMap<TableId, TableOptions>,
    /// The live SSTs.
    pub files: Vec<FileMeta>,
    /// I/O counters.
    pub counters: Counters,
}

impl ManifestState {
    /// The state of a new, empty database whose digests use `digest_seed`.
    pub fn new(digest_seed: u64) -> Self {
        ManifestState {
            id: 0,
            digest_seed,
            next_file_no: FIRST_FILE_NO,
            wal_min_segment: 0,
            last_seq: 0,
            last_ingest_ts: 0,
            tables: BTreeMap::new(),
            files: Vec::new(),
            counters: Counters::default(),
        }
    }
}

/// Reads the manifest in `dir`; `None` if there is none. A leftover
/// [`MANIFEST_TMP_FILE`] is ignored. Any damage or inconsistency is an
/// [`Error::Checksum`] or [`Error::Corruption`] naming the file and offset.
pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Option<ManifestState>> {
    let path = dir.join(MANIFEST_FILE);
    match fs.read_all(&path) {
        Ok(data) => decode(&data, &path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// Atomically replaces the manifest in `dir` with `state`: write
/// [`MANIFEST_TMP_FILE`], sync it, rename it over [`MANIFEST_FILE`], sync the
/// directory. Increments nothing itself: the caller sets `id`. Removes a stale
/// temporary file first.
///
/// A state that breaks the module's invariants is refused with
/// [`Error::InvalidArgument`] before anything is written. On an I/O error the
/// old manifest is intact unless the rename happened, and whether the new one
/// is durable is unknown; the caller must not assume either.
pub fn commit(fs: &dyn FileSystem, dir: &Path, state: &ManifestState) -> Result<()> {
    check_state(state).map_err(|bad| Error::InvalidArgument(format!("manifest state: {bad}")))?;
    let bytes = encode(state);
    let tmp = dir.join(MANIFEST_TMP_FILE);
    if fs.exists(&tmp) {
        fs.remove(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let mut file = fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.append(&bytes)
        .map_err(|e| Error::io("append", &tmp, e))?;
    file.sync().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(file);
    let path = dir.join(MANIFEST_FILE);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io("sync dir", dir, e))
}

/// A broken invariant: which file entry (if any) and what is wrong.
struct Inconsistency {
    file_index: Option<usize>,
    reason: String,
}

impl std::fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.file_index {
            Some(i) => write!(f, "file entry {i}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Checks the module's invariants on `state`.
fn check_state(state: &ManifestState) -> std::result::Result<(), Inconsistency> {
    let mut seen = HashSet::with_capacity(state.files.len());
    for (i, file) in state.files.iter().enumerate() {
        let bad = |reason: String| Inconsistency {
            file_index: Some(i),
            reason,
        };
        check_file(file, state.next_file_no).map_err(bad)?;
        if !seen.insert(file.file_no) {
            return Err(bad(format!("file number {} appears twice", file.file_no)));
        }
    }
    if u32::try_from(state.files.len()).is_err() || u32::try_from(state.tables.len()).is_err() {
        return Err(Inconsistency {
            file_index: None,
            reason: "more than u32::MAX files or tables".into(),
        });
    }
    Ok(())
}

/// Checks one file entry's own invariants.
fn check_file(file: &FileMeta, next_file_no: u64) -> std::result::Result<(), String> {
    if file.file_no >= next_file_no {
        return Err(format!(
            "file number {} is not below next_file_no {next_file_no}",
            file.file_no
        ));
    }
    for (name, key) in [("smallest", &file.smallest.1), ("largest", &file.largest.1)] {
        if key.len() > MAX_KEY_LEN {
            return Err(format!(
                "{name} key is {} bytes; the limit is {MAX_KEY_LEN}",
                key.len()
            ));
        }
    }
    let (small, large) = (&file.smallest, &file.largest);
    if cmp_entity((small.0, &small.1), (large.0, &large.1)) == Ordering::Greater {
        return Err("smallest key sorts after largest key".into());
    }
    if file.min_seq > file.max_seq {
        return Err(format!(
            "min_seq {} > max_seq {}",
            file.min_seq, file.max_seq
        ));
    }
    if file.min_event_ts > file.max_event_ts {
        return Err(format!(
            "min_event_ts {} > max_event_ts {}",
            file.min_event_ts, file.max_event_ts
        ));
    }
    Ok(())
}

/// The whole manifest file for `state`, which must pass [`check_state`].
fn encode(state: &ManifestState) -> Vec<u8> {
    let body = encode_body(state);
    let mut out = Vec::with_capacity(PREFIX_LEN + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MANIFEST_MAGIC.to_le_bytes());
    out.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The body for `state`; counts and key lengths fit their fields because
/// [`check_state`] passed.
fn encode_body(state: &ManifestState) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [
        state.id,
        state.digest_seed,
        state.next_file_no,
        state.wal_min_segment,
        state.last_seq,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&state.last_ingest_ts.to_le_bytes());
    let c = &state.counters;
    for v in [
        c.user_bytes,
        c.flush_bytes,
        c.compaction_read_bytes,
        c.compaction_write_bytes,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(state.tables.len() as u32).to_le_bytes());
    for (id, opts) in &state.tables {
        encode_table(*id, opts, &mut b);
    }
    b.extend_from_slice(&(state.files.len() as u32).to_le_bytes());
    for file in &state.files {
        encode_file(file, &mut b);
    }
    b
}

fn encode_table(id: TableId, opts: &TableOptions, b: &mut Vec<u8>) {
    let mut flags = 0;
    if opts.ttl_us.is_some() {
        flags |= TABLE_HAS_TTL;
    }
    if opts.retention_us.is_some() {
        flags |= TABLE_HAS_RETENTION;
    }
    b.extend_from_slice(&id.to_le_bytes());
    b.push(flags);
    // An absent value is stored as 0, which load checks.
    b.extend_from_slice(&opts.ttl_us.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&opts.retention_us.unwrap_or(0).to_le_bytes());
}

fn encode_file(f: &FileMeta, b: &mut Vec<u8>) {
    b.extend_from_slice(&f.file_no.to_le_bytes());
    b.extend_from_slice(&f.level.to_le_bytes());
    for v in [f.file_bytes, f.entries, f.raw_bytes, f.min_seq, f.max_seq] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&f.min_event_ts.to_le_bytes());
    b.extend_from_slice(&f.max_event_ts.to_le_bytes());
    b.extend_from_slice(&f.smallest.0.to_le_bytes());
    b.extend_from_slice(&(f.smallest.1.len() as u16).to_le_bytes());
    b.extend_from_slice(&f.largest.0.to_le_bytes());
    b.extend_from_slice(&(f.largest.1.len() as u16).to_le_bytes());
    b.extend_from_slice(&f.smallest.1);
    b.extend_from_slice(&f.largest.1);
}

/// Decodes and validates a whole manifest file.
fn decode(data: &[u8], path: &Path) -> Result<ManifestState> {
    let body = check_envelope(data, path)?;
    let mut d = Decoder::new(body, path, PREFIX_LEN as u64);
    let (state, file_offsets) = decode_body(&mut d)?;
    if d.remaining() != 0 {
        return Err(d.error_here(format!(
            "{} trailing bytes after the manifest body",
            d.remaining()
        )));
    }
    check_state(&state).map_err(|bad| {
        let offset = bad
            .file_index
            .and_then(|i| file_offsets.get(i).copied())
            .unwrap_or(PREFIX_LEN as u64);
        Error::corruption(path, offset, format!("inconsistent manifest: {bad}"))
    })?;
    Ok(state)
}

/// Checks magic, version, length and checksum; returns the body.
fn check_envelope<'a>(data: &'a [u8], path: &'a Path) -> Result<&'a [u8]> {
    let mut d = Decoder::new(data, path, 0);
    let magic = d.u32("manifest magic")?;
    if magic != MANIFEST_MAGIC {
        return Err(d.error_at(0, format!("bad magic {magic:#010x}: not a manifest")));
    }
    let version = d.u32("manifest format version")?;
    if version != MANIFEST_FORMAT_VERSION {
        return Err(d.error_at(4, format!("unsupported manifest format version {version}")));
    }
    let body_len = d.u64("body length")?;
    let expected = d.remaining().checked_sub(CHECKSUM_LEN);
    if expected.map(|n| n as u64) != Some(body_len) {
        return Err(d.error_at(
            8,
            format!(
                "body length {body_len} does not match the {}-byte file",
                data.len()
            ),
        ));
    }
    let checked_len = d.pos() + body_len as usize;
    let body = d.take(body_len as usize, "manifest body")?;
    let stored = d.u64("manifest checksum")?;
    let computed = xxh3_64(data.get(..checked_len).unwrap_or_default());
    if stored != computed {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            offset: 0,
            stored,
            computed,
        });
    }
    Ok(body)
}

/// Decodes the body; also returns each file entry's offset, for errors.
fn decode_body(d: &mut Decoder<'_>) -> Result<(ManifestState, Vec<u64>)> {
    let id = d.u64("id")?;
    let digest_seed = d.u64("digest_seed")?;
    let next_file_no = d.u64("next_file_no")?;
    let wal_min_segment = d.u64("wal_min_segment")?;
    let last_seq = d.u64("last_seq")?;
    let last_ingest_ts = d.i64("last_ingest_ts")?;
    let counters = Counters {
        user_bytes: d.u64("user_bytes")?,
        flush_bytes: d.u64("flush_bytes")?,
        compaction_read_bytes: d.u64("compaction_read_bytes")?,
        compaction_write_bytes: d.u64("compaction_write_bytes")?,
    };
    let tables = decode_tables(d)?;
    let (files, file_offsets) = decode_files(d)?;
    let state = ManifestState {
        id,
        digest_seed,
        next_file_no,
        wal_min_segment,
        last_seq,
        last_ingest_ts,
        tables,
        files,
        counters,
    };
    Ok((state, file_offsets))
}

/// Reads an entry count, rejecting one that cannot fit in the remaining bytes
/// (which also bounds the allocation it drives).
fn decode_count(d: &mut Decoder<'_>, what: &str, min_entry_len: usize) -> Result<usize> {
    let at = d.pos();
    let count = d.u32(what)? as usize;
    if count > d.remaining() / min_entry_len {
        return Err(d.error_at(
            at,
            format!(
                "{what} {count} cannot fit in the remaining {} bytes",
                d.remaining()
            ),
        ));
    }
    Ok(count)
}

fn decode_tables(d: &mut Decoder<'_>) -> Result<BTreeMap<TableId, TableOptions>> {
    let count = decode_count(d, "table count", TABLE_ENTRY_LEN)?;
    let mut tables = BTreeMap::new();
    let mut previous: Option<TableId> = None;
    for _ in 0..count {
        let at = d.pos();
        let id = d.u32("table id")?;
        // Strictly ascending, as written from the BTreeMap: a duplicate would
        // otherwise be silently dropped.
        if previous.is_some_and(|p| p >= id) {
            return Err(d.error_at(at, format!("table id {id} is out of order")));
        }
        previous = Some(id);
        tables.insert(id, decode_table_options(d)?);
    }
    Ok(tables)
}

fn decode_table_options(d: &mut Decoder<'_>) -> Result<TableOptions> {
    let flags_at = d.pos();
    let flags = d.u8("table flags")?;
    if flags & !TABLE_KNOWN_FLAGS != 0 {
        return Err(d.error_at(flags_at, format!("unknown table flags {flags:#04x}")));
    }
    let ttl_us = decode_optional(d, flags & TABLE_HAS_TTL != 0, "ttl_us")?;
    let retention_us = decode_optional(d, flags & TABLE_HAS_RETENTION != 0, "retention_us")?;
    Ok(TableOptions {
        ttl_us,
        retention_us,
    })
}

/// Reads an i64 that is meaningful only if `present`; an absent one must be 0.
fn decode_optional(d: &mut Decoder<'_>, present: bool, what: &str) -> Result<Option<i64>> {
    let at = d.pos();
    let v = d.i64(what)?;
    match (present, v) {
        (true, v) => Ok(Some(v)),
        (false, 0) => Ok(None),
        (false, v) => Err(d.error_at(at, format!("absent {what} holds {v}, not 0"))),
    }
}

fn decode_files(d: &mut Decoder<'_>) -> Result<(Vec<FileMeta>, Vec<u64>)> {
    let count = decode_count(d, "file count", FILE_ENTRY_FIXED_LEN)?;
    let mut files = Vec::with_capacity(count);
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        offsets.push(d.offset());
        files.push(decode_file(d)?);
    }
    Ok((files, offsets))
}

fn decode_file(d: &mut Decoder<'_>) -> Result<FileMeta> {
    let file_no = d.u64("file_no")?;
    let level = d.u32("level")?;
    let file_bytes = d.u64("file_bytes")?;
    let entries = d.u64("entries")?;
    let raw_bytes = d.u64("raw_bytes")?;
    let min_seq = d.u64("min_seq")?;
    let max_seq = d.u64("max_seq")?;
    let min_event_ts = d.i64("min_event_ts")?;
    let max_event_ts = d.i64("max_event_ts")?;
    let smallest_table = d.u32("smallest table")?;
    let smallest_len = decode_key_len(d, "smallest key length")?;
    let largest_table = d.u32("largest table")?;
    let largest_len = decode_key_len(d, "largest key length")?;
    let smallest = Bytes::copy_from_slice(d.take(smallest_len, "smallest key")?);
    let largest = Bytes::copy_from_slice(d.take(largest_len, "largest key")?);
    Ok(FileMeta {
        file_no,
        level,
        file_bytes,
        entries,
        smallest: (smallest_table, smallest),
        largest: (largest_table, largest),
        min_seq,
        max_seq,
        min_event_ts,
        max_event_ts,
        raw_bytes,
    })
}

fn decode_key_len(d: &mut Decoder<'_>, what: &str) -> Result<usize> {
    let at = d.pos();
    let len = usize::from(d.u16(what)?);
    if len > MAX_KEY_LEN {
        return Err(d.error_at(at, format!("{what} {len} is over the limit {MAX_KEY_LEN}")));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;
    use crate::wal::fault_fs::FaultFs;
    use proptest::prelude::*;

    fn file(no: u64, small: &[u8], large: &[u8]) -> FileMeta {
        FileMeta {
            file_no: no,
            level: 1,
            file_bytes: 4096,
            entries: 10,
            smallest: (1, Bytes::copy_from_slice(small)),
            largest: (1, Bytes::copy_from_slice(large)),
            min_seq: 5,
            max_seq: 9,
            min_event_ts: -3,
            max_event_ts: 7,
            raw_bytes: 8192,
        }
    }

    fn sample_state() -> ManifestState {
        let mut s = ManifestState::new(0xDEAD_BEEF);
        s.id = 3;
        s.next_file_no = 20;
        s.wal_min_segment = 12;
        s.last_seq = 99;
        s.last_ingest_ts = 1_700_000_000_000_000;
        s.tables.insert(
            1,
            TableOptions {
                ttl_us: Some(60),
                retention_us: None,
            },
        );
        s.tables.insert(
            7,
            TableOptions {
                ttl_us: None,
                retention_us: Some(-1),
            },
        );
        s.tables.insert(9, TableOptions::default());
        s.files = vec![file(4, b"a", b"m"), file(11, b"", &[0xFF; MAX_KEY_LEN])];
        s.counters = Counters {
            user_bytes: 1,
            flush_bytes: 2,
            compaction_read_bytes: 3,
            compaction_write_bytes: 4,
        };
        s
    }

    fn path() -> &'static Path {
        Path::new("/db/MANIFEST")
    }

    #[test]
    fn absent_manifest_loads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&OsFs::default(), dir.path()).unwrap(), None);
    }

    #[test]
    fn commit_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFs::default();
        let fresh = ManifestState::new(5);
        commit(&fs, dir.path(), &fresh).unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap(), Some(fresh));
        let state = sample_state();
        commit(&fs, dir.path(), &state).unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap(), Some(state));
        assert!(!dir.path().join(MANIFEST_TMP_FILE).exists());
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let data = encode(&sample_state());
        for i in 0..data.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = data.clone();
                bad[i] ^= mask;
                let e = decode(&bad, path()).unwrap_err();
                assert!(e.is_corruption(), "flip at {i}: {e}");
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_detected() {
        let data = encode(&sample_state());
        for cut in 0..data.len() {
            let e = decode(&data[..cut], path()).unwrap_err();
            assert!(e.is_corruption(), "cut {cut}: {e}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(decode(&longer, path()).unwrap_err().is_corruption());
    }

    /// Re-seals a hand-edited body so only the semantic checks can catch it.
    fn seal(body: &[u8], version: u32) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    fn assert_corrupt_at(data: &[u8], offset: u64) {
        match decode(data, path()) {
            Err(Error::Corruption { offset: o, .. }) => assert_eq!(o, offset),
            other => panic!("expected corruption at {offset}, got {other:?}"),
        }
    }

    #[test]
    fn well_sealed_but_invalid_content_is_corruption() {
        let state = sample_state();
        let body = encode_body(&state);
        assert_eq!(decode(&seal(&body, 1), path()).unwrap(), state);
        assert_corrupt_at(&seal(&body, 2), 4);

        // Offsets inside the body, from its layout.
        let tables_at = 6 * 8 + 4 * 8;
        let first_table_flags = tables_at + 4 + 4;
        let mut bad = body.clone();
        bad[first_table_flags] |= 0x80;
        assert_corrupt_at(&seal(&bad, 1), (PREFIX_LEN + first_table_flags) as u64);

        // Table 7 has no ttl; give its absent ttl a value.
        let second_ttl = first_table_flags + TABLE_ENTRY_LEN + 1;
        let mut bad = body.clone();
        bad[second_ttl] = 1;
        assert_corrupt_at(&seal(&bad, 1), (PREFIX_LEN + second_ttl) as u64);

        // Table ids out of order: make table 7 into 1.
        let second_id = tables_at + 4 + TABLE_ENTRY_LEN;
        let mut bad = body.clone();
        bad[second_id] = 1;
        assert_corrupt_at(&seal(&bad, 1), (PREFIX_LEN + second_id) as u64);

        let mut bad = body.clone();
        bad.push(0);
        assert_corrupt_at(&seal(&bad, 1), (PREFIX_LEN + body.len()) as u64);
    }

    #[test]
    fn inconsistent_states_are_refused_by_commit_and_load() {
        let base = sample_state();
        let second_file_at = {
            let mut one = base.clone();
            one.files.truncate(1);
            (PREFIX_LEN + encode_body(&one).len()) as u64
        };
        type Breaker = fn(&mut ManifestState);
        let breakers: Vec<(&str, Breaker)> = vec![
            ("duplicate file_no", |s| {
                s.files[1].file_no = s.files[0].file_no
            }),
            ("file_no not below next", |s| {
                s.files[1].file_no = s.next_file_no
            }),
            ("seq range", |s| s.files[1].min_seq = s.files[1].max_seq + 1),
            ("event range", |s| {
                s.files[1].max_event_ts = s.files[1].min_event_ts - 1
            }),
            ("key range", |s| s.files[1].smallest.0 = 2),
        ];
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFs::default();
        commit(&fs, dir.path(), &base).unwrap();
        for (what, breaker) in breakers {
            let mut s = base.clone();
            breaker(&mut s);
            let e = commit(&fs, dir.path(), &s).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{what}: {e}");
            assert_eq!(
                load(&fs, dir.path()).unwrap().as_ref(),
                Some(&base),
                "{what}"
            );
            // Had it been written, load would refuse it, at the offending entry.
            assert_corrupt_at(&encode(&s), second_file_at);
        }
        let mut s = base.clone();
        s.files[0].largest.1 = Bytes::from(vec![0xFF; MAX_KEY_LEN + 1]);
        assert!(matches!(
            commit(&fs, dir.path(), &s),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        let mut body = encode_body(&ManifestState::new(1));
        let tables_at = body.len() - 8;
        body[tables_at..tables_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_corrupt_at(&seal(&body, 1), (PREFIX_LEN + tables_at) as u64);
        let mut body = encode_body(&ManifestState::new(1));
        let files_at = body.len() - 4;
        body[files_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_corrupt_at(&seal(&body, 1), (PREFIX_LEN + files_at) as u64);
    }

    #[test]
    fn stale_tmp_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFs::default();
        let tmp = dir.path().join(MANIFEST_TMP_FILE);
        std::fs::write(&tmp, b"half a manifest").unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap(), None);
        let state = sample_state();
        commit(&fs, dir.path(), &state).unwrap();
        // A crash after writing a complete tmp but before the rename.
        let mut newer = state.clone();
        newer.id += 1;
        std::fs::write(&tmp, encode(&newer)).unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap(), Some(state));
        commit(&fs, dir.path(), &newer).unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap(), Some(newer));
        assert!(!tmp.exists());
    }

    #[test]
    fn commit_is_atomic_when_the_tmp_write_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::default();
        let old = sample_state();
        commit(&fs, dir.path(), &old).unwrap();
        let mut new = old.clone();
        new.id += 1;
        new.files.clear();
        let len = encode(&new).len();
        for keep in [0, 1, len / 2, len - 1, len] {
            fs.plan.lock().torn_append = Some((MANIFEST_TMP_FILE.into(), keep));
            assert!(matches!(
                commit(&fs, dir.path(), &new),
                Err(Error::Io { op: "append", .. })
            ));
            assert_eq!(
                load(&fs, dir.path()).unwrap().as_ref(),
                Some(&old),
                "keep {keep}"
            );
        }
        fs.plan.lock().torn_append = None;
        fs.plan.lock().failing_sync = Some(MANIFEST_TMP_FILE.into());
        assert!(matches!(
            commit(&fs, dir.path(), &new),
            Err(Error::Io { op: "fsync", .. })
        ));
        assert_eq!(load(&fs, dir.path()).unwrap().as_ref(), Some(&old));
        fs.plan.lock().failing_sync = None;
        commit(&fs, dir.path(), &new).unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap(), Some(new));
    }

    #[test]
    fn unreadable_manifest_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(matches!(
            load(&OsFs::default(), dir.path()),
            Err(Error::Io { .. })
        ));
    }

    fn arb_entity() -> impl Strategy<Value = (TableId, Bytes)> {
        (0u32..4, prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(t, k)| (t, Bytes::from(k)))
    }

    fn arb_file() -> impl Strategy<Value = FileMeta> {
        (
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (arb_entity(), arb_entity()),
            (any::<u64>(), any::<u64>(), any::<i64>(), any::<i64>()),
        )
            .prop_map(
                |((level, file_bytes, entries, raw_bytes), (a, b), (s1, s2, t1, t2))| {
                    let (smallest, largest) =
                        if cmp_entity((a.0, &a.1), (b.0, &b.1)) == Ordering::Greater {
                            (b, a)
                        } else {
                            (a, b)
                        };
                    FileMeta {
                        file_no: 0, // assigned uniquely below
                        level,
                        file_bytes,
                        entries,
                        smallest,
                        largest,
                        min_seq: s1.min(s2),
                        max_seq: s1.max(s2),
                        min_event_ts: t1.min(t2),
                        max_event_ts: t1.max(t2),
                        raw_bytes,
                    }
                },
            )
    }

    fn arb_state() -> impl Strategy<Value = ManifestState> {
        let table = (
            prop::option::of(any::<i64>()),
            prop::option::of(any::<i64>()),
        )
            .prop_map(|(ttl_us, retention_us)| TableOptions {
                ttl_us,
                retention_us,
            });
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
            ),
            prop::collection::btree_map(any::<u32>(), table, 0..6),
            prop::collection::vec((arb_file(), 1u64..1000), 0..12),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            0u64..1000,
        )
            .prop_map(
                |((id, seed, wal_min, last_seq, ts), tables, files, c, spare)| {
                    // Distinct, increasing file numbers, all below next_file_no.
                    let mut next = 0u64;
                    let files: Vec<FileMeta> = files
                        .into_iter()
                        .map(|(mut f, gap)| {
                            next += gap;
                            f.file_no = next;
                            f
                        })
                        .collect();
                    ManifestState {
                        id,
                        digest_seed: seed,
                        next_file_no: next + 1 + spare,
                        wal_min_segment: wal_min,
                        last_seq,
                        last_ingest_ts: ts,
                        tables,
                        files,
                        counters: Counters {
                            user_bytes: c.0,
                            flush_bytes: c.1,
                            compaction_read_bytes: c.2,
                            compaction_write_bytes: c.3,
                        },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(state in arb_state()) {
            prop_assert!(check_state(&state).is_ok());
            prop_assert_eq!(decode(&encode(&state), path()).unwrap(), state);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(decode(&bytes, path()).unwrap_err().is_corruption());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn commit_load_round_trip(state in arb_state()) {
            let dir = tempfile::tempdir().unwrap();
            commit(&OsFs::default(), dir.path(), &state).unwrap();
            prop_assert_eq!(load(&OsFs::default(), dir.path()).unwrap(), Some(state));
        }
    }
}
