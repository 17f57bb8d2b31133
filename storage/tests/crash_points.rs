//! Power loss at every sync point of a 10,000-operation workload.
//!
//! One writer commits puts and deletes in batches with `sync` durability,
//! while small memtables make flushes and compactions run all along. The
//! fault-injecting file system calls a hook right after every successful
//! file or directory sync, and the hook writes a crash image of the data
//! directory as a power loss at that moment would leave it: unsynced bytes
//! dropped except for a torn prefix, and creates, renames and removes whose
//! directory was not synced undone. A second thread opens each image and
//! checks that what it holds is a consistent prefix of the commit order
//! containing every write acknowledged before the image was taken, with the
//! right values, and that the hash index agrees with a full scan.
//!
//! Syncs are simulated (they reach the fault model, not the disk), so the
//! run is paced by the CPU, not by the machine's fsync; a watchdog fails the
//! test, saying how far it got, if it still runs after [`DEADLINE`].

use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tessera_storage::fs::fault::FaultFs;
use tessera_storage::fs::OsFs;
use tessera_storage::{Durability, Engine, Options, WriteBatch};

/// Operations (puts and deletes) in the workload.
const OPS: usize = 10_000;
const KEYS: usize = 64;
const TABLE: u32 = 1;
const MAX_BATCH: usize = 8;
const DELETE_SHARE: f64 = 0.1;
/// Images waiting to be checked; the workload pauses when the checker
/// falls this far behind.
const IMAGE_BACKLOG: usize = 8;
/// The run takes under a minute unoptimised; past this it is stuck.
const DEADLINE: Duration = Duration::from_secs(600);

/// One operation of the plan: its key and whether it deletes. Operation `i`
/// writes at event time `i`, so a version found in an image names the
/// operation that wrote it.
#[derive(Clone, Copy)]
struct PlannedOp {
    key: usize,
    delete: bool,
}

fn key(k: usize) -> Vec<u8> {
    format!("key{k:03}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value of operation {i:05} ").repeat(4).into_bytes()
}

fn plan(seed: u64) -> (Vec<PlannedOp>, Vec<usize>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ops: Vec<PlannedOp> = (0..OPS)
        .map(|_| PlannedOp {
            key: rng.gen_range(0..KEYS),
            delete: rng.gen_bool(DELETE_SHARE),
        })
        .collect();
    let mut batches = Vec::new();
    let mut left = OPS;
    while left > 0 {
        let n = rng.gen_range(1..=MAX_BATCH).min(left);
        batches.push(n);
        left -= n;
    }
    (ops, batches)
}

fn options(fs: Arc<dyn tessera_storage::fs::FileSystem>) -> Options {
    Options {
        durability: Durability::Sync,
        memtable_bytes: 16 << 10,
        l0_compaction_trigger: 2,
        sst_target_bytes: 16 << 10,
        l1_target_bytes: 64 << 10,
        fs,
        ..Options::default()
    }
}

/// A crash image and what the workload had done when it was taken.
struct Image {
    dir: PathBuf,
    /// Operations acknowledged before the image: all must be in it.
    acked: usize,
    /// Operations whose commit had started: none later may be in it.
    issued: usize,
}

/// Opens an image and returns how many operations it holds, after checking
/// they are exactly operations `0..n`, with `acked <= n <= issued`.
fn check_image(image: &Image, plan: &[PlannedOp]) -> usize {
    let opts = Options {
        fs: FaultFs::simulating_syncs(Arc::new(OsFs::default())),
        ..Options::default()
    };
    let engine = Engine::open(&image.dir, opts)
        .unwrap_or_else(|e| panic!("image {} does not open: {e}", image.dir.display()));
    let mut present = BTreeSet::new();
    for k in 0..KEYS {
        let versions = engine
            .history(TABLE, &key(k), i64::MIN, i64::MAX)
            .expect("history");
        for v in versions {
            let i = usize::try_from(v.event_ts).expect("event time of an operation");
            assert!(i < image.issued, "operation {i} was never issued");
            let op = plan[i];
            assert_eq!(op.key, k, "operation {i} found under the wrong key");
            match &v.value {
                None => assert!(op.delete, "operation {i} is a tombstone"),
                Some(bytes) => {
                    assert!(!op.delete, "operation {i} should be a tombstone");
                    assert_eq!(bytes.as_ref(), value(i).as_slice(), "value of {i}");
                }
            }
            assert!(present.insert(i), "operation {i} found twice");
        }
    }
    let n = present.len();
    assert!(
        present.last().is_none_or(|&last| last + 1 == n),
        "{}: the operations present are not a prefix of the commit order",
        image.dir.display()
    );
    assert!(
        n >= image.acked,
        "{}: {} acknowledged operations, only {n} survived",
        image.dir.display(),
        image.acked
    );
    engine
        .verify_index()
        .unwrap_or_else(|e| panic!("{}: {e}", image.dir.display()));
    n
}

