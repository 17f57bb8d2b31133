//! RocksDB as the in-process peer of `tessera-bench engine --peer rocksdb`
//! (built with `--features rocksdb`).
//!
//! The same dataset, walk and reads as Tessera's run, with Tessera's block
//! cache size, block size, bloom bits, memtable size and zstd level. Two
//! column families, as a feature store on RocksDB lays them out:
//! - `latest`: `table (1 B) | entity key (8 B)` → the newest version's row,
//!   so the slate is one `batched_multi_get_cf` of exact keys. The loader
//!   knows each entity's newest version; an online writer would need a read
//!   before every write to keep this right under late arrivals;
//! - `versions`: `table | entity key | !event_ts (8 B, big-endian)` → the
//!   row, so "as of T" is one seek, the newest version at or before T first.

use crate::dataset::{self, USERS};
use crate::engine_bench::{
    for_each_version, options, time_slates, BoxError, EngineArgs, Report, SlateGen, SlateLatency,
    MAX_WARMUP_SLATES,
};
use crate::net_bench::now_us;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, DB,
};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_storage::fs::ReadBackend;

/// The RocksDB release the pinned `rocksdb` crate builds.
const ROCKSDB_VERSION: &str = "RocksDB 10.4.2 (rust-rocksdb 0.24.0)";
const LATEST: &str = "latest";
const VERSIONS: &str = "versions";
/// Rows per write batch, as in Tessera's load.
const BATCH_ROWS: usize = 256;
/// Warm-up stops once the block cache grew by less than this over
/// [`WARMUP_STEP`] slates: the working set is in (RocksDB's cache may never
/// fill when the latest rows are smaller than it).
const WARMUP_SETTLED_BYTES: usize = 1 << 20;
const WARMUP_STEP: u64 = 10_000;

/// RocksDB's figures, measured as Tessera's are.
#[derive(Serialize, Default)]
pub(crate) struct PeerReport {
    engine: &'static str,
    ingest_rows_per_s: f64,
    compact_s: f64,
    disk_bytes_per_version: f64,
    warmup_slates: u64,
    #[serde(flatten)]
    slate: SlateLatency,
    as_of_lookups_per_s: f64,
}

/// Loads, compacts and reads the dataset on RocksDB, in a temporary
/// directory beside Tessera's `dir` (removed after).
pub(crate) fn run(dir: &Path, args: &EngineArgs, r: &Report) -> Result<PeerReport, BoxError> {
    let peer_dir = tempfile::Builder::new()
        .prefix("rocksdb-peer-")
        .tempdir_in(dir.parent().unwrap_or(Path::new(".")))?;
    let dir = peer_dir.path();
    let tessera = options(args, ReadBackend::Pread);
    let cache = Cache::new_lru_cache(tessera.block_cache_bytes);
    let db = open(dir, &tessera, &cache)?;
    let mut report = PeerReport {
        engine: ROCKSDB_VERSION,
        ..PeerReport::default()
    };
    eprintln!("loading the same dataset into {ROCKSDB_VERSION}");
    let started = Instant::now();
    let versions = load(&db, args, r)?;
    report.ingest_rows_per_s = versions as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for name in [LATEST, VERSIONS] {
        db.compact_range_cf(cf(&db, name)?, None::<&[u8]>, None::<&[u8]>);
    }
    report.compact_s = started.elapsed().as_secs_f64();
    report.disk_bytes_per_version = sst_bytes(dir)? as f64 / versions.max(1) as f64;
    warm_slates(&db, &cache, args, r, &mut report)?;
    report.as_of_lookups_per_s = as_of_throughput(&db, args, r)?;
    Ok(report)
}

/// Opens RocksDB with Tessera's block size, bloom bits, zstd level and
/// memtable size, blocks cached in `cache`.
fn open(dir: &Path, tessera: &tessera_storage::Options, cache: &Cache) -> Result<DB, BoxError> {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(tessera.block_bytes);
    table.set_bloom_filter(f64::from(tessera.bloom_bits_per_key), false);
    let mut cf_opts = Options::default();
    cf_opts.set_block_based_table_factory(&table);
    cf_opts.set_compression_type(DBCompressionType::Zstd);
    // Window bits, level, strategy, dictionary bytes: only the level is ours.
    cf_opts.set_compression_options(-14, tessera.zstd_level, 0, 0);
    cf_opts.set_write_buffer_size(tessera.memtable_bytes);
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.increase_parallelism(2);
    let cfs = [LATEST, VERSIONS].map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
    Ok(DB::open_cf_descriptors(&db_opts, dir, cfs)?)
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, BoxError> {
    db.cf_handle(name)
        .ok_or_else(|| format!("column family `{name}` missing").into())
}

fn latest_key(table: u32, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = table as u8;
    k[1..].copy_from_slice(&dataset::entity_key(id));
    k
}

/// `!event_ts` with the sign bit flipped, big-endian: newer sorts first.
fn version_key(table: u32, id: u64, ts: i64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&latest_key(table, id));
    k[9..].copy_from_slice(&(!((ts as u64) ^ (1 << 63))).to_be_bytes());
    k
}

