//! Replays each fuzz target's corpus (`fuzz/corpus/<target>/`) through the
//! target's body in `tessera_tests::fuzz`, so `cargo test` guards every
//! input the fuzzers found, crash reproducers included, without libFuzzer.
//!
//! `write_seed_corpora` (ignored) regenerates the seed inputs, each
//! produced by the real encoders:
//! `cargo test -p tessera-tests --test fuzz_corpus -- --ignored write_seed_corpora`.

use std::sync::Arc;
use tessera_tests::fuzz;

fn replay(name: &str, body: fn(&[u8])) {
    let n = fuzz::replay_corpus(name, body);
    assert!(n > 0, "the corpus of {name} is empty");
}

#[test]
fn protocol_frame_corpus() {
    replay("protocol_frame", fuzz::protocol_frame);
}

#[test]
fn protocol_message_corpus() {
    replay("protocol_message", fuzz::protocol_message);
}

#[test]
fn sst_block_corpus() {
    replay("sst_block", fuzz::sst_block);
}

#[test]
fn sst_index_corpus() {
    replay("sst_index", fuzz::sst_index);
}

#[test]
fn wal_replay_corpus() {
    replay("wal_replay", fuzz::wal_replay);
}

#[test]
fn registry_spec_corpus() {
    replay("registry_spec", fuzz::registry_spec);
}

#[test]
fn parquet_import_corpus() {
    replay("parquet_import", fuzz::parquet_import);
}

/// Writes `seed-<name>` into target `target`'s corpus, checking that the
/// body accepts it.
fn seed(target: &str, name: &str, data: &[u8], body: fn(&[u8])) {
    let dir = fuzz::corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    body(data);
    std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
}

#[test]
#[ignore = "writes the seed corpora into fuzz/corpus"]
fn write_seed_corpora() {
    protocol_seeds();
    sst_seeds();
    wal_seeds();
    registry_seeds();
    parquet_seeds();
}

fn requests() -> Vec<tessera_protocol::Request> {
    use tessera_protocol::*;
    let key = vec![Value::String("shop".into()), Value::Int64(42)];
    let row = PutRow {
        event_ts: 1_700_000_000_000_000,
        values: vec![
            Value::Int64(42),
            Value::Float32(0.5),
            Value::String("x".into()),
            Value::Null,
            Value::Embedding(vec![1.0, 2.0]),
            Value::ListString(vec!["a".into(), "bc".into()]),
            Value::Bool(true),
        ],
    };
    let columns: Vec<String> = ["id", "f", "s", "n", "e", "ls", "b"]
        .map(String::from)
        .to_vec();
    let files = vec![SpecFile {
        name: "a.toml".into(),
        text: fuzz::IMPORT_SPEC.into(),
    }];
    vec![
        Request::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client: "fuzz".into(),
            token: "secret".into(),
        }),
        Request::Ping(b"ping".to_vec()),
        Request::RegistryGet,
        Request::RegistryPlan(files.clone()),
        Request::RegistryApply {
            expected_version: 3,
            files,
        },
        Request::RegistryHistory { limit: 10 },
        Request::Put(Put {
            group: "g".into(),
            columns: columns.clone(),
            rows: vec![row.clone(), row.clone()],
        }),
        Request::Delete(Delete {
            group: "g".into(),
            keys: vec![(5, key.clone()), (6, vec![Value::Int64(1)])],
        }),
        Request::GetSlate(SlateRequest {
            as_of: Some(100),
            known_at: None,
            parts: vec![SlatePart {
                group: "g".into(),
                features: vec!["f".into()],
                keys: vec![key.clone(), key.clone()],
            }],
        }),
        Request::History(HistoryRequest {
            group: "g".into(),
            key: key.clone(),
            from: 0,
            to: i64::MAX,
            features: vec![],
        }),
        Request::Stats,
        Request::ImportBegin(ImportBegin {
            group: "g".into(),
            columns,
            reject_invalid: true,
            max_rows_per_s: 1000,
        }),
        Request::ImportRows(ImportRows {
            session: 9,
            first_row: 100,
            rows: ImportBatch::from_rows(
                &[
                    ("id", tag::INT64, 0),
                    ("f", tag::FLOAT32, 0),
                    ("s", tag::STRING, 0),
                    ("n", tag::FLOAT64, 0),
                    ("e", tag::EMBEDDING, 2),
                    ("ls", tag::LIST_STRING, 0),
                    ("b", tag::BOOL, 0),
                ]
                .map(|(name, tag, dim)| ColumnSpec { name, tag, dim }),
                std::slice::from_ref(&row),
            )
            .expect("a batch"),
        }),
        Request::ImportCommit { session: 9 },
        Request::ImportAbort { session: 9 },
        Request::Export(ExportRequest {
            group: "g".into(),
            features: vec!["f".into()],
            range: ExportRange::History { from: 1, to: 2 },
        }),
        Request::Export(ExportRequest {
            group: "g".into(),
            features: vec![],
            range: ExportRange::Snapshot {
                as_of: Some(5),
                known_at: Some(6),
            },
        }),
        Request::PitLookup(PitLookup {
            group: "g".into(),
            features: vec![],
            known_at_lag: Some(60),
            keys: vec![(10, key)],
        }),
    ]
}

