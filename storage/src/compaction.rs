//! Leveled compaction, with retention applied as data is rewritten.
//!
//! Picking, in priority order:
//! 1. level 0 has `l0_compaction_trigger` files: merge all of level 0 with the
//!    overlapping level-1 files into level 1;
//! 2. a level `n >= 1` exceeds its target (`l1_target_bytes ×
//!    level_multiplier^(n-1)`): merge its file with the least overlap in
//!    level `n + 1` (least rewrite per byte moved) into level `n + 1`. A file
//!    with no overlap and nothing past retention moves down without a rewrite.
//!
//! Every rewrite drops the versions retention no longer keeps. A key whose
//! newest version is past retention loses every version and leaves the hash
//! index: it reads as absent, as it already did.
//!
//! Installing a compaction: outputs are written and fsynced, the manifest
//! commits (outputs live, inputs gone), the read view swaps, inputs are marked
//! obsolete (deleted when the last reader drops them), and hash-index entries
//! that pointed into an input move to the output block holding the key's
//! newest version. Entries pointing elsewhere (a newer memtable or file) are
//! left alone, so concurrent writes are never overridden.

use crate::engine::{sst_path, Inner, SST_DIR};
use crate::hash_index::Location;
use crate::merge::{MergeIter, Source};
use crate::options::TableOptions;
use crate::read::retained;
use crate::sstable::{BuildOptions, TableBuilder, TableSummary};
use crate::types::{Entry, TableId};
use crate::version::{ReadView, TableHandle, Version, NUM_LEVELS};
use crate::{Digest, Error, Result};
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Entries a compaction writes between checks for a pending flush.
const YIELD_CHECK_ENTRIES: usize = 1024;
/// How long a compaction sleeps before re-checking a pending flush.
const FLUSH_YIELD_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// A chosen compaction.
struct Job {
    inputs: Vec<Arc<TableHandle>>,
    output_level: usize,
}

/// What an [`OutputWriter`] wrote.
#[derive(Default)]
pub(crate) struct Outputs {
    pub(crate) summaries: Vec<TableSummary>,
    pub(crate) placements: Vec<Placement>,
    pub(crate) dropped_entities: Vec<Digest>,
}

/// Where an entity's newest kept version landed in the outputs.
pub(crate) struct Placement {
    pub(crate) digest: Digest,
    pub(crate) event_ts: i64,
    pub(crate) file_no: u64,
    pub(crate) block: u32,
}

impl Inner {
    fn level_target(&self, level: usize) -> u64 {
        let mut t = self.opts.l1_target_bytes;
        for _ in 1..level {
            t = t.saturating_mul(self.opts.level_multiplier);
        }
        t
    }

    /// Bytes compaction must still rewrite to bring every level in bounds.
    pub(crate) fn compaction_backlog(&self, v: &Version) -> u64 {
        let mut backlog = 0;
        if v.level(0).len() >= self.opts.l0_compaction_trigger {
            backlog += v.level_bytes(0);
        }
        for level in 1..NUM_LEVELS - 1 {
            backlog += v
                .level_bytes(level)
                .saturating_sub(self.level_target(level));
        }
        backlog
    }

    /// Runs one background compaction step. Returns false if none was due.
    pub(crate) fn compact_once(&self) -> Result<bool> {
        let _guard = self.compaction_lock.lock();
        let view = self.pin();
        let Some(job) = self.pick(&view.version) else {
            return Ok(false);
        };
        drop(view);
        self.run(job)?;
        Ok(true)
    }

    /// Merges every SST into one level, applying retention everywhere.
    pub(crate) fn compact_all(&self) -> Result<()> {
        let _guard = self.compaction_lock.lock();
        let view = self.pin();
        let inputs: Vec<_> = view.version.files().cloned().collect();
        if inputs.is_empty() {
            return Ok(());
        }
        let total: u64 = inputs.iter().map(|h| h.meta.file_bytes).sum();
        let deepest = (0..NUM_LEVELS)
            .rev()
            .find(|&l| !view.version.level(l).is_empty())
            .unwrap_or(0);
        let fits = (1..NUM_LEVELS)
            .find(|&l| self.level_target(l) >= total)
            .unwrap_or(NUM_LEVELS - 1);
        drop(view);
        self.run(Job {
            inputs,
            output_level: fits.max(deepest).max(1),
        })
    }

