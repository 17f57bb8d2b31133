//! The write path: group commit, WAL append and sync, memtable insert, index
//! update, and memtable rotation.
//!
//! Writers queue their batches; the first writer to find no leader becomes
//! the leader and commits everything queued (up to [`MAX_GROUP_BYTES`]) with
//! one WAL write and, under [`Durability::Sync`], one fsync. Only then are the
//! versions inserted into the memtable and the hash index, so a write becomes
//! visible only once it is as durable as the policy promises.
//!
//! Invariants:
//! - sequence numbers are assigned, logged and applied in one order, by one
//!   leader at a time (the `writer` mutex);
//! - `ingest_ts` never decreases;
//! - a failed WAL write or fsync is never acknowledged, and turns the engine
//!   read-only: after an fsync error the kernel may have dropped the dirty
//!   pages, so nothing written since the last good sync can be promised.

use crate::batch::{decode_wal_payload, encode_wal_payload, WriteBatch, PAYLOAD_HEADER_LEN};
use crate::engine::{Engine, Inner, WAL_DIR};
use crate::hash_index::{Location, MAX_MEM_GEN, UNKNOWN_SLOT};
use crate::memtable::Memtable;
use crate::options::Durability;
use crate::types::{SeqNo, TableId, Timestamp};
use crate::version::ReadView;
use crate::wal::WalWriter;
use crate::{Digest, Error, Result};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of batches one leader commits at once.
pub const MAX_GROUP_BYTES: usize = 4 << 20;
/// Longest a writer waits for a flush to free memtable space before it
/// re-checks for background errors.
const STALL_POLL: Duration = Duration::from_millis(100);

/// What a successful write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Sequence number of the batch's first version.
    pub first_seq: SeqNo,
    /// Sequence number of the batch's last version: the commit sequence.
    pub last_seq: SeqNo,
    /// The ingest timestamp given to every version of the batch.
    pub ingest_ts: Timestamp,
}

/// Batches waiting for a leader, and results waiting for their writers.
#[derive(Default)]
pub(crate) struct CommitQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Default)]
struct QueueState {
    next_ticket: u64,
    waiting: Vec<(u64, WriteBatch)>,
    done: HashMap<u64, Result<CommitInfo>>,
    leader_active: bool,
}

/// State owned by the commit leader.
pub(crate) struct WriterState {
    pub(crate) wal: WalWriter,
    pub(crate) next_seq: SeqNo,
    pub(crate) last_ingest_ts: Timestamp,
    pub(crate) active: Arc<Memtable>,
    pub(crate) next_gen: u64,
    pub(crate) last_sync: Instant,
    pub(crate) unsynced: bool,
}

impl WriterState {
    pub(crate) fn new(
        wal: WalWriter,
        next_seq: SeqNo,
        last_ingest_ts: Timestamp,
        active: Arc<Memtable>,
        next_gen: u64,
    ) -> Self {
        WriterState {
            wal,
            next_seq,
            last_ingest_ts,
            active,
            next_gen,
            last_sync: Instant::now(),
            unsynced: false,
        }
    }

    pub(crate) fn last_seq(&self) -> SeqNo {
        self.next_seq.saturating_sub(1)
    }
}

impl Engine {
    /// Commits a batch atomically: every version in it becomes visible
    /// together, with consecutive sequence numbers, or none does.
    pub fn write(&self, batch: WriteBatch) -> Result<CommitInfo> {
        self.inner.write(batch)
    }

    /// Writes one row version.
    pub fn put(
        &self,
        table: TableId,
        key: &[u8],
        event_ts: Timestamp,
        value: &[u8],
    ) -> Result<CommitInfo> {
        let mut batch = WriteBatch::new();
        batch.put(table, key, event_ts, value)?;
        self.write(batch)
    }

    /// Writes a tombstone: the key is absent as of `event_ts`.
    pub fn delete(&self, table: TableId, key: &[u8], event_ts: Timestamp) -> Result<CommitInfo> {
        let mut batch = WriteBatch::new();
        batch.delete(table, key, event_ts)?;
        self.write(batch)
    }
}

impl Inner {
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<CommitInfo> {
        self.check_writable()?;
        if batch.is_empty() {
            return Err(Error::InvalidArgument("empty write batch".into()));
        }
        let mut q = self.commit.state.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push((ticket, batch));
        loop {
            if let Some(result) = q.done.remove(&ticket) {
                return result;
            }
            if !q.leader_active {
                q.leader_active = true;
                let group = take_group(&mut q.waiting);
                drop(q);
                let results = self.commit_group_guarded(group);
                q = self.commit.state.lock();
                q.done.extend(results);
                q.leader_active = false;
                self.commit.cv.notify_all();
                continue;
            }
            self.commit.cv.wait(&mut q);
        }
    }

