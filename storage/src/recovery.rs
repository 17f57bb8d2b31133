//! Opening a data directory: load the manifest, open the live SSTs, remove
//! files no manifest names, restore the hash index (from its checkpoint when
//! it matches the manifest, else rebuilt from the SSTs' key directories), and
//! replay the WAL into a fresh memtable.
//!
//! The WAL's last segment may end in a torn or garbage record (a crash in the
//! middle of an append): it is truncated at the last valid record. Earlier
//! segments were fsynced before the next one was created, so damage there is
//! reported as corruption, never skipped.

use crate::batch::decode_wal_payload;
use crate::cache::BlockCache;
use crate::commit::WriterState;
use crate::engine::{sst_path, INDEX_FILE, SST_DIR, WAL_DIR};
use crate::hash_index::{HashIndex, Location, UNKNOWN_SLOT};
use crate::manifest::{self, ManifestState};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::sstable::Table;
use crate::types::{SeqNo, Timestamp};
use crate::version::{ReadView, TableHandle, Version, NUM_LEVELS};
use crate::wal::{self, TailPolicy, WalWriter};
use crate::{Digest, Error, Result};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Everything `Engine::open` needs to start.
pub(crate) struct Recovered {
    pub(crate) manifest: ManifestState,
    pub(crate) index: HashIndex,
    pub(crate) view: ReadView,
    pub(crate) writer: WriterState,
    pub(crate) last_ingest_ts: Timestamp,
}

pub(crate) fn recover(dir: &Path, opts: &Options, cache: &Arc<BlockCache>) -> Result<Recovered> {
    let fs = &*opts.fs;
    let state = match manifest::load(fs, dir)? {
        Some(s) => s,
        None => {
            refuse_without_manifest(dir, opts)?;
            let fresh = ManifestState::new(rand::random());
            manifest::commit(fs, dir, &fresh)?;
            fresh
        }
    };
    let handles = open_tables(dir, opts, cache, &state)?;
    remove_orphans(dir, opts, &state)?;
    remove_ingest_runs(dir, opts)?;
    let version = Version::new(handles);
    let index = restore_index(dir, opts, &state, &version)?;

    let wal_dir = dir.join(WAL_DIR);
    let segments = wal::list_segments(fs, &wal_dir)?;
    let live: Vec<u64> = segments
        .iter()
        .copied()
        .filter(|&n| n >= state.wal_min_segment)
        .collect();
    for stale in segments.iter().filter(|&&n| n < state.wal_min_segment) {
        let p = wal::segment_path(&wal_dir, *stale);
        fs.remove(&p)
            .map_err(|e| Error::io("remove WAL segment", &p, e))?;
    }
    let next_segment = segments
        .last()
        .map_or(state.wal_min_segment, |&n| n + 1)
        .max(state.wal_min_segment);
    let first_segment = live.first().copied().unwrap_or(next_segment);
    let mem = Arc::new(Memtable::new(1, first_segment));
    let replayed = replay_wal(dir, opts, &state, &live, &mem, &index)?;
    // What was replayed may have been in the page cache only (a kill before
    // the fsync): make it durable before a newer segment exists, so a power
    // loss cannot leave a torn segment that is no longer the last one. Only
    // the last segment can be unsynced: every earlier one was synced before
    // its successor was created, by rotation or by an earlier recovery.
    //
    // A last segment that holds nothing (created, then a kill before its
    // header was written) is removed instead, durably: left behind, it
    // would be an earlier segment with a torn header at the next recovery,
    // which is damage.
    if let Some(&no) = live.last() {
        let p = wal::segment_path(&wal_dir, no);
        if replayed.last_segment_empty {
            fs.remove(&p)
                .and_then(|()| fs.sync_dir(&wal_dir))
                .map_err(|e| Error::io("remove empty WAL segment", &p, e))?;
        } else {
            fs.open_append(&p)
                .and_then(|mut f| f.sync())
                .map_err(|e| Error::io("fsync WAL segment", &p, e))?;
        }
    }

    // `state.last_seq` stays "flushed up to": the replayed versions are only
    // in the WAL until their memtable is flushed, and a manifest committed
    // before then must not claim them (replay skips seqs at or below it).
    let next_seq = state.last_seq.max(replayed.max_seq) + 1;
    let last_ingest_ts = state.last_ingest_ts.max(replayed.max_ingest_ts);
    let wal = WalWriter::create(opts.fs.clone(), &wal_dir, next_segment)?;
    let writer = WriterState::new(wal, next_seq, last_ingest_ts, mem.clone(), 2);
    Ok(Recovered {
        manifest: state,
        index,
        view: ReadView {
            mems: vec![mem],
            version: Arc::new(version),
        },
        writer,
        last_ingest_ts,
    })
}

/// A directory with SSTs or WAL segments but no manifest is damaged (or a
/// partial copy): starting afresh would delete every SST as an orphan.
fn refuse_without_manifest(dir: &Path, opts: &Options) -> Result<()> {
    for sub in [SST_DIR, WAL_DIR] {
        let d = dir.join(sub);
        let names = opts
            .fs
            .list(&d)
            .map_err(|e| Error::io("list directory", &d, e))?;
        if !names.is_empty() {
            return Err(Error::corruption(
                dir.join(manifest::MANIFEST_FILE),
                0,
                format!("missing, but {} holds {} files", d.display(), names.len()),
            ));
        }
    }
    Ok(())
}

