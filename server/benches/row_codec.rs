//! Criterion benchmarks of the row codec on the news-feed row shape: 10
//! int64 + 10 float64 features and a 64-float embedding (21 features, a
//! 424-byte row).
//!
//! - `project_10_of_21`: decode 10 scalar features of a row (target
//!   ≤ 100 ns per row), and the same with the embedding among the 10;
//! - `encode_256`: validate and encode a 256-row batch, keys included,
//!   reported as rows/s and as bytes/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tessera_server::registry::{plan, Registry, Spec};
use tessera_server::row::{RowSchema, Value};

/// Rows decoded per measured iteration, so that rows differ as in a scan.
const ROWS: usize = 1024;
/// Rows per encoded batch.
const BATCH: usize = 256;

fn spec() -> String {
    let mut text = String::from(
        "[[entity]]\nname = \"users\"\nkeys = [{ name = \"user_id\", type = \"int64\" }]\n\n\
         [[group]]\nname = \"user_features\"\nentity = \"users\"\nttl = \"30d\"\nretention = \"365d\"\n\
         online = true\nowner = \"bench\"\n",
    );
    for i in 0..10 {
        text += &format!("[[group.feature]]\nname = \"count_{i}\"\ntype = \"int64\"\n");
    }
    for i in 0..10 {
        text += &format!("[[group.feature]]\nname = \"rate_{i}\"\ntype = \"float64\"\n");
    }
    text + "[[group.feature]]\nname = \"embedding\"\ntype = \"embedding(64)\"\n"
}

fn schema() -> RowSchema {
    let spec = Spec::parse([("bench.toml", spec())]).expect("spec");
    let registry = Registry::empty()
        .apply(&plan(&Registry::empty(), &spec).expect("valid"))
        .expect("apply");
    RowSchema::new(&registry, "user_features").expect("group")
}

fn columns(schema: &RowSchema) -> Vec<String> {
    let mut columns = vec!["user_id".to_owned()];
    columns.extend(schema.group().features.iter().map(|f| f.name.clone()));
    columns
}

fn row(n: usize) -> Vec<Value> {
    let mut row = vec![Value::Int64(n as i64)];
    row.extend((0..10).map(|i| Value::Int64((n * 31 + i) as i64)));
    row.extend((0..10).map(|i| Value::Float64((n + i) as f64 / 7.0)));
    row.push(Value::Embedding(
        (0..64).map(|i| (n + i) as f32 / 64.0).collect(),
    ));
    row
}

fn project(c: &mut Criterion) {
    let schema = schema();
    let columns = columns(&schema);
    let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let rows: Vec<Vec<Value>> = (0..ROWS).map(row).collect();
    let batch = schema
        .writer(&refs)
        .expect("writer")
        .encode_batch(&rows)
        .expect("encode");
    let encoded: Vec<Vec<u8>> = batch.iter().map(|(_, row)| row.to_vec()).collect();
    assert_eq!(encoded[0].len(), 424);

    let mut g = c.benchmark_group("project_10_of_21");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.measurement_time(Duration::from_secs(5));
    let scalars = [
        "count_0", "count_2", "count_4", "count_6", "count_8", "rate_1", "rate_3", "rate_5",
        "rate_7", "rate_9",
    ];
    let with_embedding = [
        "count_0",
        "count_2",
        "count_4",
        "count_6",
        "count_8",
        "rate_1",
        "rate_3",
        "rate_5",
        "rate_7",
        "embedding",
    ];
    for (name, features) in [("scalars", scalars), ("with_embedding", with_embedding)] {
        let projection = schema.projection(&features).expect("projection");
        let mut out = Vec::with_capacity(features.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                for row in &encoded {
                    projection
                        .decode_into(black_box(row), &mut out)
                        .expect("decode");
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let schema = schema();
    let columns = columns(&schema);
    let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let writer = schema.writer(&refs).expect("writer");
    let rows: Vec<Vec<Value>> = (0..BATCH).map(row).collect();
    let bytes = writer.encode_batch(&rows).expect("encode").total_bytes();

    let mut g = c.benchmark_group("encode_256");
    g.measurement_time(Duration::from_secs(5));
    for (name, throughput) in [
        ("rows", Throughput::Elements(BATCH as u64)),
        ("bytes", Throughput::Bytes(bytes as u64)),
    ] {
        g.throughput(throughput);
        g.bench_function(name, |b| {
            b.iter(|| writer.encode_batch(black_box(&rows)).expect("encode"))
        });
    }
    g.finish();
}

criterion_group!(benches, project, encode);
criterion_main!(benches);