/// A slate reply body with a column of every type.
fn slate_body(history: bool) -> Vec<u8> {
    use tessera_protocol::{tag, PartWriter, SlateReplyWriter, Value};
    let columns: Vec<(&str, u8, u32, Value)> = vec![
        ("b", tag::BOOL, 0, Value::Bool(true)),
        ("i32", tag::INT32, 0, Value::Int32(-3)),
        ("i64", tag::INT64, 0, Value::Int64(7)),
        ("f32", tag::FLOAT32, 0, Value::Float32(1.5)),
        ("f64", tag::FLOAT64, 0, Value::Float64(2.5)),
        ("s", tag::STRING, 0, Value::String("hey".into())),
        ("raw", tag::BYTES, 0, Value::Bytes(vec![0, 1, 2])),
        ("at", tag::TIMESTAMP, 0, Value::Timestamp(99)),
        ("emb", tag::EMBEDDING, 2, Value::Embedding(vec![1.0, -1.0])),
        ("li", tag::LIST_INT64, 0, Value::ListInt64(vec![1, 2, 3])),
        ("lf", tag::LIST_FLOAT32, 0, Value::ListFloat32(vec![0.25])),
        (
            "ls",
            tag::LIST_STRING,
            0,
            Value::ListString(vec!["a".into(), "".into(), "xyz".into()]),
        ),
    ];
    let mut out = Vec::new();
    let found = [true, false, true];
    let event_ts = [10, 0, 30];
    let n = columns.len() as u16;
    let write = |p: &mut PartWriter<'_>| {
        for (name, t, dim, v) in &columns {
            let mut c = p.column(name, *t, *dim);
            c.push(v).expect("push");
            c.push_null().expect("null");
            c.push(v).expect("push");
            c.finish().expect("finish");
        }
    };
    if history {
        let mut p = PartWriter::history(&mut out, &found, &event_ts, &[1, 2, 3], &[4, 5, 6], n);
        write(&mut p);
    } else {
        let mut w = SlateReplyWriter::new(&mut out, 2);
        write(&mut w.part(&found, &event_ts, n));
        w.part(&[], &[], 0);
    }
    out
}

fn replies() -> Vec<(tessera_protocol::Opcode, Vec<u8>)> {
    use tessera_protocol::*;
    let row_replies = vec![
        Reply::Hello(HelloReply {
            version: 1,
            role: Role::Write,
            identity: "pipeline".into(),
            server: "tessera 0.1.0".into(),
            max_frame: 1 << 24,
        }),
        Reply::Ping(vec![1, 2, 3]),
        Reply::RegistryGet {
            version: 4,
            registry_json: "{}".into(),
        },
        Reply::RegistryPlan {
            version: 4,
            changes: true,
            plan: "+ group x".into(),
        },
        Reply::RegistryApply {
            version: 5,
            plan: "+ group x".into(),
        },
        Reply::RegistryHistory(vec![AuditEntry {
            version: 5,
            time_us: 77,
            identity: "ops".into(),
            diff: "+ group x".into(),
        }]),
        Reply::Put(CommitReply {
            seq: 9,
            ingest_ts: 10,
            rows: 11,
        }),
        Reply::Delete(CommitReply {
            seq: 12,
            ingest_ts: 13,
            rows: 1,
        }),
        Reply::Stats("{\"a\":1}".into()),
        Reply::ImportBegin(ImportBegun {
            session: 3,
            max_rows_per_s: 1000,
        }),
        Reply::ImportRows(ImportRowsReply {
            accepted: 9,
            rejected: vec![Rejection {
                row: 4,
                reason: "column `x`: expected int64".into(),
            }],
        }),
        Reply::ImportCommit(ImportCommitted {
            rows: 10,
            first_seq: 5,
            last_seq: 14,
            ingest_ts: 99,
            files: 1,
        }),
        Reply::ImportAbort,
    ];
    let mut out: Vec<(Opcode, Vec<u8>)> = row_replies
        .iter()
        .map(|r| {
            let mut body = Vec::new();
            r.encode_body(&mut body);
            (r.opcode(), body)
        })
        .collect();
    out.push((Opcode::GetSlate, slate_body(false)));
    out.push((Opcode::PitLookup, slate_body(false)));
    out.push((Opcode::History, slate_body(true)));
    out.push((Opcode::Export, slate_body(true)));
    out
}

