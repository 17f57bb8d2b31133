//! [`replay_segment`]: reads a WAL segment's records back in order.
//!
//! A segment is read whole (segments are bounded by the memtable size) and
//! scanned from the header. The valid part of a segment is its longest prefix
//! of whole records with a legal length and a matching checksum; replay never
//! yields a record after the first invalid one, so what it yields is always a
//! prefix of what was appended. What happens to the invalid rest depends on
//! the [`TailPolicy`].

use super::{
    check_segment_header, segment_path, MAX_WAL_RECORD_BYTES, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use bytes::Bytes;
use std::ops::Range;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// What replay does with a segment's invalid tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailPolicy {
    /// Treat it as a write torn by a crash: cut it off on disk and stop
    /// cleanly. Use for the segment that was being written at the crash.
    Truncate,
    /// Treat it as damage: fail with the error naming file and offset. Use
    /// for segments that were complete and synced before the crash.
    Strict,
}

/// What [`replay_segment`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Records passed to the callback.
    pub records: u64,
    /// Length of the valid prefix of the segment, header included (0 if the
    /// header was torn).
    pub valid_bytes: u64,
    /// Bytes cut off the end of the segment (always 0 under
    /// [`TailPolicy::Strict`]).
    pub truncated_bytes: u64,
}

/// Calls `f(payload, offset)` for each valid record of segment `no` in
/// `dir`, in order; `offset` is the payload's byte offset in the file, for
/// locating errors found while decoding it. An error from `f` stops replay
/// and is returned; the file is then left untouched.
///
/// A torn or garbage tail (short record header, short payload, a zero or
/// over-the-limit length, checksum mismatch, zero-filled tail) is: with
/// [`TailPolicy::Truncate`], cut off (the file is truncated on disk to the
/// end of the last valid record and synced) and replay stops cleanly; with
/// [`TailPolicy::Strict`], an [`Error::Checksum`] / [`Error::Corruption`]
/// naming file and offset.
///
/// A segment whose header is torn (shorter than the header, or all zero
/// bytes: created but never written) counts as empty under `Truncate` and is
/// truncated to zero bytes. A bad magic, version, header checksum or segment
/// number is always an error.
pub fn replay_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    no: u64,
    tail: TailPolicy,
    f: &mut dyn FnMut(Bytes, u64) -> Result<()>,
) -> Result<ReplayReport> {
    let path = segment_path(dir, no);
    let data = Bytes::from(
        fs.read_all(&path)
            .map_err(|e| Error::io("read", &path, e))?,
    );
    let file_len = data.len() as u64;
    if header_is_torn(&data) {
        return match tail {
            TailPolicy::Strict => Err(Error::corruption(
                &path,
                0,
                format!("torn segment header: the {file_len}-byte file holds no complete header"),
            )),
            TailPolicy::Truncate => {
                cut_tail(fs, &path, 0, file_len)?;
                Ok(ReplayReport {
                    records: 0,
                    valid_bytes: 0,
                    truncated_bytes: file_len,
                })
            }
        };
    }
    check_segment_header(&data, &path, no)?;
    let (records, valid_end) = scan_records(&data, &path, tail, f)?;
    let valid_bytes = valid_end as u64;
    cut_tail(fs, &path, valid_bytes, file_len)?;
    Ok(ReplayReport {
        records,
        valid_bytes,
        truncated_bytes: file_len - valid_bytes,
    })
}

/// True if the segment's header never reached the disk whole: the file is
/// shorter than a header, or every byte is zero (space allocated, data lost).
fn header_is_torn(data: &[u8]) -> bool {
    data.len() < SEGMENT_HEADER_LEN || data.iter().all(|&b| b == 0)
}

/// Passes each valid record to `f`; returns the record count and the end of
/// the valid prefix. Under `Strict`, an invalid record is an error.
fn scan_records(
    data: &Bytes,
    path: &Path,
    tail: TailPolicy,
    f: &mut dyn FnMut(Bytes, u64) -> Result<()>,
) -> Result<(u64, usize)> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut records = 0;
    while pos < data.len() {
        match next_record(data, pos, path) {
            Ok(payload) => {
                f(data.slice(payload.clone()), payload.start as u64)?;
                records += 1;
                pos = payload.end;
            }
            Err(e) if tail == TailPolicy::Strict => return Err(e),
            Err(_) => break,
        }
    }
    Ok((records, pos))
}

