//! Bit rot in every kind of file the engine keeps: random single-bit and
//! whole-byte flips in each region of an SST (header, data blocks, bloom
//! filter, key directory, index, properties, footer), in WAL segment
//! headers and records, in the manifest and in the hash-index checkpoint.
//!
//! After each flip the directory is opened and everything is read back
//! (latest, `as_of` and full history of every key, then the index against a
//! full scan, which reads every block). Each flip must end one of two ways:
//!
//! - **detected**: a checksum or corruption error that names the damaged
//!   file and an offset inside it;
//! - **recovered**: every read right. A damaged checkpoint is rebuilt from
//!   the SSTs; a damaged record in the last WAL segment is taken for a torn
//!   tail and cut there, so the writes after it are lost, in commit order,
//!   and nothing else.
//!
//! Wrong data, a panic, or any other error fails the test. The test prints
//! the flips tried and the outcome per region (docs/reliability.md).

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use tessera_storage::{Durability, Engine, Error, Options};

const TABLE: u32 = 1;
const KEYS: usize = 300;
/// Versions of every key written before the flush to SSTs.
const SST_VERSIONS: i64 = 3;
/// Keys given one more version that stays in the WAL.
const WAL_KEYS: usize = 100;
/// Flips per region.
const FLIPS: usize = 60;

fn key(k: usize) -> Vec<u8> {
    format!("user:{k:05}").into_bytes()
}

fn value(k: usize, e: i64) -> Vec<u8> {
    let mut v = format!("key {k} at {e}:").into_bytes();
    v.resize(90, (k % 251) as u8);
    v
}

fn opts() -> Options {
    Options {
        durability: Durability::Sync,
        block_bytes: 1024,
        memtable_bytes: 32 << 10,
        sst_target_bytes: 24 << 10,
        background_compaction: false,
        ..Options::default()
    }
}

/// The pristine directory: SSTs holding three versions of every key, an
/// index checkpoint, and a WAL holding a fourth version of the first
/// `WAL_KEYS` keys, one record each, in key order.
fn pristine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), opts()).expect("open");
    for e in 1..=SST_VERSIONS {
        for k in 0..KEYS {
            engine.put(TABLE, &key(k), e, &value(k, e)).expect("put");
        }
    }
    engine.close().expect("close flushes and checkpoints");
    let engine = Engine::open(dir.path(), opts()).expect("reopen");
    for k in 0..WAL_KEYS {
        let e = SST_VERSIONS + 1;
        engine.put(TABLE, &key(k), e, &value(k, e)).expect("put");
    }
    drop(engine); // no flush: the last versions live in the WAL only
    dir
}

/// Event times of the versions of key `k`, newest first, given that the
/// first `wal_kept` WAL records survived.
fn expected_versions(k: usize, wal_kept: usize) -> Vec<i64> {
    let newest = if k < wal_kept {
        SST_VERSIONS + 1
    } else {
        SST_VERSIONS
    };
    (1..=newest).rev().collect()
}

/// Reads everything. `Ok(wal_kept)`: every read right, for the first
/// `wal_kept` WAL records having survived. `Err`: the first error met.
fn read_back(dir: &Path) -> Result<usize, Error> {
    let engine = Engine::open(dir, opts())?;
    let mut histories = BTreeMap::new();
    for k in 0..KEYS {
        let versions = engine.history(TABLE, &key(k), i64::MIN, i64::MAX)?;
        for v in &versions {
            let bytes = v.value.as_ref().expect("no tombstones were written");
            assert_eq!(bytes.as_ref(), value(k, v.event_ts), "value of key {k}");
        }
        histories.insert(k, versions.iter().map(|v| v.event_ts).collect::<Vec<_>>());
    }
    // The WAL versions that survived must be a prefix of the write order.
    let wal_kept = (0..WAL_KEYS)
        .take_while(|&k| histories[&k].first() == Some(&(SST_VERSIONS + 1)))
        .count();
    for (&k, got) in &histories {
        assert_eq!(got, &expected_versions(k, wal_kept), "history of key {k}");
        let latest = engine.latest(TABLE, &key(k))?.expect("every key has a row");
        assert_eq!(latest.event_ts, got[0], "latest of key {k}");
        assert_eq!(latest.value, value(k, got[0]), "latest value of key {k}");
        let at = engine
            .as_of(TABLE, &key(k), 2, None)?
            .expect("version 2 exists");
        assert_eq!(
            (at.event_ts, at.value.as_ref()),
            (2, value(k, 2).as_slice())
        );
    }
    engine.verify_index()?;
    Ok(wal_kept)
}

