//! `tessera-bench engine`: the storage engine's figures on the news-feed
//! dataset, in process (no network).
//!
//! Steps: load every version through the write path (`interval`
//! durability, one writer, flushes and compactions included) → compact
//! everything into SSTs → warm slates (`multi_latest` of 1 user + 50 Zipf
//! articles) → `multi_as_of` throughput → reopen after a clean close → reopen
//! after a crash (writes that flushed past the index checkpoint, then the
//! engine dropped without closing, as a kill leaves it) → cold slates with
//! the page cache dropped, per I/O backend.

use crate::dataset::{self, ARTICLES, USERS};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_storage::fs::{OsFs, ReadBackend};
use tessera_storage::{AsOfQuery, Durability, Engine, Options, TableKey, WriteBatch};

pub(crate) type BoxError = Box<dyn std::error::Error>;

/// Most warm-up slates.
pub(crate) const MAX_WARMUP_SLATES: u64 = 2_000_000;

/// Arguments of `tessera-bench engine`.
#[derive(clap::Args)]
pub struct EngineArgs {
    /// Users in the dataset; articles are a tenth of it.
    #[arg(long, default_value_t = 2_000_000)]
    entities: u64,
    /// Data directory (default: a fresh directory under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Warm slates to time (after a warm-up of a fifth as many).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) slates: u64,
    /// Cold slates to time per I/O backend.
    #[arg(long, default_value_t = 2_000)]
    cold_slates: u64,
    /// Seconds of `multi_as_of` lookups to time.
    #[arg(long, default_value_t = 5)]
    pub(crate) as_of_seconds: u64,
    /// Zipf exponent of slate key popularity.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) zipf: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Dataset seed.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Reuse the dataset already in `--dir` (loaded by an earlier run):
    /// skip the load and compaction, and report only the read figures.
    #[arg(long, requires = "dir")]
    skip_load: bool,
    /// zstd level of SST blocks (default: the engine's default).
    #[arg(long, allow_hyphen_values = true)]
    zstd_level: Option<i32>,
    /// Block cache size in MiB (default: the engine's default).
    #[arg(long)]
    cache_mib: Option<usize>,
    /// Read backend for the load and the warm figures.
    #[arg(long, value_enum, default_value_t = Backend::IoUring)]
    backend: Backend,
    /// Also load the same dataset into a peer engine and time the same
    /// reads on it, with the same block cache size, block size, bloom bits
    /// and zstd level (in a fresh directory beside `--dir`, removed after).
    #[arg(long, value_enum)]
    peer: Option<Peer>,
}

/// The engine's read backends.
#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Backend {
    Pread,
    Mmap,
    IoUring,
}

impl From<Backend> for ReadBackend {
    fn from(b: Backend) -> ReadBackend {
        match b {
            Backend::Pread => ReadBackend::Pread,
            Backend::Mmap => ReadBackend::Mmap,
            Backend::IoUring => ReadBackend::IoUring,
        }
    }
}

/// The figures, with the keys the engine issue asks for.
#[derive(Serialize, Default)]
pub(crate) struct Report {
    backend: &'static str,
    pub(crate) users: u64,
    pub(crate) articles: u64,
    versions: u64,
    #[serde(flatten)]
    slate: SlateLatency,
    as_of_lookups_per_s: f64,
    ingest_rows_per_s: f64,
    ingest_write_amplification: f64,
    compact_s: f64,
    reopen_clean_s: f64,
    reopen_crash_s: f64,
    index_bytes_per_entity: f64,
    disk_bytes_per_version: f64,
    raw_bytes_per_version: f64,
    cold_slate_pread_p50_us: f64,
    cold_slate_pread_p99_us: f64,
    cold_slate_io_uring_p50_us: f64,
    cold_slate_io_uring_p99_us: f64,
    io_uring_available: bool,
    block_cache_hit_rate: f64,
    slow_path_reads: u64,
    /// The same load and reads on the in-process peer, when one ran.
    #[cfg(feature = "rocksdb")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<crate::rocksdb_peer::PeerReport>,
}

/// The latency of the timed warm slates, µs.
#[derive(Serialize, Default)]
pub(crate) struct SlateLatency {
    slate_p50_us: f64,
    slate_p99_us: f64,
    slate_p999_us: f64,
    slate_max_us: f64,
}

