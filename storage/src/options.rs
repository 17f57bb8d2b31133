//! Engine configuration: durability policy, sizes, per-table TTL and retention,
//! and the clock the engine reads time from.

use crate::fs::{FileSystem, OsFs};
use crate::types::Timestamp;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a write is acknowledged relative to its WAL fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging; concurrent writers share one fsync.
    Sync,
    /// fsync at most every given interval; a crash loses at most that window.
    Interval(Duration),
    /// Never fsync the WAL on the write path (rotation and close still do).
    None,
}

/// Per-table lifetime rules. Both are durations in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// A version whose `event_ts` is older than the read time minus `ttl`
    /// reads as absent.
    pub ttl_us: Option<i64>,
    /// Versions whose `event_ts` is older than now minus `retention` are
    /// invisible to every read and are dropped by compaction.
    pub retention_us: Option<i64>,
}

impl TableOptions {
    /// Checks that both durations are positive and that retention is at
    /// least the TTL (a version must not be deleted while it can be served).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::InvalidArgument(what.to_owned()));
        if self.ttl_us.is_some_and(|t| t <= 0) {
            return bad("ttl must be a positive duration");
        }
        if self.retention_us.is_some_and(|r| r <= 0) {
            return bad("retention must be a positive duration");
        }
        if let (Some(ttl), Some(retention)) = (self.ttl_us, self.retention_us) {
            if retention < ttl {
                return bad("retention must be at least the ttl");
            }
        }
        Ok(())
    }
}

