//! `tessera-bench soak`: a long mixed load against a running `tessera
//! serve`, sampled every `--interval-s` seconds, with a pass/fail verdict.
//!
//! The server must have the news-feed registry applied and the dataset
//! loaded (`tessera-bench load` with the same `--users` / `--articles`).
//! For the whole run, at once:
//! - `--connections` slate readers send the standard slate (the `slate`
//!   subcommand's client), paced to `--slate-rate` slates/s in total;
//!   latency counts from each slate's actual send, so a stall of this
//!   shared machine shows as one slow slate, not as a queue;
//! - a writer writes new versions of Zipf-chosen articles at
//!   `--write-rate` rows/s (`mixed`'s writer), enough for memtables to
//!   flush and compactions to run;
//! - every `--import-every-s` seconds (the first after a third of the run
//!   at most, so even a one-minute run has one), `--import-rows` rows of
//!   `user_features` are generated as Parquet (`gen`'s rows, a new seed
//!   each time) and imported through the real `tessera import` CLI.
//!
//! The server's `/metrics` is scraped every second: flushes are counted
//! when the memtables' bytes drop (a flushed memtable freed), compactions
//! when a level below 0 changes or level 0 loses files (both lower bounds:
//! two events between scrapes count once). Each sample records the
//! server's RSS (`VmRSS`, and its anonymous part), memtable and
//! block-cache bytes, block-cache misses/s, slate p50/p99/max over the
//! interval, slates/s, writes/s, errors, SSTs (count and bytes) and the
//! heap they keep loaded, the hash index's bytes, flushes, compactions and
//! imports, as a CSV line (`--out`); the summary goes to stdout and as JSON
//! next to it.
//!
//! Verdict: **fail** on any error (a failed slate, write or import, an
//! error counted in the server's `errors_total`, the engine turning
//! read-only, an interval without a slate, the server gone or its metrics
//! unreachable) or on an upward trend, judged over the second half of the
//! run (the first half is warm-up: caches and memtables fill):
//! - RSS: the least-squares slope of RSS, extrapolated over the whole run,
//!   must not exceed [`RSS_TREND_LIMIT`] of the median RSS;
//! - p99: the same for the interval p99s, each first clamped to
//!   [`P99_CLAMP`] × their median so one stall of the shared machine cannot
//!   make a trend, against the tolerant [`P99_TREND_LIMIT`].
//!
//! Either needs [`MIN_TREND_SAMPLES`] samples in the second half; a shorter
//! run fails as inconclusive. The exit code is nonzero on fail.

use crate::gen_bench::write_group_file;
use crate::net_bench::{
    connect, slate_features, write_articles, BoxError, Pacer, SlateLoop, TargetArgs, USER_GROUP,
    USER_KEY,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Largest rise of RSS over the run the trend may predict, as a fraction of
/// the median RSS of the second half.
pub const RSS_TREND_LIMIT: f64 = 0.10;
/// Largest rise of the interval p99 over the run the trend may predict, as
/// a fraction of the median p99 of the second half. Tolerant: the machine
/// is shared, and its noise is larger than a slow leak's effect on latency.
pub const P99_TREND_LIMIT: f64 = 1.0;
/// Interval p99s are clamped to this multiple of their median before the
/// fit.
pub const P99_CLAMP: f64 = 3.0;
/// Fewest samples in the second half for a trend verdict.
pub const MIN_TREND_SAMPLES: usize = 3;
/// How often `/metrics` and the server's RSS are read.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// Longest a `/metrics` request may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a reader or the writer reconnects after a failure.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// A memtable drop this large, relative to the bytes before it, counts as
/// a flush ...
const FLUSH_DROP_FRACTION: f64 = 0.25;
/// ... when at least this many bytes were held.
const FLUSH_MIN_BYTES: u64 = 1 << 20;
/// Error messages kept for the summary (all are counted).
const KEPT_ERRORS: usize = 20;
/// Default run length, minutes.
const DEFAULT_MINUTES: f64 = 30.0;
/// The first import starts after at most this fraction of the run.
const FIRST_IMPORT_FRACTION: f64 = 1.0 / 3.0;
/// No import starts when less than this is left of the run (it would run
/// past the last sample).
const IMPORT_END_MARGIN: Duration = Duration::from_secs(10);

/// Arguments of `tessera-bench soak`.
#[derive(Clone, Debug, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Minutes to run (default 30).
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<f64>,
    /// Seconds to run, for short runs.
    #[arg(long)]
    seconds: Option<u64>,
    /// The server's pid: its RSS, and whether it is still alive.
    #[arg(long)]
    server_pid: u32,
    /// Address of the server's `/metrics`.
    #[arg(long, default_value = "127.0.0.1:7412")]
    metrics_addr: String,
    /// Slate connections (one thread each).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Slates per second over all connections (0: closed loop).
    #[arg(long, default_value_t = 1000.0)]
    slate_rate: f64,
    /// Zipf exponent of user and article popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Article rows written per second (at 2,000 a 64 MiB memtable flushes
    /// about every minute).
    #[arg(long, default_value_t = 2_000)]
    write_rate: u64,
    /// Seconds between imports.
    #[arg(long, default_value_t = 300)]
    import_every_s: u64,
    /// Rows of each import.
    #[arg(long, default_value_t = 100_000)]
    import_rows: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    interval_s: u64,
    /// The time series (CSV); the summary is written next to it as JSON.
    #[arg(long, default_value = "soak-series.csv")]
    out: PathBuf,
    /// The `tessera` binary for imports (default: next to this one).
    #[arg(long)]
    tessera_bin: Option<PathBuf>,
}

