//! `tessera import` on Parquet files written here with the `parquet` crate
//! (no Python in CI): every supported Arrow type, rejection to a dead-letter
//! file, all-or-nothing failure naming file, row and column, and files that
//! are not Parquet or are truncated.

mod common;

use arrow_array::builder::{
    FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder, StringDictionaryBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, RecordBatch, TimestampNanosecondArray,
    UInt16Array,
};
use arrow_schema::{Field, Schema};
use common::TestServer;
use parquet::arrow::ArrowWriter;
use std::path::Path;
use std::sync::Arc;

const DAY_NS: i64 = 86_400_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `user_features` rows 0..n in unusual but supported Arrow types: an
/// int32 key, nanosecond timestamps with a zone, uint16 for an int64
/// feature, float32 for a float64 feature, a dictionary-encoded string, a
/// fixed-size-list embedding and a list of strings. `bad` rows get NaN.
fn write_users(path: &Path, n: usize, bad: &[usize]) {
    let t = now_ns() - DAY_NS;
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), 64);
    let mut topics = ListBuilder::new(StringBuilder::new());
    let mut country = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..n {
        for d in 0..64 {
            emb.values().append_value(i as f32 + d as f32 / 100.0);
        }
        emb.append(true);
        topics.values().append_value("sports");
        topics.values().append_value(format!("t{i}"));
        topics.append(true);
        country.append_value(if i % 2 == 0 { "fr" } else { "jp" });
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            Arc::new(Int32Array::from_iter_values(0..n as i32)),
        ),
        (
            "event_ts",
            Arc::new(
                TimestampNanosecondArray::from_iter_values((0..n).map(|i| t + i as i64))
                    .with_timezone("+02:00"),
            ),
        ),
        (
            "clicks_1h",
            Arc::new(UInt16Array::from_iter_values((0..n).map(|i| i as u16))),
        ),
        (
            "ctr_24h",
            Arc::new(Float32Array::from_iter_values((0..n).map(|i| {
                if bad.contains(&i) {
                    f32::NAN
                } else {
                    0.25
                }
            }))),
        ),
        (
            "avg_dwell_seconds_7d",
            Arc::new(Float64Array::from(vec![None::<f64>; n])),
        ),
        ("user_embedding", Arc::new(emb.finish())),
        ("topics_of_interest", Arc::new(topics.finish())),
        ("home_country", Arc::new(country.finish())),
        (
            "pandas_index",
            Arc::new(Int32Array::from_iter_values(0..n as i32)),
        ),
    ];
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, schema, None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn tessera(server: &TestServer, args: &[&str]) -> std::process::Output {
    common::run_cli(server, args, None)
}

fn get_json(server: &TestServer, key: &str, features: &str) -> serde_json::Value {
    let out = tessera(
        server,
        &[
            "get",
            "--group",
            "user_features",
            "--key",
            key,
            "--features",
            features,
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn setup() -> TestServer {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    server
}

#[test]
fn every_supported_type_imports_and_reads_back() {
    let server = setup();
    let dir = server.dir.join("in");
    std::fs::create_dir_all(dir.join("part=1")).expect("dir");
    write_users(&dir.join("part=1/a.parquet"), 3000, &[]);
    std::fs::write(dir.join("_SUCCESS"), b"").expect("marker");
    let out = tessera(
        &server,
        &[
            "import",
            "--group",
            "user_features",
            dir.to_str().expect("path"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("imported 3000 rows"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pandas_index"),
        "ignored columns are named"
    );
    let row = get_json(
        &server,
        "7",
        "clicks_1h,ctr_24h,user_embedding,topics_of_interest,home_country,avg_dwell_seconds_7d",
    );
    assert_eq!(row["clicks_1h"], 7);
    assert_eq!(row["ctr_24h"], 0.25);
    assert_eq!(row["user_embedding"].as_array().map(Vec::len), Some(64));
    assert_eq!(
        row["topics_of_interest"],
        serde_json::json!(["sports", "t7"])
    );
    assert_eq!(row["home_country"], "jp");
    assert_eq!(row["avg_dwell_seconds_7d"], serde_json::Value::Null);
}

#[test]
fn a_bad_row_fails_everything_unless_rejected() {
    let server = setup();
    let file = server.dir.join("users.parquet");
    write_users(&file, 500, &[42, 99]);
    let out = tessera(
        &server,
        &[
            "import",
            "--group",
            "user_features",
            file.to_str().expect("path"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("users.parquet") && err.contains("row 42") && err.contains("ctr_24h"),
        "{err}"
    );
    assert_eq!(
        get_json(&server, "1", "clicks_1h")["found"],
        false,
        "nothing committed"
    );

    let rejects = server.dir.join("rejects.parquet");
    let out = tessera(
        &server,
        &[
            "import",
            "--group",
            "user_features",
            "--reject-file",
            rejects.to_str().expect("path"),
            file.to_str().expect("path"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 498 rows"));
    assert_eq!(get_json(&server, "1", "clicks_1h")["clicks_1h"], 1);
    assert_eq!(get_json(&server, "42", "clicks_1h")["found"], false);
    let batches = common::read_parquet(&rejects);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    let reason = batches[0].column_by_name("reason").expect("reason column");
    assert!(format!("{reason:?}").contains("ctr_24h"));
}

#[test]
fn files_that_are_not_parquet_or_are_truncated_get_a_clear_error() {
    let server = setup();
    let junk = server.dir.join("junk.parquet");
    std::fs::write(&junk, b"this is not parquet at all").expect("write");
    let out = tessera(
        &server,
        &[
            "import",
            "--group",
            "user_features",
            junk.to_str().expect("path"),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a readable Parquet file"));

    let good = server.dir.join("good.parquet");
    write_users(&good, 2000, &[]);
    let bytes = std::fs::read(&good).expect("read");
    let cut = server.dir.join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = tessera(
        &server,
        &[
            "import",
            "--group",
            "user_features",
            cut.to_str().expect("path"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.parquet") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(get_json(&server, "1", "clicks_1h")["found"], false);
}