/// A damaged region of one file.
struct Region {
    name: &'static str,
    file: PathBuf,
    bytes: Range<usize>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Block trailer: compression byte, decoded length, checksum.
const BLOCK_TRAILER: usize = 13;
const FOOTER: usize = 68;
const SST_HEADER: usize = 16;

/// The regions of an SST, from its footer (docs/format.md).
fn sst_regions(file: &Path) -> Vec<Region> {
    let b = std::fs::read(file).expect("read sst");
    let footer = b.len() - FOOTER;
    let block = |slot: usize| {
        let at = footer + 12 * slot;
        let offset = u64_at(&b, at) as usize;
        offset..offset + u32_at(&b, at + 8) as usize + BLOCK_TRAILER
    };
    let (bloom, keydir, index, properties) = (block(0), block(1), block(2), block(3));
    let region = |name, bytes| Region {
        name,
        file: file.to_path_buf(),
        bytes,
    };
    vec![
        region("SST header", 0..SST_HEADER),
        region("SST data blocks", SST_HEADER..bloom.start),
        region("SST bloom filter", bloom),
        region("SST key directory", keydir),
        region("SST index", index),
        region("SST properties", properties),
        region("SST footer", footer..b.len()),
    ]
}

fn all_regions(dir: &Path) -> Vec<Region> {
    let mut ssts: Vec<PathBuf> = std::fs::read_dir(dir.join("sst"))
        .expect("sst dir")
        .map(|e| e.expect("entry").path())
        .collect();
    ssts.sort();
    assert!(ssts.len() >= 2, "the workload should make several SSTs");
    let mut regions = sst_regions(&ssts[ssts.len() / 2]);
    let len = |p: &Path| std::fs::metadata(p).expect("meta").len() as usize;
    let wal = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| len(p))
        .expect("a WAL segment");
    let whole = |name, file: PathBuf| Region {
        name,
        bytes: 0..len(&file),
        file,
    };
    regions.push(Region {
        name: "WAL segment header",
        file: wal.clone(),
        bytes: 0..24,
    });
    regions.push(Region {
        name: "WAL records",
        bytes: 24..len(&wal),
        file: wal,
    });
    regions.push(whole("MANIFEST", dir.join("MANIFEST")));
    regions.push(whole("INDEX checkpoint", dir.join("INDEX")));
    regions
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// What became of one flip.
enum Outcome {
    Detected,
    /// Every read right; `wal_lost` WAL records were cut with the tail.
    Recovered {
        wal_lost: usize,
    },
}

/// Checks that `e` is a corruption error naming `file` and an offset in it.
fn check_detection(e: &Error, file: &Path, what: &str) {
    let (path, offset) = match e {
        Error::Checksum { path, offset, .. } | Error::Corruption { path, offset, .. } => {
            (path, *offset)
        }
        other => panic!("{what}: not a corruption error: {other}"),
    };
    // A damaged SST may be met while rebuilding the index, through the
    // checkpoint's or the key directory's view: the file is still named.
    assert_eq!(path.file_name(), file.file_name(), "{what}: {e}");
    let len = std::fs::metadata(file).map_or(u64::MAX, |m| m.len());
    assert!(
        offset <= len,
        "{what}: offset {offset} past the end ({len})"
    );
}

fn flip_once(pristine: &Path, region: &Region, rng: &mut StdRng, n: usize) -> Outcome {
    let work = tempfile::tempdir().expect("tempdir");
    copy_dir(pristine, work.path());
    let rel = region.file.strip_prefix(pristine).expect("inside");
    let file = work.path().join(rel);
    let mut bytes = std::fs::read(&file).expect("read");
    let at = rng.gen_range(region.bytes.clone());
    // Half single bits, half whole bytes.
    let mask = if n % 2 == 0 {
        1u8 << rng.gen_range(0..8)
    } else {
        rng.gen_range(1..=255u8)
    };
    bytes[at] ^= mask;
    std::fs::write(&file, &bytes).expect("write");
    // Without the checkpoint, open rebuilds the index from every SST's key
    // directory, so no region of an SST goes unread.
    if region.file.starts_with(pristine.join("sst")) {
        std::fs::remove_file(work.path().join("INDEX")).expect("remove INDEX");
    }
    let what = format!("{} byte {at} ^ {mask:#04x}", region.name);
    match read_back(work.path()) {
        Ok(wal_kept) => Outcome::Recovered {
            wal_lost: WAL_KEYS - wal_kept,
        },
        Err(e) => {
            check_detection(&e, &file, &what);
            Outcome::Detected
        }
    }
}

#[test]
fn every_flip_is_detected_or_recovered_never_wrong_data() {
    let pristine = pristine();
    let intact = tempfile::tempdir().expect("tempdir");
    copy_dir(pristine.path(), intact.path());
    assert_eq!(read_back(intact.path()).expect("intact"), WAL_KEYS);
    let mut rng = StdRng::seed_from_u64(2026);
    let mut report = Vec::new();
    for region in all_regions(pristine.path()) {
        let (mut detected, mut recovered, mut wal_lost) = (0, 0, 0);
        for n in 0..FLIPS {
            match flip_once(pristine.path(), &region, &mut rng, n) {
                Outcome::Detected => detected += 1,
                Outcome::Recovered { wal_lost: lost } => {
                    recovered += 1;
                    wal_lost += lost;
                }
            }
        }
        let must_detect = !matches!(region.name, "WAL records" | "INDEX checkpoint");
        assert!(
            !must_detect || detected == FLIPS,
            "{}: only {detected} of {FLIPS} flips detected",
            region.name
        );
        report.push(format!(
            "| {} | {FLIPS} | {detected} | {recovered} | {wal_lost} |",
            region.name
        ));
    }
    println!("| region | flips | detected | recovered | WAL records cut |");
    println!("|---|---|---|---|---|");
    for line in report {
        println!("{line}");
    }
}
