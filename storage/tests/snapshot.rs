//! Snapshots keep answering from the state they were taken at while writes,
//! flushes and compactions go on.

use std::sync::Arc;
use tessera_storage::{Durability, Engine, Options};

const T: u32 = 1;

fn opts() -> Options {
    Options {
        durability: Durability::None,
        memtable_bytes: 4096,
        l0_compaction_trigger: 2,
        l1_target_bytes: 16 << 10,
        sst_target_bytes: 8 << 10,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

#[test]
fn snapshot_is_stable_across_writes_flushes_and_compactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), opts()).expect("open"));
    for i in 0..200 {
        engine.put(T, &key(i), 10, b"old").expect("put");
    }
    let snap = engine.snapshot();
    let before: Vec<_> = snap.scan(T).collect::<Result<_, _>>().expect("scan");
    assert_eq!(before.len(), 200);

    // Newer versions, tombstones and late writes after the snapshot.
    for i in 0..200 {
        engine.put(T, &key(i), 20, b"new").expect("put");
        if i % 3 == 0 {
            engine.delete(T, &key(i), 30).expect("delete");
        }
        engine.put(T, &key(i), 5, b"late").expect("put");
    }
    engine.compact().expect("compact");

    for i in 0..200 {
        let row = snap.latest(T, &key(i)).expect("read").expect("present");
        assert_eq!((row.event_ts, row.value.as_ref()), (10, b"old".as_ref()));
        assert!(snap.as_of(T, &key(i), 7, None).expect("read").is_none());
        assert_eq!(snap.history(T, &key(i), 0, 100).expect("read").len(), 1);
        let now = engine.latest(T, &key(i)).expect("read");
        if i % 3 == 0 {
            assert!(now.is_none());
        } else {
            assert_eq!(now.expect("present").value.as_ref(), b"new");
        }
    }
    let after: Vec<_> = snap.scan(T).collect::<Result<_, _>>().expect("scan");
    assert_eq!(before, after, "the snapshot's scan changed");
    assert!(engine.snapshot().scan(T).count() > 600);
}
