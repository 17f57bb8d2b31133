//! The bodies of Tessera's fuzz targets, shared by the libFuzzer binaries
//! in `fuzz/fuzz_targets/` and by the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`), so the two cannot drift apart.
//!
//! Each body takes arbitrary bytes. It returns normally when the code under
//! test accepted the input or refused it with a typed error, and panics
//! (which libFuzzer reports as a crash) when the code panicked or a
//! property below does not hold:
//!
//! - [`protocol_frame`]: a byte stream as a connection reads it: frame
//!   headers ([`FrameHeader::decode`]) and, for each whole frame, the body
//!   decoder its flags and opcode select (request, reply or error body).
//!   Every accepted header and body re-encodes to the same bytes.
//! - [`protocol_message`]: one message body, the first byte choosing the
//!   decoder (request, reply or error body of which opcode); the same
//!   checks, without frames in the way.
//! - [`sst_block`]: [`Block::decode`] of a data block; an accepted block's
//!   entries are all readable, in strictly increasing storage order, and
//!   each is found again by [`Block::find_first`] and [`Block::seek`].
//! - [`sst_index`]: [`decode_index`], the index block decoder; an accepted
//!   index re-encodes to the same bytes and its handles tile the data
//!   region it was given.
//! - [`wal_replay`]: the bytes as a WAL segment of an engine directory,
//!   then [`Engine::open`] (recovery replays it); it must open or fail with
//!   a typed error, and a directory that opened opens again with the same
//!   rows.
//! - [`registry_spec`]: TOML spec files through [`Spec::parse`], [`plan`]
//!   and [`Registry::apply`] (a second spec evolves the first); a plan that
//!   validates applies, and planning the same spec again changes nothing.
//! - [`parquet_import`]: the bytes as a Parquet file read by `tessera
//!   import`'s reader for a group with every feature type; it must read
//!   rows or fail with a message, and every row it reads has one value per
//!   mapped column, of the column's type or null.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tessera_protocol::{
    decode_error, encode_error, flags, Body, FrameError, FrameHeader, ImportBatch, Opcode, Reply,
    Request, Value, HEADER_LEN,
};
use tessera_server::columnar::arrow_rows::Target;
use tessera_server::registry::{Entity, FeatureGroup};
use tessera_storage::sstable::{decode_index, Block, HEADER_LEN as SST_HEADER_LEN};
use tessera_storage::{cmp_internal, wal, Durability, Engine, Options, MAX_KEY_LEN};

/// Frame limit the frame target decodes against: small enough that the
/// fuzzer reaches `FRAME_TOO_LARGE`.
pub const FUZZ_MAX_FRAME: usize = 1 << 16;

/// A byte stream of frames, decoded as a connection would: header, then
/// body, until the bytes run out or a header cannot be trusted.
pub fn protocol_frame(data: &[u8]) {
    let mut rest = data;
    while let Some((header, tail)) = rest.split_first_chunk::<HEADER_LEN>() {
        let h = match FrameHeader::decode(header, FUZZ_MAX_FRAME) {
            Ok(h) => h,
            Err(FrameError::TooLarge { len, max }) => {
                assert!(
                    len > max as u64,
                    "a frame of {len} bytes refused under {max}"
                );
                return;
            }
            // The stream cannot be resynchronised after a bad header.
            Err(_) => return,
        };
        assert_eq!(&h.encode(), header, "a header re-encodes to its bytes");
        let Some(body) = tail.get(..h.body_len as usize) else {
            return;
        };
        assert!(HEADER_LEN + body.len() <= FUZZ_MAX_FRAME);
        if let Some(op) = Opcode::from_u8(h.opcode) {
            check_body(op, h.flags, h.request_id, body);
        }
        rest = &tail[body.len()..];
    }
}

/// One body; the first byte chooses the decoder: opcode `Opcode::ALL[b %
/// 17]`, and `b / 17 % 3` a request, a reply or an error body.
pub fn protocol_message(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let op = Opcode::ALL[usize::from(selector) % Opcode::ALL.len()];
    let frame_flags = match usize::from(selector) / Opcode::ALL.len() % 3 {
        0 => 0,
        1 => flags::REPLY,
        _ => flags::REPLY | flags::ERROR,
    };
    check_body(op, frame_flags, 7, body);
}

