//! `tessera export` and the `EXPORT` stream: every registry type to its
//! Parquet type, snapshots as of a time equal to what slates read, history
//! with tombstones, one consistent snapshot while writes go on, and bad
//! input refused without leaving a file.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use common::{now_us, read_parquet, TestServer, DAY_US};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tessera_protocol::{
    Client, Delete, ExportRange, ExportRequest, Put, PutRow, SlatePart, SlateRequest, SpecFile,
    Value,
};

const SPEC: &str = r#"
[[entity]]
name = "things"
keys = [{ name = "shop", type = "string" }, { name = "thing_id", type = "int64" }]

[[group]]
name = "all_types"
entity = "things"
ttl = "10d"
retention = "3650d"
owner = "tests"

[[group.feature]]
name = "b"
type = "bool"
[[group.feature]]
name = "i32"
type = "int32"
[[group.feature]]
name = "i64"
type = "int64"
[[group.feature]]
name = "f32"
type = "float32"
[[group.feature]]
name = "f64"
type = "float64"
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
type = "embedding(4)"
[[group.feature]]
name = "li"
type = "list<int64>"
[[group.feature]]
name = "lf"
type = "list<float32>"
[[group.feature]]
name = "ls"
type = "list<string>"

[[entity]]
name = "counters"
keys = [{ name = "id", type = "int64" }]

[[group]]
name = "rounds"
entity = "counters"
ttl = "3650d"
retention = "3650d"
owner = "tests"

[[group.feature]]
name = "round"
type = "int64"
"#;

const COLUMNS: [&str; 14] = [
    "shop", "thing_id", "b", "i32", "i64", "f32", "f64", "s", "raw", "at", "emb", "li", "lf", "ls",
];

fn setup() -> (TestServer, Client) {
    let server = TestServer::start(None);
    let mut c = server.client();
    let files = vec![SpecFile {
        name: "export.toml".into(),
        text: SPEC.into(),
    }];
    let (version, _, _) = c.registry_plan(files.clone()).expect("plan");
    c.registry_apply(version, files).expect("apply");
    (server, c)
}

/// A row of every type for thing `id` (`v` varies the values); odd ids
/// leave the nullable features null.
fn row(id: i64, v: i64, event_ts: i64) -> PutRow {
    let full = id % 2 == 0;
    let or_null = |value: Value| if full { value } else { Value::Null };
    PutRow {
        event_ts,
        values: vec![
            Value::String(format!("shop{}", id % 3)),
            Value::Int64(id),
            Value::Bool(v % 2 == 0),
            or_null(Value::Int32(v as i32 * 3)),
            Value::Int64(v * 1000),
            or_null(Value::Float32(v as f32 / 4.0)),
            Value::Float64(v as f64 / 8.0),
            or_null(Value::String(format!("s{v}"))),
            or_null(Value::Bytes(vec![v as u8, 0, 255])),
            Value::Timestamp(event_ts - v),
            or_null(Value::Embedding(vec![v as f32, 1.0, 2.0, 3.0])),
            or_null(Value::ListInt64(vec![v, -v])),
            or_null(Value::ListFloat32(vec![0.5; (v % 3) as usize])),
            or_null(Value::ListString(vec![format!("x{v}"), String::new()])),
        ],
    }
}

fn put(c: &mut Client, rows: Vec<PutRow>) {
    c.put(&Put {
        group: "all_types".into(),
        columns: COLUMNS.iter().map(|s| s.to_string()).collect(),
        rows,
    })
    .expect("put");
}

fn export(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    common::run_cli(server, &all, None)
}