fn protocol_seeds() {
    use tessera_protocol::*;
    let op_index = |op: Opcode| Opcode::ALL.iter().position(|&o| o == op).expect("op") as u8;
    let mut stream = Vec::new();
    for (i, request) in requests().iter().enumerate() {
        let mut body = Vec::new();
        request.encode_body(&mut body).expect("encodes");
        let mut msg = vec![op_index(request.opcode())];
        msg.extend_from_slice(&body);
        seed(
            "protocol_message",
            &format!("request-{i:02}"),
            &msg,
            fuzz::protocol_message,
        );
        let mut frame = Vec::new();
        encode_request(i as u64, request, &mut frame).expect("frames");
        seed(
            "protocol_frame",
            &format!("request-{i:02}"),
            &frame,
            fuzz::protocol_frame,
        );
        stream.extend_from_slice(&frame);
    }
    seed("protocol_frame", "requests", &stream, fuzz::protocol_frame);
    let mut stream = Vec::new();
    for (i, (op, body)) in replies().into_iter().enumerate() {
        let mut msg = vec![17 + op_index(op)];
        msg.extend_from_slice(&body);
        seed(
            "protocol_message",
            &format!("reply-{i:02}"),
            &msg,
            fuzz::protocol_message,
        );
        let mut frame = Vec::new();
        let start = begin_reply_frame(i as u64, op, &mut frame);
        frame.extend_from_slice(&body);
        finish_frame(&mut frame, start);
        seed(
            "protocol_frame",
            &format!("reply-{i:02}"),
            &frame,
            fuzz::protocol_frame,
        );
        stream.extend_from_slice(&frame);
    }
    let error = ErrorBody {
        code: ErrorCode::Validation,
        message: "row 3, column `x`: expected int64".into(),
    };
    let mut frame = Vec::new();
    encode_error(5, Opcode::Put as u8, &error, &mut frame);
    let mut msg = vec![34 + op_index(Opcode::Put)];
    msg.extend_from_slice(&frame[HEADER_LEN..]);
    seed("protocol_message", "error", &msg, fuzz::protocol_message);
    seed("protocol_frame", "error", &frame, fuzz::protocol_frame);
    stream.extend_from_slice(&frame);
    seed("protocol_frame", "replies", &stream, fuzz::protocol_frame);
}