fn open_tables(
    dir: &Path,
    opts: &Options,
    cache: &Arc<BlockCache>,
    state: &ManifestState,
) -> Result<Vec<Arc<TableHandle>>> {
    state
        .files
        .iter()
        .map(|meta| {
            let path = sst_path(dir, meta.file_no);
            let table = Table::open(opts.fs.clone(), &path, meta.file_no, cache.clone())?;
            Ok(Arc::new(TableHandle::new(
                table,
                meta.clone(),
                opts.fs.clone(),
            )))
        })
        .collect()
}

/// Deletes SSTs the manifest does not name: outputs of a flush or
/// compaction that crashed before its manifest commit.
fn remove_orphans(dir: &Path, opts: &Options, state: &ManifestState) -> Result<()> {
    let fs = &*opts.fs;
    let sst_dir = dir.join(SST_DIR);
    let live: HashSet<u64> = state.files.iter().map(|f| f.file_no).collect();
    let names = fs
        .list(&sst_dir)
        .map_err(|e| Error::io("list directory", &sst_dir, e))?;
    for name in names {
        let number = name
            .strip_suffix(".sst")
            .and_then(|n| n.parse::<u64>().ok());
        if number.is_some_and(|n| live.contains(&n)) {
            continue;
        }
        let p = sst_dir.join(&name);
        tracing::info!(path = %p.display(), "removing file not named by the manifest");
        fs.remove(&p)
            .map_err(|e| Error::io("remove orphan", &p, e))?;
    }
    Ok(())
}

/// Deletes the runs of bulk ingests that never committed: an ingest leaves
/// no trace unless it commits.
fn remove_ingest_runs(dir: &Path, opts: &Options) -> Result<()> {
    let fs = &*opts.fs;
    let runs = dir.join(crate::ingest::INGEST_DIR);
    if !fs.exists(&runs) {
        return Ok(());
    }
    let names = fs
        .list(&runs)
        .map_err(|e| Error::io("list directory", &runs, e))?;
    for name in names {
        let p = runs.join(&name);
        tracing::info!(path = %p.display(), "removing the run of an ingest that did not commit");
        fs.remove(&p)
            .map_err(|e| Error::io("remove ingest run", &p, e))?;
    }
    Ok(())
}

fn restore_index(
    dir: &Path,
    opts: &Options,
    state: &ManifestState,
    version: &Version,
) -> Result<HashIndex> {
    let path = dir.join(INDEX_FILE);
    match HashIndex::load_checkpoint(&*opts.fs, &path) {
        Ok(Some((id, index))) if id == state.id => return Ok(index),
        Ok(_) => {}
        Err(e) => {
            // The checkpoint is only an accelerator: rebuild rather than fail.
            tracing::warn!(error = %e, "ignoring damaged index checkpoint; rebuilding");
        }
    }
    rebuild_index(version)
}

/// Rebuilds the index from key directories, oldest data first (deepest
/// level, then level 0 oldest to newest) so that on equal event times the
/// newer commit wins, as it did when written.
pub(crate) fn rebuild_index(version: &Version) -> Result<HashIndex> {
    let entities: u64 = version.files().map(|h| h.meta.entries).sum();
    let index = HashIndex::with_capacity(usize::try_from(entities / 2).unwrap_or(0));
    for level in (1..NUM_LEVELS).rev() {
        for h in version.level(level) {
            apply_key_directory(&index, h)?;
        }
    }
    for h in version.level(0).iter().rev() {
        apply_key_directory(&index, h)?;
    }
    Ok(index)
}

fn apply_key_directory(index: &HashIndex, h: &TableHandle) -> Result<()> {
    let file_no = h.meta.file_no;
    for k in h.table.key_directory()? {
        index.upsert_if_newer(
            k.digest,
            k.event_ts,
            Location::Sst {
                file_no,
                block: k.block,
            },
        );
    }
    Ok(())
}

struct Replayed {
    max_seq: SeqNo,
    max_ingest_ts: Timestamp,
    /// The last segment's header was torn: it never held a record.
    last_segment_empty: bool,
}

fn replay_wal(
    dir: &Path,
    opts: &Options,
    state: &ManifestState,
    segments: &[u64],
    mem: &Memtable,
    index: &HashIndex,
) -> Result<Replayed> {
    let wal_dir = dir.join(WAL_DIR);
    let mut out = Replayed {
        max_seq: 0,
        max_ingest_ts: Timestamp::MIN,
        last_segment_empty: false,
    };
    for (i, &no) in segments.iter().enumerate() {
        let tail = if i + 1 == segments.len() {
            TailPolicy::Truncate
        } else {
            TailPolicy::Strict
        };
        let path = wal::segment_path(&wal_dir, no);
        let mut apply = |payload: bytes::Bytes, offset: u64| -> Result<()> {
            let batch = decode_wal_payload(&payload, &path, offset)?;
            out.max_ingest_ts = out.max_ingest_ts.max(batch.ingest_ts);
            for e in &batch.entries {
                // Versions already flushed (seq <= manifest.last_seq) are in
                // an SST; replaying them again would duplicate them.
                if e.seq <= state.last_seq {
                    continue;
                }
                out.max_seq = out.max_seq.max(e.seq);
                let loc = Location::Mem {
                    gen: mem.gen(),
                    slot: mem.insert(e).unwrap_or(UNKNOWN_SLOT),
                };
                let d = Digest::of(state.digest_seed, e.table, &e.key);
                index.upsert_if_newer(d, e.event_ts, loc);
            }
            Ok(())
        };
        let report = wal::replay_segment(&*opts.fs, &wal_dir, no, tail, &mut apply)?;
        out.last_segment_empty = report.valid_bytes == 0;
        if report.truncated_bytes > 0 {
            tracing::warn!(
                segment = no,
                bytes = report.truncated_bytes,
                "truncated torn WAL tail"
            );
        }
    }
    Ok(out)
}