/// Decodes `body` as the frame's flags say and checks that what decodes
/// re-encodes to the same bytes.
fn check_body(op: Opcode, frame_flags: u16, request_id: u64, body: &[u8]) {
    if frame_flags & flags::REPLY == 0 {
        if let Ok(request) = Request::decode(op, body) {
            check_request(op, &request, body);
        }
    } else if frame_flags & flags::ERROR != 0 {
        if let Ok(error) = decode_error(body) {
            let mut frame = Vec::new();
            encode_error(request_id, op as u8, &error, &mut frame);
            assert_eq!(&frame[HEADER_LEN..], body, "an error body re-encodes");
        }
    } else if let Ok(reply) = Reply::decode(op, Body::copy_from(body)) {
        check_reply(op, &reply, body);
    }
}

fn check_request(op: Opcode, request: &Request, body: &[u8]) {
    assert_eq!(request.opcode(), op);
    let mut again = Vec::new();
    request
        .encode_body(&mut again)
        .expect("a decoded request encodes");
    {
        assert_eq!(
            again, body,
            "a decoded {op:?} request re-encodes to its bytes"
        );
    }
    let back = Request::decode(op, &again).expect("a re-encoded request decodes");
    // Debug text, not `==`: a NaN is a value like any other here.
    assert_eq!(format!("{back:?}"), format!("{request:?}"));
}

fn check_reply(op: Opcode, reply: &Reply, body: &[u8]) {
    assert_eq!(reply.opcode(), op);
    let mut again = Vec::new();
    reply.encode_body(&mut again);
    assert_eq!(
        again, body,
        "a decoded {op:?} reply re-encodes to its bytes"
    );
    match reply {
        Reply::GetSlate(s) | Reply::PitLookup(s) => {
            for part in s.parts() {
                for i in 0..part.rows() {
                    let _ = (part.found(i), part.event_ts(i));
                }
                check_columns(part.columns(), part.rows());
            }
        }
        Reply::History(h) | Reply::Export(h) => {
            for i in 0..h.rows() {
                let _ = (h.event_ts(i), h.ingest_ts(i), h.seq(i), h.tombstone(i));
            }
            check_columns(h.columns(), h.rows());
        }
        _ => {}
    }
}

/// Every cell a validated columnar reply marks valid is readable.
fn check_columns(columns: &[tessera_protocol::Column], rows: usize) {
    for c in columns {
        assert_eq!(c.rows(), rows, "column `{}` has the part's rows", c.name());
        for i in 0..rows {
            let v = c.value(i);
            assert_eq!(
                c.is_valid(i),
                !matches!(v, Value::Null),
                "column `{}` (tag {}) row {i}: validity and value disagree",
                c.name(),
                c.tag()
            );
        }
    }
}

/// A decoded SST data block.
pub fn sst_block(data: &[u8]) {
    let Ok(block) = Block::decode(
        bytes::Bytes::copy_from_slice(data),
        Path::new("fuzz.sst"),
        0,
    ) else {
        return;
    };
    let entries: Vec<_> = (0..block.len())
        .map(|i| {
            block
                .to_entry(i)
                .expect("an entry of a validated block reads")
        })
        .collect();
    for (i, e) in entries.iter().enumerate() {
        assert!(e.key.len() <= MAX_KEY_LEN);
        let r = block.entry(i).expect("entry");
        assert_eq!((r.key, r.value), (&e.key[..], &e.value[..]));
        assert_eq!(block.value(i).expect("value"), e.value);
        if let Some(prev) = i.checked_sub(1).map(|p| &entries[p]) {
            let order = cmp_internal(
                (prev.table, &prev.key, prev.event_ts, prev.seq),
                (e.table, &e.key, e.event_ts, e.seq),
            );
            assert_eq!(order, std::cmp::Ordering::Less, "entries {i} and before");
        }
        let first = block
            .find_first(e.table, &e.key)
            .expect("find_first")
            .expect("an entry's key is found");
        assert!(first <= i);
        assert_eq!(
            (entries[first].table, &entries[first].key),
            (e.table, &e.key)
        );
        let at = block
            .seek(e.table, &e.key, e.event_ts, e.seq)
            .expect("seek");
        assert_eq!(at, i, "seek to entry {i}'s own position");
    }
    assert!(block.entry(block.len()).is_err());
}

