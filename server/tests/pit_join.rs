//! `tessera pit-join` against a straightforward reference implementation,
//! on generated data with ties, late arrivals, tombstones, TTL edges,
//! nulls, a composite key, spine rows before any data and spine rows with
//! null keys or times; the served values (a slate as of the spine row's
//! time) equal the joined ones; `--known-at-lag` reads bitemporally; bad
//! input is refused with a clear error and no output file.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::{now_us, read_parquet, TestServer, DAY_US};
use parquet::arrow::ArrowWriter;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tessera_protocol::{Client, Delete, Put, PutRow, SlatePart, SlateRequest, SpecFile, Value};
use tessera_server::columnar::arrow_rows::{Column as OutputColumn, Target};
use tessera_server::registry::{ElementType, FeatureType};

const HOUR_US: i64 = 3_600_000_000;
const USERS: i64 = 24;
/// Users 20.. never get data.
const USERS_WITH_DATA: i64 = 20;
const ITEMS: [&str; 3] = ["a", "b", "c"];

const SPEC: &str = r#"
[[entity]]
name = "users"
keys = [{ name = "user_id", type = "int64" }]

[[entity]]
name = "pairs"
keys = [{ name = "user_id", type = "int64" }, { name = "item", type = "string" }]

[[group]]
name = "u"
entity = "users"
ttl = "1d"
retention = "3650d"
owner = "tests"

[[group.feature]]
name = "score"
type = "float64"

[[group.feature]]
name = "count"
type = "int64"

[[group]]
name = "t"
entity = "users"
description = "One feature of every type."
ttl = "3650d"
retention = "3650d"
owner = "tests"

[[group.feature]]
name = "b"
type = "bool"

[[group.feature]]
name = "i32"
type = "int32"

[[group.feature]]
name = "f32"
type = "float32"

[[group.feature]]
name = "s"
type = "string"

[[group.feature]]
name = "raw"
type = "bytes"

[[group.feature]]
name = "at"
type = "timestamp"

[[group.feature]]
name = "emb"
type = "embedding(3)"

[[group.feature]]
name = "li"
type = "list<int64>"

[[group.feature]]
name = "lf"
type = "list<float32>"

[[group.feature]]
name = "ls"
type = "list<string>"

[[group]]
name = "p"
entity = "pairs"
ttl = "3650d"
retention = "3650d"
owner = "tests"

[[group.feature]]
name = "w"
type = "float32"
"#;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One write, in commit order: `values` is `None` for a tombstone.
#[derive(Clone, Debug)]
struct Write {
    key: Vec<Value>,
    event_ts: i64,
    values: Option<Vec<Value>>,
}

/// The reference: among writes of `key` with `event_ts <= ts`, the one
/// with the greatest event time, ties to the later write; nothing if it is
/// a tombstone or older than `ts - ttl`.
fn reference<'w>(writes: &'w [Write], key: &[Value], ts: i64, ttl: i64) -> Option<&'w Write> {
    let chosen = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.key == key && w.event_ts <= ts)
        .max_by_key(|(i, w)| (w.event_ts, *i))?
        .1;
    chosen.values.as_ref()?;
    (chosen.event_ts >= ts - ttl).then_some(chosen)
}

fn apply(c: &mut Client) {
    let files = vec![SpecFile {
        name: "pit.toml".into(),
        text: SPEC.into(),
    }];
    let (version, _, _) = c.registry_plan(files.clone()).expect("plan");
    c.registry_apply(version, files).expect("apply");
}

/// Sends `writes` in commit order: runs of puts in one batch, each
/// tombstone on its own.
fn send(c: &mut Client, group: &str, columns: &[&str], writes: &[Write]) {
    for w in writes {
        match &w.values {
            Some(values) => {
                let mut all = w.key.clone();
                all.extend(values.iter().cloned());
                c.put(&Put {
                    group: group.into(),
                    columns: columns.iter().map(|s| s.to_string()).collect(),
                    rows: vec![PutRow {
                        event_ts: w.event_ts,
                        values: all,
                    }],
                })
                .expect("put");
            }
            None => {
                c.delete(&Delete {
                    group: group.into(),
                    keys: vec![(w.event_ts, w.key.clone())],
                })
                .expect("delete");
            }
        }
    }
}

