//! Read semantics: `latest`, `as_of` (with optional `known_at`), `history`,
//! and their batched forms.
//!
//! - `latest(t, k)`: the version with the greatest `event_ts`, ties to the
//!   greatest `seq`. Served by one hash-index probe and one block (or
//!   memtable) lookup; the location is verified (same key, same event time,
//!   first version of the key in that file) and any mismatch falls back to a
//!   search of every source, so a stale or colliding index entry can cost time
//!   but never return wrong data.
//! - `as_of(t, k, T)`: the greatest `event_ts <= T`. With `known_at = W`,
//!   only among versions with `ingest_ts <= W`.
//! - `history(t, k, from, to)`: every version with `from <= event_ts <= to`,
//!   tombstones included, newest first.
//!
//! Visibility rules applied to the chosen version of a point read:
//! - a tombstone reads as absent;
//! - TTL: absent if `event_ts < read_ts - ttl`, where `read_ts` is now for
//!   `latest` and `T` for `as_of`;
//! - retention: every read ignores versions with `event_ts < now - retention`
//!   (compaction deletes them; hiding them first makes that unobservable).

use crate::engine::{Engine, Inner};
use crate::hash_index::{IndexEntry, Location};
use crate::options::TableOptions;
use crate::sstable::{self, Cursor, Table};
use crate::types::{Entry, EntryRef, Kind, Row, RowRef, SeqNo, TableId, Timestamp, Version};
use crate::version::{ReadView, TableHandle};
use crate::{Digest, Error, Result};
use std::sync::Arc;

/// Most keys accepted by one batched read.
pub const MAX_BATCH_KEYS: usize = 4096;

/// A key of a given table, as batched reads across tables take them.
pub type TableKey<'a> = (TableId, &'a [u8]);

/// One lookup of a batched `as_of` read.
#[derive(Clone, Copy, Debug)]
pub struct AsOfQuery<'a> {
    /// Entity key.
    pub key: &'a [u8],
    /// Read the value as of this event time.
    pub as_of: Timestamp,
    /// If set, only versions ingested at or before this time are considered.
    pub known_at: Option<Timestamp>,
}

/// An SST block the hash index points at: its table, index and contents.
type Located<'a> = (&'a Table, u32, sstable::HeldBlock<'a>);

/// Limits applied while searching sources.
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    /// Only versions with `event_ts <= max_event_ts`.
    pub(crate) max_event_ts: Timestamp,
    /// Only versions with `ingest_ts <= known_at`.
    pub(crate) known_at: Option<Timestamp>,
    /// Only versions with `seq <= max_seq` (snapshots).
    pub(crate) max_seq: SeqNo,
}

impl Bounds {
    pub(crate) fn latest(max_seq: SeqNo) -> Bounds {
        Bounds {
            max_event_ts: Timestamp::MAX,
            known_at: None,
            max_seq,
        }
    }

    /// True if a version with these fields is within the bounds.
    pub(crate) fn admits(&self, event_ts: Timestamp, seq: SeqNo, ingest_ts: Timestamp) -> bool {
        event_ts <= self.max_event_ts
            && seq <= self.max_seq
            && self.known_at.is_none_or(|w| ingest_ts <= w)
    }
}

/// The version a point read chose, without its key.
pub(crate) struct Hit {
    pub(crate) event_ts: Timestamp,
    pub(crate) ingest_ts: Timestamp,
    pub(crate) seq: SeqNo,
    pub(crate) kind: Kind,
    pub(crate) value: bytes::Bytes,
}

impl From<Entry> for Hit {
    fn from(e: Entry) -> Hit {
        Hit {
            event_ts: e.event_ts,
            ingest_ts: e.ingest_ts,
            seq: e.seq,
            kind: e.kind,
            value: e.value,
        }
    }
}

/// Where a batched read found a key's version.
enum Found<'b> {
    /// In a cached SST block or a memtable slot, not yet copied out.
    Borrowed(EntryRef<'b>),
    /// Already owned (the result of a search).
    Owned(Hit),
}