/// An SST index block. The input is `blocks u32 | data_end u64 | index
/// payload`: the block count the properties declare (at most the format's
/// limit, as `Table::open` checks first) and where the bloom block starts.
pub fn sst_index(data: &[u8]) {
    let Some((head, payload)) = data.split_first_chunk::<12>() else {
        return;
    };
    let blocks = u32::from_le_bytes([head[0], head[1], head[2], head[3]])
        % (tessera_storage::sstable::MAX_BLOCKS_PER_SST + 1);
    let mut end = [0u8; 8];
    end.copy_from_slice(&head[4..]);
    let data_end = u64::from_le_bytes(end);
    let payload = bytes::Bytes::copy_from_slice(payload);
    let Ok(records) = decode_index(&payload, blocks, SST_HEADER_LEN, data_end) else {
        return;
    };
    assert_eq!(records.len(), blocks as usize);
    // The layout of docs/format.md, written out here independently.
    let mut again = (records.len() as u32).to_le_bytes().to_vec();
    let mut next = SST_HEADER_LEN;
    for r in &records {
        assert_eq!(r.offset, next, "the blocks tile the data region");
        next = r.offset + u64::from(r.stored_len) + 13;
        again.extend_from_slice(&r.table.to_le_bytes());
        again.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
        again.extend_from_slice(&r.key);
        again.extend_from_slice(&r.event_ts.to_le_bytes());
        again.extend_from_slice(&r.seq.to_le_bytes());
        again.extend_from_slice(&r.offset.to_le_bytes());
        again.extend_from_slice(&r.stored_len.to_le_bytes());
    }
    assert_eq!(next, data_end);
    assert_eq!(again, payload, "an index re-encodes to its bytes");
}

/// Options for the WAL target: small caches, no background work.
fn wal_options() -> Options {
    Options {
        durability: Durability::None,
        block_cache_bytes: 1 << 20,
        background_compaction: false,
        ..Options::default()
    }
}

/// A fresh directory for one WAL run, in memory where the system has
/// `/dev/shm`.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("tessera-fuzz-")
        .tempdir_in(base)
        .expect("a scratch directory")
}

/// Flag bits of the WAL target's first input byte.
const WAL_FIX_CHECKSUMS: u8 = 1;
const WAL_NOT_LAST: u8 = 2;