    /// Commits a group; a panic (a bug) fails the group's writers and turns
    /// the engine read-only instead of leaving every later writer waiting
    /// for a leader that is gone.
    fn commit_group_guarded(
        &self,
        group: Vec<(u64, WriteBatch)>,
    ) -> Vec<(u64, Result<CommitInfo>)> {
        let tickets: Vec<u64> = group.iter().map(|(t, _)| *t).collect();
        let run = std::panic::AssertUnwindSafe(|| self.commit_group(group));
        match std::panic::catch_unwind(run) {
            Ok(results) => results,
            Err(_) => {
                let reason = "the commit leader panicked".to_owned();
                self.set_read_only(reason.clone());
                tickets
                    .into_iter()
                    .map(|t| (t, Err(Error::ReadOnly(reason.clone()))))
                    .collect()
            }
        }
    }

    fn commit_group(&self, group: Vec<(u64, WriteBatch)>) -> Vec<(u64, Result<CommitInfo>)> {
        let mut w = self.writer.lock();
        match self.apply_group(&mut w, &group) {
            Ok(infos) => group
                .iter()
                .map(|(t, _)| *t)
                .zip(infos.into_iter().map(Ok))
                .collect(),
            Err(e) => group
                .iter()
                .map(|(t, _)| (*t, Err(replicate(&e))))
                .collect(),
        }
    }