impl Found<'_> {
    fn version(&self) -> (Timestamp, SeqNo) {
        match self {
            Found::Borrowed(e) => (e.event_ts, e.seq),
            Found::Owned(h) => (h.event_ts, h.seq),
        }
    }

    /// The version as a row, borrowed, if visible (see [`is_visible`]).
    fn visible_row(
        &self,
        read_ts: Timestamp,
        now: Timestamp,
        opts: TableOptions,
    ) -> Option<RowRef<'_>> {
        let (kind, event_ts, ingest_ts, seq, value) = match self {
            Found::Borrowed(e) => (e.kind, e.event_ts, e.ingest_ts, e.seq, e.value),
            Found::Owned(h) => (h.kind, h.event_ts, h.ingest_ts, h.seq, &h.value[..]),
        };
        is_visible(kind, event_ts, read_ts, now, opts).then_some(RowRef {
            event_ts,
            ingest_ts,
            seq,
            value,
        })
    }
}

/// Turns a batch's findings into hits. The values found in blocks are
/// copied into one buffer that the hits share: one allocation per batch,
/// rather than a reference count on each value's block (a cache miss per
/// key), and the rows returned do not hold blocks in memory.
fn copy_out(found: Vec<Option<Found<'_>>>) -> Vec<Option<Hit>> {
    let in_blocks: usize = found
        .iter()
        .map(|f| match f {
            Some(Found::Borrowed(e)) => e.value.len(),
            _ => 0,
        })
        .sum();
    let mut buf = Vec::with_capacity(in_blocks);
    let ranges: Vec<_> = found
        .iter()
        .map(|f| match f {
            Some(Found::Borrowed(e)) => {
                let at = buf.len();
                buf.extend_from_slice(e.value);
                at..buf.len()
            }
            _ => 0..0,
        })
        .collect();
    let buf = bytes::Bytes::from(buf);
    found
        .into_iter()
        .zip(ranges)
        .map(|(f, range)| {
            f.map(|f| match f {
                Found::Borrowed(e) => Hit {
                    event_ts: e.event_ts,
                    ingest_ts: e.ingest_ts,
                    seq: e.seq,
                    kind: e.kind,
                    value: buf.slice(range),
                },
                Found::Owned(h) => h,
            })
        })
        .collect()
}

/// For each key, the position of its first version in the block the index
/// located it in, if there. Staged so that the cache misses of all keys
/// overlap: prefetch every block's trailer (fingerprints and offsets), then
/// every candidate entry, and only then compare keys.
fn first_versions(
    keys: &[TableKey<'_>],
    blocks: &[Option<Located<'_>>],
) -> Result<Vec<Option<usize>>> {
    for (_, _, block) in blocks.iter().flatten() {
        block.prefetch_trailer();
    }
    let candidates: Vec<Option<(usize, u16)>> = keys
        .iter()
        .zip(blocks)
        .map(|(&(table, key), located)| {
            let (t, idx, block) = located.as_ref()?;
            let fp = sstable::fingerprint(table, key);
            let c = block.first_candidate(fp)?;
            block.prefetch_entry(c);
            if c == 0 {
                t.prefetch_span_check(*idx);
            }
            Some((c, fp))
        })
        .collect();
    keys.iter()
        .zip(blocks)
        .zip(candidates)
        .map(|((&(table, key), located), c)| match (located, c) {
            (Some((t, idx, block)), Some((c, fp))) => {
                t.first_version_from(block, *idx, c, fp, table, key)
            }
            _ => Ok(None),
        })
        .collect()
}

/// Turns the chosen version into a visible row, or `None`.
pub(crate) fn visible(
    e: Hit,
    read_ts: Timestamp,
    now: Timestamp,
    opts: TableOptions,
) -> Option<Row> {
    is_visible(e.kind, e.event_ts, read_ts, now, opts).then(|| Row {
        event_ts: e.event_ts,
        ingest_ts: e.ingest_ts,
        seq: e.seq,
        value: e.value,
    })
}

/// True if a version of this kind and event time, chosen by a read at
/// `read_ts`, is seen: not a tombstone, still retained, not past its TTL.
fn is_visible(
    kind: Kind,
    event_ts: Timestamp,
    read_ts: Timestamp,
    now: Timestamp,
    opts: TableOptions,
) -> bool {
    kind != Kind::Tombstone
        && retained(event_ts, now, opts)
        && opts
            .ttl_us
            .is_none_or(|ttl| event_ts >= read_ts.saturating_sub(ttl))
}

/// The options of each key's table, in key order; looked up again only
/// when the table changes (a slate's keys come in runs of one table).
fn options_by_key<'a>(
    inner: &'a Inner,
    keys: &'a [TableKey<'_>],
) -> impl Iterator<Item = TableOptions> + 'a {
    let mut last: Option<(TableId, TableOptions)> = None;
    keys.iter().map(move |&(table, _)| {
        let opts = match last {
            Some((t, o)) if t == table => o,
            _ => inner.table_options(table),
        };
        last = Some((table, opts));
        opts
    })
}

