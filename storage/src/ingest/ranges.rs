//! The commit's merge of an ingest's runs into SSTs, split into key ranges
//! that are merged and written in parallel.
//!
//! Invariants:
//! - ranges split the key space between entities, so every version of an
//!   entity is merged in one range and no two output files share an entity
//!   (as compaction's outputs never do);
//! - range `i` holds the entities in `(points[i - 1], points[i]]`, the first
//!   unbounded below and the last above: together they hold every entry of
//!   every run exactly once;
//! - the split points are block boundaries of the runs, taken at even steps
//!   through all of them in key order, so ranges hold about as many blocks;
//! - outputs concatenated in range order are in storage order, as one merge
//!   over everything would write them; when any range fails, the files of
//!   every range are removed.

use super::runs::Run;
use crate::compaction::{OutputWriter, Outputs};
use crate::engine::Inner;
use crate::merge::{MergeIter, Source};
use crate::sstable::{BuildOptions, Table};
use crate::types::{cmp_entity, Entry, SeqNo, TableId, Timestamp};
use crate::{Error, Result};
use bytes::Bytes;
use std::cmp::Ordering;
use std::sync::Arc;

/// An entity, as the bound of a range.
type Entity = (TableId, Bytes);

/// How the merged versions are numbered and where the outputs go.
pub(super) struct Numbering {
    /// First sequence number of the ingest; a run's `seq` is the input
    /// ordinal, added to it.
    pub(super) base: SeqNo,
    /// The ingest time every version carries.
    pub(super) ingest_ts: Timestamp,
}

/// Merges `runs` into SSTs built with `build`, in up to `threads` ranges
/// written at once. On error every file written is removed.
pub(super) fn write(
    inner: &Inner,
    runs: &[Run],
    threads: usize,
    numbering: &Numbering,
    build: BuildOptions,
) -> Result<Outputs> {
    let points = split_points(runs, threads);
    let bounds: Vec<(Option<&Entity>, Option<&Entity>)> = (0..=points.len())
        .map(|i| (i.checked_sub(1).map(|j| &points[j]), points.get(i)))
        .collect();
    let results = std::thread::scope(|s| {
        let spawned: Vec<_> = bounds
            .iter()
            .map(|&(lo, hi)| {
                std::thread::Builder::new()
                    .name("tessera-ingest-merge".into())
                    .spawn_scoped(s, move || {
                        let mut out = OutputWriter::new(inner, build);
                        let written = write_range(&mut out, runs, lo, hi, numbering);
                        (out, written)
                    })
            })
            .collect();
        spawned
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .map_err(|_| Error::Background("an ingest merge thread panicked".into())),
                Err(e) => Err(Error::Background(format!(
                    "cannot start an ingest merge thread: {e}"
                ))),
            })
            .collect::<Vec<_>>()
    });
    combine(results)
}

/// Concatenates the ranges' outputs in order, or removes every file written
/// and returns the first error.
fn combine(results: Vec<Result<(OutputWriter<'_>, Result<Outputs>)>>) -> Result<Outputs> {
    let mut all = Outputs::default();
    let mut failure = None;
    let mut writers = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok((out, Ok(outputs))) => {
                all.summaries.extend(outputs.summaries);
                all.placements.extend(outputs.placements);
                writers.push(out);
            }
            Ok((out, Err(e))) => {
                failure.get_or_insert(e);
                writers.push(out);
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        None => Ok(all),
        Some(e) => {
            for out in &mut writers {
                out.abandon();
            }
            Err(e)
        }
    }
}

/// Merges the entities in `(lo, hi]` of every run through `out`.
fn write_range(
    out: &mut OutputWriter<'_>,
    runs: &[Run],
    lo: Option<&Entity>,
    hi: Option<&Entity>,
    numbering: &Numbering,
) -> Result<Outputs> {
    let sources: Vec<Source<'_>> = runs
        .iter()
        .map(|run| range_of(&run.table, lo, hi))
        .collect();
    let numbered = MergeIter::new(sources).map(|e| {
        e.map(|mut e| {
            e.seq += numbering.base;
            e.ingest_ts = numbering.ingest_ts;
            e
        })
    });
    out.consume(numbered)?;
    out.finish()
}

/// The entries of `table` whose entity is in `(lo, hi]`.
fn range_of<'a>(table: &Arc<Table>, lo: Option<&'a Entity>, hi: Option<&'a Entity>) -> Source<'a> {
    let iter = match lo {
        Some((t, k)) => table.iter_near_entity_after(*t, k),
        None => table.iter(),
    };
    let at_or_before = |bound: Option<&Entity>, e: &Result<Entry>| match (bound, e) {
        (Some((t, k)), Ok(e)) => cmp_entity((e.table, &e.key), (*t, k)) != Ordering::Greater,
        _ => false,
    };
    Box::new(
        iter.skip_while(move |e| at_or_before(lo, e))
            .take_while(move |e| hi.is_none() || at_or_before(hi, e) || e.is_err()),
    )
}

/// Up to `parts - 1` distinct entities splitting the runs' blocks into
/// `parts` ranges of about equal block counts.
fn split_points(runs: &[Run], parts: usize) -> Vec<Entity> {
    let mut ends: Vec<(TableId, &[u8])> = runs
        .iter()
        .flat_map(|run| {
            let t = &run.table;
            (0..t.data_blocks()).filter_map(|i| t.block_last_entity(i))
        })
        .collect();
    if ends.is_empty() || parts < 2 {
        return Vec::new();
    }
    ends.sort_unstable();
    let mut points: Vec<(TableId, &[u8])> =
        (1..parts).map(|i| ends[ends.len() * i / parts]).collect();
    points.dedup();
    points
        .into_iter()
        .map(|(t, k)| (t, Bytes::copy_from_slice(k)))
        .collect()
}