#[test]
fn every_sync_point_of_a_long_workload_recovers_a_prefix_with_every_ack() {
    let seed = 2026;
    let (ops, batches) = plan(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let images = tempfile::tempdir().expect("tempdir");
    let fault = FaultFs::simulating_syncs(Arc::new(OsFs::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let issued = Arc::new(AtomicUsize::new(0));
    let checked = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    watchdog(&acked, &checked, &finished);

    let (send, receive) = mpsc::sync_channel::<Image>(IMAGE_BACKLOG);
    let root = dir.path().to_path_buf();
    let (hook_acked, hook_issued) = (acked.clone(), issued.clone());
    let image_root = images.path().to_path_buf();
    let mut taken = 0u64;
    fault.set_sync_hook(move |point| {
        taken += 1;
        let image = Image {
            dir: image_root.join(taken.to_string()),
            acked: hook_acked.load(Ordering::SeqCst),
            issued: hook_issued.load(Ordering::SeqCst),
        };
        point
            .image_to(&root, &image.dir, true, taken)
            .expect("crash image");
        // The checker is gone only if it panicked; that failure is reported.
        let _ = send.send(image);
    });
    let checker_plan = ops.clone();
    let checker_progress = checked.clone();
    let checker = std::thread::spawn(move || {
        let (mut points, mut held) = (0usize, 0usize);
        for image in receive {
            held = held.max(check_image(&image, &checker_plan));
            points += 1;
            checker_progress.store(points, Ordering::SeqCst);
            let _ = std::fs::remove_dir_all(&image.dir);
        }
        (points, held)
    });

    let engine = Engine::open(dir.path(), options(fault.clone())).expect("open");
    let mut next = 0;
    for n in batches {
        let mut batch = WriteBatch::new();
        for (i, op) in ops.iter().enumerate().skip(next).take(n) {
            let result = if op.delete {
                batch.delete(TABLE, &key(op.key), i as i64)
            } else {
                batch.put(TABLE, &key(op.key), i as i64, &value(i))
            };
            result.expect("batch op");
        }
        issued.store(next + n, Ordering::SeqCst);
        engine.write(batch).expect("commit");
        next += n;
        acked.store(next, Ordering::SeqCst);
    }
    let stats = engine.stats();
    drop(engine);
    fault.clear_sync_hook();
    let (points, held) = checker.join().expect("image checker");
    finished.store(true, Ordering::SeqCst);
    println!(
        "{points} crash points over {OPS} operations ({} KiB flushed, {} KiB written by \
         compactions); the last image held {held} operations",
        stats.flush_bytes >> 10,
        stats.compaction_write_bytes >> 10
    );
    // Flushes and compactions ran, so their sync points were imaged too.
    assert!(
        stats.flush_bytes > 10 * (16 << 10) && stats.compaction_write_bytes > 0,
        "{stats:?}"
    );
    assert!(points > OPS / MAX_BATCH, "only {points} sync points");
    assert_eq!(held, OPS, "the final image lost acknowledged writes");
}

/// Aborts the test process, saying how far the workload and the checker
/// got, if the test has not finished within [`DEADLINE`].
fn watchdog(acked: &Arc<AtomicUsize>, checked: &Arc<AtomicUsize>, finished: &Arc<AtomicBool>) {
    let (acked, checked, finished) = (acked.clone(), checked.clone(), finished.clone());
    let started = Instant::now();
    std::thread::spawn(move || {
        while !finished.load(Ordering::SeqCst) {
            if started.elapsed() > DEADLINE {
                eprintln!(
                    "crash_points: still running after {DEADLINE:?}: {} of {OPS} operations \
                     acknowledged, {} images checked",
                    acked.load(Ordering::SeqCst),
                    checked.load(Ordering::SeqCst)
                );
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}