/// An SST's data blocks and its index block (payload), the file built by
/// the engine's own builder with uncompressed data blocks.
fn build_sst(
    entries: &[(u32, Vec<u8>, i64, u64, bool)],
    block_bytes: usize,
) -> (Vec<Vec<u8>>, Vec<u8>, u64) {
    use tessera_storage::sstable::{decode_index, BuildOptions, TableBuilder};
    use tessera_storage::{EntryRef, Kind};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("1.sst");
    let fs = tessera_storage::fs::OsFs::default();
    let opts = BuildOptions {
        block_bytes,
        compress_data: false,
        ..BuildOptions::default()
    };
    let mut b = TableBuilder::create(&fs, &path, 1, opts).expect("builder");
    for (table, key, event_ts, seq, tombstone) in entries {
        let value = format!("value of {seq}");
        b.add(&EntryRef {
            table: *table,
            key,
            event_ts: *event_ts,
            seq: *seq,
            ingest_ts: 1000 + *seq as i64,
            kind: if *tombstone {
                Kind::Tombstone
            } else {
                Kind::Put
            },
            value: if *tombstone { b"" } else { value.as_bytes() },
        })
        .expect("add");
    }
    b.finish().expect("finish");
    let file = std::fs::read(&path).expect("read sst");
    // docs/format.md: the footer's third handle is the index; each block
    // is its stored payload and a 13-byte trailer.
    let footer = &file[file.len() - 68..];
    let handle = |at: usize| {
        let offset = u64::from_le_bytes(footer[at..at + 8].try_into().expect("8"));
        let len = u32::from_le_bytes(footer[at + 8..at + 12].try_into().expect("4"));
        (offset as usize, len as usize)
    };
    let (index_at, index_len) = handle(24);
    let (bloom_at, _) = handle(0);
    let stored = &file[index_at..index_at + index_len];
    let index = match file[index_at + index_len] {
        0 => stored.to_vec(),
        _ => zstd::decode_all(stored).expect("zstd index"),
    };
    let records = decode_index(
        &bytes::Bytes::from(index.clone()),
        u32::from_le_bytes(index[..4].try_into().expect("4")),
        tessera_storage::sstable::HEADER_LEN,
        bloom_at as u64,
    )
    .expect("the index decodes");
    let blocks = records
        .iter()
        .map(|r| {
            let at = r.offset as usize;
            assert_eq!(file[at + r.stored_len as usize], 0, "uncompressed block");
            file[at..at + r.stored_len as usize].to_vec()
        })
        .collect();
    (blocks, index, bloom_at as u64)
}

fn sst_seeds() {
    let mut entries = Vec::new();
    for k in 0..40u32 {
        let key = format!("user-{k:04}").into_bytes();
        for v in 0..3u64 {
            let seq = u64::from(k) * 3 + v + 1;
            entries.push((1 + k / 20, key.clone(), 100 - v as i64 * 10, seq, v == 2));
        }
    }
    entries.sort_by(|a, b| {
        tessera_storage::cmp_internal((a.0, &a.1, a.2, a.3), (b.0, &b.1, b.2, b.3))
    });
    for (name, block_bytes, slice) in [
        ("small", 512, &entries[..]),
        ("one-block", 1 << 16, &entries[..]),
        ("few", 4096, &entries[..5]),
        ("single", 4096, &entries[..1]),
    ] {
        let (blocks, index, data_end) = build_sst(slice, block_bytes);
        for (i, block) in blocks.iter().enumerate().take(3) {
            seed("sst_block", &format!("{name}-{i}"), block, fuzz::sst_block);
        }
        let mut input = (blocks.len() as u32).to_le_bytes().to_vec();
        input.extend_from_slice(&data_end.to_le_bytes());
        input.extend_from_slice(&index);
        seed("sst_index", name, &input, fuzz::sst_index);
    }
}

fn wal_seeds() {
    use tessera_storage::{Durability, Engine, Options, WriteBatch};
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        durability: Durability::Sync,
        background_compaction: false,
        block_cache_bytes: 1 << 20,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts).expect("open");
    for i in 0..4u8 {
        let mut batch = WriteBatch::new();
        for k in 0..=i {
            let key = [b'k', k];
            batch
                .put(1, &key, i64::from(i) * 10, &[i; 16])
                .expect("put");
        }
        if i == 3 {
            batch.delete(1, b"k\x00", 5).expect("delete");
            batch.put(0x0101_0101, b"other", -1, b"").expect("put");
        }
        engine.write(batch).expect("write");
    }
    drop(engine);
    let wal_dir = dir.path().join("wal");
    let fs = tessera_storage::fs::OsFs::default();
    let segments = tessera_storage::wal::list_segments(&fs, &wal_dir).expect("list");
    let last = *segments.last().expect("a segment");
    let segment = std::fs::read(tessera_storage::wal::segment_path(&wal_dir, last)).expect("read");
    for (name, mode) in [("as-is", 0u8), ("fixed", 1), ("not-last", 3)] {
        let mut input = vec![mode];
        input.extend_from_slice(&segment);
        seed("wal_replay", name, &input, fuzz::wal_replay);
    }
    let mut torn = vec![1u8];
    torn.extend_from_slice(&segment[..segment.len() - 7]);
    seed("wal_replay", "torn", &torn, fuzz::wal_replay);
}