/// Generated writes of both groups, late arrivals and ties included.
fn generate(rng: &mut Rng, base: i64) -> (Vec<Write>, Vec<Write>) {
    let mut users = Vec::new();
    for _ in 0..400 {
        let key = vec![Value::Int64(rng.below(USERS_WITH_DATA as u64) as i64)];
        // Whole hours over 10 days: many ties.
        let event_ts = base + rng.below(240) as i64 * HOUR_US;
        let values = match rng.below(10) {
            0 => None,
            1 => Some(vec![Value::Null, Value::Int64(rng.below(100) as i64)]),
            _ => Some(vec![
                Value::Float64(rng.below(1000) as f64 / 8.0),
                Value::Int64(rng.below(100) as i64),
            ]),
        };
        users.push(Write {
            key,
            event_ts,
            values,
        });
    }
    let mut pairs = Vec::new();
    for _ in 0..200 {
        let key = vec![
            Value::Int64(rng.below(USERS_WITH_DATA as u64) as i64),
            Value::String(ITEMS[rng.below(3) as usize].into()),
        ];
        let event_ts = base + rng.below(240) as i64 * HOUR_US;
        let values = (rng.below(8) != 0).then(|| vec![Value::Float32(rng.below(64) as f32)]);
        pairs.push(Write {
            key,
            event_ts,
            values,
        });
    }
    (users, pairs)
}

/// A spine row: user, item, time (any may be null).
type SpineRow = (Option<i64>, Option<&'static str>, Option<i64>);

/// Spine rows at random times, at write times exactly, at the TTL edge
/// (kept) and one past it (expired), before any data, and with nulls.
fn spine_rows(rng: &mut Rng, base: i64, users: &[Write]) -> Vec<SpineRow> {
    let mut rows = Vec::new();
    // Over two requests' worth of lookups (4,096 each), so the join
    // splits them over its connections.
    for i in 0..9000 {
        let user = rng.below(USERS as u64) as i64;
        let item = ITEMS[rng.below(3) as usize];
        let w = &users[rng.below(users.len() as u64) as usize];
        let ts = match i % 6 {
            0 => base - DAY_US + rng.below(12 * 24) as i64 * HOUR_US,
            1 => w.event_ts,
            2 => w.event_ts + DAY_US,
            3 => w.event_ts + DAY_US + 1,
            4 => base - 1 - rng.below(1000) as i64,
            _ => base + rng.below(11 * DAY_US as u64) as i64,
        };
        // Rows timed by a write are for that write's user.
        let key_user = match (i % 6, &w.key[0]) {
            (1..=3, Value::Int64(u)) => *u,
            _ => user,
        };
        let row = match i % 50 {
            7 => (None, Some(item), Some(ts)),
            8 => (Some(key_user), Some(item), None),
            9 => (Some(key_user), None, Some(ts)),
            _ => (Some(key_user), Some(item), Some(ts)),
        };
        rows.push(row);
    }
    rows
}

fn write_spine(path: &Path, rows: &[SpineRow]) {
    let users = Int64Array::from_iter(rows.iter().map(|r| r.0));
    let products = StringArray::from_iter(rows.iter().map(|r| r.1));
    let ts = TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.2)).with_timezone("UTC");
    let labels = Int64Array::from_iter_values(0..rows.len() as i64);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("user_id", Arc::new(users)),
        ("product", Arc::new(products)),
        ("ts", Arc::new(ts)),
        ("label", Arc::new(labels)),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("batch");
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).expect("create"), schema, None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn pit_join(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut all = vec!["pit-join"];
    all.extend_from_slice(args);
    common::run_cli(server, &all, None)
}

/// Runs `tessera pit-join`, which must succeed.
fn pit_join_ok(server: &TestServer, args: &[&str]) {
    let result = pit_join(server, args);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> &'b ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("output column `{name}`"))
}

