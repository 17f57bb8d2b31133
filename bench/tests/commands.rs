//! `tessera-bench`'s measuring subcommands against the real `tessera
//! serve`: a closed-loop and an open-loop `slate`, `mixed`, and `gen`.
//!
//! The figures themselves are not asserted (the machine is shared and a
//! debug build is slow); what is asserted is that each run measured what
//! it reports: every slate found its 51 rows, the percentiles are in order,
//! CPU was read from the server's `/proc` entry, an open loop kept its rate
//! and reported how late it sent, `mixed` wrote while it read, and `gen` is
//! deterministic for a seed.

mod common;

use arrow_array::{Array, RecordBatch};
use common::{run, tessera_binary, Server, NEWS_FEED_SPEC};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value as Json;
use std::path::Path;
use std::process::Command;

/// A dataset a debug build loads in well under a second.
const DATA: [&str; 4] = ["--users", "2000", "--articles", "500"];
/// The rows of a slate: one user and 50 articles.
const SLATE_ROWS: f64 = 51.0;

/// Runs `tessera-bench` with `args` and the dataset; its JSON report.
fn report(what: &str, args: &[&str]) -> Json {
    let bench = env!("CARGO_BIN_EXE_tessera-bench");
    let out = run(
        what,
        Command::new(bench).args(args).args(DATA).arg("--json"),
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn number(report: &Json, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{field}` is not a number in {report:#}"))
}

/// What every slate report must hold, whatever the machine's speed.
fn check_slate_report(r: &Json, connections: u64) {
    assert_eq!(r["target"], "tessera", "{r:#}");
    assert_eq!(r["connections"].as_u64(), Some(connections), "{r:#}");
    assert!(number(r, "slates") > 0.0, "{r:#}");
    assert_eq!(number(r, "rows_found_per_slate"), SLATE_ROWS, "{r:#}");
    let [p50, p99, p999, max] = ["p50_us", "p99_us", "p999_us", "max_us"].map(|f| number(r, f));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{r:#}"
    );
    assert!(number(r, "server_cpu_us_per_slate") > 0.0, "{r:#}");
    assert!(number(r, "client_cpu_us_per_slate") > 0.0, "{r:#}");
}

#[test]
fn slate_and_mixed_report_what_they_measured() {
    let tessera = tessera_binary();
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tessera, tmp.path(), "");
    let addr = server.addr.clone();
    let pid = server.child.id().to_string();
    run(
        "tessera apply",
        Command::new(&tessera).args(["apply", "--addr", &addr, NEWS_FEED_SPEC]),
    );
    let bench = env!("CARGO_BIN_EXE_tessera-bench");
    run(
        "tessera-bench load",
        Command::new(bench)
            .args(["load", "--addr", &addr, "--versions", "2"])
            .args(DATA),
    );
    // A subcommand and its own flags, then the server and the settings
    // every run here shares.
    let shared = ["--addr", &addr, "--server-pid", &pid, "--warmup", "0"];
    let measure = |what: &str, args: &[&str]| report(what, &[args, &shared[..]].concat());

    let closed = measure(
        "closed-loop slates",
        &["slate", "--connections", "2", "--duration", "2"],
    );
    check_slate_report(&closed, 2);
    assert_eq!(closed["mode"], "closed loop", "{closed:#}");

    // 40 slates/s for 3 s: a debug build keeps up with that on two cores.
    let open = measure(
        "open-loop slates",
        &[
            "slate",
            "--connections",
            "2",
            "--duration",
            "3",
            "--rate",
            "40",
        ],
    );
    check_slate_report(&open, 2);
    assert_eq!(
        number(&open, "slates"),
        120.0,
        "every scheduled slate: {open:#}"
    );
    assert!(number(&open, "send_late_p99_us") >= 0.0, "{open:#}");

    let mixed = measure(
        "mixed",
        &["mixed", "--duration", "2", "--write-rate", "500"],
    );
    check_slate_report(&mixed, 1);
    let writes = number(&mixed, "writes_per_s");
    assert!(writes > 0.0 && writes <= 600.0, "{mixed:#}");

    let status = server.terminate();
    assert!(status.success(), "the server exited with {status}");
}

/// The batches of a Parquet file.
fn batches(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("open the Parquet file");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .build()
        .expect("a reader")
        .collect::<Result<_, _>>()
        .expect("its batches")
}

/// Every column of `path` but the event times, which `gen` counts back
/// from now.
fn values(path: &Path) -> Vec<(String, Vec<arrow_array::ArrayRef>)> {
    let batches = batches(path);
    let schema = batches.first().expect("a batch").schema();
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != "event_ts")
        .map(|(i, f)| {
            let columns = batches.iter().map(|b| b.column(i).clone()).collect();
            (f.name().clone(), columns)
        })
        .collect()
}

#[test]
fn gen_writes_the_same_rows_for_a_seed() {
    let bench = env!("CARGO_BIN_EXE_tessera-bench");
    let tmp = tempfile::tempdir().expect("tempdir");
    let gen = |dir: &str, seed: &str| {
        let out = tmp.path().join(dir);
        run(
            "tessera-bench gen",
            Command::new(bench)
                .args(["gen", "--spec", NEWS_FEED_SPEC, "--seed", seed])
                .args(["--users", "300", "--articles", "100", "--versions", "2"])
                .arg("--out")
                .arg(&out),
        );
        out
    };
    let (a, again, other) = (gen("a", "7"), gen("again", "7"), gen("other", "8"));
    for file in ["users.parquet", "articles.parquet"] {
        let first = values(&a.join(file));
        let rows: usize = first[0].1.iter().map(|c| c.len()).sum();
        assert_eq!(rows, if file == "users.parquet" { 600 } else { 200 });
        assert_eq!(first, values(&again.join(file)), "{file}, same seed");
        assert_ne!(first, values(&other.join(file)), "{file}, another seed");
    }
}