    fn pick(&self, v: &Version) -> Option<Job> {
        let l0 = v.level(0);
        if l0.len() >= self.opts.l0_compaction_trigger {
            return Some(self.job_with_overlaps(l0.to_vec(), v, 1));
        }
        (1..NUM_LEVELS - 1)
            .filter(|&l| v.level_bytes(l) > self.level_target(l))
            .map(|l| {
                let file = least_overlap(v, l);
                self.job_with_overlaps(vec![file], v, l + 1)
            })
            .next()
    }

    fn job_with_overlaps(
        &self,
        mut inputs: Vec<Arc<TableHandle>>,
        v: &Version,
        output_level: usize,
    ) -> Job {
        let (lo, hi) = key_range(&inputs);
        inputs.extend(v.overlapping(output_level, (lo.0, &lo.1), (hi.0, &hi.1)));
        Job {
            inputs,
            output_level,
        }
    }

    fn run(&self, job: Job) -> Result<()> {
        if let [only] = job.inputs.as_slice() {
            if self.can_move(only, job.output_level) {
                return self.install(&job, Change::Move);
            }
        }
        let outputs = self.rewrite(&job)?;
        let installed = outputs
            .summaries
            .iter()
            .map(|s| self.open_handle(s, job.output_level as u32))
            .collect::<Result<Vec<_>>>()
            .and_then(|handles| self.install(&job, Change::Rewrite(handles)));
        if let Err(e) = installed {
            // Nothing is deleted: the manifest commit may have landed (the
            // engine is read-only now); outputs no manifest names are
            // removed at the next open. No index entry names them yet.
            let mut tables = self.tables.write();
            for s in &outputs.summaries {
                tables.remove(&s.file_no);
            }
            return Err(e);
        }
        let inputs: HashSet<u64> = job.inputs.iter().map(|h| h.meta.file_no).collect();
        let from_input = |loc: Location| matches!(loc, Location::Sst { file_no, .. } if inputs.contains(&file_no));
        for p in outputs.placements {
            let to = Location::Sst {
                file_no: p.file_no,
                block: p.block,
            };
            self.index.relocate(p.digest, from_input, to);
        }
        for digest in outputs.dropped_entities {
            self.index.remove_if(digest, from_input);
        }
        // No index entry names an input any more.
        let mut tables = self.tables.write();
        for file_no in &inputs {
            tables.remove(file_no);
        }
        Ok(())
    }

    /// A file can move down unchanged when nothing in the target level
    /// overlaps it and retention would drop none of its versions.
    fn can_move(&self, h: &TableHandle, output_level: usize) -> bool {
        if h.meta.level as usize == output_level {
            return false;
        }
        let view = self.pin();
        let lo = (h.meta.smallest.0, h.meta.smallest.1.as_ref());
        let hi = (h.meta.largest.0, h.meta.largest.1.as_ref());
        if !view.version.overlapping(output_level, lo, hi).is_empty() {
            return false;
        }
        let now = self.now();
        let opts = self.table_opts.read().clone();
        // Only configured tables can have a retention.
        opts.range(lo.0..=hi.0)
            .all(|(_, o)| retained(h.meta.min_event_ts, now, *o))
    }

