//! `tessera-bench offline`: the offline figures against a running server.
//!
//! Generates (once, deterministically) a Parquet file of `--rows` rows over
//! `--entities` entities, each row 10 float32 features with event times
//! spread over a year, and a spine of `--spine-rows` label rows
//! (`entity_id`, `ts`, `label`) over the same year; applies a registry
//! group for the rows, and times, end to end through the `tessera` CLI:
//! - `tessera import` of the file;
//! - `tessera export` of a snapshot (one row per entity) and of the whole
//!   history (every row);
//! - `tessera pit-join` of the spine with the group, with its peak RSS.
//!
//! With `--slates`, slates of that group are then timed at idle and while
//! the file is imported a second time, for p99 at idle and under an
//! import. `--no-import` reuses data a previous run imported.

use crate::net_bench::BoxError;
use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use hdrhistogram::Histogram;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tessera_protocol::{Client, ClientOptions, SlatePart, SlateRequest, SpecFile, Value};

/// The group the offline benchmark imports into.
const GROUP: &str = "offline_features";
/// Features per row.
const FEATURES: usize = 10;
/// Rows per generated record batch (and Parquet row group).
const GEN_BATCH_ROWS: usize = 1 << 20;
/// A year, µs.
const YEAR_US: i64 = 365 * 86_400 * 1_000_000;

const SPEC: &str = r#"
[[entity]]
name = "offline_entities"
keys = [{ name = "entity_id", type = "int64" }]

[[group]]
name = "offline_features"
entity = "offline_entities"
description = "The offline benchmark's group: 10 float32 features."
owner = "tessera-bench"
ttl = "400d"
retention = "800d"
"#;

/// Arguments of `tessera-bench offline`.
#[derive(Clone, Debug, clap::Args)]
pub struct OfflineArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7411")]
    addr: String,
    /// Rows of the generated file.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct entities.
    #[arg(long, default_value_t = 1_000_000)]
    entities: u64,
    /// Where the generated file is kept (generated when missing).
    #[arg(long, default_value = "./tessera-bench-offline")]
    dir: PathBuf,
    /// Import pace asked for, rows/s (0: the server's limit).
    #[arg(long, default_value_t = 0)]
    max_rows_per_s: u32,
    /// Also time slates of 51 keys of the group at idle and during the import.
    #[arg(long)]
    slates: bool,
    /// Label rows of the generated spine.
    #[arg(long, default_value_t = 1_000_000)]
    spine_rows: u64,
    /// The data is already imported (by an earlier run on this server).
    #[arg(long)]
    no_import: bool,
    /// Right after Tessera's join, time DuckDB's ASOF JOIN of the same
    /// files (`bench/peers/duckdb_asof.py`; `pip install duckdb`), so the
    /// two are compared on the machine as it is at that moment.
    #[arg(long)]
    peer_duckdb: bool,
}