/// Writes every version, and each entity's newest into `latest`, in
/// batches of [`BATCH_ROWS`] versions through the WAL (not synced).
fn load(db: &DB, args: &EngineArgs, r: &Report) -> Result<u64, BoxError> {
    let (latest, versions) = (cf(db, LATEST)?, cf(db, VERSIONS)?);
    let mut batch = WriteBatch::default();
    let mut row = Vec::with_capacity(dataset::ROW_BYTES);
    let mut pending = 0;
    let rows = for_each_version(r, args.seed, now_us(), |table, id, times| {
        let mut newest = 0;
        for (v, &ts) in times.iter().enumerate() {
            dataset::encode_row(table, id, v as u32, &mut row);
            batch.put_cf(versions, version_key(table, id, ts), &row);
            // Equal times: the later write wins, as in Tessera.
            if ts >= times[newest] {
                newest = v;
            }
        }
        dataset::encode_row(table, id, newest as u32, &mut row);
        batch.put_cf(latest, latest_key(table, id), &row);
        pending += times.len();
        if pending >= BATCH_ROWS {
            db.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
        Ok(())
    })?;
    db.write(batch)?;
    Ok(rows)
}

/// One slate: the user's and the 50 articles' newest rows in one
/// `batched_multi_get_cf`.
fn slate(db: &DB, latest: &rocksdb::ColumnFamily, keys: &[[u8; 8]]) -> Result<usize, BoxError> {
    let full: Vec<[u8; 9]> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let table = if i == 0 { USERS } else { dataset::ARTICLES };
            latest_key(table, u64::from_be_bytes(*k))
        })
        .collect();
    let mut found = 0;
    for value in db.batched_multi_get_cf(latest, &full, false) {
        found += usize::from(value?.is_some());
    }
    Ok(found)
}

fn warm_slates(
    db: &DB,
    cache: &Cache,
    args: &EngineArgs,
    r: &Report,
    report: &mut PeerReport,
) -> Result<(), BoxError> {
    let latest = cf(db, LATEST)?;
    let mut gen = SlateGen::new(r, args.zipf, args.seed + 1)?;
    let mut keys = Vec::with_capacity(51);
    let mut warm = 0u64;
    let mut usage = cache.get_usage();
    loop {
        for _ in 0..WARMUP_STEP {
            gen.zipf(r, &mut keys);
            slate(db, latest, &keys)?;
        }
        warm += WARMUP_STEP;
        let grew = cache.get_usage().saturating_sub(usage);
        usage = cache.get_usage();
        if warm >= MAX_WARMUP_SLATES || (warm >= args.slates / 5 && grew < WARMUP_SETTLED_BYTES) {
            break;
        }
    }
    report.warmup_slates = warm;
    report.slate = time_slates(&mut gen, r, args.slates, |keys| slate(db, latest, keys))?;
    Ok(())
}

/// Batches of 51 "as of T" reads of random users, one seek each, for
/// `--as-of-seconds`, as Tessera's `multi_as_of` figure.
fn as_of_throughput(db: &DB, args: &EngineArgs, r: &Report) -> Result<f64, BoxError> {
    let versions = cf(db, VERSIONS)?;
    let mut rng = StdRng::seed_from_u64(args.seed + 2);
    let base = now_us() - dataset::SPAN_US;
    let ids: Vec<u64> = (0..4096).map(|_| rng.gen_range(0..r.users)).collect();
    let deadline = Instant::now() + Duration::from_secs(args.as_of_seconds);
    let started = Instant::now();
    let (mut lookups, mut found) = (0u64, 0u64);
    while Instant::now() < deadline {
        let mut it = db.raw_iterator_cf(versions);
        for _ in 0..51 {
            let id = ids[rng.gen_range(0..ids.len())];
            let target = version_key(USERS, id, base + rng.gen_range(0..dataset::SPAN_US));
            it.seek(target);
            found += u64::from(it.key().is_some_and(|k| k[..9] == target[..9]));
        }
        it.status()?;
        lookups += 51;
    }
    if found == 0 {
        return Err("RocksDB as-of reads found no rows".into());
    }
    Ok(lookups as f64 / started.elapsed().as_secs_f64())
}

fn sst_bytes(dir: &Path) -> Result<u64, BoxError> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.path().extension().is_some_and(|x| x == "sst") {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}