/// Times `n` Zipf slates of `gen`, each read by `read` (which returns the
/// rows found); their latency, or an error if none found a row.
pub(crate) fn time_slates(
    gen: &mut SlateGen,
    r: &Report,
    n: u64,
    mut read: impl FnMut(&[[u8; 8]]) -> Result<usize, BoxError>,
) -> Result<SlateLatency, BoxError> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut keys = Vec::with_capacity(51);
    let mut found = 0;
    for _ in 0..n {
        gen.zipf(r, &mut keys);
        let t = Instant::now();
        found += read(&keys)?;
        hist.record((t.elapsed().as_nanos() as u64).max(1))?;
    }
    if found == 0 {
        return Err("slates found no rows".into());
    }
    Ok(SlateLatency {
        slate_p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
        slate_p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
        slate_p999_us: hist.value_at_quantile(0.999) as f64 / 1e3,
        slate_max_us: hist.max() as f64 / 1e3,
    })
}

/// In-process engines `--peer` can run beside Tessera.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Peer {
    /// RocksDB through the `rocksdb` crate (`--features rocksdb`).
    Rocksdb,
}

pub(crate) fn options(args: &EngineArgs, backend: ReadBackend) -> Options {
    let defaults = Options::default();
    Options {
        durability: Durability::Interval(Duration::from_millis(5)),
        fs: Arc::new(OsFs::new(backend)),
        block_cache_bytes: args
            .cache_mib
            .map_or(defaults.block_cache_bytes, |m| m << 20),
        zstd_level: args.zstd_level.unwrap_or(defaults.zstd_level),
        ..defaults
    }
}

/// Runs the engine benchmark.
pub fn run(args: &EngineArgs) -> Result<(), BoxError> {
    let tmp;
    let dir: PathBuf = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("tessera-bench-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut r = Report {
        users: args.entities,
        articles: (args.entities / 10).max(1),
        ..Report::default()
    };
    if args.peer.is_some() && !cfg!(feature = "rocksdb") {
        return Err(
            "this tessera-bench was built without RocksDB: build it with \
                    `cargo build --release -p tessera-bench --features rocksdb` \
                    (needs libclang-dev; about 10 minutes on two cores)"
                .into(),
        );
    }
    let engine = Engine::open(&dir, options(args, args.backend.into()))?;
    r.backend = engine.io_backend();
    if !args.skip_load {
        eprintln!(
            "loading {} users + {} articles into {}",
            r.users,
            r.articles,
            dir.display()
        );
        load(&engine, args, &mut r)?;
        let started = Instant::now();
        engine.compact()?;
        r.compact_s = started.elapsed().as_secs_f64();
        r.disk_bytes_per_version = dir_bytes(&dir.join("sst"))? as f64 / r.versions as f64;
        r.raw_bytes_per_version = (8 + dataset::ROW_BYTES) as f64;
    }
    if args.skip_load {
        // An earlier run's cold phase dropped the files from the page cache.
        read_all_files(&dir.join("sst"))?;
    }
    let stats = engine.stats();
    r.index_bytes_per_entity = stats.index_bytes as f64 / stats.index_entities.max(1) as f64;

    warm_slates(&engine, args, &mut r)?;
    if args.skip_load {
        engine.close()?;
    } else {
        as_of_throughput(&engine, args, &mut r)?;
        reopen(engine, &dir, args, &mut r)?;
        cold_slates(&dir, args, &mut r)?;
    }
    #[cfg(feature = "rocksdb")]
    if let Some(Peer::Rocksdb) = args.peer {
        r.peer = Some(crate::rocksdb_peer::run(&dir, args, &r)?);
    }
    print(&r, args.json)
}

