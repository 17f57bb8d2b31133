//! Corruption cases with exact expectations: the error for a damaged data
//! block names the SST and the block's offset, and an empty last WAL
//! segment left by a kill is dropped. Random flips in every kind of file
//! are in `bit_rot.rs`.

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

/// Writes every key once and closes, which flushes them to SSTs.
fn populate(dir: &Path) {
    let engine = Engine::open(dir, opts()).expect("open");
    for k in 0..KEYS {
        engine
            .put(TABLE, &key(k), 1_000, &value(k, 1_000))
            .expect("put");
    }
    engine.close().expect("close");
}

#[test]
fn corruption_errors_name_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
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