    fn rewrite(&self, job: &Job) -> Result<Outputs> {
        let sources: Vec<Source<'_>> = job
            .inputs
            .iter()
            .map(|h| Box::new(h.table.iter()) as Source<'_>)
            .collect();
        let mut w = OutputWriter::new(self, self.build_options(job.output_level));
        let result = w.consume(MergeIter::new(sources));
        match result.and_then(|()| w.finish()) {
            Ok(o) => Ok(o),
            Err(e) => {
                w.abandon();
                Err(e)
            }
        }
    }

    fn install(&self, job: &Job, change: Change) -> Result<()> {
        let removed: HashSet<u64> = job.inputs.iter().map(|h| h.meta.file_no).collect();
        let rewritten = matches!(change, Change::Rewrite(_));
        let added: Vec<Arc<TableHandle>> = match change {
            Change::Move => job
                .inputs
                .iter()
                .map(|h| {
                    let mut meta = h.meta.clone();
                    meta.level = job.output_level as u32;
                    Arc::new(TableHandle::new(
                        h.table.clone(),
                        meta,
                        self.opts.fs.clone(),
                    ))
                })
                .collect(),
            Change::Rewrite(handles) => handles,
        };
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        next.id += 1;
        next.files.retain(|f| !removed.contains(&f.file_no));
        next.files.extend(added.iter().map(|h| h.meta.clone()));
        if rewritten {
            next.counters.compaction_read_bytes +=
                job.inputs.iter().map(|h| h.meta.file_bytes).sum::<u64>();
            next.counters.compaction_write_bytes +=
                added.iter().map(|h| h.meta.file_bytes).sum::<u64>();
        }
        self.commit_manifest(&next)?;
        *m = next;
        if !rewritten {
            let mut tables = self.tables.write();
            for h in &added {
                tables.insert(h.meta.file_no, h.clone());
            }
        }
        let mut view = self.view.write();
        *view = Arc::new(ReadView {
            mems: view.mems.clone(),
            version: Arc::new(view.version.apply(&added, &removed)),
        });
        drop(view);
        if rewritten {
            for h in &job.inputs {
                h.mark_obsolete();
            }
        }
        Ok(())
    }
}

/// How a compaction changes the live files.
enum Change {
    /// The single input moves to the output level unchanged.
    Move,
    /// The inputs are replaced by these new files (possibly none, when
    /// retention dropped everything).
    Rewrite(Vec<Arc<TableHandle>>),
}

fn key_range(files: &[Arc<TableHandle>]) -> ((TableId, Bytes), (TableId, Bytes)) {
    let mut lo = files[0].meta.smallest.clone();
    let mut hi = files[0].meta.largest.clone();
    for f in &files[1..] {
        if f.meta.smallest < lo {
            lo = f.meta.smallest.clone();
        }
        if f.meta.largest > hi {
            hi = f.meta.largest.clone();
        }
    }
    (lo, hi)
}

/// The file of `level` whose overlap with `level + 1` is smallest relative
/// to its own size.
fn least_overlap(v: &Version, level: usize) -> Arc<TableHandle> {
    let files = v.level(level);
    let ratio = |h: &Arc<TableHandle>| {
        let lo = (h.meta.smallest.0, h.meta.smallest.1.as_ref());
        let hi = (h.meta.largest.0, h.meta.largest.1.as_ref());
        let overlap: u64 = v
            .overlapping(level + 1, lo, hi)
            .iter()
            .map(|o| o.meta.file_bytes)
            .sum();
        overlap as f64 / h.meta.file_bytes.max(1) as f64
    };
    let mut best = files[0].clone();
    let mut best_ratio = ratio(&best);
    for f in &files[1..] {
        let r = ratio(f);
        if r < best_ratio {
            best = f.clone();
            best_ratio = r;
        }
    }
    best
}

/// Writes merged entries into output SSTs split at the target size, only at
/// entity boundaries (so files in a level never share an entity), applying
/// retention. Compaction and bulk ingest both write through it.
pub(crate) struct OutputWriter<'a> {
    inner: &'a Inner,
    now: i64,
    table_opts: Arc<BTreeMap<TableId, TableOptions>>,
    builder: Option<(u64, TableBuilder)>,
    summaries: Vec<TableSummary>,
    placements: Vec<Placement>,
    dropped_entities: Vec<Digest>,
    started: Vec<u64>,
    /// The entity being written: table, key, digest, and whether a version
    /// of it was kept yet.
    current: Option<(TableId, Bytes, Digest, bool)>,
    /// Entries written since the last check for a pending flush.
    since_yield_check: usize,
    build: BuildOptions,
}

impl<'a> OutputWriter<'a> {
    /// A writer building SSTs with `build`.
    pub(crate) fn new(inner: &'a Inner, build: BuildOptions) -> Self {
        OutputWriter {
            build,
            inner,
            now: inner.now(),
            table_opts: inner.table_opts.read().clone(),
            builder: None,
            summaries: Vec::new(),
            placements: Vec::new(),
            dropped_entities: Vec::new(),
            started: Vec::new(),
            current: None,
            since_yield_check: 0,
        }
    }