fn load(engine: &Engine, args: &EngineArgs, r: &mut Report) -> Result<(), BoxError> {
    const BATCH_ROWS: usize = 256;
    let mut row = Vec::with_capacity(dataset::ROW_BYTES);
    let mut batch = WriteBatch::with_capacity(BATCH_ROWS * (dataset::ROW_BYTES + 64));
    let started = Instant::now();
    let rows = for_each_version(r, args.seed, engine.now(), |table, id, versions| {
        for (v, &ts) in versions.iter().enumerate() {
            dataset::encode_row(table, id, v as u32, &mut row);
            batch.put(table, &dataset::entity_key(id), ts, &row)?;
            if batch.len() >= BATCH_ROWS {
                engine.write(std::mem::take(&mut batch))?;
            }
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        engine.write(batch)?;
    }
    let secs = started.elapsed().as_secs_f64();
    r.versions = rows;
    r.ingest_rows_per_s = rows as f64 / secs;
    r.ingest_write_amplification = engine.stats().write_amplification;
    eprintln!("ingested {rows} rows in {secs:.1} s");
    Ok(())
}

/// Walks the dataset in load order (an article after every ten users),
/// calling `visit(table, id, event times of its versions)` per entity, and
/// returns the number of versions. Event times end at `now`.
pub(crate) fn for_each_version(
    r: &Report,
    seed: u64,
    now: i64,
    mut visit: impl FnMut(u32, u64, &[i64]) -> Result<(), BoxError>,
) -> Result<u64, BoxError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = now - dataset::SPAN_US;
    let mut rows = 0u64;
    for n in 0..r.users + r.articles {
        let (table, id) = if n % 11 == 10 && n / 11 < r.articles {
            (ARTICLES, n / 11)
        } else {
            (USERS, n - (n / 11).min(r.articles))
        };
        let versions = dataset::version_times(&mut rng, base);
        visit(table, id, &versions)?;
        rows += versions.len() as u64;
    }
    Ok(rows)
}

pub(crate) struct SlateGen {
    rng: StdRng,
    users: Zipf<f64>,
    articles: Zipf<f64>,
}

impl SlateGen {
    pub(crate) fn new(r: &Report, zipf: f64, seed: u64) -> Result<SlateGen, BoxError> {
        Ok(SlateGen {
            rng: StdRng::seed_from_u64(seed),
            users: Zipf::new(r.users, zipf)?,
            articles: Zipf::new(r.articles, zipf)?,
        })
    }

    /// A Zipf slate: ranks map to ids through a fixed permutation so hot
    /// keys are spread over the key space.
    pub(crate) fn zipf(&mut self, r: &Report, out: &mut Vec<[u8; 8]>) {
        out.clear();
        let u = self.users.sample(&mut self.rng) as u64 - 1;
        out.push(dataset::entity_key(scatter(u, r.users)));
        for _ in 0..50 {
            let a = self.articles.sample(&mut self.rng) as u64 - 1;
            out.push(dataset::entity_key(scatter(a, r.articles)));
        }
    }

    fn uniform(&mut self, r: &Report, out: &mut Vec<[u8; 8]>) {
        out.clear();
        out.push(dataset::entity_key(self.rng.gen_range(0..r.users)));
        for _ in 0..50 {
            out.push(dataset::entity_key(self.rng.gen_range(0..r.articles)));
        }
    }
}

fn scatter(rank: u64, n: u64) -> u64 {
    rank.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n
}

/// One slate: the user's row and the 50 articles' rows in one batched read.
fn slate(engine: &Engine, keys: &[[u8; 8]]) -> Result<usize, BoxError> {
    let lookups: Vec<TableKey<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (if i == 0 { USERS } else { ARTICLES }, &k[..]))
        .collect();
    let rows = engine.multi_latest_across(&lookups)?;
    Ok(rows.iter().filter(|r| r.is_some()).count())
}

fn warm_slates(engine: &Engine, args: &EngineArgs, r: &mut Report) -> Result<(), BoxError> {
    let mut gen = SlateGen::new(r, args.zipf, args.seed + 1)?;
    let mut keys = Vec::with_capacity(51);
    // Warm up until the block cache stops growing (every miss then
    // replaces a block instead of claiming fresh memory), and for at least
    // a fifth of the timed slates.
    let capacity = args
        .cache_mib
        .map_or(Options::default().block_cache_bytes, |m| m << 20) as u64;
    let mut warm = 0u64;
    while warm < args.slates / 5
        || (warm < MAX_WARMUP_SLATES && engine.stats().block_cache_bytes < capacity * 95 / 100)
    {
        for _ in 0..1000 {
            gen.zipf(r, &mut keys);
            slate(engine, &keys)?;
        }
        warm += 1000;
    }
    eprintln!("warmed up with {warm} slates");
    let before = engine.stats();
    r.slate = time_slates(&mut gen, r, args.slates, |keys| slate(engine, keys))?;
    let stats = engine.stats();
    let hits = stats.block_cache_hits - before.block_cache_hits;
    let misses = stats.block_cache_misses - before.block_cache_misses;
    r.block_cache_hit_rate = hits as f64 / (hits + misses).max(1) as f64;
    r.slow_path_reads = stats.slow_path_reads;
    Ok(())
}

