//! Failure handling through the fault-injecting file system: a failed WAL
//! fsync is never acknowledged and turns the engine read-only; what was
//! acknowledged before survives a reopen.

use std::sync::Arc;
use tessera_storage::fs::fault::{FaultFs, FaultOp};
use tessera_storage::fs::{FileSystem, OsFs};
use tessera_storage::{Durability, Engine, Error, Options};

const EIO: i32 = 5;

fn opts(fs: Arc<dyn FileSystem>) -> Options {
    Options {
        durability: Durability::Sync,
        fs,
        ..Options::default()
    }
}

#[test]
fn failed_fsync_is_not_acknowledged_and_turns_the_engine_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = FaultFs::new(Arc::new(OsFs::default()));
    let engine = Engine::open(dir.path(), opts(fault.clone())).expect("open");
    engine
        .put(1, b"acked", 1, b"v1")
        .expect("put before the fault");

    fault.fail_nth(FaultOp::Sync, fault.op_count(FaultOp::Sync) + 1, EIO);
    let failed = engine.put(1, b"lost", 2, b"v2");
    assert!(matches!(failed, Err(Error::Io { .. })), "got {failed:?}");
    fault.clear_faults();

    let refused = engine.put(1, b"later", 3, b"v3");
    assert!(
        matches!(refused, Err(Error::ReadOnly(_))),
        "got {refused:?}"
    );
    assert!(engine.stats().read_only);
    // Reads still work, and never show the unacknowledged write.
    assert!(engine.latest(1, b"acked").expect("read").is_some());
    assert!(engine.latest(1, b"lost").expect("read").is_none());
    drop(engine);

    let engine = Engine::open(dir.path(), opts(Arc::new(OsFs::default()))).expect("reopen");
    let row = engine
        .latest(1, b"acked")
        .expect("read")
        .expect("acknowledged write survives");
    assert_eq!(row.value.as_ref(), b"v1");
    assert!(engine.latest(1, b"later").expect("read").is_none());
    engine
        .put(1, b"after", 4, b"v4")
        .expect("writable again after reopen");
}

#[test]
fn concurrent_sync_writers_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), opts(Arc::new(OsFs::default()))).expect("open"));
    let threads = 8;
    let per_thread = 100;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let key = format!("t{t}-k{i}");
                    engine.put(1, key.as_bytes(), i, b"v").expect("put");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let writes = (threads * per_thread) as u64;
    let fsyncs = engine.stats().wal_fsyncs;
    assert!(fsyncs <= writes, "{fsyncs} fsyncs for {writes} writes");
    assert!(
        fsyncs < writes,
        "no commit group shared an fsync ({fsyncs} for {writes} writes)"
    );
    for t in 0..threads {
        for i in 0..per_thread {
            let key = format!("t{t}-k{i}");
            assert!(engine.latest(1, key.as_bytes()).expect("read").is_some());
        }
    }
}

/// Simulated power loss (unsynced data dropped, the last page torn, renames
/// whose directory was not synced undone) at several points of a workload
/// with WAL rotations, flushes and compactions: every acknowledged write
/// survives and the index agrees with a full scan.
#[test]
fn acknowledged_writes_survive_power_loss() {
    let mut crash_points = 0;
    for (round, writes) in [1usize, 7, 40, 90, 160, 260].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fault = FaultFs::new(Arc::new(OsFs::default()));
        let opts = Options {
            memtable_bytes: 4096,
            l0_compaction_trigger: 2,
            l1_target_bytes: 16 << 10,
            sst_target_bytes: 8 << 10,
            ..opts(fault.clone())
        };
        let engine = Engine::open(dir.path(), opts).expect("open");
        let value = vec![b'v'; 100];
        for i in 0..writes {
            let key = format!("k{:03}", i % 50);
            engine
                .put(1, key.as_bytes(), i as i64, &value)
                .expect("put");
        }
        fault.crash(true, round as u64).expect("crash image");
        drop(engine);
        crash_points += 1;

        let engine = Engine::open(dir.path(), Options::default()).expect("reopen after power loss");
        for i in writes.saturating_sub(50)..writes {
            let key = format!("k{:03}", i % 50);
            let row = engine
                .latest(1, key.as_bytes())
                .expect("read")
                .expect("acknowledged");
            assert_eq!(row.event_ts, i as i64, "after {writes} writes, key {key}");
        }
        engine.verify_index().expect("index agrees with scan");
    }
    assert_eq!(crash_points, 6);
}

/// Under `Interval` durability the sync thread fsyncs the WAL within the
/// interval, off the write path: writes do not each wait for an fsync.
#[test]
fn interval_durability_syncs_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        durability: Durability::Interval(std::time::Duration::from_millis(10)),
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts).expect("open");
    let writes = 200;
    for i in 0..writes {
        engine
            .put(1, format!("k{i}").as_bytes(), i, b"v")
            .expect("put");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.stats().wal_fsyncs == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let fsyncs = engine.stats().wal_fsyncs;
    assert!(fsyncs >= 1, "the sync thread never synced");
    assert!(
        fsyncs < writes as u64,
        "{fsyncs} fsyncs for {writes} writes"
    );
}
