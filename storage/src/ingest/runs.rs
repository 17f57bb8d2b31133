//! An ingest's sorted runs: buffers sorted and written as uncompressed SSTs
//! under `ingest/`, one at a time on a background thread.
//!
//! Invariants:
//! - at most one buffer is being written while the ingest fills the next, so
//!   an ingest holds at most two buffers' worth of versions in memory;
//! - every run file belongs to exactly one [`Run`], which removes it when
//!   dropped, and a run that fails to write removes itself: whatever way an
//!   ingest ends, its runs leave no file behind (a crash leaves them to the
//!   next open, which clears `ingest/`);
//! - a run's entries carry their input ordinal as `seq`, so the commit can
//!   number versions in input order whichever run they are in.

use super::INGEST_DIR;
use crate::engine::Inner;
use crate::fs::FileSystem;
use crate::sstable::{BuildOptions, Table, TableBuilder};
use crate::types::{EntryRef, Kind, TableId, Timestamp};
use crate::{Error, Result};
use std::cmp::Ordering;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// One sorted run on disk.
pub(super) struct Run {
    path: PathBuf,
    fs: Arc<dyn FileSystem>,
    pub(super) table: Arc<Table>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.fs.remove(&self.path);
    }
}

/// The runs written so far and the one being written.
pub(super) struct Runs {
    inner: Arc<Inner>,
    done: Vec<Run>,
    writing: Option<JoinHandle<Result<Run>>>,
}

impl Runs {
    pub(super) fn new(inner: Arc<Inner>) -> Runs {
        Runs {
            inner,
            done: Vec::new(),
            writing: None,
        }
    }

    /// Starts writing `buffer` as a run in the background, once the run
    /// before it is written (which bounds the memory held to two buffers).
    /// An error of an earlier run is returned here.
    pub(super) fn spill(&mut self, buffer: Buffer) -> Result<()> {
        self.wait()?;
        if buffer.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("tessera-ingest-run".into())
            .spawn(move || write_run(&inner, buffer))
            .map_err(|e| Error::Background(format!("cannot start an ingest run writer: {e}")))?;
        self.writing = Some(handle);
        Ok(())
    }

    /// Every run, once the last one is written.
    pub(super) fn finish(&mut self) -> Result<&[Run]> {
        self.wait()?;
        Ok(&self.done)
    }

    fn wait(&mut self) -> Result<()> {
        let Some(handle) = self.writing.take() else {
            return Ok(());
        };
        let run = handle
            .join()
            .map_err(|_| Error::Background("an ingest run writer panicked".into()))??;
        self.done.push(run);
        Ok(())
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        // The run being written removes its file when it is dropped here.
        if let Some(handle) = self.writing.take() {
            let _ = handle.join();
        }
    }
}

/// Fixed cost of one buffered version beyond its key and value bytes.
const RECORD_BYTES: usize = std::mem::size_of::<Record>();
/// Most versions in one buffer, whatever the memory budget: records index
/// the buffer with `u32`s.
const MAX_BUFFER_VERSIONS: usize = 1 << 31;

/// Versions not yet written, packed: keys and values back to back in one
/// allocation, and a fixed-size record per version that sorts on its own
/// for keys of up to 8 bytes.
pub(super) struct Buffer {
    table: TableId,
    /// Memory it may account for before it is spilled.
    budget: usize,
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// Input ordinal of the first version.
    first_ordinal: u64,
}

/// One buffered version. `prefix` is the key's first 8 bytes as one
/// big-endian integer and `short_len` the key's length capped at 9: for
/// keys of at most 8 bytes, `(prefix, short_len)` orders keys as their
/// bytes do, so only longer keys sharing a prefix need the bytes.
#[derive(Clone, Copy)]
struct Record {
    prefix: u64,
    event_ts: Timestamp,
    /// Offset of the key in `bytes`; the value follows it.
    at: u64,
    value_len: u32,
    /// Position in input order within the buffer.
    index: u32,
    key_len: u16,
    short_len: u8,
    kind: Kind,
}

impl Buffer {
    /// An empty buffer of `budget` bytes whose first version is input
    /// ordinal `first_ordinal`. The key and value bytes are reserved at
    /// once (the pages are only touched as they fill) so growing never
    /// copies them.
    pub(super) fn new(table: TableId, first_ordinal: u64, budget: usize) -> Buffer {
        Buffer {
            table,
            budget,
            bytes: Vec::with_capacity(budget),
            records: Vec::new(),
            first_ordinal,
        }
    }