    /// Writes `merged`, in storage order.
    pub(crate) fn consume(&mut self, merged: impl Iterator<Item = Result<Entry>>) -> Result<()> {
        let mut opts_cache: Option<(TableId, TableOptions)> = None;
        for e in merged {
            let e = e?;
            let opts = match opts_cache {
                Some((t, o)) if t == e.table => o,
                _ => {
                    let o = self.table_opts.get(&e.table).copied().unwrap_or_default();
                    opts_cache = Some((e.table, o));
                    o
                }
            };
            self.push(e, opts)?;
        }
        self.end_entity();
        Ok(())
    }

    fn push(&mut self, e: Entry, opts: TableOptions) -> Result<()> {
        self.yield_to_flush();
        let same = self
            .current
            .as_ref()
            .is_some_and(|(t, k, _, _)| e.same_entity(*t, k));
        if !same {
            self.end_entity();
            self.roll_if_full()?;
            let digest = Digest::of(self.inner.seed, e.table, &e.key);
            self.current = Some((e.table, e.key.clone(), digest, false));
        }
        if !retained(e.event_ts, self.now, opts) {
            return Ok(());
        }
        let (file_no, builder) = match &mut self.builder {
            Some(b) => b,
            None => {
                let file_no = self.inner.alloc_file_no();
                self.started.push(file_no);
                let path = sst_path(&self.inner.dir, file_no);
                let b = TableBuilder::create(&*self.inner.opts.fs, &path, file_no, self.build)?;
                self.builder.insert((file_no, b))
            }
        };
        let block = builder.add(&e.as_ref())?;
        if let Some((_, _, digest, emitted)) = &mut self.current {
            if !*emitted {
                *emitted = true;
                self.placements.push(Placement {
                    digest: *digest,
                    event_ts: e.event_ts,
                    file_no: *file_no,
                    block,
                });
            }
        }
        Ok(())
    }

    /// Pauses while a frozen memtable waits for the flush thread: writers
    /// stall on flushes, not on compaction, so on a machine with few cores
    /// the flush gets the CPU first. The pause ends with the flush (so it is
    /// bounded by one flush's duration), or when flushes fail or the engine
    /// shuts down.
    fn yield_to_flush(&mut self) {
        self.since_yield_check += 1;
        if self.since_yield_check < YIELD_CHECK_ENTRIES {
            return;
        }
        self.since_yield_check = 0;
        while self.inner.has_frozen() && self.inner.flush_progressing() {
            std::thread::sleep(FLUSH_YIELD_PAUSE);
        }
    }

    fn end_entity(&mut self) {
        if let Some((_, _, digest, false)) = self.current.take() {
            self.dropped_entities.push(digest);
        }
    }

    fn roll_if_full(&mut self) -> Result<()> {
        let full = self
            .builder
            .as_ref()
            .is_some_and(|(_, b)| b.estimated_bytes() >= self.inner.opts.sst_target_bytes);
        if full {
            self.close_builder()?;
        }
        Ok(())
    }

    fn close_builder(&mut self) -> Result<()> {
        if let Some((_, b)) = self.builder.take() {
            self.summaries.push(b.finish()?);
        }
        Ok(())
    }

    /// Closes the last output and fsyncs the directory.
    pub(crate) fn finish(&mut self) -> Result<Outputs> {
        self.close_builder()?;
        let sst_dir = self.inner.dir.join(SST_DIR);
        self.inner
            .opts
            .fs
            .sync_dir(&sst_dir)
            .map_err(|e| Error::io("fsync directory", &sst_dir, e))?;
        Ok(Outputs {
            summaries: std::mem::take(&mut self.summaries),
            placements: std::mem::take(&mut self.placements),
            dropped_entities: std::mem::take(&mut self.dropped_entities),
        })
    }

    /// Removes every output file of a failed rewrite.
    pub(crate) fn abandon(&mut self) {
        self.builder = None;
        for &file_no in &self.started {
            let _ = self
                .inner
                .opts
                .fs
                .remove(&sst_path(&self.inner.dir, file_no));
        }
    }
}