/// One sample of the series.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// The server's resident set, KiB.
    pub rss_kib: u64,
    /// Bytes in the server's memtables.
    pub memtable_bytes: u64,
    /// Bytes in the server's block cache.
    pub block_cache_bytes: u64,
    /// Block-cache misses per second over the interval (each evicts
    /// blocks once the cache is full).
    pub cache_misses_per_s: f64,
    /// Slates completed in the interval.
    pub slates: u64,
    /// Slates per second over the interval.
    pub slates_per_s: f64,
    /// Slate latency percentiles over the interval, µs.
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Article rows written per second over the interval.
    pub writes_per_s: f64,
    /// Errors so far (this client's and the server's).
    pub errors: u64,
    /// SSTs, and SSTs in level 0.
    pub ssts: u64,
    pub ssts_l0: u64,
    /// Bytes compaction has yet to rewrite.
    pub compaction_backlog_bytes: u64,
    /// Flushes and compactions observed so far.
    pub flushes: u64,
    pub compactions: u64,
    /// Imports completed so far.
    pub imports: u64,
    /// The anonymous part of `rss_kib` (the heap, not mapped files), KiB.
    pub rss_anon_kib: u64,
    /// Bytes of SST files.
    pub sst_bytes: u64,
    /// Heap bytes the live SSTs keep loaded (indexes, bloom filters).
    pub table_memory_bytes: u64,
    /// Heap bytes of the hash index.
    pub index_bytes: u64,
}

const CSV_HEADER: &str = "elapsed_s,rss_kib,memtable_bytes,block_cache_bytes,cache_misses_per_s,slates,slates_per_s,p50_us,p99_us,max_us,writes_per_s,errors,ssts,ssts_l0,compaction_backlog_bytes,flushes,compactions,imports,rss_anon_kib,sst_bytes,table_memory_bytes,index_bytes";

impl Sample {
    fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{:.1},{},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{},{},{},{},{},{},{}",
            self.elapsed_s,
            self.rss_kib,
            self.memtable_bytes,
            self.block_cache_bytes,
            self.cache_misses_per_s,
            self.slates,
            self.slates_per_s,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.writes_per_s,
            self.errors,
            self.ssts,
            self.ssts_l0,
            self.compaction_backlog_bytes,
            self.flushes,
            self.compactions,
            self.imports,
            self.rss_anon_kib,
            self.sst_bytes,
            self.table_memory_bytes,
            self.index_bytes
        )
    }
}

/// A least-squares trend over the second half of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    /// Samples fitted.
    pub samples: usize,
    /// Median of the fitted values.
    pub median: f64,
    /// Slope of the fitted line, units per second.
    pub slope_per_s: f64,
    /// The slope times the run's length.
    pub rise_over_run: f64,
    /// `rise_over_run / median`.
    pub rise_fraction: f64,
    /// The largest `rise_fraction` that passes.
    pub limit_fraction: f64,
    /// Whether the trend is within its limit.
    pub pass: bool,
}