    /// Appends a version (limits already checked).
    pub(super) fn push(&mut self, key: &[u8], event_ts: Timestamp, kind: Kind, value: &[u8]) {
        let mut b = [0u8; 8];
        let n = key.len().min(8);
        b[..n].copy_from_slice(&key[..n]);
        self.records.push(Record {
            prefix: u64::from_be_bytes(b),
            event_ts,
            at: self.bytes.len() as u64,
            value_len: value.len() as u32,
            index: self.records.len() as u32,
            key_len: key.len() as u16,
            short_len: key.len().min(9) as u8,
            kind,
        });
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
    }

    /// The empty buffer to fill after this one, from input ordinal
    /// `first_ordinal` on.
    pub(super) fn successor(&self, first_ordinal: u64) -> Buffer {
        Buffer::new(self.table, first_ordinal, self.budget)
    }

    /// Whether the buffer is due to be spilled: its budget is used up, or
    /// its records cannot index another version.
    pub(super) fn is_full(&self) -> bool {
        let used = self.bytes.len() + self.records.len() * RECORD_BYTES;
        used >= self.budget || self.records.len() >= MAX_BUFFER_VERSIONS
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sorts the records into storage order: key, then newest event first,
    /// then the later input first.
    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.records.sort_unstable_by(|a, b| {
            (a.prefix, a.short_len)
                .cmp(&(b.prefix, b.short_len))
                .then_with(|| match a.short_len {
                    0..=8 => Ordering::Equal,
                    _ => key_of(bytes, a).cmp(key_of(bytes, b)),
                })
                .then_with(|| b.event_ts.cmp(&a.event_ts))
                .then_with(|| b.index.cmp(&a.index))
        });
    }

    fn entry(&self, r: &Record) -> EntryRef<'_> {
        let value_at = r.at as usize + usize::from(r.key_len);
        EntryRef {
            table: self.table,
            key: key_of(&self.bytes, r),
            event_ts: r.event_ts,
            seq: self.first_ordinal + u64::from(r.index),
            ingest_ts: 0,
            kind: r.kind,
            value: &self.bytes[value_at..value_at + r.value_len as usize],
        }
    }

    /// The versions in storage order.
    fn sorted(&mut self) -> impl Iterator<Item = EntryRef<'_>> {
        self.sort();
        self.records.iter().map(|r| self.entry(r))
    }
}

fn key_of<'a>(bytes: &'a [u8], r: &Record) -> &'a [u8] {
    &bytes[r.at as usize..r.at as usize + usize::from(r.key_len)]
}

/// Sorts `buffer` and writes it as a run, removing the file if that fails.
fn write_run(inner: &Inner, mut buffer: Buffer) -> Result<Run> {
    let file_no = inner.alloc_file_no();
    let path = inner
        .dir
        .join(INGEST_DIR)
        .join(format!("{file_no:012}.run"));
    let fs = &*inner.opts.fs;
    // A run is only ever scanned: no compression, no bloom filter.
    let options = BuildOptions {
        compress_data: false,
        bloom_bits_per_key: 0,
        ..inner.build_options(0)
    };
    let written = (|| {
        let mut builder = TableBuilder::create(fs, &path, file_no, options)?;
        for e in buffer.sorted() {
            builder.add(&e)?;
        }
        builder.finish()?;
        Table::open(inner.opts.fs.clone(), &path, file_no, inner.cache.clone())
    })();
    match written {
        Ok(table) => Ok(Run {
            path,
            fs: inner.opts.fs.clone(),
            table,
        }),
        Err(e) => {
            let _ = fs.remove(&path);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::cmp_internal;
    use proptest::prelude::*;

    type Version = (Vec<u8>, Timestamp, u64, Kind, Vec<u8>);

    proptest! {
        /// The buffer's sort gives exactly the storage order, whatever the
        /// key lengths (around the 8-byte prefix) and ties.
        #[test]
        fn sorted_is_storage_order(
            entries in proptest::collection::vec(
                (proptest::collection::vec(0u8..3, 0..12), 0i64..4, any::<bool>()),
                0..200,
            )
        ) {
            let mut buffer = Buffer::new(7, 100, 1 << 10);
            let mut want: Vec<Version> = Vec::new();
            for (i, (key, event_ts, put)) in entries.into_iter().enumerate() {
                let kind = if put { Kind::Put } else { Kind::Tombstone };
                let value = key[..key.len() / 2].to_vec();
                buffer.push(&key, event_ts, kind, &value);
                want.push((key, event_ts, 100 + i as u64, kind, value));
            }
            want.sort_by(|a, b| cmp_internal((7, &a.0, a.1, a.2), (7, &b.0, b.1, b.2)));
            let got: Vec<Version> = buffer
                .sorted()
                .map(|e| (e.key.to_vec(), e.event_ts, e.seq, e.kind, e.value.to_vec()))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