/// Runs the benchmark and prints its figures.
pub fn offline(args: &OfflineArgs) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.dir)?;
    let file = args
        .dir
        .join(format!("offline-{}-{}.parquet", args.rows, args.entities));
    if !file.exists() {
        let started = Instant::now();
        generate(&file, args.rows, args.entities)?;
        eprintln!(
            "generated {} in {:.1} s",
            file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let spine = args.dir.join(format!(
        "spine-{}-{}.parquet",
        args.spine_rows, args.entities
    ));
    if !spine.exists() {
        generate_spine(&spine, args.spine_rows, args.entities)?;
    }
    let mut client = Client::connect(args.addr.as_str(), ClientOptions::default())?;
    apply_spec(&mut client)?;
    if !args.no_import {
        let secs = import(args, &file)?;
        println!(
            "import: {} rows of {FEATURES} float32 features in {secs:.2} s = {:.0} rows/s",
            args.rows,
            args.rows as f64 / secs
        );
        wait_for_compaction(&mut client)?;
    }
    for (what, extra) in [("snapshot", &[][..]), ("history", &["--history"][..])] {
        let out = args.dir.join(format!("export-{what}.parquet"));
        let mut cli = vec!["export", "--group", GROUP, "--out", path_str(&out)?];
        cli.extend_from_slice(extra);
        let run = run_tessera(args, &cli)?;
        let rows = parquet_rows(&out)?;
        println!(
            "export {what}: {rows} rows in {:.2} s = {:.0} rows/s (CLI peak RSS {} MiB)",
            run.secs,
            rows as f64 / run.secs,
            run.max_rss_kib / 1024
        );
    }
    let out = args.dir.join("training.parquet");
    let features = format!("{GROUP}:{}", feature_names().join(","));
    let cli = [
        "pit-join",
        "--spine",
        path_str(&spine)?,
        "--timestamp-column",
        "ts",
        "--features",
        &features,
        "--out",
        path_str(&out)?,
    ];
    let run = run_tessera(args, &cli)?;
    println!(
        "pit-join: {} spine rows × {} rows in {:.2} s = {:.0} rows/s, CLI peak RSS {} MiB",
        args.spine_rows,
        args.rows,
        run.secs,
        args.spine_rows as f64 / run.secs,
        run.max_rss_kib / 1024
    );
    if args.peer_duckdb {
        duckdb_join(args, run.secs)?;
    }
    if !args.slates {
        return Ok(());
    }
    // Slates over the imported data, idle (compaction done, caches warm),
    // then while the same file is imported again (a second version of
    // every row).
    time_slates(
        &args.addr,
        args.entities,
        SlatesFor::Duration(WARMUP_SLATE_SECS),
    )?;
    let idle = time_slates(
        &args.addr,
        args.entities,
        SlatesFor::Duration(IDLE_SLATE_SECS),
    )?;
    let importing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (addr, entities, flag) = (args.addr.clone(), args.entities, importing.clone());
        std::thread::spawn(move || time_slates(&addr, entities, SlatesFor::While(flag)))
    };
    let again = import(args, &file);
    importing.store(false, Ordering::Relaxed);
    let during = reader.join().map_err(|_| "the slate thread panicked")??;
    let again = again?;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "slate of 51 keys: idle p50/p99 {:.1}/{:.1} µs ({} slates); during a second import ({:.0} rows/s) p50/p99 {:.1}/{:.1} µs ({} slates)",
        us(&idle, 0.5),
        us(&idle, 0.99),
        idle.len(),
        args.rows as f64 / again,
        us(&during, 0.5),
        us(&during, 0.99),
        during.len()
    );
    Ok(())
}

/// The DuckDB peer's script, relative to the workspace.
const DUCKDB_PEER: &str = "bench/peers/duckdb_asof.py";

/// Runs DuckDB's ASOF JOIN of the same files and prints its time against
/// Tessera's `tessera_secs`.
fn duckdb_join(args: &OfflineArgs, tessera_secs: f64) -> Result<(), BoxError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DUCKDB_PEER);
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args(["--dir", path_str(&args.dir)?])
        .args(["--rows", &args.rows.to_string()])
        .args(["--entities", &args.entities.to_string()])
        .args(["--spine-rows", &args.spine_rows.to_string()])
        .output()?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{}: {}", script.display(), err.trim()).into());
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let secs = report["pit_join_secs"]
        .as_f64()
        .ok_or("the DuckDB peer printed no pit_join_secs")?;
    println!(
        "pit-join peer: DuckDB {} ASOF JOIN in {secs:.2} s, peak RSS {} MiB; Tessera took {:.2}× its time",
        report["version"].as_str().unwrap_or("?"),
        report["peak_rss_mib"],
        tessera_secs / secs
    );
    Ok(())
}

/// Seconds of idle slates, after as many of warm-up.
const IDLE_SLATE_SECS: u64 = 10;
const WARMUP_SLATE_SECS: u64 = 10;
/// Longest wait for the import's compaction to finish.
const COMPACTION_WAIT_SECS: u64 = 600;

/// Waits until the server reports no compaction backlog.
fn wait_for_compaction(client: &mut Client) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let stats: serde_json::Value = serde_json::from_str(&client.stats()?)?;
        if stats["compaction_backlog_bytes"].as_u64() == Some(0) {
            eprintln!(
                "compaction settled after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed().as_secs() > COMPACTION_WAIT_SECS {
            return Err("compaction did not settle in time".into());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Runs `tessera import` of `file`; returns its wall time.
fn import(args: &OfflineArgs, file: &Path) -> Result<f64, BoxError> {
    let rate = args.max_rows_per_s.to_string();
    let cli = [
        "import",
        "--group",
        GROUP,
        "--max-rows-per-s",
        &rate,
        path_str(file)?,
    ];
    Ok(run_tessera(args, &cli)?.secs)
}

/// How a `tessera` command ran.
struct Run {
    secs: f64,
    max_rss_kib: u64,
}

/// Runs `tessera ARGS --addr A` to its end: wall time and peak RSS.
fn run_tessera(args: &OfflineArgs, cli: &[&str]) -> Result<Run, BoxError> {
    let started = Instant::now();
    let child = std::process::Command::new(tessera_binary()?)
        .args(cli)
        .args(["--addr", &args.addr])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("tessera {} failed (status {status})", cli[0]).into());
    }
    Ok(Run {
        secs,
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
    })
}

