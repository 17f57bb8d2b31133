//! Fault sweep: for every kind of file-system operation and every `n` up to
//! the number a fault-free run performs, the same workload (batched puts and
//! deletes with `sync` durability, reads of every kind, flushes and
//! compactions) runs with the `n`-th operation of that kind failing, with
//! EIO or ENOSPC. In every run:
//!
//! - a write that fails is never acknowledged (a write that would wait on
//!   a failing flush is refused at once); once the engine has turned
//!   read-only (a failed WAL fsync, see also `faults.rs`), every later write
//!   is refused: it never pretends later data is safe;
//! - a read either fails with an I/O error or returns exactly what the
//!   acknowledged writes say;
//! - a reopen on the real file system holds every acknowledged write, with
//!   its value, nothing that was never attempted, and an index that agrees
//!   with a full scan.
//!
//! Syncs during the workload are simulated (counted and failed by the
//! `FaultFs`, never sent to the disk): the sweep is about which errors the
//! engine reports, and its thousands of runs should not wait on fsync.

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tessera_storage::fs::fault::{FaultFs, FaultOp};
use tessera_storage::fs::{FileSystem, OsFs};
use tessera_storage::{Durability, Engine, Error, Options, WriteBatch};

const BATCHES: usize = 60;
const MAX_BATCH: usize = 4;
const KEYS: usize = 12;
const TABLE: u32 = 1;
/// Extra operation numbers tried past a fault-free run's count, since
/// background threads make the count vary a little between runs.
const SLACK: u64 = 4;

fn key(k: usize) -> Vec<u8> {
    format!("key{k:02}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("operation {i:04}|").repeat(12).into_bytes()
}

/// The workload: batches of `(operation number, key, delete)`.
fn plan() -> Vec<Vec<(usize, usize, bool)>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut next = 0;
    (0..BATCHES)
        .map(|_| {
            (0..rng.gen_range(1..=MAX_BATCH))
                .map(|_| {
                    next += 1;
                    (next, rng.gen_range(0..KEYS), rng.gen_bool(0.15))
                })
                .collect()
        })
        .collect()
}

fn options(fs: Arc<dyn FileSystem>) -> Options {
    Options {
        durability: Durability::Sync,
        memtable_bytes: 2 << 10,
        l0_compaction_trigger: 2,
        sst_target_bytes: 2 << 10,
        l1_target_bytes: 8 << 10,
        block_bytes: 512,
        // A tiny cache, so reads go to the files.
        block_cache_bytes: 1 << 10,
        fs,
        ..Options::default()
    }
}

/// What the workload knows: the acknowledged versions of each key (operation
/// number to tombstone or not), and the operations whose write failed.
#[derive(Default)]
struct Model {
    acked: BTreeMap<usize, BTreeMap<usize, bool>>,
    failed: BTreeMap<usize, bool>,
    /// The engine turned read-only during the run.
    read_only: bool,
}

impl Model {
    /// The newest acknowledged version of `k` at or before operation `at`.
    fn as_of(&self, k: usize, at: usize) -> Option<(usize, bool)> {
        let versions = self.acked.get(&k)?;
        versions.range(..=at).next_back().map(|(&i, &d)| (i, d))
    }
}

/// A read's error must be an I/O error: a failed read is not corruption.
fn check_read_error(e: &Error, what: &str) {
    assert!(matches!(e, Error::Io { .. }), "{what}: {e}");
}

fn check_row(found: Option<(i64, Option<Vec<u8>>)>, expected: Option<(usize, bool)>, what: &str) {
    let expected = expected.filter(|&(_, deleted)| !deleted);
    match (found, expected) {
        (None, None) => {}
        (Some((e, v)), Some((i, _))) => {
            assert_eq!(e, i as i64, "{what}: event time");
            assert_eq!(v, Some(value(i)), "{what}: value");
        }
        (found, expected) => panic!("{what}: read {found:?}, expected {expected:?}"),
    }
}

