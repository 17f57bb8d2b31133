//! Engine statistics: counters kept on the hot paths (atomics only) and the
//! [`EngineStats`] snapshot the server exports as metrics.

use crate::engine::Engine;
use crate::version::NUM_LEVELS;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Hot-path counters since open.
#[derive(Default)]
pub(crate) struct Counters {
    fsyncs: AtomicU64,
    fsync_micros_total: AtomicU64,
    fsync_micros_max: AtomicU64,
    stalls: AtomicU64,
    user_bytes: AtomicU64,
    slow_path_reads: AtomicU64,
}

impl Counters {
    pub(crate) fn record_fsync(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_micros_total.fetch_add(us, Ordering::Relaxed);
        self.fsync_micros_max.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn add_stall(&self) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_user_bytes(&self, n: u64) {
        self.user_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_slow_path(&self) {
        self.slow_path_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn take_user_bytes(&self) -> u64 {
        self.user_bytes.swap(0, Ordering::Relaxed)
    }
}

/// A point-in-time view of the engine's state and counters.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Bytes held by the active and frozen memtables.
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for flush.
    pub frozen_memtables: u64,
    /// Number of SSTs per level.
    pub ssts_per_level: [u64; NUM_LEVELS],
    /// Bytes of SSTs per level.
    pub bytes_per_level: [u64; NUM_LEVELS],
    /// Estimated bytes compaction still has to rewrite to bring every level
    /// within its target.
    pub compaction_backlog_bytes: u64,
    /// Heap bytes the live SSTs keep loaded: indexes, bloom filters and
    /// the like ([`crate::sstable::Table::memory_bytes`]); grows with the data.
    pub table_memory_bytes: u64,
    /// Entities in the hash index.
    pub index_entities: u64,
    /// Heap bytes held by the hash index.
    pub index_bytes: u64,
    /// Block cache hits since open.
    pub block_cache_hits: u64,
    /// Block cache misses since open.
    pub block_cache_misses: u64,
    /// Bytes held by the block cache.
    pub block_cache_bytes: u64,
    /// WAL fsyncs since open.
    pub wal_fsyncs: u64,
    /// Total time spent in WAL fsync, µs.
    pub wal_fsync_micros_total: u64,
    /// Longest WAL fsync, µs.
    pub wal_fsync_micros_max: u64,
    /// Times a writer waited for a flush.
    pub write_stalls: u64,
    /// Latest reads that missed the hash-index fast path.
    pub slow_path_reads: u64,
    /// Bytes of WAL payload written by users (lifetime of the database).
    pub user_bytes: u64,
    /// Bytes written by flushes (lifetime).
    pub flush_bytes: u64,
    /// Bytes written by compactions (lifetime).
    pub compaction_write_bytes: u64,
    /// (WAL + flush + compaction bytes) / user bytes.
    pub write_amplification: f64,
    /// True once a WAL or manifest failure made the engine refuse writes.
    pub read_only: bool,
    /// The last flush failure, until a flush succeeds again.
    pub flush_error: Option<String>,
    /// The last compaction failure, until a compaction succeeds again.
    pub compaction_error: Option<String>,
}

impl Engine {
    /// Current statistics.
    pub fn stats(&self) -> EngineStats {
        let inner = &self.inner;
        let view = inner.pin();
        let c = &inner.counters;
        let m = inner.manifest.lock().counters.clone();
        let mut s = EngineStats {
            memtable_bytes: view.mems.iter().map(|m| m.approximate_bytes() as u64).sum(),
            frozen_memtables: view.mems.len().saturating_sub(1) as u64,
            index_entities: inner.index.len() as u64,
            index_bytes: inner.index.memory_bytes() as u64,
            block_cache_hits: inner.cache.hits(),
            block_cache_misses: inner.cache.misses(),
            block_cache_bytes: inner.cache.used_bytes() as u64,
            wal_fsyncs: c.fsyncs.load(Ordering::Relaxed),
            wal_fsync_micros_total: c.fsync_micros_total.load(Ordering::Relaxed),
            wal_fsync_micros_max: c.fsync_micros_max.load(Ordering::Relaxed),
            write_stalls: c.stalls.load(Ordering::Relaxed),
            slow_path_reads: c.slow_path_reads.load(Ordering::Relaxed),
            user_bytes: m.user_bytes + c.user_bytes.load(Ordering::Relaxed),
            flush_bytes: m.flush_bytes,
            compaction_write_bytes: m.compaction_write_bytes,
            read_only: inner.is_read_only.load(Ordering::Relaxed),
            ..EngineStats::default()
        };
        for level in 0..NUM_LEVELS {
            let tables = view.version.level(level);
            s.ssts_per_level[level] = tables.len() as u64;
            s.bytes_per_level[level] = view.version.level_bytes(level);
            s.table_memory_bytes += tables
                .iter()
                .map(|h| h.table.memory_bytes() as u64)
                .sum::<u64>();
        }
        s.compaction_backlog_bytes = inner.compaction_backlog(&view.version);
        let bg = inner.bg.lock();
        s.flush_error = bg.flush_error.clone();
        s.compaction_error = bg.compaction_error.clone();
        drop(bg);
        if s.user_bytes > 0 {
            let written = s.user_bytes + s.flush_bytes + s.compaction_write_bytes;
            s.write_amplification = written as f64 / s.user_bytes as f64;
        }
        s
    }
}
