//! Memory of a block cache under steady eviction: batched reads that each
//! miss many blocks must not leave the evicted blocks allocated.
//!
//! A batch pins the epoch once and may evict a block per miss; the evicted
//! blocks are freed by the epoch collector once no reader can see them.
//! crossbeam-epoch on its own frees at most 8 bags of 64 deferred drops per
//! 128 pins, which 16 evictions per pin outrun by four times: the garbage,
//! and the process, would grow by every block read. This test is alone in
//! its binary so that its process's memory is its own.

use rand::{Rng, SeedableRng};
use tessera_storage::{Durability, Engine, Options};

const TABLE: u32 = 1;
const KEYS: usize = 40_000;
const BATCH: usize = 16;
const BATCHES: usize = 12_000;
/// Growth allowed over the reads: without the fix they leave about
/// `BATCHES * BATCH` blocks of ~4 KiB (some 750 MiB) allocated.
const MAX_GROWTH_KIB: u64 = 96 << 10;

fn key(k: usize) -> Vec<u8> {
    format!("user:{k:06}").into_bytes()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn evicted_blocks_are_freed_while_reads_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || Options {
        durability: Durability::None,
        block_bytes: 4 << 10,
        block_cache_bytes: 1 << 20,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts()).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for k in 0..KEYS {
        // Random bytes: blocks stay about 4 KiB after compression.
        let value: Vec<u8> = (0..400).map(|_| rng.gen()).collect();
        engine.put(TABLE, &key(k), 1, &value).expect("put");
    }
    engine.close().expect("close flushes");
    let engine = Engine::open(dir.path(), opts()).expect("reopen");

    let read_batches = |n: usize, rng: &mut rand::rngs::StdRng| {
        for _ in 0..n {
            let keys: Vec<Vec<u8>> = (0..BATCH).map(|_| key(rng.gen_range(0..KEYS))).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let rows = engine.multi_latest(TABLE, &refs).expect("read");
            assert!(rows.iter().all(Option::is_some));
        }
    };
    // Warm up: the cache fills and the allocator settles.
    read_batches(1_000, &mut rng);
    let before = rss_kib();
    read_batches(BATCHES, &mut rng);
    let growth = rss_kib().saturating_sub(before);
    let misses = engine.stats().block_cache_misses;
    assert!(
        misses as usize > BATCHES * BATCH / 2,
        "{misses} misses: the reads must evict"
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "the process grew by {growth} KiB over {BATCHES} batches ({misses} misses)"
    );
}