/// A slate of one key as of `ts`: the served values of `features`.
fn served(c: &mut Client, group: &str, key: Vec<Value>, ts: i64, features: &[&str]) -> Vec<Value> {
    let reply = c
        .get_slate(&SlateRequest {
            as_of: Some(ts),
            known_at: None,
            parts: vec![SlatePart {
                group: group.into(),
                features: features.iter().map(|f| f.to_string()).collect(),
                keys: vec![key],
            }],
        })
        .expect("slate");
    let part = &reply.parts()[0];
    part.columns().iter().map(|col| col.value(0)).collect()
}

#[test]
fn pit_join_matches_the_reference_and_what_serving_returns() {
    let server = TestServer::start(None);
    let mut c = server.client();
    apply(&mut c);
    let base = now_us() - 300 * DAY_US;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let (users, pairs) = generate(&mut rng, base);
    send(&mut c, "u", &["user_id", "score", "count"], &users);
    send(&mut c, "p", &["user_id", "item", "w"], &pairs);
    let rows = spine_rows(&mut rng, base, &users);
    let spine = server.dir.join("spine.parquet");
    let out = server.dir.join("train.parquet");
    write_spine(&spine, &rows);

    pit_join_ok(
        &server,
        &[
            "--spine",
            spine.to_str().expect("path"),
            "--timestamp-column",
            "ts",
            "--features",
            "u:score,count",
            "--features",
            "p",
            "--key-map",
            "p:item=product",
            "--connections",
            "3",
            "--out",
            out.to_str().expect("path"),
        ],
    );
    let batches = read_parquet(&out);
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, rows.len(), "every spine row is kept");
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "user_id",
            "product",
            "ts",
            "label",
            "u__score",
            "u__count",
            "u__event_ts",
            "p__w",
            "p__event_ts"
        ]
    );
    assert_eq!(
        column(&batches[0], "u__event_ts").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );

    let mut checked: HashMap<&str, usize> = HashMap::new();
    let mut i = 0;
    for batch in &batches {
        let label = column(batch, "label").as_primitive::<Int64Type>();
        let score = column(batch, "u__score").as_primitive::<Float64Type>();
        let count = column(batch, "u__count").as_primitive::<Int64Type>();
        let u_ts = column(batch, "u__event_ts").as_primitive::<TimestampMicrosecondType>();
        let w = column(batch, "p__w").as_primitive::<Float32Type>();
        let p_ts = column(batch, "p__event_ts").as_primitive::<TimestampMicrosecondType>();
        for r in 0..batch.num_rows() {
            assert_eq!(label.value(r), i as i64, "spine order is kept");
            let (user, item, ts) = rows[i];
            let user_key = user.map(|u| vec![Value::Int64(u)]);
            let want_u = match (&user_key, ts) {
                (Some(k), Some(ts)) => reference(&users, k, ts, DAY_US),
                _ => None,
            };
            let got_ts = (!u_ts.is_null(r)).then(|| u_ts.value(r));
            assert_eq!(got_ts, want_u.map(|w| w.event_ts), "row {i}: u__event_ts");
            let values = want_u.and_then(|w| w.values.clone());
            let want_score = values.as_ref().and_then(|v| match v[0] {
                Value::Float64(x) => Some(x),
                _ => None,
            });
            let want_count = values.as_ref().and_then(|v| match v[1] {
                Value::Int64(x) => Some(x),
                _ => None,
            });
            assert_eq!(
                (!score.is_null(r)).then(|| score.value(r)),
                want_score,
                "row {i}: score"
            );
            assert_eq!(
                (!count.is_null(r)).then(|| count.value(r)),
                want_count,
                "row {i}: count"
            );
            let pair_key = match (user, item) {
                (Some(u), Some(it)) => Some(vec![Value::Int64(u), Value::String(it.into())]),
                _ => None,
            };
            let want_p = match (&pair_key, ts) {
                (Some(k), Some(ts)) => reference(&pairs, k, ts, 3650 * DAY_US),
                _ => None,
            };
            let got_w = (!w.is_null(r)).then(|| w.value(r));
            let want_w = want_p.and_then(|p| match p.values.as_ref()?[0] {
                Value::Float32(x) => Some(x),
                _ => None,
            });
            assert_eq!(got_w, want_w, "row {i}: p__w");
            assert_eq!(
                (!p_ts.is_null(r)).then(|| p_ts.value(r)),
                want_p.map(|p| p.event_ts),
                "row {i}: p__event_ts"
            );
            // What serving returns for the same key and time is what
            // training gets: no skew.
            if let (Some(k), Some(ts)) = (&user_key, ts) {
                let online = served(&mut c, "u", k.clone(), ts, &["score", "count"]);
                let offline = [
                    want_score.map_or(Value::Null, Value::Float64),
                    want_count.map_or(Value::Null, Value::Int64),
                ];
                assert_eq!(online, offline, "row {i}: slate as of ts");
            }
            let case = match (want_u, ts) {
                (_, None) => "null time",
                (None, Some(ts)) if ts < base => "before any data",
                (None, _) => "null result",
                (Some(w), Some(ts)) if w.event_ts == ts - DAY_US => "ttl edge kept",
                (Some(w), Some(ts)) if w.event_ts == ts => "exact time",
                (Some(_), _) => "found",
            };
            *checked.entry(case).or_default() += 1;
            i += 1;
        }
    }
    for case in [
        "null time",
        "before any data",
        "null result",
        "ttl edge kept",
        "exact time",
        "found",
    ] {
        assert!(
            checked.get(case).copied().unwrap_or(0) > 0,
            "no `{case}` rows: {checked:?}"
        );
    }
}