fn as_of_throughput(engine: &Engine, args: &EngineArgs, r: &mut Report) -> Result<(), BoxError> {
    let mut rng = StdRng::seed_from_u64(args.seed + 2);
    let base = engine.now() - dataset::SPAN_US;
    let keys: Vec<[u8; 8]> = (0..4096)
        .map(|_| dataset::entity_key(rng.gen_range(0..r.users)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(args.as_of_seconds);
    let started = Instant::now();
    let mut lookups = 0u64;
    while Instant::now() < deadline {
        let queries: Vec<AsOfQuery<'_>> = (0..51)
            .map(|_| AsOfQuery {
                key: &keys[rng.gen_range(0..keys.len())],
                as_of: base + rng.gen_range(0..dataset::SPAN_US),
                known_at: None,
            })
            .collect();
        engine.multi_as_of(USERS, &queries)?;
        lookups += queries.len() as u64;
    }
    r.as_of_lookups_per_s = lookups as f64 / started.elapsed().as_secs_f64();
    Ok(())
}

fn reopen(engine: Engine, dir: &Path, args: &EngineArgs, r: &mut Report) -> Result<(), BoxError> {
    engine.close()?;
    let started = Instant::now();
    let engine = Engine::open(dir, options(args, args.backend.into()))?;
    r.reopen_clean_s = started.elapsed().as_secs_f64();
    // Overwrite enough rows to flush past the checkpoint, then drop the
    // engine without closing: the on-disk state a SIGKILL leaves.
    let mut row = Vec::new();
    let mut rng = StdRng::seed_from_u64(args.seed + 3);
    let now = engine.now();
    let mut batch = WriteBatch::new();
    for i in 0..(r.users / 4).max(1000) {
        let id = rng.gen_range(0..r.users);
        dataset::encode_row(USERS, id, 9, &mut row);
        batch.put(USERS, &dataset::entity_key(id), now + i as i64, &row)?;
        if batch.len() >= 256 {
            engine.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        engine.write(batch)?;
    }
    drop(engine);
    let started = Instant::now();
    let engine = Engine::open(dir, options(args, args.backend.into()))?;
    r.reopen_crash_s = started.elapsed().as_secs_f64();
    engine.close()?;
    Ok(())
}

fn cold_slates(dir: &Path, args: &EngineArgs, r: &mut Report) -> Result<(), BoxError> {
    for backend in [ReadBackend::Pread, ReadBackend::IoUring] {
        let engine = Engine::open(dir, options(args, backend))?;
        let effective = engine.io_backend();
        if backend == ReadBackend::IoUring {
            r.io_uring_available = effective == "io_uring";
        }
        let mut gen = SlateGen::new(r, args.zipf, args.seed + 4)?;
        let mut keys = Vec::with_capacity(51);
        let mut hist = Histogram::<u64>::new(3)?;
        for _ in 0..args.cold_slates {
            engine.drop_caches()?;
            gen.uniform(r, &mut keys);
            let t = Instant::now();
            slate(&engine, &keys)?;
            hist.record((t.elapsed().as_nanos() as u64).max(1))?;
        }
        let (p50, p99) = (
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
        );
        match backend {
            ReadBackend::IoUring => {
                r.cold_slate_io_uring_p50_us = p50;
                r.cold_slate_io_uring_p99_us = p99;
            }
            _ => {
                r.cold_slate_pread_p50_us = p50;
                r.cold_slate_pread_p99_us = p99;
            }
        }
        engine.close()?;
    }
    Ok(())
}

/// Reads every file of `dir`, bringing it into the page cache.
fn read_all_files(dir: &Path) -> Result<(), BoxError> {
    for entry in std::fs::read_dir(dir)? {
        std::io::copy(
            &mut std::fs::File::open(entry?.path())?,
            &mut std::io::sink(),
        )?;
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> Result<u64, BoxError> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

fn print(r: &Report, json: bool) -> Result<(), BoxError> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("| figure | value |\n|---|---|");
    print_rows("", &serde_json::to_value(r)?);
    Ok(())
}

/// A table row per figure; a nested report's figures (the peer's) are
/// named `peer.figure`.
fn print_rows(prefix: &str, v: &serde_json::Value) {
    let Some(map) = v.as_object() else { return };
    for (k, v) in map {
        if v.is_object() {
            print_rows(&format!("{prefix}{k}."), v);
        } else {
            println!("| {prefix}{k} | {v} |");
        }
    }
}