/// Row `r` of `batch` as values in the order of [`COLUMNS`] (keys then
/// features), read back from Arrow.
fn exported_row(batch: &RecordBatch, r: usize) -> Vec<Value> {
    COLUMNS
        .iter()
        .map(|name| {
            let a = batch.column_by_name(name).expect("column");
            if a.is_null(r) {
                return Value::Null;
            }
            match a.data_type() {
                DataType::Boolean => Value::Bool(a.as_boolean().value(r)),
                DataType::Int32 => Value::Int32(a.as_primitive::<Int32Type>().value(r)),
                DataType::Int64 => Value::Int64(a.as_primitive::<Int64Type>().value(r)),
                DataType::Float32 => Value::Float32(a.as_primitive::<Float32Type>().value(r)),
                DataType::Float64 => Value::Float64(a.as_primitive::<Float64Type>().value(r)),
                DataType::Utf8 => Value::String(a.as_string::<i32>().value(r).to_owned()),
                DataType::Binary => Value::Bytes(a.as_binary::<i32>().value(r).to_vec()),
                DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
                    Value::Timestamp(a.as_primitive::<TimestampMicrosecondType>().value(r))
                }
                DataType::FixedSizeList(_, 4) => {
                    let v = a.as_fixed_size_list().value(r);
                    Value::Embedding(v.as_primitive::<Float32Type>().values().to_vec())
                }
                DataType::List(f) => {
                    let v = a.as_list::<i32>().value(r);
                    match f.data_type() {
                        DataType::Int64 => {
                            Value::ListInt64(v.as_primitive::<Int64Type>().values().to_vec())
                        }
                        DataType::Float32 => {
                            Value::ListFloat32(v.as_primitive::<Float32Type>().values().to_vec())
                        }
                        _ => {
                            let s = v.as_string::<i32>();
                            Value::ListString((0..s.len()).map(|j| s.value(j).to_owned()).collect())
                        }
                    }
                }
                other => panic!("column `{name}` has unexpected type {other}"),
            }
        })
        .collect()
}

#[test]
fn every_type_exports_as_of_a_time_exactly_as_a_slate_reads_it() {
    let (server, mut c) = setup();
    let t = now_us() - 20 * DAY_US;
    // Version 1 of every thing, version 2 of most, a tombstone for some,
    // and a late arrival older than version 1 for a few.
    put(&mut c, (0..60).map(|id| row(id, id, t)).collect());
    put(
        &mut c,
        (0..60)
            .filter(|id| id % 4 != 3)
            .map(|id| row(id, id + 100, t + DAY_US))
            .collect(),
    );
    put(
        &mut c,
        (0..60)
            .filter(|id| id % 7 == 0)
            .map(|id| row(id, id + 200, t - DAY_US))
            .collect(),
    );
    let keys: Vec<Vec<Value>> = (0..60)
        .map(|id| vec![Value::String(format!("shop{}", id % 3)), Value::Int64(id)])
        .collect();
    c.delete(&Delete {
        group: "all_types".into(),
        keys: keys
            .iter()
            .step_by(5)
            .map(|k| (t + 2 * DAY_US, k.clone()))
            .collect(),
    })
    .expect("delete");

    // Four readings: now (TTL has expired everything), as of version 2,
    // as of between the versions, as of after the tombstones.
    for as_of in [
        None,
        Some(t + DAY_US),
        Some(t + DAY_US / 2),
        Some(t + 3 * DAY_US),
    ] {
        let out = server.dir.join("snap.parquet");
        let mut args = vec!["--group", "all_types", "--out", out.to_str().expect("path")];
        let as_of_text = as_of.map(|a| a.to_string());
        if let Some(a) = &as_of_text {
            args.extend(["--as-of", a.as_str()]);
        }
        let result = export(&server, &args);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let batches = read_parquet(&out);
        let mut got = Vec::new();
        for b in &batches {
            let schema = b.schema();
            let emb = schema.field_with_name("emb").expect("emb");
            assert!(matches!(emb.data_type(), DataType::FixedSizeList(_, 4)));
            let ts = b.column_by_name("event_ts").expect("event_ts");
            for r in 0..b.num_rows() {
                let event_ts = ts.as_primitive::<TimestampMicrosecondType>().value(r);
                got.push((exported_row(b, r), event_ts));
            }
        }
        // The same keys through a slate with the same as_of.
        let reply = c
            .get_slate(&SlateRequest {
                as_of,
                known_at: None,
                parts: vec![SlatePart {
                    group: "all_types".into(),
                    features: COLUMNS[2..].iter().map(|s| s.to_string()).collect(),
                    keys: keys.clone(),
                }],
            })
            .expect("slate");
        let part = &reply.parts()[0];
        let mut want = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if part.found(i) {
                let mut values = key.clone();
                values.extend(part.columns().iter().map(|col| col.value(i)));
                want.push((values, part.event_ts(i)));
            }
        }
        // The export is in key order: shop, then thing_id.
        want.sort_by_key(|(values, _)| match &values[..2] {
            [Value::String(shop), Value::Int64(id)] => (shop.clone(), *id),
            other => panic!("unexpected key {other:?}"),
        });
        assert_eq!(got, want, "as of {as_of:?}");
        if as_of == Some(t + 3 * DAY_US) {
            assert_eq!(got.len(), 60 - 12, "tombstoned things are left out");
        }
        if as_of.is_none() {
            assert!(got.is_empty(), "the TTL has expired every row");
        }
    }
}