/// The payload range of the record at `pos`, or the error describing why no
/// valid record starts there.
fn next_record(data: &[u8], pos: usize, path: &Path) -> Result<Range<usize>> {
    let rest = data.get(pos..).unwrap_or_default();
    let mut d = Decoder::new(rest, path, pos as u64);
    let len = d.u32("record header")? as usize;
    let stored = d.u64("record header")?;
    if len == 0 {
        return Err(d.error_at(0, "zero record length (zero-filled tail)"));
    }
    if len > MAX_WAL_RECORD_BYTES {
        return Err(d.error_at(
            0,
            format!("record length {len} is over the limit {MAX_WAL_RECORD_BYTES}"),
        ));
    }
    let payload = d.take(len, "record payload")?;
    let computed = xxh3_64(payload);
    if computed != stored {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            offset: (pos + RECORD_HEADER_LEN) as u64,
            stored,
            computed,
        });
    }
    let start = pos + RECORD_HEADER_LEN;
    Ok(start..start + len)
}

/// Truncates the file at `path` to `valid` bytes and syncs it, if it is longer.
fn cut_tail(fs: &dyn FileSystem, path: &Path, valid: u64, file_len: u64) -> Result<()> {
    if file_len == valid {
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        valid,
        cut = file_len - valid,
        "truncating invalid WAL tail"
    );
    let mut file = fs
        .open_append(path)
        .map_err(|e| Error::io("open", path, e))?;
    file.truncate(valid)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.sync().map_err(|e| Error::io("fsync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;
    use crate::wal::{encode_segment_header, list_segments, WalWriter};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn os() -> Arc<dyn FileSystem> {
        Arc::new(OsFs::default())
    }

    fn payload(i: usize) -> Vec<u8> {
        (0..(i * 7) % 50 + 1).map(|j| (i * 31 + j) as u8).collect()
    }

    /// Writes `payloads` to segment `no` and returns the file's bytes.
    fn write_segment(dir: &Path, no: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut w = WalWriter::create(os(), dir, no).unwrap();
        for p in payloads {
            w.append(&[p]).unwrap();
        }
        w.sync().unwrap();
        std::fs::read(segment_path(dir, no)).unwrap()
    }

    fn replay(dir: &Path, no: u64, tail: TailPolicy) -> Result<(Vec<Vec<u8>>, ReplayReport)> {
        let mut got = Vec::new();
        let report = replay_segment(&*os(), dir, no, tail, &mut |p, off| {
            got.push((p.to_vec(), off));
            Ok(())
        })?;
        let data = std::fs::read(segment_path(dir, no)).unwrap();
        for (p, off) in &got {
            // The offset locates the payload in the file.
            assert_eq!(&data[*off as usize..*off as usize + p.len()], &p[..]);
        }
        Ok((got.into_iter().map(|(p, _)| p).collect(), report))
    }

    fn file_len(dir: &Path, no: u64) -> u64 {
        std::fs::metadata(segment_path(dir, no)).unwrap().len()
    }

    #[test]
    fn replay_yields_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<_> = (0..100).map(payload).collect();
        let bytes = write_segment(dir.path(), 1, &written);
        for tail in [TailPolicy::Strict, TailPolicy::Truncate] {
            let (got, report) = replay(dir.path(), 1, tail).unwrap();
            assert_eq!(got, written);
            assert_eq!(report.records, 100);
            assert_eq!(report.valid_bytes, bytes.len() as u64);
            assert_eq!(report.truncated_bytes, 0);
        }
    }

    #[test]
    fn empty_segment_replays_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, &[]);
        let (got, report) = replay(dir.path(), 1, TailPolicy::Strict).unwrap();
        assert!(got.is_empty());
        assert_eq!(report.valid_bytes, SEGMENT_HEADER_LEN as u64);
    }

    #[test]
    fn missing_segment_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            replay(dir.path(), 1, TailPolicy::Truncate),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn torn_tail_at_every_length_recovers_the_complete_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<_> = (0..5).map(payload).collect();
        let full = write_segment(dir.path(), 1, &written);
        let last_len = RECORD_HEADER_LEN + written[4].len();
        let last_start = full.len() - last_len;
        let path = segment_path(dir.path(), 1);
        for cut in 0..last_len {
            std::fs::write(&path, &full[..last_start + cut]).unwrap();
            let strict = replay(dir.path(), 1, TailPolicy::Strict);
            if cut == 0 {
                assert_eq!(strict.unwrap().0, written[..4]);
            } else {
                assert!(strict.unwrap_err().is_corruption(), "cut {cut}");
            }
            let (got, report) = replay(dir.path(), 1, TailPolicy::Truncate).unwrap();
            assert_eq!(got, written[..4], "cut {cut}");
            assert_eq!(report.valid_bytes, last_start as u64);
            assert_eq!(report.truncated_bytes, cut as u64);
            assert_eq!(file_len(dir.path(), 1), last_start as u64);
            // The recovered segment accepts new records after the valid prefix.
            let mut w = WalWriter::open_append(os(), dir.path(), 1).unwrap();
            w.append(&[b"after recovery"]).unwrap();
            w.sync().unwrap();
            let (got, _) = replay(dir.path(), 1, TailPolicy::Strict).unwrap();
            assert_eq!(got.len(), 5);
            assert_eq!(got[..4], written[..4]);
            assert_eq!(got[4], b"after recovery");
        }
    }

    #[test]
    fn torn_header_counts_as_empty_under_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let header = encode_segment_header(1);
        let path = segment_path(dir.path(), 1);
        for cut in 0..SEGMENT_HEADER_LEN {
            std::fs::write(&path, &header[..cut]).unwrap();
            assert!(replay(dir.path(), 1, TailPolicy::Strict)
                .unwrap_err()
                .is_corruption());
            let (got, report) = replay(dir.path(), 1, TailPolicy::Truncate).unwrap();
            assert!(got.is_empty());
            assert_eq!(
                report,
                ReplayReport {
                    records: 0,
                    valid_bytes: 0,
                    truncated_bytes: cut as u64
                }
            );
            assert_eq!(file_len(dir.path(), 1), 0);
        }
        // A created-but-never-written segment whose blocks read back as zeros.
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(replay(dir.path(), 1, TailPolicy::Strict).is_err());
        let (got, report) = replay(dir.path(), 1, TailPolicy::Truncate).unwrap();
        assert!(got.is_empty());
        assert_eq!(report.truncated_bytes, 4096);
        // And it can then be reused.
        let mut w = WalWriter::open_append(os(), dir.path(), 1).unwrap();
        w.append(&[b"x"]).unwrap();
        assert_eq!(
            replay(dir.path(), 1, TailPolicy::Strict).unwrap().0,
            vec![b"x".to_vec()]
        );
    }

    #[test]
    fn bad_header_is_always_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let full = write_segment(dir.path(), 1, &[payload(1)]);
        let path = segment_path(dir.path(), 1);
        for (at, what) in [
            (0, "magic"),
            (4, "version"),
            (8, "segment number"),
            (16, "checksum"),
        ] {
            let mut bad = full.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            for tail in [TailPolicy::Strict, TailPolicy::Truncate] {
                let e = replay(dir.path(), 1, tail).unwrap_err();
                assert!(e.is_corruption(), "{what}: {e}");
            }
            // Nothing was truncated.
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
        // A valid header for another segment number.
        std::fs::rename(&path, segment_path(dir.path(), 2)).unwrap();
        std::fs::write(segment_path(dir.path(), 2), &full).unwrap();
        let e = replay(dir.path(), 2, TailPolicy::Truncate).unwrap_err();
        assert!(matches!(e, Error::Corruption { offset: 8, .. }), "{e}");
    }

    #[test]
    fn every_byte_flip_yields_only_a_prefix_and_strict_errors() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<_> = (0..6).map(payload).collect();
        let full = write_segment(dir.path(), 1, &written);
        let path = segment_path(dir.path(), 1);
        for i in 0..full.len() {
            for mask in [0x01u8, 0xFF] {
                let mut bad = full.clone();
                bad[i] ^= mask;
                std::fs::write(&path, &bad).unwrap();
                let e = replay(dir.path(), 1, TailPolicy::Strict).unwrap_err();
                assert!(e.is_corruption(), "flip at {i}: {e}");
                std::fs::write(&path, &bad).unwrap();
                if let Ok((got, report)) = replay(dir.path(), 1, TailPolicy::Truncate) {
                    assert!(got.len() < written.len(), "flip at {i} went unnoticed");
                    assert_eq!(got[..], written[..got.len()], "flip at {i}");
                    assert_eq!(file_len(dir.path(), 1), report.valid_bytes);
                }
            }
        }
    }

    #[test]
    fn garbage_tails_are_cut_under_truncate_and_errors_under_strict() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<_> = (0..3).map(payload).collect();
        let full = write_segment(dir.path(), 1, &written);
        let path = segment_path(dir.path(), 1);
        let mut over_limit = ((MAX_WAL_RECORD_BYTES + 1) as u32).to_le_bytes().to_vec();
        over_limit.extend_from_slice(&[0u8; 8]);
        let mut bad_sum = 3u32.to_le_bytes().to_vec();
        bad_sum.extend_from_slice(&0u64.to_le_bytes());
        bad_sum.extend_from_slice(b"abc");
        let tails: [(&str, Vec<u8>); 4] = [
            ("zero-filled", vec![0u8; 4096]),
            ("over-limit length", over_limit),
            ("bad checksum", bad_sum),
            ("long length, short payload", {
                let mut t = 1000u32.to_le_bytes().to_vec();
                t.extend_from_slice(&[7u8; 20]);
                t
            }),
        ];
        for (what, tail) in tails {
            let mut data = full.clone();
            data.extend_from_slice(&tail);
            std::fs::write(&path, &data).unwrap();
            let e = replay(dir.path(), 1, TailPolicy::Strict).unwrap_err();
            // Located at the bad record's header or payload.
            let record_at = full.len() as u64;
            let payload_at = record_at + RECORD_HEADER_LEN as u64;
            match &e {
                Error::Corruption { offset, .. } => {
                    assert!((record_at..=payload_at).contains(offset), "{what}: {e}")
                }
                Error::Checksum { offset, .. } => assert_eq!(*offset, payload_at, "{what}"),
                other => panic!("{what}: {other}"),
            }
            let (got, report) = replay(dir.path(), 1, TailPolicy::Truncate).unwrap();
            assert_eq!(got, written, "{what}");
            assert_eq!(report.truncated_bytes, tail.len() as u64, "{what}");
            assert_eq!(std::fs::read(&path).unwrap(), full, "{what}");
        }
    }

    #[test]
    fn callback_error_stops_replay_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let full = write_segment(dir.path(), 1, &[payload(1), payload(2)]);
        let path = segment_path(dir.path(), 1);
        let mut data = full.clone();
        data.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &data).unwrap();
        let mut calls = 0;
        let e = replay_segment(
            &*os(),
            dir.path(),
            1,
            TailPolicy::Truncate,
            &mut |_, off| {
                calls += 1;
                Err(Error::corruption(&path, off, "rejected by caller"))
            },
        )
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(e, Error::Corruption { .. }));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn multiple_segments_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        for no in [3u64, 7, 8] {
            let ps: Vec<_> = (0..no as usize).map(|i| payload(i + no as usize)).collect();
            write_segment(dir.path(), no, &ps);
            all.extend(ps);
        }
        std::fs::write(dir.path().join("LOCK"), b"").unwrap();
        let mut got = Vec::new();
        for no in list_segments(&*os(), dir.path()).unwrap() {
            got.extend(replay(dir.path(), no, TailPolicy::Strict).unwrap().0);
        }
        assert_eq!(got, all);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn grouped_appends_round_trip(
            groups in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..6), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut w = WalWriter::create(os(), dir.path(), 5).unwrap();
            let mut written = Vec::new();
            let mut ends = vec![w.bytes()];
            for g in &groups {
                let refs: Vec<&[u8]> = g.iter().map(|p| &p[..]).collect();
                w.append(&refs).unwrap();
                for p in g {
                    written.push(p.clone());
                    ends.push(ends[ends.len() - 1] + (RECORD_HEADER_LEN + p.len()) as u64);
                }
            }
            prop_assert_eq!(w.bytes(), ends[ends.len() - 1]);
            drop(w);
            let (got, report) = replay(dir.path(), 5, TailPolicy::Strict).unwrap();
            prop_assert_eq!(&got, &written);
            prop_assert_eq!(report.records, written.len() as u64);

            // Cut the file anywhere after the header: the complete records survive.
            let path = segment_path(dir.path(), 5);
            let full = std::fs::read(&path).unwrap();
            let at = SEGMENT_HEADER_LEN + cut.index(full.len() - SEGMENT_HEADER_LEN + 1);
            std::fs::write(&path, &full[..at]).unwrap();
            let complete = ends.iter().filter(|&&e| e <= at as u64).count() - 1;
            let (got, report) = replay(dir.path(), 5, TailPolicy::Truncate).unwrap();
            prop_assert_eq!(&got[..], &written[..complete]);
            prop_assert_eq!(report.valid_bytes, ends[complete]);
        }
    }
}
