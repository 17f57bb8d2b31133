//! Criterion micro-benchmarks of the engine's hot paths on a compacted
//! dataset of 100,000 entities with ~420-byte rows and three versions each:
//! a 51-key `multi_latest` (a slate), the same read with the rows lent
//! (`with_latest_across`), a 51-key `multi_as_of`, and a
//! 256-row write batch.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tessera_storage::{AsOfQuery, Durability, Engine, Options, RowRef, WriteBatch};

const ENTITIES: u64 = 100_000;
const ROW: usize = 416;
const TABLE: u32 = 1;

fn setup() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        durability: Durability::None,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut batch = WriteBatch::new();
    let row: Vec<u8> = (0..ROW).map(|i| i as u8).collect();
    for id in 0..ENTITIES {
        for v in 0..3 {
            let ts = 1_000_000 + v * 1_000 + rng.gen_range(0..1000);
            batch.put(TABLE, &id.to_be_bytes(), ts, &row).expect("put");
        }
        if batch.len() >= 300 {
            engine.write(std::mem::take(&mut batch)).expect("write");
        }
    }
    if !batch.is_empty() {
        engine.write(batch).expect("write");
    }
    engine.compact().expect("compact");
    (dir, engine)
}

/// 51 uniformly random entity keys: a slate's worth.
fn slate_keys(rng: &mut impl Rng) -> Vec<[u8; 8]> {
    (0..51)
        .map(|_| rng.gen_range(0..ENTITIES).to_be_bytes())
        .collect()
}

fn reads(c: &mut Criterion) {
    let (_dir, engine) = setup();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(51));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("multi_latest_51", |b| {
        b.iter_batched(
            || slate_keys(&mut rng),
            |keys| {
                let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                engine.multi_latest(TABLE, &refs).expect("read")
            },
            BatchSize::SmallInput,
        )
    });
    // The same keys, rows lent to a callback instead of copied out.
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    g.bench_function("with_latest_51", |b| {
        b.iter_batched(
            || slate_keys(&mut rng),
            |keys| {
                let lookups: Vec<(u32, &[u8])> = keys.iter().map(|k| (TABLE, &k[..])).collect();
                let bytes = |rows: &[Option<RowRef<'_>>]| -> usize {
                    rows.iter().flatten().map(|r| r.value.len()).sum()
                };
                engine.with_latest_across(&lookups, bytes).expect("read")
            },
            BatchSize::SmallInput,
        )
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    g.bench_function("multi_as_of_51", |b| {
        b.iter_batched(
            || {
                (0..51)
                    .map(|_| {
                        (
                            rng.gen_range(0..ENTITIES).to_be_bytes(),
                            1_000_000 + rng.gen_range(0..3000),
                        )
                    })
                    .collect::<Vec<_>>()
            },
            |qs| {
                let queries: Vec<AsOfQuery<'_>> = qs
                    .iter()
                    .map(|(k, t)| AsOfQuery {
                        key: &k[..],
                        as_of: *t,
                        known_at: None,
                    })
                    .collect();
                engine.multi_as_of(TABLE, &queries).expect("read")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        durability: Durability::None,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts).expect("open");
    let row = vec![7u8; ROW];
    let mut id = 0u64;
    let mut g = c.benchmark_group("write");
    g.throughput(Throughput::Elements(256));
    g.bench_function("batch_256_rows", |b| {
        b.iter_batched(
            || {
                let mut batch = WriteBatch::new();
                for _ in 0..256 {
                    id += 1;
                    batch
                        .put(TABLE, &(id % 1_000_000).to_be_bytes(), id as i64, &row)
                        .expect("put");
                }
                batch
            },
            |batch| engine.write(batch).expect("write"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, reads, writes);
criterion_main!(benches);