#[test]
fn history_exports_every_version_in_the_range_with_tombstones() {
    let (server, mut c) = setup();
    let t = now_us() - 5 * DAY_US;
    put(&mut c, (0..10).map(|id| row(id, id, t)).collect());
    put(
        &mut c,
        (0..10).map(|id| row(id, id + 1, t + 1000)).collect(),
    );
    put(
        &mut c,
        (0..10).map(|id| row(id, id + 2, t + 5000)).collect(),
    );
    c.delete(&Delete {
        group: "all_types".into(),
        keys: vec![(
            t + 2000,
            vec![Value::String("shop0".into()), Value::Int64(0)],
        )],
    })
    .expect("delete");
    let out = server.dir.join("history.parquet");
    let (from, to) = ((t + 1000).to_string(), (t + 2000).to_string());
    let result = export(
        &server,
        &[
            "--group",
            "all_types",
            "--history",
            "--from",
            &from,
            "--to",
            &to,
            "--features",
            "i64,emb",
            "--out",
            out.to_str().expect("path"),
        ],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let batches = read_parquet(&out);
    let b = &batches[0];
    let names: Vec<&str> = b
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "shop",
            "thing_id",
            "event_ts",
            "ingest_ts",
            "deleted",
            "i64",
            "emb"
        ]
    );
    assert_eq!(b.num_rows(), 11, "ten versions at t+1000 and one tombstone");
    let deleted = b.column_by_name("deleted").expect("deleted").as_boolean();
    let i64s = b
        .column_by_name("i64")
        .expect("i64")
        .as_primitive::<Int64Type>();
    let ts = b.column_by_name("event_ts").expect("ts");
    let ingest = b.column_by_name("ingest_ts").expect("ingest_ts");
    let mut tombstones = 0;
    for r in 0..b.num_rows() {
        let event = ts.as_primitive::<TimestampMicrosecondType>().value(r);
        assert!(ingest.as_primitive::<TimestampMicrosecondType>().value(r) > event);
        if deleted.value(r) {
            tombstones += 1;
            assert_eq!(event, t + 2000);
            assert!(i64s.is_null(r), "a tombstone has no values");
        } else {
            assert_eq!(event, t + 1000);
        }
    }
    assert_eq!(tombstones, 1);
}