fn path_str(p: &Path) -> Result<&str, BoxError> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()).into())
}

/// Rows of a Parquet file, from its footer.
fn parquet_rows(path: &Path) -> Result<u64, BoxError> {
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path)?)?;
    use parquet::file::reader::FileReader;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

fn feature_names() -> Vec<String> {
    (0..FEATURES).map(|f| format!("f{f}")).collect()
}

/// Writes the spine: label rows of random entities at random times of the
/// same year as the data (so some precede every version of their entity).
fn generate_spine(path: &Path, rows: u64, entities: u64) -> Result<(), BoxError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("entity_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("label", DataType::Float32, false),
    ]));
    let tmp = path.with_extension("tmp");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema.clone(), None)?;
    let mut rng = StdRng::seed_from_u64(13);
    let now = now_us()?;
    let n = rows as usize;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            (0..n).map(|_| rng.gen_range(0..entities.max(1)) as i64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|_| now - rng.gen_range(0..YEAR_US)),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Float32Array::from_iter_values(
            (0..n).map(|_| rng.gen::<f32>()),
        )),
    ];
    w.write(&RecordBatch::try_new(schema, columns)?)?;
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn now_us() -> Result<i64, BoxError> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64)
}

/// The `tessera` binary next to this one.
fn tessera_binary() -> Result<PathBuf, BoxError> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("tessera");
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p tessera-server`",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

fn apply_spec(client: &mut Client) -> Result<(), BoxError> {
    let mut text = SPEC.to_string();
    for name in feature_names() {
        text.push_str(&format!(
            "\n[[group.feature]]\nname = \"{name}\"\ntype = \"float32\"\n"
        ));
    }
    let files = vec![SpecFile {
        name: "offline.toml".into(),
        text,
    }];
    let (version, changes, _) = client.registry_plan(files.clone())?;
    if changes {
        client.registry_apply(version, files)?;
    }
    Ok(())
}

/// Writes the dataset: rows in a shuffled entity order, event times over
/// the last year.
fn generate(path: &Path, rows: u64, entities: u64) -> Result<(), BoxError> {
    let mut fields = vec![
        Field::new("entity_id", DataType::Int64, false),
        Field::new(
            "event_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend((0..FEATURES).map(|f| Field::new(format!("f{f}"), DataType::Float32, true)));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(GEN_BATCH_ROWS))
        .build();
    let tmp = path.with_extension("tmp");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema.clone(), Some(props))?;
    let mut rng = StdRng::seed_from_u64(7);
    let now = now_us()?;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(GEN_BATCH_ROWS as u64) as usize;
        let ids: Vec<i64> = (0..n)
            .map(|_| rng.gen_range(0..entities.max(1)) as i64)
            .collect();
        let ts: Vec<i64> = (0..n).map(|_| now - rng.gen_range(0..YEAR_US)).collect();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ];
        for _ in 0..FEATURES {
            columns.push(Arc::new(Float32Array::from_iter_values(
                (0..n).map(|_| rng.gen::<f32>()),
            )));
        }
        w.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        done += n as u64;
    }
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// How long to read slates.
enum SlatesFor {
    Duration(u64),
    While(Arc<AtomicBool>),
}

/// Reads slates of 51 random entities of the group, closed loop, one
/// connection.
fn time_slates(addr: &str, entities: u64, how_long: SlatesFor) -> Result<Histogram<u64>, BoxError> {
    let mut client = Client::connect(addr, ClientOptions::default())?;
    let mut rng = StdRng::seed_from_u64(11);
    let mut hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    loop {
        let go_on = match &how_long {
            SlatesFor::Duration(s) => started.elapsed().as_secs() < *s,
            SlatesFor::While(flag) => flag.load(Ordering::Relaxed),
        };
        if !go_on {
            return Ok(hist);
        }
        let keys = (0..51)
            .map(|_| vec![Value::Int64(rng.gen_range(0..entities.max(1)) as i64)])
            .collect();
        let req = SlateRequest {
            as_of: None,
            known_at: None,
            parts: vec![SlatePart {
                group: GROUP.into(),
                features: vec![],
                keys,
            }],
        };
        let t = Instant::now();
        client.get_slate(&req)?;
        hist.record((t.elapsed().as_nanos() as u64).max(1))?;
    }
}