/// The input's first byte holds flags, the rest is a WAL segment. With
/// [`WAL_FIX_CHECKSUMS`], the segment number and every checksum are set
/// to what they should be, so the fuzzer reaches the batch decoder. With
/// [`WAL_NOT_LAST`], an empty segment follows it, so it is replayed as a
/// complete, synced segment (damage is an error, not a torn tail).
pub fn wal_replay(data: &[u8]) {
    let Some((&mode, segment)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir();
    let path = dir.path();
    drop(Engine::open(path, wal_options()).expect("a fresh engine opens"));
    let wal_dir = path.join("wal");
    let fs = tessera_storage::fs::OsFs::default();
    let segments = wal::list_segments(&fs, &wal_dir).expect("list segments");
    let &[no] = &segments[..] else {
        panic!("a fresh engine has one WAL segment, not {segments:?}");
    };
    let mut segment = segment.to_vec();
    if mode & WAL_FIX_CHECKSUMS != 0 {
        fix_checksums(&mut segment, no);
    }
    std::fs::write(wal::segment_path(&wal_dir, no), &segment).expect("write segment");
    if mode & WAL_NOT_LAST != 0 {
        let empty = segment_header(no + 1);
        std::fs::write(wal::segment_path(&wal_dir, no + 1), empty).expect("write segment");
    }
    let first = match Engine::open(path, wal_options()) {
        Ok(engine) => contents(&engine),
        Err(_) => return,
    };
    let again = Engine::open(path, wal_options()).expect("a recovered directory opens again");
    assert_eq!(contents(&again), first, "recovery is repeatable");
}

/// What an engine holds, in the tables a fuzzed batch is likely to name.
fn contents(engine: &Engine) -> (u64, Vec<tessera_storage::Entry>) {
    let snap = engine.snapshot();
    let mut rows = Vec::new();
    for table in [0, 1, 2, 0x0101_0101, u32::MAX] {
        for e in snap.scan(table) {
            match e {
                Ok(e) => rows.push(e),
                Err(e) => panic!("a recovered engine's scan fails: {e}"),
            }
        }
    }
    (engine.last_seq(), rows)
}

/// A valid header of segment `no` (docs/format.md, "WAL segment").
fn segment_header(no: u64) -> [u8; wal::SEGMENT_HEADER_LEN] {
    let mut h = [0u8; wal::SEGMENT_HEADER_LEN];
    h[..4].copy_from_slice(&wal::SEGMENT_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&wal::SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&no.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&h[..16]);
    h[16..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Sets the header's number and checksum, and each whole record's payload
/// checksum.
fn fix_checksums(segment: &mut Vec<u8>, no: u64) {
    if segment.len() < wal::SEGMENT_HEADER_LEN {
        segment.resize(wal::SEGMENT_HEADER_LEN, 0);
    }
    let mut header = segment_header(no);
    header[..8].copy_from_slice(&segment[..8]);
    let sum = xxhash_rust::xxh3::xxh3_64(&header[..16]);
    header[16..].copy_from_slice(&sum.to_le_bytes());
    segment[..wal::SEGMENT_HEADER_LEN].copy_from_slice(&header);
    let mut pos = wal::SEGMENT_HEADER_LEN;
    while let Some(len) = segment.get(pos..pos + 4) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = pos + wal::RECORD_HEADER_LEN;
        let Some(payload) = segment.get(start..start.saturating_add(len)) else {
            break;
        };
        let sum = xxhash_rust::xxh3::xxh3_64(payload);
        segment[pos + 4..start].copy_from_slice(&sum.to_le_bytes());
        pos = start + len;
    }
}

/// Spec files, separated by NUL bytes: the first is applied to an empty
/// registry, each later one planned and applied against the result.
pub fn registry_spec(data: &[u8]) {
    use tessera_server::registry::{plan, Registry, Spec};
    let text = String::from_utf8_lossy(data);
    let mut registry = Registry::empty();
    for (n, file) in text.split('\0').take(4).enumerate() {
        let name = format!("spec{n}.toml");
        let Ok(spec) = Spec::parse([(name.as_str(), file)]) else {
            return;
        };
        let Ok(p) = plan(&registry, &spec) else {
            return;
        };
        let next = registry
            .apply(&p)
            .unwrap_or_else(|e| panic!("a validated plan applies: {e}\n{file}"));
        let again = plan(&next, &spec).expect("a spec that applied still validates");
        assert!(
            again.is_empty(),
            "planning an applied spec again changes something:\n{file}"
        );
        registry = next;
    }
}

/// Where the corpus of target `name` is: `fuzz/corpus/<name>/`.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name)
}

/// Calls `body` on every file of target `name`'s corpus; returns how many.
pub fn replay_corpus(name: &str, body: fn(&[u8])) -> usize {
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| body(&data));
        if let Err(panic) = outcome {
            eprintln!("corpus file {} fails", file.display());
            std::panic::resume_unwind(panic);
        }
    }
    files.len()
}

/// The spec of the Parquet target's group: both key types, every feature
/// type.
pub const IMPORT_SPEC: &str = r#"
[[entity]]
name = "things"
keys = [{ name = "shop", type = "string" }, { name = "thing_id", type = "int64" }]

[[group]]
name = "all_types"
entity = "things"
ttl = "10d"
retention = "3650d"
owner = "fuzz"
feature = [
    { name = "b", type = "bool" },
    { name = "i32", type = "int32" },
    { name = "i64", type = "int64" },
    { name = "f32", type = "float32" },
    { name = "f64", type = "float64" },
    { name = "s", type = "string" },
    { name = "raw", type = "bytes" },
    { name = "at", type = "timestamp" },
    { name = "emb", type = "embedding(4)" },
    { name = "li", type = "list<int64>" },
    { name = "lf", type = "list<float32>" },
    { name = "ls", type = "list<string>" },
]
"#;