#[test]
fn known_at_lag_reads_only_what_was_ingested_in_time() {
    let server = TestServer::start(None);
    let mut c = server.client();
    apply(&mut c);
    let columns = ["user_id", "score", "count"];
    let event = now_us() - HOUR_US;
    let write = |score: f64| Write {
        key: vec![Value::Int64(1)],
        event_ts: event,
        values: Some(vec![Value::Float64(score), Value::Int64(1)]),
    };
    send(&mut c, "u", &columns, &[write(1.0)]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // A correction of the same event, ingested two seconds later.
    send(&mut c, "u", &columns, &[write(2.0)]);
    let spine = server.dir.join("spine.parquet");
    write_spine(&spine, &[(Some(1), Some("a"), Some(now_us()))]);
    let join = |lag: Option<&str>| -> Option<f64> {
        let out = server.dir.join("out.parquet");
        let mut args = vec![
            "--spine",
            spine.to_str().expect("path"),
            "--features",
            "u:score",
            "--out",
            out.to_str().expect("path"),
        ];
        if let Some(lag) = lag {
            args.extend(["--known-at-lag", lag]);
        }
        pit_join_ok(&server, &args);
        let batches = read_parquet(&out);
        let score = column(&batches[0], "u__score").as_primitive::<Float64Type>();
        (!score.is_null(0)).then(|| score.value(0))
    };
    assert_eq!(
        join(None),
        Some(2.0),
        "without a lag the correction is seen"
    );
    assert_eq!(
        join(Some("1s")),
        Some(1.0),
        "with a 1 s lag it was not known yet"
    );
    assert_eq!(join(Some("1h")), None, "an hour earlier nothing was known");
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let server = TestServer::start(None);
    let mut c = server.client();
    apply(&mut c);
    let spine = server.dir.join("spine.parquet");
    write_spine(&spine, &[(Some(1), Some("a"), Some(now_us()))]);
    let not_parquet = server.dir.join("labels.csv");
    std::fs::write(&not_parquet, "user_id,ts\n1,2\n").expect("write");
    let out = server.dir.join("never.parquet");
    let out_s = out.to_str().expect("path");
    let spine_s = spine.to_str().expect("path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--spine",
                not_parquet.to_str().expect("path"),
                "--features",
                "u",
                "--out",
                out_s,
            ],
            "not a readable Parquet file",
        ),
        (
            vec!["--spine", spine_s, "--features", "nope", "--out", out_s],
            "unknown group `nope`",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--features",
                "u:missing",
                "--out",
                out_s,
            ],
            "no feature `missing`",
        ),
        (
            vec!["--spine", spine_s, "--features", "p", "--out", out_s],
            "no column `item` (key `item` of group `p`; map it with --key-map)",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--timestamp-column",
                "when",
                "--features",
                "u",
                "--out",
                out_s,
            ],
            "no column `when`",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--features",
                "u",
                "--key-map",
                "p:item",
                "--out",
                out_s,
            ],
            "write GROUP:key_column=spine_column",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--features",
                "u",
                "--features",
                "u",
                "--out",
                out_s,
            ],
            "two columns named `u__score`",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--features",
                "u",
                "--known-at-lag",
                "soon",
                "--out",
                out_s,
            ],
            "is not a duration",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--features",
                "u",
                "--connections",
                "0",
                "--out",
                out_s,
            ],
            "--connections 0: give 1 to 16",
        ),
        (
            vec![
                "--spine",
                spine_s,
                "--features",
                "u",
                "--chunk-rows",
                "0",
                "--out",
                out_s,
            ],
            "--chunk-rows 0: give 1 to 4194304",
        ),
    ];
    for (args, message) in cases {
        let result = pit_join(&server, &args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} left an output file");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&server.dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A spine of several record batches and several chunks (the join reads
/// 65,536-row batches and sorts lookups per 262,144-row chunk): every row
/// keeps its place and gets its own version.
#[test]
fn a_spine_of_many_batches_and_chunks_keeps_its_order() {
    let server = TestServer::start(None);
    let mut c = server.client();
    apply(&mut c);
    let base = now_us() - 100 * DAY_US;
    // User u has versions at base + (u + 7k) hours, k = 0..10.
    let writes: Vec<Write> = (0..20i64)
        .flat_map(|u| {
            (0..10i64).map(move |k| Write {
                key: vec![Value::Int64(u)],
                event_ts: base + (u + 7 * k) * HOUR_US,
                values: Some(vec![Value::Float64(k as f64), Value::Int64(u)]),
            })
        })
        .collect();
    send(&mut c, "u", &["user_id", "score", "count"], &writes);
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let rows: Vec<SpineRow> = (0..300_000)
        .map(|_| {
            let u = rng.below(24) as i64;
            let ts = base - 5 * HOUR_US + rng.below(100 * HOUR_US as u64) as i64;
            (Some(u), Some("a"), Some(ts))
        })
        .collect();
    let spine = server.dir.join("big-spine.parquet");
    let out = server.dir.join("big-train.parquet");
    write_spine(&spine, &rows);
    pit_join_ok(
        &server,
        &[
            "--spine",
            spine.to_str().expect("path"),
            "--features",
            "u:score",
            // Five chunks of one record batch each.
            "--chunk-rows",
            "65536",
            "--out",
            out.to_str().expect("path"),
        ],
    );
    let mut i = 0;
    for batch in read_parquet(&out) {
        let label = column(&batch, "label").as_primitive::<Int64Type>();
        let ts = column(&batch, "u__event_ts").as_primitive::<TimestampMicrosecondType>();
        for r in 0..batch.num_rows() {
            assert_eq!(label.value(r), i as i64, "spine order is kept");
            let (Some(u), _, Some(at)) = rows[i] else {
                unreachable!("every generated row has a user and a time")
            };
            // The newest version at or before `at`, within the 1-day TTL.
            let want = (u < 20)
                .then(|| (0..10i64).map(|k| base + (u + 7 * k) * HOUR_US))
                .into_iter()
                .flatten()
                .filter(|&e| e <= at)
                .max()
                .filter(|&e| e >= at - DAY_US);
            assert_eq!((!ts.is_null(r)).then(|| ts.value(r)), want, "row {i}");
            i += 1;
        }
    }
    assert_eq!(i, rows.len());
}

#[test]
fn every_feature_type_joins_as_serving_reads_it() {
    let server = TestServer::start(None);
    let mut c = server.client();
    apply(&mut c);
    let base = now_us() - 10 * DAY_US;
    const COLUMNS: [&str; 11] = [
        "user_id", "b", "i32", "f32", "s", "raw", "at", "emb", "li", "lf", "ls",
    ];
    // The types of COLUMNS[1..], as group `t` declares them.
    const TYPES: [FeatureType; 10] = [
        FeatureType::Bool,
        FeatureType::Int32,
        FeatureType::Float32,
        FeatureType::String,
        FeatureType::Bytes,
        FeatureType::Timestamp,
        FeatureType::Embedding(3),
        FeatureType::List(ElementType::Int64),
        FeatureType::List(ElementType::Float32),
        FeatureType::List(ElementType::String),
    ];
    // Users 0..4 get two versions, a day apart; user 3's second one has
    // nulls; users 4.. have none.
    let writes: Vec<Write> = (0..4i64)
        .flat_map(|u| {
            (0..2i64).map(move |k| {
                let n = (u * 10 + k) as i32;
                let values = if u == 3 && k == 1 {
                    vec![Value::Null; COLUMNS.len() - 1]
                } else {
                    vec![
                        Value::Bool(n % 2 == 0),
                        Value::Int32(n),
                        Value::Float32(n as f32 / 4.0),
                        Value::String(format!("s{n}")),
                        Value::Bytes(vec![n as u8; 3]),
                        Value::Timestamp(base + i64::from(n)),
                        Value::Embedding(vec![n as f32, 0.5, -1.0]),
                        Value::ListInt64((0..i64::from(n % 4)).collect()),
                        Value::ListFloat32(vec![n as f32; (n % 3) as usize]),
                        Value::ListString(vec![format!("t{n}"); (n % 2) as usize + 1]),
                    ]
                };
                Write {
                    key: vec![Value::Int64(u)],
                    event_ts: base + k * DAY_US,
                    values: Some(values),
                }
            })
        })
        .collect();
    send(&mut c, "t", &COLUMNS, &writes);
    // Each user before any version, between the two and after both, a
    // spine row without a user and one without a time.
    let mut rows: Vec<SpineRow> = (0..6i64)
        .flat_map(|u| {
            [-HOUR_US, HOUR_US, DAY_US + HOUR_US]
                .map(move |dt| (Some(u), Some("a"), Some(base + dt)))
        })
        .collect();
    rows.push((None, Some("a"), Some(base + HOUR_US)));
    rows.push((Some(1), Some("a"), None));
    let spine = server.dir.join("typed-spine.parquet");
    let out = server.dir.join("typed-train.parquet");
    write_spine(&spine, &rows);
    let features = format!("t:{}", COLUMNS[1..].join(","));
    pit_join_ok(
        &server,
        &[
            "--spine",
            spine.to_str().expect("path"),
            "--features",
            &features,
            "--out",
            out.to_str().expect("path"),
        ],
    );
    let batches = read_parquet(&out);
    let joined: Vec<Vec<Value>> = batches
        .iter()
        .flat_map(|batch| {
            (0..batch.num_rows()).map(move |r| {
                COLUMNS[1..]
                    .iter()
                    .zip(TYPES)
                    .map(|(f, ty)| {
                        let array = column(batch, &format!("t__{f}"));
                        OutputColumn::new(Target::Feature(ty), array)
                            .and_then(|c| c.value(r))
                            .expect("an output value")
                    })
                    .collect()
            })
        })
        .collect();
    assert_eq!(joined.len(), rows.len());
    for (i, row) in rows.iter().enumerate() {
        let want = match row {
            (Some(u), _, Some(ts)) => {
                served(&mut c, "t", vec![Value::Int64(*u)], *ts, &COLUMNS[1..])
            }
            _ => vec![Value::Null; COLUMNS.len() - 1],
        };
        assert_eq!(joined[i], want, "spine row {i}: {row:?}");
    }
    // The checks above compare with serving: make sure they saw values.
    // Users 0..3 after each version and user 3 after its first (its second
    // is all nulls).
    assert_eq!(joined.iter().filter(|r| r[0] != Value::Null).count(), 7);
}
