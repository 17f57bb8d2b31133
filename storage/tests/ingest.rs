//! Bulk ingest: nothing visible before commit, everything after, an abort
//! or a crash leaves no trace, older imported versions never shadow newer
//! online ones, and equal event times go to the later commit even when
//! online writes race the commit. (Sequential interleavings with every
//! other operation are in the model test.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tessera_storage::{Durability, Engine, Options};

const T: u32 = 7;

fn opts() -> Options {
    Options {
        durability: Durability::None,
        memtable_bytes: 16 << 10,
        sst_target_bytes: 16 << 10,
        l0_compaction_trigger: 2,
        l1_target_bytes: 64 << 10,
        ingest_run_bytes: 8 << 10,
        ingest_threads: 4,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

fn files_in(dir: &std::path::Path, sub: &str) -> Vec<String> {
    std::fs::read_dir(dir.join(sub))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_ingest_is_invisible_until_commit_then_visible_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), opts()).expect("open");
    for i in 0..100 {
        engine.put(T, &key(i), 50, b"online").expect("put");
    }
    let mut ingest = engine.begin_ingest(T).expect("begin");
    // Out of order, several runs' worth, older and newer than online data.
    for i in (0..2000).rev() {
        ingest
            .put(
                &key(i % 500),
                10 + (i / 500) as i64 * 40,
                format!("imported-{i}").as_bytes(),
            )
            .expect("add");
    }
    assert!(
        !files_in(dir.path(), "ingest").is_empty(),
        "the ingest spilled runs"
    );
    let before = engine.snapshot();
    assert!(
        engine.latest(T, &key(300)).expect("read").is_none(),
        "nothing visible before commit"
    );
    let info = ingest.commit().expect("commit");
    assert_eq!(info.versions, 2000);
    assert!(
        files_in(dir.path(), "ingest").is_empty(),
        "runs removed after commit"
    );
    assert!(
        before.latest(T, &key(300)).expect("read").is_none(),
        "an older snapshot stays as it was"
    );

    // Key 7 had online data at 50; imported versions at 10, 50, 90, 130:
    // the newest event wins, and the import's 50 beats the online 50 (later
    // commit).
    let row = engine.latest(T, &key(7)).expect("read").expect("present");
    assert_eq!(
        (row.event_ts, row.value.as_ref()),
        (130, b"imported-1507".as_ref())
    );
    let at_50 = engine
        .as_of(T, &key(7), 60, None)
        .expect("read")
        .expect("present");
    assert_eq!(at_50.value.as_ref(), b"imported-507");
    assert_eq!(
        engine.history(T, &key(7), 0, 1000).expect("history").len(),
        5
    );
    // Known before the ingest: only the online version.
    let known = engine
        .as_of(T, &key(7), 1000, Some(info.ingest_ts - 1))
        .expect("read")
        .expect("present");
    assert_eq!(known.value.as_ref(), b"online");
    engine.verify_index().expect("index agrees with a scan");

    drop(before);
    engine.close().expect("close");
    // Rebuild the index from the SSTs, as after a crash.
    std::fs::remove_file(dir.path().join("INDEX")).expect("remove checkpoint");
    let engine = Engine::open(dir.path(), opts()).expect("reopen");
    let row = engine.latest(T, &key(7)).expect("read").expect("present");
    assert_eq!(row.value.as_ref(), b"imported-1507");
    engine.verify_index().expect("index agrees with a scan");
}

#[test]
fn an_imported_older_version_never_shadows_newer_online_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), opts()).expect("open");
    engine.put(T, &key(1), 1_000, b"fresh").expect("put");
    engine.delete(T, &key(2), 1_000).expect("delete");
    let mut ingest = engine.begin_ingest(T).expect("begin");
    ingest.put(&key(1), 10, b"backfill").expect("add");
    ingest.put(&key(2), 10, b"backfill").expect("add");
    ingest.commit().expect("commit");
    assert_eq!(
        engine
            .latest(T, &key(1))
            .expect("read")
            .expect("present")
            .value
            .as_ref(),
        b"fresh"
    );
    assert!(
        engine.latest(T, &key(2)).expect("read").is_none(),
        "the tombstone still wins"
    );
    assert_eq!(
        engine
            .as_of(T, &key(2), 500, None)
            .expect("read")
            .expect("present")
            .value
            .as_ref(),
        b"backfill"
    );
}

#[test]
fn an_ingest_goes_to_the_deepest_level_nothing_above_overlaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        dir.path(),
        Options {
            background_compaction: false,
            ..opts()
        },
    )
    .expect("open");
    let last = tessera_storage::NUM_LEVELS - 1;
    let ingest_all = |table: u32, keys: std::ops::Range<u32>| {
        let mut ingest = engine.begin_ingest(table).expect("begin");
        for i in keys.rev() {
            ingest.put(&key(i), 10, b"imported").expect("add");
        }
        ingest.commit().expect("commit")
    };
    // A new table: straight to the last level, never rewritten.
    let info = ingest_all(T, 0..1000);
    let stats = engine.stats();
    assert_eq!(stats.ssts_per_level[last], info.files as u64, "{stats:?}");
    assert_eq!(stats.ssts_per_level[..last].iter().sum::<u64>(), 0);
    // Over online data flushed to level 0: above it would hide it, so level 0.
    engine.put(T + 1, &key(5), 20, b"online").expect("put");
    engine.flush().expect("flush");
    let l0_before = engine.stats().ssts_per_level[0];
    let info = ingest_all(T + 1, 0..10);
    assert_eq!(
        engine.stats().ssts_per_level[0],
        l0_before + info.files as u64
    );
    let row = engine
        .latest(T + 1, &key(5))
        .expect("read")
        .expect("present");
    assert_eq!(row.value.as_ref(), b"online", "the later event time wins");
    engine.verify_index().expect("index agrees with a scan");
}