/// Fits `(seconds, value)` points and judges the rise over `run_secs`
/// against `limit` × their median; values above `clamp` × the median are
/// clamped first. `None` with fewer than [`MIN_TREND_SAMPLES`] points.
pub fn trend(
    points: &[(f64, f64)],
    run_secs: f64,
    limit: f64,
    clamp: Option<f64>,
) -> Option<Trend> {
    if points.len() < MIN_TREND_SAMPLES {
        return None;
    }
    let median = median(points.iter().map(|p| p.1).collect());
    let cap = clamp.map_or(f64::INFINITY, |c| c * median);
    let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, y.min(cap))).collect();
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let rise = slope * run_secs;
    let fraction = if median > 0.0 { rise / median } else { 0.0 };
    Some(Trend {
        samples: points.len(),
        median,
        slope_per_s: slope,
        rise_over_run: rise,
        rise_fraction: fraction,
        limit_fraction: limit,
        pass: fraction <= limit,
    })
}

/// The median of `v`; 0 when empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// One import's figures.
#[derive(Clone, Debug, Serialize)]
struct ImportRun {
    started_s: f64,
    rows: u64,
    secs: f64,
}

/// The run's outcome, written as JSON.
#[derive(Debug, Serialize)]
struct Summary {
    pass: bool,
    reasons: Vec<String>,
    run_secs: f64,
    samples: usize,
    rss_kib_first: u64,
    rss_kib_last: u64,
    rss_kib_max: u64,
    rss_trend: Option<Trend>,
    p99_us_median: f64,
    p99_us_min: f64,
    p99_us_max: f64,
    p99_trend: Option<Trend>,
    p50_us_median: f64,
    slates_per_s_mean: f64,
    writes_per_s_mean: f64,
    cache_misses_per_s_mean: f64,
    slates: u64,
    rows_written: u64,
    flushes: u64,
    compactions: u64,
    ssts_first: u64,
    ssts_last: u64,
    imports: Vec<ImportRun>,
    errors: u64,
    error_messages: Vec<String>,
    series: String,
    thresholds: Thresholds,
}

#[derive(Debug, Serialize)]
struct Thresholds {
    rss_trend_limit: f64,
    p99_trend_limit: f64,
    p99_clamp: f64,
    min_trend_samples: usize,
}

/// State the load threads share with the sampler.
struct Shared {
    started: Instant,
    stop: AtomicBool,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
    written: AtomicU64,
    importing: AtomicBool,
    imports: Mutex<Vec<ImportRun>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kept = locked(&self.messages);
        if kept.len() < KEPT_ERRORS {
            let at = self.started.elapsed().as_secs_f64();
            kept.push(format!("{at:.1} s: {what}: {e}"));
        }
        eprintln!("soak: {what}: {e}");
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early when the run stops.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }
}

