//! Consistency check of the hash index against a full scan, for tests, the
//! crash suites and operators (`tessera check`).

use crate::engine::Engine;
use crate::hash_index::{Location, UNKNOWN_SLOT};
use crate::merge::{MergeIter, Source};
use crate::read::retained;
use crate::types::Entry;
use crate::version::ReadView;
use crate::{Digest, Error, Result};

/// What [`Engine::verify_index`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Entities seen by the full scan.
    pub entities: u64,
    /// Row versions seen by the full scan.
    pub versions: u64,
    /// Entries in the hash index.
    pub index_entries: u64,
}

impl Engine {
    /// Scans every memtable and SST and checks that, for each entity whose
    /// newest version is still retained, the hash index holds its newest
    /// event time and points at the memtable or SST holding that version.
    /// Also reads every block, so any checksum failure is reported. Call it
    /// while no writes are in flight; compactions wait until it is done.
    pub fn verify_index(&self) -> Result<IndexReport> {
        let inner = &self.inner;
        // Keep compactions out: between installing its outputs and moving
        // the index entries to them, a compaction leaves entries that a
        // reader resolves through a search, which this check would flag.
        let _no_compaction = inner.compaction_lock.lock();
        let view = inner.pin();
        let now = inner.now();
        let mut sources: Vec<Source<'_>> = Vec::new();
        for m in &view.mems {
            let rows: Vec<Entry> = m.iter().collect();
            sources.push(Box::new(rows.into_iter().map(Ok)));
        }
        for h in view.version.files() {
            sources.push(Box::new(h.table.iter()));
        }
        check_levels(&view.version)?;
        let mut report = IndexReport {
            index_entries: inner.index.len() as u64,
            ..IndexReport::default()
        };
        let mut newest: Option<Entry> = None;
        for e in MergeIter::new(sources) {
            let e = e?;
            report.versions += 1;
            let same = newest
                .as_ref()
                .is_some_and(|n| e.same_entity(n.table, &n.key));
            if !same {
                report.entities += 1;
                if let Some(n) = newest.take() {
                    self.check_entity(&view, &n, now)?;
                }
                newest = Some(e);
            }
        }
        if let Some(n) = newest {
            self.check_entity(&view, &n, now)?;
        }
        Ok(report)
    }

    fn check_entity(&self, view: &ReadView, newest: &Entry, now: i64) -> Result<()> {
        let inner = &self.inner;
        if !retained(newest.event_ts, now, inner.table_options(newest.table)) {
            return Ok(());
        }
        let d = Digest::of(inner.seed, newest.table, &newest.key);
        let mismatch = |what: String| {
            Err(Error::InvalidArgument(format!(
                "hash index disagrees with scan for table {} key {:?}: {what}",
                newest.table, newest.key
            )))
        };
        let Some(ie) = inner.index.get(d) else {
            return mismatch("missing".into());
        };
        if ie.event_ts != newest.event_ts {
            return mismatch(format!(
                "index event_ts {} but newest is {}",
                ie.event_ts, newest.event_ts
            ));
        }
        let held_seq = match ie.loc {
            Location::Mem { gen, slot } => view.memtable(gen).and_then(|m| {
                if slot == UNKNOWN_SLOT {
                    m.first_version(newest.table, &newest.key).map(|e| e.seq)
                } else {
                    m.version_in_slot(slot, newest.table, &newest.key)
                        .map(|e| e.seq)
                }
            }),
            Location::Sst { file_no, block } => match inner.sst(view, file_no) {
                Some(h) => {
                    let b = h.table.block(block)?;
                    match h
                        .table
                        .first_version_in(&b, block, newest.table, &newest.key)?
                    {
                        Some(pos) => Some(b.entry(pos)?.seq),
                        None => None,
                    }
                }
                None => None,
            },
        };
        match held_seq {
            Some(seq) if seq == newest.seq => Ok(()),
            Some(seq) => mismatch(format!(
                "location {:?} holds seq {seq} but newest is seq {}",
                ie.loc, newest.seq
            )),
            None => mismatch(format!("location {:?} does not hold the key", ie.loc)),
        }
    }
}

/// Levels 1 and deeper must hold files with disjoint, ordered key ranges.
fn check_levels(v: &crate::version::Version) -> Result<()> {
    for level in 1..crate::version::NUM_LEVELS {
        for pair in v.level(level).windows(2) {
            let (a, b) = (&pair[0].meta, &pair[1].meta);
            let ordered = crate::types::cmp_entity(
                (a.largest.0, &a.largest.1),
                (b.smallest.0, &b.smallest.1),
            )
            .is_lt();
            if !ordered {
                return Err(Error::InvalidArgument(format!(
                    "level {level}: files {} and {} overlap",
                    a.file_no, b.file_no
                )));
            }
        }
    }
    Ok(())
}