#[test]
fn aborted_and_crashed_ingests_leave_no_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), opts()).expect("open");
    let sst_before = files_in(dir.path(), "sst");
    let mut ingest = engine.begin_ingest(T).expect("begin");
    for i in 0..1000 {
        ingest.put(&key(i), 5, b"never").expect("add");
    }
    ingest.abort();
    assert!(files_in(dir.path(), "ingest").is_empty());
    assert_eq!(files_in(dir.path(), "sst"), sst_before);
    assert!(engine.latest(T, &key(1)).expect("read").is_none());
    engine.close().expect("close");

    // A crash mid-ingest leaves runs (and maybe unnamed SSTs): the next
    // open removes them.
    std::fs::write(
        dir.path().join("ingest").join("000000000099.run"),
        b"half a run",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("sst").join("000000000098.sst"),
        b"half an sst",
    )
    .expect("write");
    let engine = Engine::open(dir.path(), opts()).expect("reopen");
    assert!(files_in(dir.path(), "ingest").is_empty());
    assert!(!files_in(dir.path(), "sst").contains(&"000000000098.sst".to_string()));
    assert!(engine.latest(T, &key(1)).expect("read").is_none());
}

#[test]
fn equal_event_times_go_to_the_later_commit_when_writes_race_the_commit() {
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(dir.path(), opts()).expect("open"));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    engine
                        .put(T, &key(i % 200), 100, format!("online-{i}").as_bytes())
                        .expect("put");
                    i += 1;
                }
                i
            })
        };
        let mut ingest = engine.begin_ingest(T).expect("begin");
        for i in 0..200 {
            ingest.put(&key(i), 100, b"imported").expect("add");
        }
        ingest.commit().expect("commit");
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().expect("writer");
        for i in 0..200 {
            // history is newest first: (event_ts desc, seq desc).
            let newest = engine
                .history(T, &key(i), 100, 100)
                .expect("history")
                .into_iter()
                .next()
                .expect("some version");
            let latest = engine.latest(T, &key(i)).expect("latest").expect("present");
            assert_eq!(
                (latest.seq, latest.value),
                (newest.seq, newest.value.expect("a value")),
                "round {round}, key {i} ({written} online writes)"
            );
        }
        engine.verify_index().expect("index agrees with a scan");
        let Ok(engine) = Arc::try_unwrap(engine) else {
            panic!("the writer thread still holds the engine");
        };
        engine.close().expect("close");
        std::fs::remove_file(dir.path().join("INDEX")).expect("remove checkpoint");
        let engine = Engine::open(dir.path(), opts()).expect("reopen");
        engine
            .verify_index()
            .expect("rebuilt index agrees with a scan");
    }
}

/// The data blocks of every SST under `dir`'s `sst` directory.
fn data_blocks(dir: &std::path::Path) -> u32 {
    use tessera_storage::cache::BlockCache;
    use tessera_storage::fs::OsFs;
    use tessera_storage::sstable::Table;
    let cache = Arc::new(BlockCache::new(1 << 20));
    files_in(dir, "sst")
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = dir.join("sst").join(name);
            let table = Table::open(Arc::new(OsFs::default()), &path, i as u64, cache.clone())
                .expect("open an SST");
            table.data_blocks()
        })
        .sum()
}

#[test]
fn an_ingest_cuts_its_blocks_at_ingest_block_bytes() {
    // The same 2,000 versions, ingested with blocks of 1 KiB and 8 KiB,
    // and written online (flushed with `block_bytes`, 1 KiB).
    let blocks = |ingest_block_bytes: usize, online: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(
            dir.path(),
            Options {
                background_compaction: false,
                memtable_bytes: 16 << 20,
                sst_target_bytes: 64 << 20,
                block_bytes: 1 << 10,
                ingest_block_bytes,
                ..opts()
            },
        )
        .expect("open");
        let value = [7u8; 40];
        if online {
            for i in 0..2000 {
                engine.put(T, &key(i), 10, &value).expect("put");
            }
            engine.flush().expect("flush");
        } else {
            let mut ingest = engine.begin_ingest(T).expect("begin");
            for i in 0..2000 {
                ingest.put(&key(i), 10, &value).expect("add");
            }
            ingest.commit().expect("commit");
        }
        drop(engine);
        data_blocks(dir.path())
    };
    let (small, large, online) = (
        blocks(1 << 10, false),
        blocks(8 << 10, false),
        blocks(8 << 10, true),
    );
    assert!(large * 6 < small, "8 KiB blocks: {large}, 1 KiB: {small}");
    assert!(
        online * 2 > small,
        "online writes keep block_bytes: {online} against {small}"
    );
}