/// Runs the soak; `Err` when it fails (after printing its summary).
pub fn soak(args: &SoakArgs) -> Result<(), BoxError> {
    let run = match (args.seconds, args.minutes) {
        (Some(s), _) => Duration::from_secs(s),
        (None, m) => Duration::from_secs_f64(m.unwrap_or(DEFAULT_MINUTES).max(0.0) * 60.0),
    };
    let tessera = match &args.tessera_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("tessera"),
    };
    if !tessera.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p tessera-server`, or pass --tessera-bin",
            tessera.display()
        )
        .into());
    }
    // Checks before the clock starts: a Tessera server with the registry,
    // its metrics, its pid.
    drop(connect(&args.target)?);
    let (uf, af) = slate_features(&args.target)?;
    let user_features = args.target.features(USER_GROUP)?;
    let baseline = scrape(&args.metrics_addr)?;
    server_memory(args.server_pid).ok_or("the server's pid has no VmRSS: is it running?")?;
    let work = tempfile::Builder::new().prefix("tessera-soak").tempdir()?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut csv = std::fs::File::create(&args.out)?;
    writeln!(csv, "{CSV_HEADER}")?;

    let shared = Arc::new(Shared {
        started: Instant::now(),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        messages: Mutex::new(Vec::new()),
        written: AtomicU64::new(0),
        importing: AtomicBool::new(false),
        imports: Mutex::new(Vec::new()),
    });
    let connections = args.connections.max(1);
    let hists: Vec<Arc<Mutex<Histogram<u64>>>> = (0..connections)
        .map(|_| Histogram::new(3).map(|h| Arc::new(Mutex::new(h))))
        .collect::<Result<_, _>>()?;
    let mut threads = Vec::new();
    for (w, hist) in hists.iter().enumerate() {
        let (t, shared, hist) = (args.target.clone(), shared.clone(), hist.clone());
        let (uf, af, zipf) = (uf.clone(), af.clone(), args.zipf);
        let rate = (args.slate_rate > 0.0).then(|| args.slate_rate / connections as f64);
        threads.push(std::thread::spawn(move || {
            read_slates(&t, &uf, &af, zipf, 42 + w as u64, rate, &hist, &shared)
        }));
    }
    if args.write_rate > 0 {
        let (t, shared, rate, zipf) = (
            args.target.clone(),
            shared.clone(),
            args.write_rate,
            args.zipf,
        );
        threads.push(std::thread::spawn(move || {
            let measuring = AtomicBool::new(true);
            while !shared.stopped() {
                if let Err(e) =
                    write_articles(&t, rate, zipf, &measuring, &shared.stop, &shared.written)
                {
                    shared.error("write", &e);
                    shared.sleep(RETRY_PAUSE);
                }
            }
        }));
    }
    if args.import_rows > 0 {
        let importer = Importer {
            tessera,
            addr: args.target.addr(),
            token: args.target.token.clone(),
            entities: args.target.users.min(args.import_rows).max(1),
            rows: args.import_rows,
            dir: work.path().to_path_buf(),
        };
        let first =
            Duration::from_secs(args.import_every_s).min(run.mul_f64(FIRST_IMPORT_FRACTION));
        let every = Duration::from_secs(args.import_every_s.max(1));
        let shared = shared.clone();
        threads.push(std::thread::spawn(move || {
            importer.run(&user_features, first, every, run, &shared)
        }));
    }

    let samples = sample(args, run, &baseline, &hists, &shared, &mut csv)?;
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        if t.join().is_err() {
            shared.error("load thread", &"panicked");
        }
    }
    let summary = summarize(args, run, &samples, &shared);
    let json_path = args.out.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&summary)?)?;
    print_summary(&summary, &json_path);
    if summary.pass {
        Ok(())
    } else {
        Err(format!("soak failed: {}", summary.reasons.join("; ")).into())
    }
}

/// Slates on one connection until the run stops, paced to `rate` slates/s
/// if given; reconnects after a failure.
#[allow(clippy::too_many_arguments)]
fn read_slates(
    t: &TargetArgs,
    uf: &[String],
    af: &[String],
    zipf: f64,
    seed: u64,
    rate: Option<f64>,
    hist: &Mutex<Histogram<u64>>,
    shared: &Shared,
) {
    let step = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    while !shared.stopped() {
        let mut slates = match SlateLoop::new(t, uf, af, zipf, seed) {
            Ok(s) => s,
            Err(e) => {
                shared.error("slate connection", &e);
                shared.sleep(RETRY_PAUSE);
                continue;
            }
        };
        let mut pacer = step.map(Pacer::new);
        while !shared.stopped() {
            if let Some(p) = pacer.as_mut() {
                p.wait_without_burst(Duration::from_secs(1));
            }
            let sent = Instant::now();
            match slates.next_slate() {
                Ok(_) => {
                    let ns = (sent.elapsed().as_nanos() as u64).max(1);
                    // Values beyond the histogram's range are saturated.
                    let _ = locked(hist).record(ns);
                }
                Err(e) => {
                    shared.error("slate", &e);
                    shared.sleep(RETRY_PAUSE);
                    break;
                }
            }
        }
    }
}

/// Generates and imports Parquet files of `user_features` on a schedule.
struct Importer {
    tessera: PathBuf,
    addr: String,
    token: String,
    entities: u64,
    rows: u64,
    dir: PathBuf,
}

impl Importer {
    fn run(
        &self,
        features: &crate::net_bench::GroupFeatures,
        first: Duration,
        every: Duration,
        run: Duration,
        shared: &Shared,
    ) {
        let mut due = first;
        let mut n = 0u64;
        loop {
            if due + IMPORT_END_MARGIN > run {
                return;
            }
            shared.sleep(due.saturating_sub(shared.started.elapsed()));
            if shared.stopped() {
                return;
            }
            n += 1;
            let started_s = shared.started.elapsed().as_secs_f64();
            shared.importing.store(true, Ordering::Relaxed);
            let result = self.import_once(features, n);
            shared.importing.store(false, Ordering::Relaxed);
            match result {
                Ok((rows, secs)) => {
                    eprintln!("soak: import {n}: {rows} rows in {secs:.1} s");
                    locked(&shared.imports).push(ImportRun {
                        started_s,
                        rows,
                        secs,
                    });
                }
                Err(e) => shared.error(&format!("import {n}"), &e),
            }
            due += every;
        }
    }

    /// Writes file `n` (seed `n`) and imports it; rows and seconds.
    fn import_once(
        &self,
        features: &crate::net_bench::GroupFeatures,
        n: u64,
    ) -> Result<(u64, f64), BoxError> {
        let path = self.dir.join(format!("users-{n}.parquet"));
        let versions = u32::try_from(self.rows.div_ceil(self.entities)).unwrap_or(u32::MAX);
        let rows = write_group_file(&path, USER_KEY, features, self.entities, versions, n)?;
        let started = Instant::now();
        let out = std::process::Command::new(&self.tessera)
            .args(["import", "--group", USER_GROUP, "--addr", &self.addr])
            .arg(&path)
            .env("TESSERA_TOKEN", &self.token)
            .stdin(std::process::Stdio::null())
            .output()?;
        let secs = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&path);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("tessera import: {}: {}", out.status, stderr.trim()).into());
        }
        Ok((rows, secs))
    }
}

/// Scrapes and samples until the run ends or the server is gone.
fn sample(
    args: &SoakArgs,
    run: Duration,
    baseline: &Scrape,
    hists: &[Arc<Mutex<Histogram<u64>>>],
    shared: &Shared,
    csv: &mut std::fs::File,
) -> Result<Vec<Sample>, BoxError> {
    let interval = Duration::from_secs(args.interval_s);
    let mut samples = Vec::new();
    let mut prev = baseline.clone();
    let (mut flushes, mut compactions) = (0u64, 0u64);
    let mut server_errors_seen = 0u64;
    let mut read_only_reported = false;
    let mut next_sample = interval;
    let mut last_sample_at = Duration::ZERO;
    let mut written_before = 0u64;
    let mut misses_before = baseline.cache_misses;
    loop {
        let elapsed = shared.started.elapsed();
        let end = elapsed >= run;
        if !end {
            let next_scrape = SCRAPE_EVERY.min(next_sample.saturating_sub(elapsed));
            std::thread::sleep(next_scrape.max(Duration::from_millis(10)));
        }
        let elapsed = shared.started.elapsed();
        match scrape(&args.metrics_addr) {
            Ok(now) => {
                if flushed(&prev, &now) {
                    flushes += 1;
                }
                if compacted(&prev, &now) {
                    compactions += 1;
                }
                let server_errors = now.errors.saturating_sub(baseline.errors);
                if server_errors > server_errors_seen {
                    let new = server_errors - server_errors_seen;
                    server_errors_seen = server_errors;
                    shared.error(
                        "server",
                        &format!("{new} more error replies in errors_total"),
                    );
                }
                if now.read_only && !read_only_reported {
                    read_only_reported = true;
                    shared.error("server", &"the engine is read-only");
                }
                prev = now;
            }
            Err(e) => shared.error("metrics", &e),
        }
        let memory = server_memory(args.server_pid);
        if memory.is_none() {
            shared.error("server", &format!("pid {} is gone", args.server_pid));
        }
        // The last sample ends the run unless one was just taken.
        let last = end && elapsed - last_sample_at >= interval / 2;
        if elapsed >= next_sample || last || memory.is_none() {
            let secs = (elapsed - last_sample_at).as_secs_f64().max(1e-3);
            last_sample_at = elapsed;
            next_sample = elapsed + interval;
            let mut hist = Histogram::<u64>::new(3)?;
            for h in hists {
                let mut h = locked(h);
                hist.add(&*h)?;
                h.reset();
            }
            let written = shared.written.load(Ordering::Relaxed);
            let s = Sample {
                elapsed_s: elapsed.as_secs_f64(),
                rss_kib: memory.map_or(0, |m| m.rss_kib),
                memtable_bytes: prev.memtable_bytes,
                block_cache_bytes: prev.block_cache_bytes,
                cache_misses_per_s: prev.cache_misses.saturating_sub(misses_before) as f64 / secs,
                slates: hist.len(),
                slates_per_s: hist.len() as f64 / secs,
                p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
                p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
                max_us: hist.max() as f64 / 1e3,
                writes_per_s: (written - written_before) as f64 / secs,
                errors: shared.errors.load(Ordering::Relaxed),
                ssts: prev.ssts.iter().sum(),
                ssts_l0: prev.ssts.first().copied().unwrap_or(0),
                compaction_backlog_bytes: prev.compaction_backlog_bytes,
                flushes,
                compactions,
                imports: locked(&shared.imports).len() as u64,
                rss_anon_kib: memory.map_or(0, |m| m.anon_kib),
                sst_bytes: prev.level_bytes.iter().sum(),
                table_memory_bytes: prev.table_memory_bytes,
                index_bytes: prev.index_bytes,
            };
            written_before = written;
            misses_before = prev.cache_misses;
            if s.slates == 0 {
                shared.error("slates", &"no slate completed in the interval");
            }
            writeln!(csv, "{}", s.csv())?;
            csv.flush()?;
            eprintln!(
                "[{:>6.0} s] rss {:.0} MiB, cache misses {:.0}/s | slates {:.0}/s p50 {:.0} µs p99 {:.0} µs | writes {:.0}/s | ssts {} (L0 {}) flushes {} compactions {} imports {} | errors {}",
                s.elapsed_s,
                s.rss_kib as f64 / 1024.0,
                s.cache_misses_per_s,
                s.slates_per_s,
                s.p50_us,
                s.p99_us,
                s.writes_per_s,
                s.ssts,
                s.ssts_l0,
                s.flushes,
                s.compactions,
                s.imports,
                shared.errors.load(Ordering::Relaxed)
            );
            samples.push(s);
        }
        if end || memory.is_none() {
            return Ok(samples);
        }
    }
}

/// A memtable was flushed: its bytes dropped (the frozen one freed).
fn flushed(prev: &Scrape, now: &Scrape) -> bool {
    prev.memtable_bytes >= FLUSH_MIN_BYTES
        && (now.memtable_bytes as f64) < prev.memtable_bytes as f64 * (1.0 - FLUSH_DROP_FRACTION)
}

/// A compaction was installed: a level below 0 changed, or level 0 lost
/// files (flushes and imports only add to level 0).
fn compacted(prev: &Scrape, now: &Scrape) -> bool {
    let deeper_changed = prev
        .level_bytes
        .iter()
        .skip(1)
        .ne(now.level_bytes.iter().skip(1))
        || prev.ssts.iter().skip(1).ne(now.ssts.iter().skip(1));
    let l0 = |s: &Scrape| s.ssts.first().copied().unwrap_or(0);
    deeper_changed || l0(now) < l0(prev)
}

fn summarize(args: &SoakArgs, run: Duration, samples: &[Sample], shared: &Shared) -> Summary {
    let run_secs = run.as_secs_f64();
    let half = run_secs / 2.0;
    let second: Vec<&Sample> = samples.iter().filter(|s| s.elapsed_s > half).collect();
    let rss: Vec<(f64, f64)> = second
        .iter()
        .map(|s| (s.elapsed_s, s.rss_kib as f64))
        .collect();
    let p99: Vec<(f64, f64)> = second.iter().map(|s| (s.elapsed_s, s.p99_us)).collect();
    let rss_trend = trend(&rss, run_secs, RSS_TREND_LIMIT, None);
    let p99_trend = trend(&p99, run_secs, P99_TREND_LIMIT, Some(P99_CLAMP));
    let errors = shared.errors.load(Ordering::Relaxed);
    let mut reasons = Vec::new();
    if errors > 0 {
        reasons.push(format!("{errors} errors"));
    }
    let short = samples.last().is_none_or(|s| s.elapsed_s + 1.0 < run_secs);
    if short {
        reasons.push("the run ended early".into());
    }
    for (name, t) in [("RSS", &rss_trend), ("p99", &p99_trend)] {
        match t {
            None => reasons.push(format!(
                "{name}: fewer than {MIN_TREND_SAMPLES} samples in the second half"
            )),
            Some(t) if !t.pass => reasons.push(format!(
                "{name} trend: +{:.1}% over the run, limit {:.0}%",
                t.rise_fraction * 100.0,
                t.limit_fraction * 100.0
            )),
            Some(_) => {}
        }
    }
    let p99s: Vec<f64> = samples.iter().map(|s| s.p99_us).collect();
    let mean = |f: &dyn Fn(&Sample) -> f64| {
        samples.iter().map(f).sum::<f64>() / samples.len().max(1) as f64
    };
    Summary {
        pass: reasons.is_empty(),
        reasons,
        run_secs,
        samples: samples.len(),
        rss_kib_first: samples.first().map_or(0, |s| s.rss_kib),
        rss_kib_last: samples.last().map_or(0, |s| s.rss_kib),
        rss_kib_max: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_trend,
        p99_us_median: median(p99s.clone()),
        p99_us_min: p99s.iter().copied().fold(f64::INFINITY, f64::min),
        p99_us_max: p99s.iter().copied().fold(0.0, f64::max),
        p99_trend,
        p50_us_median: median(samples.iter().map(|s| s.p50_us).collect()),
        slates_per_s_mean: mean(&|s| s.slates_per_s),
        writes_per_s_mean: mean(&|s| s.writes_per_s),
        cache_misses_per_s_mean: mean(&|s| s.cache_misses_per_s),
        slates: samples.iter().map(|s| s.slates).sum(),
        rows_written: shared.written.load(Ordering::Relaxed),
        flushes: samples.last().map_or(0, |s| s.flushes),
        compactions: samples.last().map_or(0, |s| s.compactions),
        ssts_first: samples.first().map_or(0, |s| s.ssts),
        ssts_last: samples.last().map_or(0, |s| s.ssts),
        imports: locked(&shared.imports).clone(),
        errors,
        error_messages: locked(&shared.messages).clone(),
        series: args.out.display().to_string(),
        thresholds: Thresholds {
            rss_trend_limit: RSS_TREND_LIMIT,
            p99_trend_limit: P99_TREND_LIMIT,
            p99_clamp: P99_CLAMP,
            min_trend_samples: MIN_TREND_SAMPLES,
        },
    }
}

fn print_summary(s: &Summary, json: &Path) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let trend = |t: &Option<Trend>| match t {
        Some(t) => format!(
            "{:+.1}% over the run (limit {:.0}%, {} samples)",
            t.rise_fraction * 100.0,
            t.limit_fraction * 100.0,
            t.samples
        ),
        None => "inconclusive".into(),
    };
    println!("| figure | value |\n|---|---|");
    println!("| run | {:.0} s, {} samples |", s.run_secs, s.samples);
    println!(
        "| server RSS first / last / max | {:.0} / {:.0} / {:.0} MiB |",
        mib(s.rss_kib_first),
        mib(s.rss_kib_last),
        mib(s.rss_kib_max)
    );
    println!("| RSS trend (second half) | {} |", trend(&s.rss_trend));
    println!(
        "| slate p99 per interval: median (min–max) | {:.0} µs ({:.0}–{:.0}) |",
        s.p99_us_median, s.p99_us_min, s.p99_us_max
    );
    println!("| p99 trend (second half) | {} |", trend(&s.p99_trend));
    println!("| slate p50, median | {:.0} µs |", s.p50_us_median);
    println!(
        "| slates/s, writes/s (means) | {:.0}, {:.0} |",
        s.slates_per_s_mean, s.writes_per_s_mean
    );
    println!(
        "| block-cache misses/s (mean) | {:.0} |",
        s.cache_misses_per_s_mean
    );
    println!(
        "| flushes, compactions observed | {}, {} |",
        s.flushes, s.compactions
    );
    println!("| SSTs first / last | {} / {} |", s.ssts_first, s.ssts_last);
    let rows: u64 = s.imports.iter().map(|i| i.rows).sum();
    let secs: f64 = s.imports.iter().map(|i| i.secs).sum();
    println!(
        "| imports | {} ({rows} rows, {secs:.1} s in all) |",
        s.imports.len()
    );
    println!("| errors | {} |", s.errors);
    for m in &s.error_messages {
        println!("| error | {m} |");
    }
    println!(
        "| verdict | **{}**{} |",
        if s.pass { "PASS" } else { "FAIL" },
        if s.reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", s.reasons.join("; "))
        }
    );
    println!("series: {}\nsummary: {}", s.series, json.display());
}

/// The server's resident memory, from one read of `/proc/<pid>/status`.
#[derive(Clone, Copy)]
struct ServerMemory {
    /// `VmRSS`, KiB.
    rss_kib: u64,
    /// `RssAnon`, KiB (0 where the kernel does not report it).
    anon_kib: u64,
}

/// `None` once the server is gone (or a zombie, which has no `VmRSS`).
fn server_memory(pid: u32) -> Option<ServerMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(ServerMemory {
        rss_kib: kib("VmRSS:")?,
        anon_kib: kib("RssAnon:").unwrap_or(0),
    })
}

/// The `/metrics` figures the soak follows.
#[derive(Clone, Debug, Default, PartialEq)]
struct Scrape {
    memtable_bytes: u64,
    block_cache_bytes: u64,
    compaction_backlog_bytes: u64,
    table_memory_bytes: u64,
    index_bytes: u64,
    /// Block-cache misses since the server started.
    cache_misses: u64,
    /// SSTs per level, and their bytes.
    ssts: Vec<u64>,
    level_bytes: Vec<u64>,
    /// Every `errors_total` series, summed.
    errors: u64,
    read_only: bool,
}

/// Reads the server's `/metrics`.
fn scrape(addr: &str) -> Result<Scrape, BoxError> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&sock, SCRAPE_TIMEOUT)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("metrics: no HTTP header")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("metrics: {status}").into());
    }
    Ok(parse_metrics(body))
}

/// The figures of a Prometheus text exposition.
fn parse_metrics(body: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let v = value.max(0.0) as u64;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let level = || -> Option<usize> {
            let rest = labels.split("level=\"").nth(1)?;
            rest.split('"').next()?.parse().ok()
        };
        let set_level = |vec: &mut Vec<u64>, l: usize| {
            if vec.len() <= l {
                vec.resize(l + 1, 0);
            }
            vec[l] = v;
        };
        match name {
            "tessera_engine_memtable_bytes" => s.memtable_bytes = v,
            "tessera_engine_block_cache_bytes" => s.block_cache_bytes = v,
            "tessera_engine_compaction_backlog_bytes" => s.compaction_backlog_bytes = v,
            "tessera_engine_read_only" => s.read_only = v != 0,
            "tessera_engine_table_memory_bytes" => s.table_memory_bytes = v,
            "tessera_engine_index_bytes" => s.index_bytes = v,
            "tessera_engine_block_cache_misses_total" => s.cache_misses = v,
            "tessera_errors_total" => s.errors += v,
            "tessera_engine_ssts" => {
                if let Some(l) = level() {
                    set_level(&mut s.ssts, l);
                }
            }
            "tessera_engine_level_bytes" => {
                if let Some(l) = level() {
                    set_level(&mut s.level_bytes, l);
                }
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..90)
            .map(|i| 900.0 + 10.0 * i as f64)
            .map(|x| (x, f(x)))
            .collect()
    }

    #[test]
    fn a_flat_series_passes_and_a_rising_one_fails() {
        let flat = trend(&line(|_| 100.0), 1800.0, RSS_TREND_LIMIT, None).expect("enough");
        assert!(flat.pass && flat.slope_per_s.abs() < 1e-9);
        // +1% of 100 per minute: +30% over the run.
        let rising =
            trend(&line(|x| 100.0 + x / 60.0), 1800.0, RSS_TREND_LIMIT, None).expect("enough");
        assert!(!rising.pass, "{rising:?}");
        assert!((rising.rise_over_run - 30.0).abs() < 1e-6);
    }

    #[test]
    fn one_p99_spike_at_the_end_is_clamped() {
        let mut pts = line(|x| 300.0 + (x * 7.0).sin() * 30.0);
        pts.last_mut().expect("points").1 = 50_000.0;
        let unclamped = trend(&pts, 1800.0, P99_TREND_LIMIT, None).expect("enough");
        assert!(!unclamped.pass);
        let clamped = trend(&pts, 1800.0, P99_TREND_LIMIT, Some(P99_CLAMP)).expect("enough");
        assert!(clamped.pass, "{clamped:?}");
    }

    #[test]
    fn too_few_samples_give_no_trend() {
        assert!(trend(&[(1.0, 1.0), (2.0, 2.0)], 10.0, 0.1, None).is_none());
    }

    #[test]
    fn metrics_are_parsed_by_level() {
        let body =
            "# HELP x\ntessera_engine_ssts{level=\"0\"} 3\ntessera_engine_ssts{level=\"2\"} 5\n\
            tessera_engine_level_bytes{level=\"2\"} 1000\ntessera_engine_memtable_bytes 4096\n\
            tessera_errors_total{op=\"put\",code=\"validation\"} 2\n\
            tessera_errors_total{op=\"get\",code=\"not_found\"} 1\ntessera_engine_read_only 0\n\
            tessera_engine_table_memory_bytes 777\ntessera_engine_index_bytes 555\n";
        let s = parse_metrics(body);
        assert_eq!((s.table_memory_bytes, s.index_bytes), (777, 555));
        assert_eq!(s.ssts, vec![3, 0, 5]);
        assert_eq!(s.level_bytes, vec![0, 0, 1000]);
        assert_eq!((s.memtable_bytes, s.errors, s.read_only), (4096, 3, false));
        let mut after = s.clone();
        after.ssts[0] = 1;
        assert!(compacted(&s, &after));
        after.ssts[0] = 4;
        assert!(!compacted(&s, &after));
        after.memtable_bytes = 0;
        assert!(!flushed(&s, &after), "below the size that counts");
    }
}
