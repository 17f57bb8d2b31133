//! Corruption tests: flip bytes in SSTs and WAL segments and check that the
//! engine reports a checksum or corruption error (or, for the WAL tail,
//! truncates cleanly) and never returns wrong data or panics.

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tessera_storage::{Durability, Engine, Error, Options};

const TABLE: u32 = 1;
const KEYS: usize = 400;

fn value(k: usize, e: i64) -> Vec<u8> {
    let mut v = format!("key{k}@{e}:").into_bytes();
    v.resize(120, (k % 251) as u8);
    v
}

fn key(k: usize) -> Vec<u8> {
    format!("user:{k:05}").into_bytes()
}

fn opts() -> Options {
    Options {
        durability: Durability::None,
        block_bytes: 1024,
        background_compaction: false,
        ..Options::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn flip(path: &Path, offset: usize, mask: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= mask;
    std::fs::write(path, bytes).expect("write");
}

/// Reads every key; each answer must be the value written or an error.
/// Returns how many reads failed.
fn read_all(engine: &Engine, written_e: i64, allow_missing: bool) -> usize {
    let mut errors = 0;
    for k in 0..KEYS {
        match engine.latest(TABLE, &key(k)) {
            Ok(Some(row)) => {
                assert_eq!(row.event_ts, written_e, "wrong version for key {k}");
                assert_eq!(row.value, value(k, written_e), "wrong value for key {k}");
            }
            Ok(None) => assert!(allow_missing, "key {k} vanished without an error"),
            Err(e) => {
                assert!(e.is_corruption(), "unexpected error kind: {e}");
                errors += 1;
            }
        }
    }
    errors
}

fn populate(dir: &Path, flush: bool) -> i64 {
    let engine = Engine::open(dir, opts()).expect("open");
    let e = 1_000;
    for k in 0..KEYS {
        engine.put(TABLE, &key(k), e, &value(k, e)).expect("put");
    }
    if flush {
        engine.close().expect("close");
    } else {
        drop(engine); // leaves everything in the WAL
    }
    e
}

#[test]
fn sst_byte_flips_are_detected_never_returned() {
    let pristine = tempfile::tempdir().expect("tempdir");
    let e = populate(pristine.path(), true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut detected = 0;
    let trials = 120;
    for _ in 0..trials {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(pristine.path(), work.path());
        // Remove the index checkpoint half the time so both the checkpoint
        // path and the rebuild-from-key-directories path are exercised.
        if rng.gen_bool(0.5) {
            let _ = std::fs::remove_file(work.path().join("INDEX"));
        }
        let ssts = files_with_suffix(&work.path().join("sst"), ".sst");
        let sst = &ssts[rng.gen_range(0..ssts.len())];
        let len = std::fs::metadata(sst).expect("meta").len() as usize;
        flip(sst, rng.gen_range(0..len), 1 << rng.gen_range(0..8));
        match Engine::open(work.path(), opts()) {
            Err(err) => {
                assert!(
                    err.is_corruption(),
                    "open failed with a non-corruption error: {err}"
                );
                detected += 1;
            }
            Ok(engine) => {
                if read_all(&engine, e, false) > 0 {
                    detected += 1;
                }
            }
        }
    }
    // Almost every byte of an SST is covered by a checksum; a flip in
    // padding-free structures is always caught when that structure is read.
    assert!(
        detected > trials / 2,
        "only {detected}/{trials} flips detected"
    );
}

#[test]
fn wal_byte_flips_give_errors_or_a_clean_prefix() {
    let pristine = tempfile::tempdir().expect("tempdir");
    let e = populate(pristine.path(), false);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..120 {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(pristine.path(), work.path());
        let segs = files_with_suffix(&work.path().join("wal"), ".wal");
        let seg = segs
            .iter()
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        let seg = seg.expect("a WAL segment");
        let len = std::fs::metadata(seg).expect("meta").len() as usize;
        flip(seg, rng.gen_range(0..len), 1 << rng.gen_range(0..8));
        match Engine::open(work.path(), opts()) {
            Err(err) => assert!(err.is_corruption(), "unexpected error: {err}"),
            Ok(engine) => {
                // A truncated tail loses a suffix of the writes: whatever is
                // present must be exactly what was written, in commit order.
                let mut present = Vec::new();
                for k in 0..KEYS {
                    let r = engine
                        .latest(TABLE, &key(k))
                        .expect("reads after WAL recovery");
                    if let Some(row) = &r {
                        assert_eq!(row.value, value(k, e));
                    }
                    present.push(r.is_some());
                }
                let first_missing = present.iter().position(|p| !p).unwrap_or(KEYS);
                assert!(
                    present[first_missing..].iter().all(|p| !p),
                    "recovered writes are not a prefix"
                );
            }
        }
    }
}

#[test]
fn corruption_errors_name_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), true);
    let _ = std::fs::remove_file(dir.path().join("INDEX"));
    let ssts = files_with_suffix(&dir.path().join("sst"), ".sst");
    // The first data block starts right after the file header.
    let first_block = tessera_storage::sstable::HEADER_LEN;
    flip(&ssts[0], first_block as usize, 0xff);
    let engine = Engine::open(dir.path(), opts()).expect("open: data blocks are read lazily");
    let err = (0..KEYS)
        .find_map(|k| engine.latest(TABLE, &key(k)).err())
        .expect("a read of the damaged block fails");
    match &err {
        Error::Checksum { path, offset, .. } | Error::Corruption { path, offset, .. } => {
            assert!(path.ends_with(ssts[0].file_name().expect("name")));
            assert_eq!(*offset, first_block);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.to_string().contains(".sst"));
}

/// A damaged index checkpoint is only an accelerator: open rebuilds the
/// index from the SSTs and every read is still right. A damaged manifest is
/// reported as corruption of that file, never guessed around.
#[test]
fn damaged_checkpoint_is_rebuilt_and_damaged_manifest_is_refused() {
    let pristine = tempfile::tempdir().expect("tempdir");
    let e = populate(pristine.path(), true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..40 {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(pristine.path(), work.path());
        let index = work.path().join("INDEX");
        let len = std::fs::metadata(&index).expect("INDEX exists").len() as usize;
        flip(&index, rng.gen_range(0..len), 1 << rng.gen_range(0..8));
        let engine = Engine::open(work.path(), opts()).expect("open rebuilds the index");
        assert_eq!(read_all(&engine, e, false), 0);
        engine
            .verify_index()
            .expect("rebuilt index agrees with scan");
    }
    for _ in 0..40 {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(pristine.path(), work.path());
        let manifest = work.path().join("MANIFEST");
        let len = std::fs::metadata(&manifest).expect("MANIFEST exists").len() as usize;
        flip(&manifest, rng.gen_range(0..len), 1 << rng.gen_range(0..8));
        let err = Engine::open(work.path(), opts()).expect_err("a damaged manifest is refused");
        assert!(err.is_corruption(), "unexpected error: {err}");
        assert!(
            err.to_string().contains("MANIFEST"),
            "error does not name the file: {err}"
        );
    }
}

/// A kill right after a WAL segment is created, before its header is
/// written, leaves an empty last segment. Recovery drops it, so it is not
/// mistaken for a damaged earlier segment once newer segments exist.
#[test]
fn an_empty_last_wal_segment_is_dropped_at_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = dir.path().join("wal");
    let mut acked = Vec::new();
    for round in 0..4i64 {
        let engine = Engine::open(dir.path(), opts()).expect("open");
        for k in 0..10 {
            engine
                .put(TABLE, &key(k), round, &value(k, round))
                .expect("put");
        }
        acked.push(round);
        // The crash: no close, and a newer segment created but empty.
        drop(engine);
        let newest = files_with_suffix(&wal, ".wal")
            .into_iter()
            .max()
            .expect("a segment");
        let stem = newest.file_stem().and_then(|s| s.to_str()).expect("name");
        let next: u64 = stem.parse::<u64>().expect("segment number") + 1;
        std::fs::write(wal.join(format!("{next:020}.wal")), b"").expect("empty segment");
    }
    let engine = Engine::open(dir.path(), opts()).expect("reopen");
    for k in 0..10 {
        let row = engine.latest(TABLE, &key(k)).expect("read").expect("row");
        assert_eq!(row.event_ts, 3);
        assert_eq!(row.value.as_ref(), value(k, 3).as_slice());
    }
    let empty = files_with_suffix(&wal, ".wal")
        .into_iter()
        .filter(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(1) == 0)
        .count();
    assert!(empty <= 1, "{empty} empty segments left behind");
}