fn registry_seeds() {
    let evolved = fuzz::IMPORT_SPEC.replace(
        "    { name = \"ls\", type = \"list<string>\" },",
        "    { name = \"ls\", type = \"list<string>\", status = \"deprecated\" },\n    { name = \"new\", type = \"float64\", nullable = true, tags = [\"t\"] },",
    );
    let spec = format!("{}\0{evolved}", fuzz::IMPORT_SPEC);
    seed(
        "registry_spec",
        "all-types",
        fuzz::IMPORT_SPEC.as_bytes(),
        fuzz::registry_spec,
    );
    seed(
        "registry_spec",
        "evolution",
        spec.as_bytes(),
        fuzz::registry_spec,
    );
    let tables = r#"
[[entity]]
name = "users"
description = "people"
keys = [{ name = "user_id", type = "int64" }]

[[group]]
name = "user_features"
entity = "users"
ttl = "7d"
retention = "30d"
online = true
owner = "feed"
tags = ["a", "b"]

[[group.feature]]
name = "clicks"
type = "int64"
nullable = false
description = "clicks in 1h"

[[group.feature]]
name = "emb"
type = "embedding(16)"
"#;
    seed(
        "registry_spec",
        "tables",
        tables.as_bytes(),
        fuzz::registry_spec,
    );
}

fn parquet_seeds() {
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder};
    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
        RecordBatch, StringArray, TimestampMicrosecondArray, UInt16Array,
    };
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let n = 5usize;
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), 4);
    let mut lf = ListBuilder::new(Float32Builder::new());
    let mut ls = ListBuilder::new(StringBuilder::new());
    let mut li = ListBuilder::new(arrow_array::builder::Int64Builder::new());
    for i in 0..n {
        for j in 0..4 {
            emb.values().append_value((i * 4 + j) as f32);
        }
        emb.append(i != 2);
        lf.values().append_value(i as f32);
        lf.append(true);
        ls.values().append_value(format!("s{i}"));
        ls.append(i != 1);
        li.values().append_value(i as i64);
        li.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "shop",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("shop{i}")),
            )),
        ),
        (
            "thing_id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
        ),
        (
            "event_ts",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n as i64).map(|i| 1_700_000_000_000_000 + i),
            )),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
                None,
            ])),
        ),
        ("i32", Arc::new(Int32Array::from_iter_values(0..n as i32))),
        (
            "i64",
            Arc::new(UInt16Array::from_iter_values((0..n).map(|i| i as u16))),
        ),
        (
            "f32",
            Arc::new(Float32Array::from_iter_values(
                (0..n).map(|i| i as f32 / 3.0),
            )),
        ),
        ("f64", Arc::new(Float64Array::from(vec![None::<f64>; n]))),
        (
            "s",
            Arc::new(StringArray::from_iter_values((0..n).map(|i| "x".repeat(i)))),
        ),
        (
            "raw",
            Arc::new(BinaryArray::from_iter_values(
                (0..n).map(|i| vec![i as u8; i]),
            )),
        ),
        ("at", Arc::new(Int64Array::from_iter_values(0..n as i64))),
        ("emb", Arc::new(emb.finish())),
        ("li", Arc::new(li.finish())),
        ("lf", Arc::new(lf.finish())),
        ("ls", Arc::new(ls.finish())),
        (
            "ignored",
            Arc::new(Int32Array::from_iter_values(0..n as i32)),
        ),
    ];
    let write = |columns: &[(&str, ArrayRef)], compression: Compression, dictionary: bool| {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.iter().map(|(_, a)| a.clone()).collect(),
        )
        .expect("batch");
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_dictionary_enabled(dictionary)
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        out
    };
    let all = write(&columns, Compression::UNCOMPRESSED, false);
    seed("parquet_import", "all-types", &all, fuzz::parquet_import);
    let dict = write(&columns, Compression::SNAPPY, true);
    seed(
        "parquet_import",
        "snappy-dictionary",
        &dict,
        fuzz::parquet_import,
    );
    let minimal = write(&columns[..3], Compression::UNCOMPRESSED, false);
    seed(
        "parquet_import",
        "keys-only",
        &minimal,
        fuzz::parquet_import,
    );
}
