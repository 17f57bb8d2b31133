//! Hash index benchmarks: latest-of-51-keys lookups (one by one and batched)
//! on a 2M-entity index,
//! upsert throughput, and loading a 2.2M-entry checkpoint.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use tessera_storage::fs::OsFs;
use tessera_storage::hash_index::{HashIndex, IndexEntry, Location};
use tessera_storage::Digest;

/// Entities in the lookup/upsert index.
const INDEX_ENTITIES: usize = 2_000_000;
/// Entities in the checkpoint-load benchmark.
const CHECKPOINT_ENTITIES: usize = 2_200_000;
/// Keys per online "latest of these keys" request.
const KEYS_PER_REQUEST: usize = 51;
/// Entities inserted per fresh-insert iteration.
const FRESH_INSERTS: usize = 100_000;

fn random_digests(n: usize, seed: u64) -> Vec<Digest> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| Digest {
            hi: rng.gen(),
            lo: rng.gen(),
        })
        .collect()
}

fn sst_entry(i: usize) -> IndexEntry {
    IndexEntry {
        event_ts: i as i64,
        loc: Location::Sst {
            file_no: (i % 1000) as u64,
            block: (i % 4096) as u32,
        },
    }
}

fn build(digests: &[Digest]) -> HashIndex {
    let ix = HashIndex::with_capacity(digests.len());
    for (i, &d) in digests.iter().enumerate() {
        ix.insert(d, sst_entry(i));
    }
    ix
}

/// The keys of one online request: random present entities.
fn request(digests: &[Digest], rng: &mut StdRng) -> [Digest; KEYS_PER_REQUEST] {
    std::array::from_fn(|_| digests[rng.gen_range(0..digests.len())])
}

fn lookups(c: &mut Criterion) {
    let digests = random_digests(INDEX_ENTITIES, 1);
    let ix = build(&digests);
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = c.benchmark_group("hash_index");
    g.throughput(Throughput::Elements(KEYS_PER_REQUEST as u64));
    g.bench_function("get_51_present_of_2M", |b| {
        b.iter_batched(
            || request(&digests, &mut rng),
            |keys| {
                for k in keys {
                    black_box(ix.get(k));
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut out = Vec::with_capacity(KEYS_PER_REQUEST);
    g.bench_function("get_many_51_present_of_2M", |b| {
        b.iter_batched(
            || request(&digests, &mut rng),
            |keys| {
                out.clear();
                ix.get_many(&keys, &mut out);
                black_box(&out);
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let mut ts = 0i64;
    g.bench_function("upsert_if_newer_existing_of_2M", |b| {
        b.iter(|| {
            ts += 1;
            let d = digests[rng.gen_range(0..digests.len())];
            black_box(ix.upsert_if_newer(
                d,
                ts + INDEX_ENTITIES as i64,
                Location::Mem { gen: 1, slot: 0 },
            ))
        })
    });
    g.throughput(Throughput::Elements(FRESH_INSERTS as u64));
    let fresh = random_digests(FRESH_INSERTS, 3);
    g.bench_function("upsert_if_newer_fresh_100k_growing", |b| {
        b.iter(|| {
            let ix = HashIndex::new();
            for (i, &d) in fresh.iter().enumerate() {
                ix.upsert_if_newer(d, i as i64, Location::Mem { gen: 1, slot: 0 });
            }
            ix
        })
    });
    g.finish();
}

fn checkpoint_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index.ckpt");
    let fs = OsFs::default();
    build(&random_digests(CHECKPOINT_ENTITIES, 4))
        .write_checkpoint(&fs, &path, 1)
        .expect("write checkpoint");
    if let Ok(Some((_, ix))) = HashIndex::load_checkpoint(&fs, &path) {
        let per = ix.memory_bytes() as f64 / ix.len() as f64;
        eprintln!("loaded {} entities: {per:.2} bytes/entity", ix.len());
    }
    let mut g = c.benchmark_group("hash_index");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CHECKPOINT_ENTITIES as u64));
    g.bench_function("load_checkpoint_2_2M", |b| {
        b.iter(|| {
            let (_, ix) = HashIndex::load_checkpoint(&fs, &path)
                .expect("load")
                .expect("present");
            ix
        })
    });
    g.finish();
}

criterion_group!(benches, lookups, checkpoint_load);
criterion_main!(benches);
