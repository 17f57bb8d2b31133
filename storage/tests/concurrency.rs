//! Reads racing writes, flushes and compactions: a batch is seen whole or
//! not at all, and `as_of(T)` never returns a version newer than `T`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use tessera_storage::{Durability, Engine, Options, WriteBatch};

const T: u32 = 1;
const ROUNDS: i64 = 3_000;

fn opts() -> Options {
    Options {
        durability: Durability::None,
        memtable_bytes: 16 << 10,
        l0_compaction_trigger: 2,
        l1_target_bytes: 64 << 10,
        sst_target_bytes: 32 << 10,
        ..Options::default()
    }
}

#[test]
fn batches_are_atomic_and_as_of_never_reads_the_future() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), opts()).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicI64::new(0));
    let pad = vec![b'.'; 200];

    let writer = {
        let (engine, done, written, pad) =
            (engine.clone(), done.clone(), written.clone(), pad.clone());
        std::thread::spawn(move || {
            for i in 1..=ROUNDS {
                let mut b = WriteBatch::new();
                let mut v = i.to_le_bytes().to_vec();
                v.extend_from_slice(&pad);
                for key in [b"a".as_slice(), b"b", b"c"] {
                    b.put(T, key, i, &v).expect("put");
                }
                engine.write(b).expect("write");
                written.store(i, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        })
    };

    let mut checks = 0u64;
    while !done.load(Ordering::Acquire) {
        let rows = engine.multi_latest(T, &[b"a", b"b", b"c"]).expect("read");
        let times: Vec<Option<i64>> = rows
            .iter()
            .map(|r| r.as_ref().map(|r| r.event_ts))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] == w[1]),
            "saw part of a batch: {times:?}"
        );
        // `seen` is committed; newer versions may land during the read.
        let seen = written.load(Ordering::Acquire);
        for at in [seen, seen / 2] {
            let row = engine.as_of(T, b"b", at, None).expect("as_of");
            match row {
                Some(row) => assert_eq!(row.event_ts, at, "as_of({at})"),
                None => assert_eq!(at, 0, "as_of({at}) found nothing"),
            }
        }
        checks += 1;
    }
    writer.join().expect("writer");
    assert!(checks > 10, "the reader barely ran");
    let last = engine.latest(T, b"c").expect("read").expect("present");
    assert_eq!(last.event_ts, ROUNDS);
    engine.verify_index().expect("index agrees with scan");
}
