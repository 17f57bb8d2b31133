//! Sequence-number snapshots: a consistent view for long reads (exports,
//! training-set joins) while writes, flushes and compactions go on.
//!
//! A snapshot pins a read view (its memtables and SST files stay alive) and
//! a sequence number: versions committed after it are invisible, even though
//! they may land in a pinned memtable. Its "now" and the table options (TTL,
//! retention) are frozen at creation, so repeated reads give identical
//! answers.

use crate::engine::{Engine, Inner};
use crate::merge::{MergeIter, Source};
use crate::options::TableOptions;
use crate::read::{retained, visible, Bounds};
use crate::sstable::{Block, BlockStream, Table};
use crate::types::{Entry, EntryRef, Row, SeqNo, TableId, Timestamp, Version};
use crate::version::{ReadView, NUM_LEVELS};
use crate::Result;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A consistent, read-only view of the engine at one commit.
///
/// It keeps the engine's shared state alive (including its directory lock)
/// until dropped.
pub struct Snapshot {
    inner: Arc<Inner>,
    view: Arc<ReadView>,
    seq: SeqNo,
    now: Timestamp,
    table_opts: Arc<BTreeMap<TableId, TableOptions>>,
}

impl Engine {
    /// A snapshot at the last committed sequence number.
    pub fn snapshot(&self) -> Snapshot {
        let (view, seq) = self.inner.pin_visible();
        Snapshot {
            table_opts: self.inner.table_opts.read().clone(),
            now: self.inner.now(),
            inner: self.inner.clone(),
            view,
            seq,
        }
    }
}

impl Snapshot {
    /// TTL and retention as they were when the snapshot was taken.
    fn options(&self, table: TableId) -> TableOptions {
        self.table_opts.get(&table).copied().unwrap_or_default()
    }

    /// The snapshot's sequence number.
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    /// The snapshot's "now", µs.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The latest visible row of `(table, key)` in this snapshot.
    pub fn latest(&self, table: TableId, key: &[u8]) -> Result<Option<Row>> {
        let e = self
            .inner
            .search(&self.view, table, key, Bounds::latest(self.seq))?;
        let opts = self.options(table);
        Ok(e.and_then(|e| visible(e.into(), self.now, self.now, opts)))
    }

    /// The row as of `as_of`, optionally as known at `known_at`.
    pub fn as_of(
        &self,
        table: TableId,
        key: &[u8],
        as_of: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<Row>> {
        let bounds = Bounds {
            max_event_ts: as_of,
            known_at,
            max_seq: self.seq,
        };
        let e = self.inner.search(&self.view, table, key, bounds)?;
        let opts = self.options(table);
        Ok(e.and_then(|e| visible(e.into(), as_of, self.now, opts)))
    }

    /// Versions in `[from, to]`, newest first (see [`Engine::history`]).
    pub fn history(
        &self,
        table: TableId,
        key: &[u8],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Version>> {
        self.inner.history(
            &self.view,
            table,
            key,
            from,
            to,
            self.seq,
            self.now,
            self.options(table),
        )
    }

    /// Every retained version of every entity of `table`, in storage order
    /// (key ascending; per key newest first), tombstones included. The scan
    /// owns what it reads, so it may outlive `self` and move across threads.
    pub fn scan(&self, table: TableId) -> Scan {
        self.scan_pruned(table, None)
    }

    /// [`Snapshot::scan`], but with `prune` only each source's first
    /// version of each key within the bounds.
    fn scan_pruned(&self, table: TableId, prune: Option<Bounds>) -> Scan {
        let mut sources: Vec<Source<'static>> = Vec::new();
        for m in &self.view.mems {
            let mut first = prune.map(FirstWithin::new);
            let rows: Vec<Entry> = m
                .iter_table(table)
                .filter(|e| first.as_mut().is_none_or(|f| f.admits(&e.as_ref())))
                .collect();
            sources.push(Box::new(rows.into_iter().map(Ok)));
        }
        for level in 0..NUM_LEVELS {
            let files: Vec<Arc<Table>> = self
                .view
                .version
                .level(level)
                .iter()
                .filter(|h| h.meta.smallest.0 <= table && table <= h.meta.largest.0)
                .map(|h| h.table.clone())
                .collect();
            if level == 0 {
                // Level-0 files overlap: each is a source of the merge.
                for t in files {
                    sources.push(Box::new(RunRows::new(vec![t], table, prune)));
                }
            } else if !files.is_empty() {
                // A deeper level's files are sorted and disjoint, so one
                // source reads them in turn: the merge's heap holds a
                // level, not a file.
                sources.push(Box::new(RunRows::new(files, table, prune)));
            }
        }
        Scan {
            merge: MergeIter::new(sources),
            seq: self.seq,
            now: self.now,
            opts: self.options(table),
            _view: self.view.clone(),
        }
    }

    /// Each entity of `table` with its row as of `as_of` (and as known at
    /// `known_at`), in key order: exactly what [`Snapshot::as_of`] returns
    /// for each key, TTL and tombstones applied, entities without a
    /// visible row left out.
    pub fn scan_as_of(
        &self,
        table: TableId,
        as_of: Timestamp,
        known_at: Option<Timestamp>,
    ) -> AsOfScan {
        let bounds = Bounds {
            max_event_ts: as_of,
            known_at,
            max_seq: self.seq,
        };
        // Each file yields only its candidate per key; the merge puts the
        // best candidate of each key first.
        AsOfScan {
            first: FirstWithin::new(bounds),
            scan: self.scan_pruned(table, Some(bounds)),
        }
    }
}

/// A snapshot's versions of one table, in storage order (see
/// [`Snapshot::scan`]). Holds the snapshot's read view alive.
pub struct Scan {
    merge: MergeIter<'static>,
    seq: SeqNo,
    now: Timestamp,
    opts: TableOptions,
    _view: Arc<ReadView>,
}

impl Iterator for Scan {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            match self.merge.next()? {
                Ok(e) if e.seq > self.seq || !retained(e.event_ts, self.now, self.opts) => {}
                other => return Some(other),
            }
        }
    }
}

