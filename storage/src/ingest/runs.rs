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
use crate::types::{Entry, TableId, Timestamp};
use crate::{Error, Result};
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
    pub(super) fn spill(&mut self, buffer: Vec<Entry>) -> Result<()> {
        self.wait()?;
        if buffer.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("tessera-ingest-run".into())
            .spawn(move || write_run(&inner, &buffer))
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

/// Sorts `buffer` and writes it as a run, removing the file if that fails.
fn write_run(inner: &Inner, buffer: &[Entry]) -> Result<Run> {
    let order = sorted_order(buffer);
    let file_no = inner.alloc_file_no();
    let path = inner
        .dir
        .join(INGEST_DIR)
        .join(format!("{file_no:012}.run"));
    let fs = &*inner.opts.fs;
    let options = BuildOptions {
        compress_data: false,
        ..inner.build_options(0)
    };
    let written = (|| {
        let mut builder = TableBuilder::create(fs, &path, file_no, options)?;
        for &i in &order {
            builder.add(&buffer[i as usize].as_ref())?;
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

/// The buffer's indexes in storage order, sorted on a compact copy of each
/// entry: its table, the key's first 8 bytes as one integer, the key's
/// length (capped at 9) and its event time. For keys of at most 8 bytes
/// that decides everything but equal `(key, event_ts)`; only those ties and
/// longer keys sharing their first 8 bytes fall back to the full, byte-wise
/// comparison, which otherwise dominated the sort.
fn sorted_order(buffer: &[Entry]) -> Vec<u32> {
    struct Item {
        table: TableId,
        len: u8,
        prefix: u64,
        event_ts: Timestamp,
        index: u32,
    }
    let item = |(i, e): (usize, &Entry)| {
        let mut b = [0u8; 8];
        let n = e.key.len().min(8);
        b[..n].copy_from_slice(&e.key[..n]);
        Item {
            table: e.table,
            len: e.key.len().min(9) as u8,
            prefix: u64::from_be_bytes(b),
            event_ts: e.event_ts,
            index: i as u32,
        }
    };
    let mut items: Vec<Item> = buffer.iter().enumerate().map(item).collect();
    items.sort_unstable_by(|a, b| {
        (a.table, a.prefix, a.len)
            .cmp(&(b.table, b.prefix, b.len))
            .then_with(|| match a.len {
                // Equal short keys: newest event first.
                0..=8 => b.event_ts.cmp(&a.event_ts),
                _ => std::cmp::Ordering::Equal,
            })
            .then_with(|| buffer[a.index as usize].cmp_order(&buffer[b.index as usize]))
    });
    items.into_iter().map(|it| it.index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Kind;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        /// The compact sort gives exactly the storage order, whatever the
        /// key lengths (around the 8-byte prefix) and ties.
        #[test]
        fn sorted_order_is_storage_order(
            entries in proptest::collection::vec(
                (0u32..3, proptest::collection::vec(0u8..3, 0..12), 0i64..4),
                0..200,
            )
        ) {
            let buffer: Vec<Entry> = entries
                .into_iter()
                .enumerate()
                .map(|(i, (table, key, event_ts))| Entry {
                    table,
                    key: Bytes::from(key),
                    event_ts,
                    seq: i as u64,
                    ingest_ts: 0,
                    kind: Kind::Put,
                    value: Bytes::new(),
                })
                .collect();
            let got: Vec<&Entry> = sorted_order(&buffer).into_iter().map(|i| &buffer[i as usize]).collect();
            let mut want: Vec<&Entry> = buffer.iter().collect();
            want.sort_by(|a, b| a.cmp_order(b));
            prop_assert_eq!(got, want);
        }
    }
}