/// True if retention still keeps a version with this event time.
pub(crate) fn retained(event_ts: Timestamp, now: Timestamp, opts: TableOptions) -> bool {
    opts.retention_us
        .is_none_or(|r| event_ts >= now.saturating_sub(r))
}

pub(crate) fn check_batch(n: usize) -> Result<()> {
    if n > MAX_BATCH_KEYS {
        return Err(Error::InvalidArgument(format!(
            "{n} keys in one read; the limit is {MAX_BATCH_KEYS}"
        )));
    }
    Ok(())
}

impl Engine {
    /// The latest visible row of `(table, key)`.
    pub fn latest(&self, table: TableId, key: &[u8]) -> Result<Option<Row>> {
        Ok(self.multi_latest(table, &[key])?.pop().flatten())
    }

    /// The latest visible rows of many keys of one table, in request order.
    pub fn multi_latest(&self, table: TableId, keys: &[&[u8]]) -> Result<Vec<Option<Row>>> {
        check_batch(keys.len())?;
        let keys: Vec<TableKey<'_>> = keys.iter().map(|&k| (table, k)).collect();
        self.multi_latest_across(&keys)
    }

    /// The latest visible rows of `(table, key)` pairs that may span
    /// tables (a slate: one user's row and its candidates' rows), in
    /// request order. One read view and one staged pass serve them all, so
    /// the memory latency of every key overlaps.
    pub fn multi_latest_across(&self, keys: &[TableKey<'_>]) -> Result<Vec<Option<Row>>> {
        check_batch(keys.len())?;
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let found = inner.latest_entries(&view, max_seq, keys, copy_out)?;
        Ok(found
            .into_iter()
            .zip(options_by_key(inner, keys))
            .map(|(e, opts)| e.and_then(|e| visible(e, now, now, opts)))
            .collect())
    }

    /// [`Engine::multi_latest_across`], with the rows handed to `f`
    /// borrowed from where they were found instead of copied out: a reader
    /// that only copies them on (into a reply) saves a copy and an
    /// allocation. The batch's epoch guard is held while `f` runs, so a
    /// cached block evicted meanwhile is freed only after it returns: keep
    /// `f` short (write a reply, never wait on I/O).
    pub fn with_latest_across<R>(
        &self,
        keys: &[TableKey<'_>],
        f: impl FnOnce(&[Option<RowRef<'_>>]) -> R,
    ) -> Result<R> {
        check_batch(keys.len())?;
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        inner.latest_entries(&view, max_seq, keys, |found| {
            let rows: Vec<Option<RowRef<'_>>> = found
                .iter()
                .zip(options_by_key(inner, keys))
                .map(|(e, opts)| e.as_ref().and_then(|e| e.visible_row(now, now, opts)))
                .collect();
            f(&rows)
        })
    }

    /// The row of `(table, key)` as of event time `as_of`, optionally as it
    /// was known at ingest time `known_at`.
    pub fn as_of(
        &self,
        table: TableId,
        key: &[u8],
        as_of: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<Row>> {
        let q = AsOfQuery {
            key,
            as_of,
            known_at,
        };
        Ok(self.multi_as_of(table, &[q])?.pop().flatten())
    }

    /// Batched [`Engine::as_of`], results in request order.
    pub fn multi_as_of(
        &self,
        table: TableId,
        queries: &[AsOfQuery<'_>],
    ) -> Result<Vec<Option<Row>>> {
        check_batch(queries.len())?;
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let opts = inner.table_options(table);
        // The index probes of the whole batch first, so their cache misses
        // overlap.
        let digests: Vec<Digest> = queries
            .iter()
            .map(|q| Digest::of(inner.seed, table, q.key))
            .collect();
        let mut probes = Vec::with_capacity(queries.len());
        inner.index.get_many(&digests, &mut probes);
        queries
            .iter()
            .zip(probes)
            .map(|(q, probe)| {
                let e = inner.as_of_entry(&view, max_seq, table, q, probe)?;
                Ok(e.and_then(|e| visible(e, q.as_of, now, opts)))
            })
            .collect()
    }

    /// Every version of `(table, key)` with `from <= event_ts <= to`,
    /// tombstones included, newest first. TTL does not apply; retention does.
    pub fn history(
        &self,
        table: TableId,
        key: &[u8],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Version>> {
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let opts = inner.table_options(table);
        inner.history(&view, table, key, from, to, max_seq, now, opts)
    }
}

impl Inner {
    /// Newest versions (before visibility rules) of `keys`, in order.
    ///
    /// Staged so that the cache misses of all keys overlap: probe the index
    /// for every key, load every block, prefetch every block's fingerprint
    /// array, find every key's position and prefetch its entry, and only
    /// then read the entries.
    fn latest_entries<R>(
        &self,
        view: &ReadView,
        max_seq: SeqNo,
        keys: &[TableKey<'_>],
        finish: impl FnOnce(Vec<Option<Found<'_>>>) -> R,
    ) -> Result<R> {
        let digests: Vec<Digest> = keys
            .iter()
            .map(|&(table, k)| Digest::of(self.seed, table, k))
            .collect();
        let mut probes: Vec<Option<IndexEntry>> = Vec::with_capacity(keys.len());
        self.index.get_many(&digests, &mut probes);
        self.latest_at(view, max_seq, keys, &probes, finish)
    }

    /// [`Inner::latest_entries`] for index entries already read. What was
    /// found goes to `finish` while the blocks it borrows are pinned.
    fn latest_at<R>(
        &self,
        view: &ReadView,
        max_seq: SeqNo,
        keys: &[TableKey<'_>],
        probes: &[Option<IndexEntry>],
        finish: impl FnOnce(Vec<Option<Found<'_>>>) -> R,
    ) -> Result<R> {
        let mut extra = Vec::new();
        // Pinned for the whole batch: cached blocks are borrowed, not counted.
        let guard = crossbeam_epoch::pin();
        let blocks = self.load_located_blocks(view, &mut extra, probes, &guard)?;
        let positions = first_versions(keys, &blocks)?;
        let mut found = Vec::with_capacity(keys.len());
        for (i, (&(table, key), probe)) in keys.iter().zip(probes).enumerate() {
            let Some(ie) = probe else {
                found.push(None);
                continue;
            };
            let at = match (ie.loc, &blocks[i], positions[i]) {
                (Location::Mem { gen, slot }, _, _) => view
                    .memtable(gen)
                    .and_then(|m| m.version_in_slot(slot, table, key)),
                (Location::Sst { .. }, Some((_, _, block)), Some(pos)) => Some(block.entry(pos)?),
                (Location::Sst { .. }, _, _) => None,
            };
            // Prefetched now, read once every key is found.
            let at = at.map(|entry| {
                crate::prefetch::prefetch_to_l2(entry.value);
                Found::Borrowed(entry)
            });
            // The index names the newest version by its event time; any
            // other answer means the entry is stale, and a version past
            // `max_seq` belongs to a commit not yet visible: search instead.
            let found_here = at.filter(|f| {
                let (event_ts, seq) = f.version();
                event_ts == ie.event_ts && seq <= max_seq
            });
            found.push(match found_here {
                Some(f) => Some(f),
                None => {
                    self.counters.add_slow_path();
                    self.search(view, table, key, Bounds::latest(max_seq))?
                        .map(|e| Found::Owned(Hit::from(e)))
                }
            });
        }
        Ok(finish(found))
    }

    /// Loads every SST block the probes point at, with one batched read for
    /// the cache misses (one io_uring submission when enabled). `None` for
    /// probes that name a memtable, or a file no longer open. Tables are
    /// borrowed from the view (or from `extra`, files only the registry
    /// still holds) so the hot path takes no reference counts.
    fn load_located_blocks<'a>(
        &self,
        view: &'a ReadView,
        extra: &'a mut Vec<Arc<TableHandle>>,
        probes: &[Option<IndexEntry>],
        guard: &'a crossbeam_epoch::Guard,
    ) -> Result<Vec<Option<Located<'a>>>> {
        // Files the index names that this view no longer holds (replaced by
        // a compaction since it was pinned) are still open in the registry.
        for p in probes {
            if let Some(Location::Sst { file_no, .. }) = p.map(|p| p.loc) {
                let known = view.version.table(file_no).is_some()
                    || extra.iter().any(|h| h.meta.file_no == file_no);
                if !known {
                    if let Some(h) = self.tables.read().get(&file_no) {
                        extra.push(h.clone());
                    }
                }
            }
        }
        let extra: &'a [Arc<TableHandle>] = extra;
        let find = |file_no: u64| -> Option<&'a Table> {
            view.version
                .table(file_no)
                .or_else(|| extra.iter().find(|h| h.meta.file_no == file_no))
                .map(|h| &*h.table)
        };
        let mut reqs: Vec<(&'a Table, u32)> = Vec::with_capacity(probes.len());
        let mut requested = Vec::with_capacity(probes.len());
        // Consecutive keys often live in the same file: remember the last.
        let mut last: Option<(u64, Option<&'a Table>)> = None;
        for p in probes {
            let req = match p.map(|p| p.loc) {
                Some(Location::Sst { file_no, block }) => {
                    let table = match last {
                        Some((n, t)) if n == file_no => t,
                        _ => find(file_no),
                    };
                    last = Some((file_no, table));
                    table
                        .filter(|t| block < t.data_blocks())
                        .map(|t| (t, block))
                }
                _ => None,
            };
            requested.push(req.is_some());
            reqs.extend(req);
        }
        let loaded = sstable::load_blocks_pinned(&*self.opts.fs, &reqs, guard)?;
        // Requests were made in probe order: hand them back in that order.
        let mut loaded = reqs.into_iter().zip(loaded);
        Ok(requested
            .into_iter()
            .map(|r| r.then(|| loaded.next()).flatten())
            .map(|l| l.map(|((t, idx), block)| (t, idx, block)))
            .collect())
    }

    /// The best version over every source (memtables and SSTs) within
    /// `bounds`: greatest `event_ts`, then greatest `seq`.
    pub(crate) fn search(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        bounds: Bounds,
    ) -> Result<Option<Entry>> {
        self.search_from(view, table, key, bounds, None)
    }

    /// [`Inner::search`], starting in the SST the hash index names (`hint`:
    /// file and block of the key's newest version) without seeking it: the
    /// key's versions are read on from there.
    fn search_from(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        bounds: Bounds,
        hint: Option<(u64, u32)>,
    ) -> Result<Option<Entry>> {
        self.best_version(view, table, key, bounds, |h| {
            let start = match hint {
                Some((file_no, block)) if file_no == h.meta.file_no => {
                    hinted_cursor(&h.table, block, table, key)?
                }
                _ => None,
            };
            let start = match start {
                Some(c) => Some(c),
                None => h.table.seek(table, key, bounds.max_event_ts, SeqNo::MAX)?,
            };
            first_admitted(start, table, key, bounds)
        })
    }

    /// The newest version of `(table, key)` within `bounds` over every
    /// source, before visibility rules: each memtable's first version
    /// within the bounds, and what `in_file` finds in each candidate file
    /// its bloom filter does not rule out. Of equal event times, the
    /// greater sequence number wins.
    pub(crate) fn best_version(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        bounds: Bounds,
        mut in_file: impl FnMut(&TableHandle) -> Result<Option<Entry>>,
    ) -> Result<Option<Entry>> {
        let mut best: Option<Entry> = None;
        let mut offer = |e: Entry| {
            if best
                .as_ref()
                .is_none_or(|b| (e.event_ts, e.seq) > (b.event_ts, b.seq))
            {
                best = Some(e);
            }
        };
        for m in &view.mems {
            if let Some(e) = m
                .versions_from(table, key, bounds.max_event_ts, SeqNo::MAX)
                .find(|e| bounds.admits(e.event_ts, e.seq, e.ingest_ts))
            {
                offer(e);
            }
        }
        let digest = Digest::of(self.seed, table, key);
        for h in view.version.candidates(table, key) {
            if h.table.may_contain(digest) {
                if let Some(e) = in_file(h)? {
                    offer(e);
                }
            }
        }
        Ok(best)
    }

    fn as_of_entry(
        &self,
        view: &ReadView,
        max_seq: SeqNo,
        table: TableId,
        q: &AsOfQuery<'_>,
        probe: Option<IndexEntry>,
    ) -> Result<Option<Hit>> {
        let Some(ie) = probe else {
            // Not in the index: no version of this key exists anywhere.
            return Ok(None);
        };
        if q.known_at.is_none() && q.as_of >= ie.event_ts {
            // The newest version is at or before T, so it is the answer,
            // unless a newer one committed since the probe: check.
            let latest = self.latest_at(view, max_seq, &[(table, q.key)], &[Some(ie)], copy_out)?;
            if let Some(hit) = latest.into_iter().next().flatten() {
                if hit.event_ts <= q.as_of {
                    return Ok(Some(hit));
                }
            }
        }
        let bounds = Bounds {
            max_event_ts: q.as_of,
            known_at: q.known_at,
            max_seq,
        };
        let hint = match ie.loc {
            Location::Sst { file_no, block } => Some((file_no, block)),
            Location::Mem { .. } => None,
        };
        Ok(self
            .search_from(view, table, q.key, bounds, hint)?
            .map(Hit::from))
    }

    /// Versions of one key in `[from, to]`, newest first, from every source.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn history(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        from: Timestamp,
        to: Timestamp,
        max_seq: SeqNo,
        now: Timestamp,
        opts: TableOptions,
    ) -> Result<Vec<Version>> {
        if from > to {
            return Ok(Vec::new());
        }
        let keep =
            |e: &Entry| e.event_ts >= from && e.seq <= max_seq && retained(e.event_ts, now, opts);
        let mut all: Vec<Entry> = Vec::new();
        for m in &view.mems {
            all.extend(
                m.versions_from(table, key, to, SeqNo::MAX)
                    .take_while(|e| e.event_ts >= from)
                    .filter(|e| keep(e)),
            );
        }
        let digest = Digest::of(self.seed, table, key);
        for h in view.version.candidates(table, key) {
            if h.table.may_contain(digest) {
                collect_range(&h.table, table, key, to, &mut |e| {
                    // Versions come newest first: stop once below `from`.
                    let more = e.event_ts >= from;
                    if keep(&e) {
                        all.push(e);
                    }
                    more
                })?;
            }
        }
        all.sort_by_key(|e| std::cmp::Reverse((e.event_ts, e.seq)));
        Ok(all.iter().map(Entry::to_version).collect())
    }
}

/// A cursor on the first version of `(table, key)` in block `idx` of `t`,
/// if that block holds it.
fn hinted_cursor(
    t: &std::sync::Arc<Table>,
    idx: u32,
    table: TableId,
    key: &[u8],
) -> Result<Option<Cursor>> {
    Ok(t.first_version_in_block(idx, table, key)?
        .map(|(block, pos)| t.cursor_at(block, idx, pos)))
}

/// From `cursor` on, the first version of `(table, key)` within `bounds`.
fn first_admitted(
    cursor: Option<Cursor>,
    table: TableId,
    key: &[u8],
    bounds: Bounds,
) -> Result<Option<Entry>> {
    let Some(mut cur) = cursor else {
        return Ok(None);
    };
    loop {
        let e = cur.entry()?;
        if e.table != table || e.key != key {
            return Ok(None);
        }
        if bounds.admits(e.event_ts, e.seq, e.ingest_ts) {
            return cur.to_entry().map(Some);
        }
        if !cur.advance()? {
            return Ok(None);
        }
    }
}

/// Calls `f` on each version of `(table, key)` in `t` with
/// `event_ts <= to`, newest first, until the versions run out or `f`
/// returns false.
fn collect_range(
    t: &std::sync::Arc<Table>,
    table: TableId,
    key: &[u8],
    to: Timestamp,
    f: &mut dyn FnMut(Entry) -> bool,
) -> Result<()> {
    let Some(mut cur) = t.seek(table, key, to, SeqNo::MAX)? else {
        return Ok(());
    };
    loop {
        let e = cur.to_entry()?;
        if !e.same_entity(table, key) || !f(e) || !cur.advance()? {
            return Ok(());
        }
    }
}