/// Each entity's row as of one time (see [`Snapshot::scan_as_of`]).
pub struct AsOfScan {
    scan: Scan,
    first: FirstWithin,
}

/// Of versions in storage order (per key, newest first), passes only each
/// key's first version within the bounds: the one a point read of the key
/// chooses.
struct FirstWithin {
    bounds: Bounds,
    /// The key whose version was passed; its older versions are not.
    chosen: Option<Vec<u8>>,
}

impl FirstWithin {
    fn new(bounds: Bounds) -> FirstWithin {
        FirstWithin {
            bounds,
            chosen: None,
        }
    }

    /// Whether `e` is the first version of its key within the bounds.
    fn admits(&mut self, e: &EntryRef<'_>) -> bool {
        if self.chosen.as_deref() == Some(e.key)
            || !self.bounds.admits(e.event_ts, e.seq, e.ingest_ts)
        {
            return false;
        }
        let chosen = self.chosen.get_or_insert_with(Vec::new);
        chosen.clear();
        chosen.extend_from_slice(e.key);
        true
    }
}

impl Iterator for AsOfScan {
    type Item = Result<(bytes::Bytes, Row)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let e = match self.scan.next()? {
                Ok(e) => e,
                Err(err) => return Some(Err(err)),
            };
            // The first version of a key within the bounds is its point
            // read's answer.
            if !self.first.admits(&e.as_ref()) {
                continue;
            }
            let key = e.key.clone();
            let read_ts = self.first.bounds.max_event_ts;
            if let Some(row) = visible(e.into(), read_ts, self.scan.now, self.scan.opts) {
                return Some(Ok((key, row)));
            }
        }
    }
}

/// The rows of one table in a run of SSTs (one level-0 file, or a deeper
/// level's sorted, disjoint files in order), in storage order, their blocks
/// decoded ahead ([`BlockStream`]). With `prune`, only each key's first
/// version within the bounds: the one a point read of that key in these
/// files would choose. Skipped versions are never copied out of their
/// blocks. Ends after an error.
struct RunRows {
    blocks: BlockStream,
    block: Option<Block>,
    /// The next entry of `block`.
    pos: usize,
    table: TableId,
    first: Option<FirstWithin>,
    done: bool,
}

impl RunRows {
    fn new(files: Vec<Arc<Table>>, table: TableId, prune: Option<Bounds>) -> RunRows {
        RunRows {
            blocks: BlockStream::start(files, table),
            block: None,
            pos: 0,
            table,
            first: prune.map(FirstWithin::new),
            done: false,
        }
    }

    /// The next entry of the table, or `None` at its end.
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some(block) = self.block.as_ref().filter(|b| self.pos < b.len()) else {
                match self.blocks.next() {
                    Some(block) => {
                        self.block = Some(block?);
                        self.pos = 0;
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            let pos = self.pos;
            self.pos += 1;
            let e = block.entry(pos)?;
            if e.table < self.table {
                continue;
            }
            if e.table > self.table {
                return Ok(None);
            }
            if self.first.as_mut().is_none_or(|f| f.admits(&e)) {
                return block.to_entry(pos).map(Some);
            }
        }
    }
}

impl Iterator for RunRows {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.done {
            return None;
        }
        let next = self.next_entry().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}