/// Source of "now" for ingest timestamps, TTL and retention.
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since the Unix epoch.
    fn now_us(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Default memtable size before it is frozen and flushed.
pub const DEFAULT_MEMTABLE_BYTES: usize = 64 << 20;
/// Default bound on the decompressed-block cache.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 1 << 30;
/// Default uncompressed size of an SST data block.
pub const DEFAULT_BLOCK_BYTES: usize = 4096;
/// Default uncompressed size of a data block in the SSTs a bulk ingest
/// builds. Exports and joins sweep them whole: at 16 KiB, zstd's per-block
/// table setup and the per-block read and checksum cost a quarter as much
/// per row as at 4 KiB (docs/benchmarks.md), while a point read of an
/// imported key decompresses 16 KiB instead of 4 until compaction rewrites
/// it with `block_bytes`.
pub const DEFAULT_INGEST_BLOCK_BYTES: usize = 16 << 10;
/// Default zstd level of SST data blocks. Level -1 (zstd's fast mode, no
/// entropy coding of literals) ingests about 35% faster and compacts twice as
/// fast as level 1 on feature rows, for about 4% more disk
/// (docs/benchmarks.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = -1;
/// Default target size of an SST produced by compaction.
pub const DEFAULT_SST_TARGET_BYTES: u64 = 64 << 20;
/// Default memory of a bulk ingest's sort buffers (two runs of 128 MiB).
pub const DEFAULT_INGEST_RUN_BYTES: usize = 256 << 20;
/// Most threads a bulk ingest's commit merges with by default, whatever the
/// machine: beyond this, the disk rather than the CPU bounds the merge.
pub const MAX_DEFAULT_INGEST_THREADS: usize = 4;

/// Engine options.
#[derive(Clone)]
pub struct Options {
    /// WAL durability policy.
    pub durability: Durability,
    /// Memtable size that triggers a flush.
    pub memtable_bytes: usize,
    /// Frozen memtables allowed to wait for flush before writers stall.
    pub max_frozen_memtables: usize,
    /// Bound on the cache of decompressed blocks, in bytes.
    pub block_cache_bytes: usize,
    /// Uncompressed size of a data block.
    pub block_bytes: usize,
    /// Uncompressed size of a data block in the SSTs a bulk ingest builds.
    pub ingest_block_bytes: usize,
    /// zstd level for data blocks.
    pub zstd_level: i32,
    /// Compress the data blocks of level-0 SSTs (flushes) too. Off by
    /// default: flushes are on the writers' critical path, and compaction
    /// compresses level 0 as it rewrites it.
    pub compress_level0: bool,
    /// Bloom filter bits per key.
    pub bloom_bits_per_key: u32,
    /// Target size of compaction output files.
    pub sst_target_bytes: u64,
    /// Number of L0 files that triggers an L0 compaction.
    pub l0_compaction_trigger: usize,
    /// Target size of level 1; each deeper level is `level_multiplier` larger.
    pub l1_target_bytes: u64,
    /// Size ratio between adjacent levels.
    pub level_multiplier: u64,
    /// Run compaction in the background (tests may turn it off and call
    /// `compact` themselves).
    pub background_compaction: bool,
    /// Memory of a bulk ingest's buffered versions: half of it fills while
    /// the other half is sorted and written as a run in the background.
    pub ingest_run_bytes: usize,
    /// Threads a bulk ingest's commit merges its runs with, each writing
    /// one key range.
    pub ingest_threads: usize,
    /// The file system.
    pub fs: Arc<dyn FileSystem>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// Smallest memtable, SST target and level-1 target accepted (tests use
/// tiny sizes to exercise flushes and compactions).
const MIN_SIZE_BYTES: usize = 1024;

impl Options {
    /// Checks that the sizes and counts are usable.
    pub fn validate(&self) -> crate::Result<()> {
        let checks: [(bool, &str); 11] = [
            (
                self.memtable_bytes >= MIN_SIZE_BYTES,
                "memtable_bytes must be at least 1 KiB",
            ),
            (
                self.max_frozen_memtables >= 1,
                "max_frozen_memtables must be at least 1",
            ),
            (self.block_bytes >= 64, "block_bytes must be at least 64"),
            (
                self.ingest_block_bytes >= 64,
                "ingest_block_bytes must be at least 64",
            ),
            (
                self.sst_target_bytes >= MIN_SIZE_BYTES as u64,
                "sst_target_bytes must be at least 1 KiB",
            ),
            (
                self.l0_compaction_trigger >= 2,
                "l0_compaction_trigger must be at least 2",
            ),
            (
                self.l1_target_bytes >= MIN_SIZE_BYTES as u64,
                "l1_target_bytes must be at least 1 KiB",
            ),
            (
                self.level_multiplier >= 2,
                "level_multiplier must be at least 2",
            ),
            (
                zstd::compression_level_range().contains(&self.zstd_level),
                "zstd_level is out of zstd's range",
            ),
            (
                self.ingest_run_bytes >= MIN_SIZE_BYTES,
                "ingest_run_bytes must be at least 1 KiB",
            ),
            (
                self.ingest_threads >= 1,
                "ingest_threads must be at least 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(crate::Error::InvalidArgument((*what).to_owned())),
            None => Ok(()),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Interval(Duration::from_millis(5)),
            memtable_bytes: DEFAULT_MEMTABLE_BYTES,
            max_frozen_memtables: 2,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            block_bytes: DEFAULT_BLOCK_BYTES,
            ingest_block_bytes: DEFAULT_INGEST_BLOCK_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            compress_level0: false,
            bloom_bits_per_key: 10,
            sst_target_bytes: DEFAULT_SST_TARGET_BYTES,
            l0_compaction_trigger: 4,
            l1_target_bytes: 256 << 20,
            level_multiplier: 10,
            background_compaction: true,
            ingest_run_bytes: DEFAULT_INGEST_RUN_BYTES,
            ingest_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(MAX_DEFAULT_INGEST_THREADS)),
            fs: Arc::new(OsFs::default()),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("memtable_bytes", &self.memtable_bytes)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("block_bytes", &self.block_bytes)
            .field("ingest_block_bytes", &self.ingest_block_bytes)
            .field("fs", &self.fs.backend_name())
            .finish_non_exhaustive()
    }
}