/// Runs the workload on `fs` in `dir`; returns the model of what it was told.
/// Once the engine says it is read-only (after a failed WAL write or fsync,
/// or a manifest it could not commit), it must refuse every later write;
/// other failures (an SST or a new WAL segment that cannot be made) leave
/// nothing half-done, so later writes may go on.
fn workload(dir: &Path, fs: Arc<dyn FileSystem>) -> Model {
    let mut model = Model::default();
    let engine = match Engine::open(dir, options(fs)) {
        Ok(e) => e,
        Err(e) => {
            assert!(matches!(e, Error::Io { .. }), "open: {e}");
            return model;
        }
    };
    let mut read_only = false;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for batch_ops in plan() {
        let mut batch = WriteBatch::new();
        for &(i, k, delete) in &batch_ops {
            let r = if delete {
                batch.delete(TABLE, &key(k), i as i64)
            } else {
                batch.put(TABLE, &key(k), i as i64, &value(i))
            };
            r.expect("batch op");
        }
        match engine.write(batch) {
            Ok(_) => {
                assert!(!read_only, "a write was acknowledged while read-only");
                for &(i, k, delete) in &batch_ops {
                    model.acked.entry(k).or_default().insert(i, delete);
                }
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        Error::Io { .. } | Error::ReadOnly(_) | Error::Background(_)
                    ),
                    "write: {e}"
                );
                read_only = engine.stats().read_only;
                if let Error::Io {
                    op: "fsync", path, ..
                } = &e
                {
                    let wal = path.extension().is_some_and(|x| x == "wal");
                    assert!(
                        !wal || read_only,
                        "a failed WAL fsync left the engine writable"
                    );
                }
                for &(i, _, delete) in &batch_ops {
                    model.failed.insert(i, delete);
                }
            }
        }
        let (k, at) = (rng.gen_range(0..KEYS), batch_ops[0].0);
        let row = |r: Option<tessera_storage::Row>| r.map(|r| (r.event_ts, Some(r.value.to_vec())));
        match engine.latest(TABLE, &key(k)) {
            Ok(r) => check_row(row(r), model.as_of(k, usize::MAX), "latest"),
            Err(e) => check_read_error(&e, "latest"),
        }
        match engine.as_of(TABLE, &key(k), at as i64, None) {
            Ok(r) => check_row(row(r), model.as_of(k, at), "as_of"),
            Err(e) => check_read_error(&e, "as_of"),
        }
    }
    drop(engine);
    model.read_only = read_only;
    model
}

/// Reopens `dir` on the real file system and checks it against `model`.
fn check_reopen(dir: &Path, model: &Model, what: &str) {
    let engine = Engine::open(dir, options(Arc::new(OsFs::default())))
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    for k in 0..KEYS {
        let versions = engine
            .history(TABLE, &key(k), i64::MIN, i64::MAX)
            .unwrap_or_else(|e| panic!("{what}: history: {e}"));
        let none = BTreeMap::new();
        let acked = model.acked.get(&k).unwrap_or(&none);
        let mut seen = 0;
        for v in versions {
            let i = v.event_ts as usize;
            let deleted = match (acked.get(&i), model.failed.get(&i)) {
                (Some(&d), _) => {
                    seen += 1;
                    d
                }
                // A failed write may have reached the log before failing.
                (None, Some(&d)) => d,
                (None, None) => panic!("{what}: key {k} holds operation {i}, never written"),
            };
            match &v.value {
                None => assert!(deleted, "{what}: operation {i} is a tombstone"),
                Some(b) => assert_eq!(b.as_ref(), value(i).as_slice(), "{what}: value of {i}"),
            }
        }
        assert_eq!(
            seen,
            acked.len(),
            "{what}: key {k} lost acknowledged writes"
        );
    }
    engine
        .verify_index()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn every_failed_operation_is_refused_or_survived_and_never_corrupts() {
    let clean = tempfile::tempdir().expect("tempdir");
    let fault = FaultFs::simulating_syncs(Arc::new(OsFs::default()));
    let model = workload(clean.path(), fault.clone());
    assert!(model.failed.is_empty());
    check_reopen(clean.path(), &model, "fault-free run");
    let counts: Vec<(FaultOp, u64)> = FaultOp::ALL
        .iter()
        .map(|&op| (op, fault.op_count(op)))
        .collect();

    let mut runs = 0;
    let mut injected = 0;
    let mut refused_writes = 0;
    let mut read_only_runs = 0;
    for &(op, count) in &counts {
        for n in 1..=count + SLACK {
            let errno = if n % 2 == 0 { libc::ENOSPC } else { libc::EIO };
            let dir = tempfile::tempdir().expect("tempdir");
            let fault = FaultFs::simulating_syncs(Arc::new(OsFs::default()));
            fault.fail_nth(op, n, errno);
            let what = format!("{op:?} #{n} failing with errno {errno}");
            let model = workload(dir.path(), fault.clone());
            check_reopen(dir.path(), &model, &what);
            runs += 1;
            injected += fault.faults_injected();
            refused_writes += usize::from(!model.failed.is_empty());
            read_only_runs += usize::from(model.read_only);
        }
    }
    println!(
        "fault sweep: {runs} runs, {injected} faults injected, {refused_writes} runs refused \
         writes, {read_only_runs} turned read-only; operations per fault-free run: {counts:?}"
    );
    assert!(
        read_only_runs > 0,
        "no failed fsync turned the engine read-only"
    );
    assert!(
        injected as usize > runs / 2,
        "most runs must hit their fault"
    );
}
