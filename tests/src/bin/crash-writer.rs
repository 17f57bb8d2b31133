//! Writes to an engine with `sync` durability forever, printing an `ACK`
//! line for every acknowledged version. The crash suite kills it with
//! SIGKILL and checks that every acknowledged version survived.
//!
//! Usage: `crash-writer DIR SEED START`

use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::Duration;
use tessera_storage::{Durability, Engine, Options, WriteBatch};
use tessera_tests::{crash_value, CRASH_TABLE};

fn main() {
    if let Err(e) = run() {
        eprintln!("crash-writer: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, seed, start] = args.as_slice() else {
        return Err("usage: crash-writer DIR SEED START".into());
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.parse()?);
    let mut event_ts: i64 = start.parse()?;
    let opts = Options {
        durability: Durability::Sync,
        memtable_bytes: 64 << 10,
        sst_target_bytes: 128 << 10,
        l1_target_bytes: 256 << 10,
        l0_compaction_trigger: 3,
        ..Options::default()
    };
    let engine = Engine::open(dir, opts)?;
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "OPENED last_seq {}", engine.last_seq())?;
    loop {
        let n = rng.gen_range(1..8);
        let mut batch = WriteBatch::new();
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            event_ts += 1;
            // Some writes are late: an older event time than the key's newest.
            let e = if rng.gen_bool(0.1) {
                event_ts - rng.gen_range(1..1000)
            } else {
                event_ts
            };
            let key = format!("k{:04}", rng.gen_range(0..500));
            batch.put(
                CRASH_TABLE,
                key.as_bytes(),
                e,
                &crash_value(key.as_bytes(), e),
            )?;
            keys.push((key, e));
        }
        let info = engine.write(batch)?;
        let mut out = stdout.lock();
        for (i, (key, e)) in keys.iter().enumerate() {
            writeln!(out, "ACK {key} {e} {}", info.first_seq + i as u64)?;
        }
        out.flush()?;
        if rng.gen_bool(0.01) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