#[test]
fn an_export_reads_one_snapshot_while_writes_go_on() {
    let (server, mut c) = setup();
    const N: i64 = 40_000;
    const BATCH: i64 = 2_000;
    let t = now_us() - DAY_US;
    // Round r writes `round = r` to ids 0, 1, ..., N-1 in that order, each
    // batch atomic. Any consistent snapshot therefore sees a prefix of ids
    // at round r+1 and the rest at round r; an export that read live data
    // chunk by chunk would see later ids at later rounds.
    let write_round = move |c: &mut Client, r: i64| {
        for start in (0..N).step_by(BATCH as usize) {
            c.put(&Put {
                group: "rounds".into(),
                columns: vec!["id".into(), "round".into()],
                rows: (start..start + BATCH)
                    .map(|id| PutRow {
                        event_ts: t + r,
                        values: vec![Value::Int64(id), Value::Int64(r)],
                    })
                    .collect(),
            })
            .expect("put");
        }
    };
    write_round(&mut c, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut wc = server.client();
        std::thread::spawn(move || {
            let mut r = 1;
            while !stop.load(Ordering::SeqCst) {
                write_round(&mut wc, r);
                r += 1;
            }
            r - 1
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut rounds = Vec::with_capacity(N as usize);
    let mut chunks = 0;
    {
        let mut stream = c
            .export(&ExportRequest {
                group: "rounds".into(),
                features: vec![],
                range: ExportRange::Snapshot {
                    as_of: None,
                    known_at: None,
                },
            })
            .expect("export");
        while let Some(chunk) = stream.next_chunk().expect("chunk") {
            chunks += 1;
            let id = chunk.column("id").expect("id column");
            let round = chunk.column("round").expect("round column");
            for i in 0..chunk.rows() {
                assert_eq!(id.i64_at(i), Some(rounds.len() as i64), "ids in key order");
                rounds.push(round.i64_at(i).expect("round"));
            }
            // A slow reader: the writer moves on meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let last_round = writer.join().expect("writer");
    assert_eq!(rounds.len(), N as usize);
    assert!(chunks >= 3, "the export spanned {chunks} chunks");
    let (first, last) = (rounds[0], rounds[N as usize - 1]);
    assert!(
        rounds.windows(2).all(|w| w[0] >= w[1]) && first - last <= 1,
        "not one snapshot: rounds go from {first} to {last}"
    );
    assert!(
        last_round > first + 1,
        "the writer finished {last_round} rounds; the export saw round {first}"
    );
    // The connection carries on after the stream.
    assert_eq!(c.ping(b"after").expect("ping"), b"after");
}

#[test]
fn bad_exports_are_refused_without_leaving_a_file() {
    let (server, _c) = setup();
    let out = server.dir.join("never.parquet");
    let out_s = out.to_str().expect("path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--group", "nope", "--out", out_s],
            "unknown group `nope`",
        ),
        (
            vec!["--group", "all_types", "--features", "zz", "--out", out_s],
            "no feature `zz`",
        ),
        (
            vec![
                "--group",
                "all_types",
                "--as-of",
                "yesterday",
                "--out",
                out_s,
            ],
            "yesterday",
        ),
        (
            vec![
                "--group",
                "all_types",
                "--history",
                "--from",
                "10",
                "--to",
                "5",
                "--out",
                out_s,
            ],
            "the range is empty",
        ),
        (
            vec!["--group", "all_types", "--from", "10", "--out", out_s],
            "--history",
        ),
    ];
    for (args, message) in cases {
        let result = export(&server, &args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} left an output file");
    }
}

#[test]
fn stream_errors_limits_and_abandoned_streams_leave_the_server_serving() {
    let (server, mut c) = setup();
    put(
        &mut c,
        (0..5000).map(|id| row(id, id, now_us() - DAY_US)).collect(),
    );
    let unknown = ExportRequest {
        group: "nope".into(),
        features: vec![],
        range: ExportRange::Snapshot {
            as_of: None,
            known_at: None,
        },
    };
    let mut stream = c.export(&unknown).expect("sent");
    let err = stream.next_chunk().expect_err("unknown group");
    assert_eq!(
        common::server_code(err),
        tessera_protocol::ErrorCode::UnknownGroup
    );
    assert!(stream.next_chunk().expect("ended").is_none());
    drop(stream);
    assert_eq!(c.ping(b"still").expect("ping"), b"still");

    // A stream abandoned after its first chunk: the client drops the
    // connection, and the server carries on with others.
    let all = ExportRequest {
        group: "all_types".into(),
        ..unknown
    };
    {
        let mut stream = c.export(&all).expect("export");
        assert!(stream.next_chunk().expect("first chunk").is_some());
    }
    let mut other = server.client();
    assert_eq!(other.ping(b"other").expect("ping"), b"other");
    // The client reconnects for its next call.
    let rows: usize = {
        let mut stream = c.export(&all).expect("export again");
        let mut n = 0;
        while let Some(chunk) = stream.next_chunk().expect("chunk") {
            n += chunk.rows();
        }
        n
    };
    assert_eq!(rows, 5000);

    // PIT_LOOKUP limits.
    let too_many = tessera_protocol::PitLookup {
        group: "rounds".into(),
        features: vec![],
        known_at_lag: None,
        keys: (0..tessera_protocol::MAX_PIT_KEYS as i64 + 1)
            .map(|i| (0, vec![Value::Int64(i)]))
            .collect(),
    };
    let code = common::server_code(c.pit_lookup(&too_many).expect_err("over the limit"));
    assert!(
        matches!(
            code,
            tessera_protocol::ErrorCode::LimitExceeded | tessera_protocol::ErrorCode::BadRequest
        ),
        "{code:?}"
    );
    let negative = tessera_protocol::PitLookup {
        known_at_lag: Some(-1),
        keys: vec![(0, vec![Value::Int64(1)])],
        ..too_many
    };
    let code = common::server_code(c.pit_lookup(&negative).expect_err("negative lag"));
    assert_eq!(code, tessera_protocol::ErrorCode::Validation);
    assert_eq!(c.ping(b"end").expect("ping"), b"end");
}