/// The group and entity of [`IMPORT_SPEC`].
pub fn import_group() -> &'static (Arc<FeatureGroup>, Arc<Entity>) {
    static GROUP: OnceLock<(Arc<FeatureGroup>, Arc<Entity>)> = OnceLock::new();
    GROUP.get_or_init(|| {
        use tessera_server::registry::{plan, Registry, Spec};
        let spec = Spec::parse([("import.toml", IMPORT_SPEC)]).expect("the spec parses");
        let empty = Registry::empty();
        let registry = empty
            .apply(&plan(&empty, &spec).expect("the spec validates"))
            .expect("the spec applies");
        let group = registry.group("all_types").expect("the group").clone();
        let entity = registry.entity("things").expect("the entity").clone();
        (group, entity)
    })
}

/// The bytes as a Parquet file for `tessera import` into [`IMPORT_SPEC`]'s
/// group, invalid rows rejected rather than failing the file.
pub fn parquet_import(data: &[u8]) {
    use tessera_server::columnar::import::{mapping, open_parquet, read_rows, READ_BATCH_ROWS};
    let (group, entity) = import_group();
    #[cfg(fuzzing)]
    tolerate_parquet_panics();
    let file = Path::new("fuzz.parquet");
    let Ok(builder) = open_parquet(bytes::Bytes::copy_from_slice(data), file) else {
        return;
    };
    let Ok(m) = mapping(builder.schema(), file, group, entity, "event_ts") else {
        return;
    };
    assert_eq!(m.columns.len(), m.names.len() + 1);
    let mut next_row = 0u64;
    let mut rejects = Vec::new();
    let mut send = |rows: ImportBatch, first: u64| -> Result<(), String> {
        assert!(rows.rows() > 0 && rows.rows() <= READ_BATCH_ROWS);
        assert!(first >= next_row, "batches are numbered in file order");
        assert_eq!(
            rows.columns().len(),
            m.names.len(),
            "one column per session column"
        );
        for (column, (name, target)) in rows.columns().iter().zip(&m.columns) {
            assert_eq!(column.name(), name);
            for i in 0..rows.rows() {
                let v = column.value(i);
                assert!(
                    fits(*target, &v),
                    "column `{name}` ({target:?}) read as {v:?}"
                );
            }
        }
        next_row = first + rows.rows() as u64;
        Ok(())
    };
    // A damaged file may fail part way; what was read must still hold.
    let _ = read_rows(builder, file, &m, true, &mut send, &mut rejects);
    for pair in rejects.windows(2) {
        assert!(pair[0].1.row < pair[1].1.row, "rejections in row order");
    }
}

/// libFuzzer's panic hook aborts on every panic, even one caught. The
/// import's reader catches the panics of its Parquet dependency on
/// malformed files (e.g. apache/arrow-rs#10437) and refuses the file; let
/// a panic raised inside the `parquet` and `arrow-*` crates unwind, so that
/// one caught there is not a crash. One nothing catches still aborts (in
/// libfuzzer-sys, once it reaches the target's edge), and a panic anywhere
/// else aborts at once.
#[cfg(fuzzing)]
fn tolerate_parquet_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let dependency = info.location().is_some_and(|l| {
                let f = l.file();
                f.contains("/index.crates.io-")
                    && (f.contains("/parquet-") || f.contains("/arrow-"))
            });
            if !dependency {
                fuzzer_hook(info);
            }
        }));
    });
}

/// Whether the import may send `v` for a column mapped to `target` (the
/// server checks nullability and embedding dimensions).
fn fits(target: Target, v: &Value) -> bool {
    use tessera_server::registry::{ElementType as E, FeatureType as F, KeyType as K};
    match (target, v) {
        (Target::EventTs, _) => false,
        (_, Value::Null) => true,
        (Target::Key(K::Int64), Value::Int64(_)) | (Target::Key(K::String), Value::String(_)) => {
            true
        }
        (Target::Key(_), _) => false,
        (Target::Feature(ty), v) => matches!(
            (ty, v),
            (F::Bool, Value::Bool(_))
                | (F::Int32, Value::Int32(_))
                | (F::Int64, Value::Int64(_))
                | (F::Float32, Value::Float32(_))
                | (F::Float64, Value::Float64(_))
                | (F::String, Value::String(_))
                | (F::Bytes, Value::Bytes(_))
                | (F::Timestamp, Value::Timestamp(_))
                | (F::Embedding(_), Value::Embedding(_))
                | (F::List(E::Int64), Value::ListInt64(_))
                | (F::List(E::Float32), Value::ListFloat32(_))
                | (F::List(E::String), Value::ListString(_))
        ),
    }
}