    fn apply_group(
        &self,
        w: &mut WriterState,
        group: &[(u64, WriteBatch)],
    ) -> Result<Vec<CommitInfo>> {
        self.check_writable()?;
        self.make_room(w)?;
        let ingest_ts = self.now().max(w.last_ingest_ts);
        let mut infos = Vec::with_capacity(group.len());
        let mut payloads = Vec::with_capacity(group.len());
        let mut seq = w.next_seq;
        for (_, batch) in group {
            // Encoded once: the same buffer is the WAL record and, shared,
            // the memory of the memtable's keys and values.
            let mut payload = Vec::with_capacity(batch.encoded_bytes() + PAYLOAD_HEADER_LEN);
            encode_wal_payload(batch, seq, ingest_ts, &mut payload);
            payloads.push(Bytes::from(payload));
            let n = batch.len() as u64;
            infos.push(CommitInfo {
                first_seq: seq,
                last_seq: seq + n - 1,
                ingest_ts,
            });
            seq += n;
        }
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_ref()).collect();
        if let Err(e) = w.wal.append(&refs) {
            self.set_read_only(format!("WAL append failed: {e}"));
            return Err(e);
        }
        w.unsynced = true;
        self.sync_per_policy(w)?;
        w.next_seq = seq;
        w.last_ingest_ts = ingest_ts;
        self.apply_to_memtable(w, &payloads)?;
        self.visible_seq
            .store(seq - 1, std::sync::atomic::Ordering::Release);
        let user_bytes: usize = payloads.iter().map(|p| p.len()).sum();
        self.counters.add_user_bytes(user_bytes as u64);
        Ok(infos)
    }

    fn sync_per_policy(&self, w: &mut WriterState) -> Result<()> {
        let due = match self.opts.durability {
            Durability::Sync => true,
            Durability::Interval(_) if self.wal_syncer.lock().is_some() => {
                // The sync thread makes it durable within the interval.
                self.wal_dirty.store(true, Ordering::Release);
                false
            }
            Durability::Interval(every) => w.last_sync.elapsed() >= every,
            Durability::None => false,
        };
        if due {
            self.sync_wal(w)?;
        }
        Ok(())
    }

    pub(crate) fn sync_wal(&self, w: &mut WriterState) -> Result<()> {
        let started = Instant::now();
        if let Err(e) = w.wal.sync() {
            self.set_read_only(format!("WAL fsync failed: {e}"));
            return Err(e);
        }
        self.counters.record_fsync(started.elapsed());
        w.last_sync = Instant::now();
        w.unsynced = false;
        Ok(())
    }

    /// Called by the sync thread under `Interval` durability: syncs the
    /// current WAL segment without holding the writer lock, or, where the
    /// file system offers no cross-thread sync, through the writer.
    pub(crate) fn background_sync(&self, every: Duration) {
        let syncer = self.wal_syncer.lock().clone();
        let Some(syncer) = syncer else {
            let mut w = self.writer.lock();
            if w.unsynced && w.last_sync.elapsed() >= every {
                // An error here has already turned the engine read-only.
                let _ = self.sync_wal(&mut w);
            }
            return;
        };
        if !self.wal_dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let started = Instant::now();
        match syncer.sync() {
            Ok(()) => self.counters.record_fsync(started.elapsed()),
            Err(e) => self.set_read_only(format!("WAL fsync failed: {e}")),
        }
    }

    fn apply_to_memtable(&self, w: &WriterState, payloads: &[Bytes]) -> Result<()> {
        let mem = &w.active;
        let gen = mem.gen();
        let wal_path = crate::wal::segment_path(&self.dir.join(WAL_DIR), w.wal.segment_no());
        for payload in payloads {
            // The payload was encoded by this process a moment ago; decoding
            // it gives owned entries that share its buffer.
            let decoded = decode_wal_payload(payload, &wal_path, 0)?;
            for e in &decoded.entries {
                let slot = mem.insert(e).unwrap_or(UNKNOWN_SLOT);
                let d = Digest::of(self.seed, e.table, &e.key);
                self.index
                    .upsert_if_newer(d, e.event_ts, Location::Mem { gen, slot });
            }
        }
        Ok(())
    }

    /// Freezes the active memtable when it is full, stalling while too many
    /// frozen memtables wait for the flush thread.
    fn make_room(&self, w: &mut WriterState) -> Result<()> {
        if w.active.approximate_bytes() < self.opts.memtable_bytes {
            return Ok(());
        }
        // Waiting holds the writer lock, which the interval sync thread
        // needs: make what was acknowledged durable before waiting.
        if w.unsynced {
            self.sync_wal(w)?;
        }
        self.wait_for_frozen_slot()?;
        self.rotate(w)
    }

    fn wait_for_frozen_slot(&self) -> Result<()> {
        let mut bg = self.bg.lock();
        while self.view.read().mems.len() > self.opts.max_frozen_memtables {
            if let Some(err) = &bg.flush_error {
                return Err(Error::Background(err.clone()));
            }
            if bg.shutdown {
                return Err(Error::Closed);
            }
            self.counters.add_stall();
            self.bg_cv.wait_for(&mut bg, STALL_POLL);
        }
        Ok(())
    }

    /// Makes the active memtable frozen and starts a new one on a new WAL
    /// segment. Returns the generation frozen.
    pub(crate) fn rotate(&self, w: &mut WriterState) -> Result<()> {
        // A process would need 2^31 memtables to get here: checked, because
        // the index could not name the next one's versions.
        if w.next_gen > MAX_MEM_GEN {
            return Err(Error::InvalidArgument(format!(
                "memtable generation {} is past the index's limit; reopen the engine",
                w.next_gen
            )));
        }
        // The old segment must be durable before the new one exists, so a
        // torn tail can only ever be in the last segment.
        self.sync_wal(w)?;
        let next_segment = w.wal.segment_no() + 1;
        let wal_dir = self.dir.join(WAL_DIR);
        let wal = match WalWriter::create(self.opts.fs.clone(), &wal_dir, next_segment) {
            Ok(wal) => wal,
            Err(e) => {
                // Nothing was written to it: remove it so the next attempt
                // can create it again; the current segment stays in use.
                let _ = self
                    .opts
                    .fs
                    .remove(&crate::wal::segment_path(&wal_dir, next_segment));
                return Err(e);
            }
        };
        let fresh = Arc::new(Memtable::new(w.next_gen, next_segment));
        w.next_gen += 1;
        // The old segment was synced above; the sync thread moves on to the
        // new one.
        *self.wal_syncer.lock() = wal.syncer();
        w.wal = wal;
        let frozen = std::mem::replace(&mut w.active, fresh.clone());
        {
            let mut view = self.view.write();
            let mut mems = Vec::with_capacity(view.mems.len() + 1);
            mems.push(fresh);
            mems.extend(view.mems.iter().cloned());
            debug_assert!(Arc::ptr_eq(&mems[1], &frozen));
            *view = Arc::new(ReadView {
                mems,
                version: view.version.clone(),
            });
        }
        // Notify under the lock the flush thread checks before waiting.
        let _bg = self.bg.lock();
        self.bg_cv.notify_all();
        Ok(())
    }

    /// Freezes the active memtable if it holds anything; returns the newest
    /// generation that must be flushed for everything written so far to be
    /// in SSTs (None if nothing is pending).
    pub(crate) fn rotate_for_flush(&self) -> Result<Option<u64>> {
        let mut w = self.writer.lock();
        if !w.active.is_empty() {
            self.check_writable()?;
            self.rotate(&mut w)?;
        }
        drop(w);
        let view = self.pin();
        Ok(view.mems.iter().skip(1).map(|m| m.gen()).max())
    }
}

fn take_group(waiting: &mut Vec<(u64, WriteBatch)>) -> Vec<(u64, WriteBatch)> {
    let mut bytes = 0;
    let mut n = 0;
    for (_, b) in waiting.iter() {
        if n > 0 && bytes + b.encoded_bytes() > MAX_GROUP_BYTES {
            break;
        }
        bytes += b.encoded_bytes();
        n += 1;
    }
    waiting.drain(..n).collect()
}

/// A copy of `e` for each member of a failed commit group.
pub(crate) fn replicate(e: &Error) -> Error {
    match e {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Checksum {
            path,
            offset,
            stored,
            computed,
        } => Error::Checksum {
            path: path.clone(),
            offset: *offset,
            stored: *stored,
            computed: *computed,
        },
        Error::Corruption {
            path,
            offset,
            reason,
        } => Error::Corruption {
            path: path.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
        Error::ReadOnly(s) => Error::ReadOnly(s.clone()),
        Error::Background(s) => Error::Background(s.clone()),
        Error::Closed => Error::Closed,
    }
}
