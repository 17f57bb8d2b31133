//! Requests and replies: their Rust types and body layouts
//! (`docs/protocol.md`, "Messages").
//!
//! Decoding checks every length against the body, rejects bytes left over,
//! invalid UTF-8, unknown enum values and nonzero reserved bits, and sizes
//! no allocation by a count alone. Slate and history replies, which are
//! columnar, live in [`crate::slate`].

use crate::body::Body;
use crate::error::{DecodeError, EncodeError, ErrorBody, ErrorCode};
use crate::frame::{begin_frame, begin_reply_frame, finish_frame, flags};
use crate::import_batch::ImportBatch;
use crate::offline::{self, ExportRequest, PitLookup};
use crate::op::{Opcode, Role};
use crate::slate::{HistoryReply, SlateReply};
use crate::value::{decode_key, encode_key, Key, Value};
use crate::wire::{self, Reader};

/// `HELLO`: version range and token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub min_version: u8,
    /// Highest protocol version the client speaks.
    pub max_version: u8,
    /// A free-form client name, for the server's logs.
    pub client: String,
    /// The access token; empty if none.
    pub token: String,
}

/// The reply to `HELLO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloReply {
    /// The version chosen.
    pub version: u8,
    /// The token's role.
    pub role: Role,
    /// The token's identity.
    pub identity: String,
    /// Server name and version.
    pub server: String,
    /// The connection's frame limit in bytes, header included.
    pub max_frame: u32,
}

/// One file of a declarative registry spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecFile {
    /// The file's name, for messages.
    pub name: String,
    /// Its TOML text.
    pub text: String,
}

/// One row of a `PUT`.
#[derive(Clone, Debug, PartialEq)]
pub struct PutRow {
    /// When the values became true, µs since the epoch.
    pub event_ts: i64,
    /// One value per column of the [`Put`].
    pub values: Vec<Value>,
}

/// `PUT`: an all-or-nothing batch of rows of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Put {
    /// The feature group.
    pub group: String,
    /// The names of each row's values: every key column, then features.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<PutRow>,
}

/// `DELETE`: tombstones, each `(event_ts, key)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Delete {
    /// The feature group.
    pub group: String,
    /// Each key is absent as of its event time.
    pub keys: Vec<(i64, Key)>,
}

/// The reply to `PUT` and `DELETE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitReply {
    /// Commit sequence of the batch's last row.
    pub seq: u64,
    /// The commit time the engine assigned.
    pub ingest_ts: i64,
    /// Rows (or keys) committed.
    pub rows: u32,
}

/// One part of a slate: keys of one group and the features wanted.
#[derive(Clone, Debug, PartialEq)]
pub struct SlatePart {
    /// The feature group.
    pub group: String,
    /// Features to return; empty means every active feature.
    pub features: Vec<String>,
    /// The keys.
    pub keys: Vec<Key>,
}

/// `GET_SLATE`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlateRequest {
    /// Read each key as of this event time (default: latest).
    pub as_of: Option<i64>,
    /// Only versions ingested at or before this time.
    pub known_at: Option<i64>,
    /// The parts, answered in order.
    pub parts: Vec<SlatePart>,
}

/// `HISTORY`: every version of one key in an event-time range.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRequest {
    /// The feature group.
    pub group: String,
    /// The key.
    pub key: Key,
    /// Earliest event time, inclusive.
    pub from: i64,
    /// Latest event time, inclusive.
    pub to: i64,
    /// Features to return; empty means every active feature.
    pub features: Vec<String>,
}

/// One record of the registry's audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The registry version the change produced.
    pub version: u64,
    /// When, µs since the epoch.
    pub time_us: i64,
    /// Who applied it.
    pub identity: String,
    /// What changed, human-readable.
    pub diff: String,
}

/// `IMPORT_BEGIN`: opens a bulk import of rows of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportBegin {
    /// The feature group.
    pub group: String,
    /// The names of each row's values, as in [`Put`].
    pub columns: Vec<String>,
    /// Skip invalid rows, reporting each, instead of failing the import.
    pub reject_invalid: bool,
    /// Rows per second the client asks to be held to (0: the server's
    /// limit).
    pub max_rows_per_s: u32,
}

/// The reply to `IMPORT_BEGIN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportBegun {
    /// The session, for the connection's later import requests.
    pub session: u64,
    /// The rate the server holds the session to, rows per second.
    pub max_rows_per_s: u32,
}

/// `IMPORT_ROWS`: rows for an import session.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportRows {
    /// The session.
    pub session: u64,
    /// The number of the batch's first row in the client's input, for
    /// messages about rows.
    pub first_row: u64,
    /// The rows, column by column: one column per column of the session,
    /// in its order.
    pub rows: ImportBatch,
}

/// A row an import skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Its number (`first_row` + index in the batch).
    pub row: u64,
    /// Why, naming the column.
    pub reason: String,
}

/// The reply to `IMPORT_ROWS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRowsReply {
    /// Rows taken into the import.
    pub accepted: u32,
    /// Rows skipped (only with `reject_invalid`).
    pub rejected: Vec<Rejection>,
}

/// The reply to `IMPORT_COMMIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportCommitted {
    /// Rows committed.
    pub rows: u64,
    /// Commit sequence of the first row (in input order).
    pub first_seq: u64,
    /// Commit sequence of the last.
    pub last_seq: u64,
    /// The commit time every row carries.
    pub ingest_ts: i64,
    /// SSTs written.
    pub files: u32,
}

/// A request, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// `HELLO`.
    Hello(Hello),
    /// `PING` with its payload.
    Ping(Vec<u8>),
    /// `REGISTRY_GET`.
    RegistryGet,
    /// `REGISTRY_PLAN` of a spec.
    RegistryPlan(Vec<SpecFile>),
    /// `REGISTRY_APPLY` of a spec.
    RegistryApply {
        /// The registry version the spec was planned against.
        expected_version: u64,
        /// The spec.
        files: Vec<SpecFile>,
    },
    /// `REGISTRY_HISTORY`, newest first.
    RegistryHistory {
        /// Most records (0: all).
        limit: u32,
    },
    /// `PUT`.
    Put(Put),
    /// `DELETE`.
    Delete(Delete),
    /// `GET_SLATE`.
    GetSlate(SlateRequest),
    /// `HISTORY`.
    History(HistoryRequest),
    /// `STATS`.
    Stats,
    /// `IMPORT_BEGIN`.
    ImportBegin(ImportBegin),
    /// `IMPORT_ROWS`.
    ImportRows(ImportRows),
    /// `IMPORT_COMMIT` of a session.
    ImportCommit {
        /// The session.
        session: u64,
    },
    /// `IMPORT_ABORT` of a session.
    ImportAbort {
        /// The session.
        session: u64,
    },
    /// `EXPORT`.
    Export(ExportRequest),
    /// `PIT_LOOKUP`.
    PitLookup(PitLookup),
}

/// A reply, decoded.
#[derive(Clone, Debug)]
pub enum Reply {
    /// To `HELLO`.
    Hello(HelloReply),
    /// To `PING`: the payload.
    Ping(Vec<u8>),
    /// To `REGISTRY_GET`.
    RegistryGet {
        /// The registry version.
        version: u64,
        /// The registry as JSON.
        registry_json: String,
    },
    /// To `REGISTRY_PLAN`.
    RegistryPlan {
        /// The version the plan is against.
        version: u64,
        /// Whether the spec differs from the registry.
        changes: bool,
        /// The human-readable diff.
        plan: String,
    },
    /// To `REGISTRY_APPLY`.
    RegistryApply {
        /// The new registry version.
        version: u64,
        /// What was applied.
        plan: String,
    },
    /// To `REGISTRY_HISTORY`: newest first.
    RegistryHistory(Vec<AuditEntry>),
    /// To `PUT`.
    Put(CommitReply),
    /// To `DELETE`.
    Delete(CommitReply),
    /// To `GET_SLATE`.
    GetSlate(SlateReply),
    /// To `HISTORY`.
    History(HistoryReply),
    /// To `STATS`: a JSON object.
    Stats(String),
    /// To `IMPORT_BEGIN`.
    ImportBegin(ImportBegun),
    /// To `IMPORT_ROWS`.
    ImportRows(ImportRowsReply),
    /// To `IMPORT_COMMIT`.
    ImportCommit(ImportCommitted),
    /// To `IMPORT_ABORT`.
    ImportAbort,
    /// One chunk of an `EXPORT` stream.
    Export(HistoryReply),
    /// To `PIT_LOOKUP`: one part, a row per lookup.
    PitLookup(SlateReply),
}

impl Request {
    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello(_) => Opcode::Hello,
            Request::Ping(_) => Opcode::Ping,
            Request::RegistryGet => Opcode::RegistryGet,
            Request::RegistryPlan(_) => Opcode::RegistryPlan,
            Request::RegistryApply { .. } => Opcode::RegistryApply,
            Request::RegistryHistory { .. } => Opcode::RegistryHistory,
            Request::Put(_) => Opcode::Put,
            Request::Delete(_) => Opcode::Delete,
            Request::GetSlate(_) => Opcode::GetSlate,
            Request::History(_) => Opcode::History,
            Request::Stats => Opcode::Stats,
            Request::ImportBegin(_) => Opcode::ImportBegin,
            Request::ImportRows(_) => Opcode::ImportRows,
            Request::ImportCommit { .. } => Opcode::ImportCommit,
            Request::ImportAbort { .. } => Opcode::ImportAbort,
            Request::Export(_) => Opcode::Export,
            Request::PitLookup(_) => Opcode::PitLookup,
        }
    }

    /// Whether sending the request twice has the same effect as once, so a
    /// client may resend it after a lost connection.
    pub fn is_idempotent(&self) -> bool {
        self.opcode().is_idempotent()
    }

    /// Appends the request's body.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Request::Hello(h) => {
                wire::put_u8(out, h.min_version);
                wire::put_u8(out, h.max_version);
                wire::put_str16(out, &h.client, "client name")?;
                wire::put_str16(out, &h.token, "token")?;
            }
            Request::Ping(p) => wire::put_bytes32(out, p, "ping payload")?,
            Request::RegistryGet | Request::Stats => {}
            Request::RegistryPlan(files) => encode_files(files, out)?,
            Request::RegistryApply {
                expected_version,
                files,
            } => {
                wire::put_u64(out, *expected_version);
                encode_files(files, out)?;
            }
            Request::RegistryHistory { limit } => wire::put_u32(out, *limit),
            Request::Put(p) => encode_put(p, out)?,
            Request::Delete(d) => encode_delete(d, out)?,
            Request::GetSlate(s) => encode_slate(s, out)?,
            Request::History(h) => encode_history(h, out)?,
            Request::ImportBegin(b) => encode_import_begin(b, out)?,
            Request::ImportRows(r) => encode_import_rows(r, out),
            Request::ImportCommit { session } | Request::ImportAbort { session } => {
                wire::put_u64(out, *session)
            }
            Request::Export(e) => offline::encode_export(e, out)?,
            Request::PitLookup(p) => offline::encode_pit(p, out)?,
        }
        Ok(())
    }

    /// Decodes the body of a request with opcode `op`.
    pub fn decode(op: Opcode, body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(body);
        let request = match op {
            Opcode::Hello => Request::Hello(Hello {
                min_version: r.u8("min_version")?,
                max_version: r.u8("max_version")?,
                client: r.str16("client name")?.to_owned(),
                token: r.str16("token")?.to_owned(),
            }),
            Opcode::Ping => {
                let payload = r.bytes32("ping payload")?;
                check_limit("ping payload bytes", payload.len(), crate::MAX_PING_BYTES)?;
                Request::Ping(payload.to_vec())
            }
            Opcode::RegistryGet => Request::RegistryGet,
            Opcode::Stats => Request::Stats,
            Opcode::RegistryPlan => Request::RegistryPlan(decode_files(&mut r)?),
            Opcode::RegistryApply => Request::RegistryApply {
                expected_version: r.u64("expected_version")?,
                files: decode_files(&mut r)?,
            },
            Opcode::RegistryHistory => Request::RegistryHistory {
                limit: r.u32("limit")?,
            },
            Opcode::Put => Request::Put(decode_put(&mut r)?),
            Opcode::Delete => Request::Delete(decode_delete(&mut r)?),
            Opcode::GetSlate => Request::GetSlate(decode_slate(&mut r)?),
            Opcode::ImportBegin => Request::ImportBegin(ImportBegin {
                group: name16(&mut r, "group")?,
                columns: decode_names(&mut r, "columns")?,
                reject_invalid: decode_bool(&mut r, "reject_invalid")?,
                max_rows_per_s: r.u32("max_rows_per_s")?,
            }),
            Opcode::ImportRows => Request::ImportRows(decode_import_rows(&mut r)?),
            Opcode::ImportCommit => Request::ImportCommit {
                session: r.u64("session")?,
            },
            Opcode::ImportAbort => Request::ImportAbort {
                session: r.u64("session")?,
            },
            Opcode::Export => Request::Export(offline::decode_export(&mut r)?),
            Opcode::PitLookup => Request::PitLookup(offline::decode_pit(&mut r)?),
            Opcode::History => Request::History(HistoryRequest {
                group: name16(&mut r, "group")?,
                key: decode_key(&mut r)?,
                from: r.i64("from")?,
                to: r.i64("to")?,
                features: decode_names(&mut r, "features")?,
            }),
        };
        r.finish()?;
        Ok(request)
    }
}

pub(crate) fn check_limit(
    what: &'static str,
    found: usize,
    limit: usize,
) -> Result<(), DecodeError> {
    if found > limit {
        return Err(DecodeError::LimitExceeded { what, found, limit });
    }
    Ok(())
}

pub(crate) fn encode_names(names: &[String], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_count16(out, names.len(), "names")?;
    names
        .iter()
        .try_for_each(|n| wire::put_str16(out, n, "name"))
}

/// A group, feature or column name: at most [`crate::MAX_NAME_BYTES`].
pub(crate) fn name16(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let name = r.str16(what)?;
    check_limit("name bytes", name.len(), crate::MAX_NAME_BYTES)?;
    Ok(name.to_owned())
}

pub(crate) fn decode_names(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<Vec<String>, DecodeError> {
    let n = r.count16(what)?;
    let mut names = Vec::with_capacity(r.capacity_for(n, 2));
    for _ in 0..n {
        names.push(name16(r, what)?);
    }
    Ok(names)
}

pub(crate) fn encode_files(files: &[SpecFile], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_count16(out, files.len(), "spec files")?;
    for f in files {
        wire::put_str16(out, &f.name, "spec file name")?;
        wire::put_str32(out, &f.text, "spec file text")?;
    }
    Ok(())
}

fn decode_files(r: &mut Reader<'_>) -> Result<Vec<SpecFile>, DecodeError> {
    let n = r.count16("spec files")?;
    let mut files = Vec::with_capacity(r.capacity_for(n, 6));
    for _ in 0..n {
        files.push(SpecFile {
            name: r.str16("spec file name")?.to_owned(),
            text: r.str32("spec file text")?.to_owned(),
        });
    }
    Ok(files)
}

pub(crate) fn encode_put(p: &Put, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_str16(out, &p.group, "group")?;
    encode_names(&p.columns, out)?;
    encode_rows(&p.rows, p.columns.len(), out)
}

fn decode_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::UnknownValue {
            what,
            value: u64::from(v),
        }),
    }
}

pub(crate) fn encode_import_begin(b: &ImportBegin, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_str16(out, &b.group, "group")?;
    encode_names(&b.columns, out)?;
    wire::put_u8(out, u8::from(b.reject_invalid));
    wire::put_u32(out, b.max_rows_per_s);
    Ok(())
}

pub(crate) fn encode_import_rows(r: &ImportRows, out: &mut Vec<u8>) {
    wire::put_u64(out, r.session);
    wire::put_u64(out, r.first_row);
    // 16 bytes in: the batch's padding, counted from its own start, stays
    // aligned to the body's.
    out.extend_from_slice(r.rows.bytes());
}

/// `list32<row>`, each row `event_ts` then `width` values.
fn encode_rows(rows: &[PutRow], width: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_count32(out, rows.len(), "rows")?;
    for (i, row) in rows.iter().enumerate() {
        if row.values.len() != width {
            // A row of the wrong width cannot be framed: its values would be
            // read as the next row's.
            return Err(EncodeError {
                what: if i == 0 {
                    "values of the first row"
                } else {
                    "values of a row"
                },
                len: row.values.len(),
                max: width,
            });
        }
        wire::put_i64(out, row.event_ts);
        row.values.iter().try_for_each(|v| v.encode(out))?;
    }
    Ok(())
}

/// `list32<row>` of `width` values each.
fn decode_rows(r: &mut Reader<'_>, width: usize) -> Result<Vec<PutRow>, DecodeError> {
    let n = r.count32("rows")?;
    check_limit("rows in a batch", n, crate::MAX_PUT_ROWS)?;
    check_limit(
        "values in a batch",
        n.saturating_mul(width.max(1)),
        crate::MAX_BATCH_VALUES,
    )?;
    // Each row is at least its event time and one tag per column.
    let mut rows = Vec::with_capacity(r.capacity_for(n, 8 + width));
    for _ in 0..n {
        let event_ts = r.i64("row event_ts")?;
        let mut values = Vec::with_capacity(width);
        for _ in 0..width {
            values.push(Value::decode(r)?);
        }
        rows.push(PutRow { event_ts, values });
    }
    Ok(rows)
}

fn decode_import_rows(r: &mut Reader<'_>) -> Result<ImportRows, DecodeError> {
    let session = r.u64("session")?;
    let first_row = r.u64("first_row")?;
    let batch = r.bytes(r.remaining(), "import batch")?;
    Ok(ImportRows {
        session,
        first_row,
        rows: ImportBatch::from_body(Body::copy_from(batch))?,
    })
}

fn decode_put(r: &mut Reader<'_>) -> Result<Put, DecodeError> {
    let group = name16(r, "group")?;
    let columns = decode_names(r, "columns")?;
    let rows = decode_rows(r, columns.len())?;
    Ok(Put {
        group,
        columns,
        rows,
    })
}

pub(crate) fn encode_delete(d: &Delete, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_str16(out, &d.group, "group")?;
    wire::put_count32(out, d.keys.len(), "tombstones")?;
    for (ts, key) in &d.keys {
        wire::put_i64(out, *ts);
        encode_key(key, out)?;
    }
    Ok(())
}

pub(crate) fn encode_history(h: &HistoryRequest, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_str16(out, &h.group, "group")?;
    encode_key(&h.key, out)?;
    wire::put_i64(out, h.from);
    wire::put_i64(out, h.to);
    encode_names(&h.features, out)
}

fn decode_delete(r: &mut Reader<'_>) -> Result<Delete, DecodeError> {
    let group = name16(r, "group")?;
    let n = r.count32("tombstones")?;
    check_limit("keys in a batch", n, crate::MAX_PUT_ROWS)?;
    let mut keys = Vec::with_capacity(r.capacity_for(n, 10));
    for _ in 0..n {
        let ts = r.i64("tombstone event_ts")?;
        keys.push((ts, decode_key(r)?));
    }
    Ok(Delete { group, keys })
}

/// `GET_SLATE` flag bits.
const SLATE_AS_OF: u8 = 1 << 0;
const SLATE_KNOWN_AT: u8 = 1 << 1;

pub(crate) fn encode_slate(s: &SlateRequest, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut f = 0;
    if s.as_of.is_some() {
        f |= SLATE_AS_OF;
    }
    if s.known_at.is_some() {
        f |= SLATE_KNOWN_AT;
    }
    wire::put_u8(out, f);
    if let Some(t) = s.as_of {
        wire::put_i64(out, t);
    }
    if let Some(t) = s.known_at {
        wire::put_i64(out, t);
    }
    wire::put_count16(out, s.parts.len(), "slate parts")?;
    for part in &s.parts {
        wire::put_str16(out, &part.group, "group")?;
        encode_names(&part.features, out)?;
        wire::put_count32(out, part.keys.len(), "keys")?;
        part.keys.iter().try_for_each(|k| encode_key(k, out))?;
    }
    Ok(())
}

fn decode_slate(r: &mut Reader<'_>) -> Result<SlateRequest, DecodeError> {
    let f = r.u8("slate flags")?;
    if f & !(SLATE_AS_OF | SLATE_KNOWN_AT) != 0 {
        return Err(DecodeError::Reserved {
            what: "slate flags",
        });
    }
    let as_of = (f & SLATE_AS_OF != 0).then(|| r.i64("as_of")).transpose()?;
    let known_at = (f & SLATE_KNOWN_AT != 0)
        .then(|| r.i64("known_at"))
        .transpose()?;
    let n = r.count16("slate parts")?;
    check_limit("slate parts", n, crate::MAX_SLATE_PARTS)?;
    let mut parts = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let group = name16(r, "group")?;
        let features = decode_names(r, "features")?;
        let k = r.count32("keys")?;
        total = total.saturating_add(k);
        check_limit("slate keys", total, crate::MAX_SLATE_KEYS)?;
        let mut keys = Vec::with_capacity(r.capacity_for(k, 2));
        for _ in 0..k {
            keys.push(decode_key(r)?);
        }
        parts.push(SlatePart {
            group,
            features,
            keys,
        });
    }
    Ok(SlateRequest {
        as_of,
        known_at,
        parts,
    })
}

impl Reply {
    /// The opcode of the request this answers.
    pub fn opcode(&self) -> Opcode {
        match self {
            Reply::Hello(_) => Opcode::Hello,
            Reply::Ping(_) => Opcode::Ping,
            Reply::RegistryGet { .. } => Opcode::RegistryGet,
            Reply::RegistryPlan { .. } => Opcode::RegistryPlan,
            Reply::RegistryApply { .. } => Opcode::RegistryApply,
            Reply::RegistryHistory(_) => Opcode::RegistryHistory,
            Reply::Put(_) => Opcode::Put,
            Reply::Delete(_) => Opcode::Delete,
            Reply::GetSlate(_) => Opcode::GetSlate,
            Reply::History(_) => Opcode::History,
            Reply::Stats(_) => Opcode::Stats,
            Reply::ImportBegin(_) => Opcode::ImportBegin,
            Reply::ImportRows(_) => Opcode::ImportRows,
            Reply::ImportCommit(_) => Opcode::ImportCommit,
            Reply::ImportAbort => Opcode::ImportAbort,
            Reply::Export(_) => Opcode::Export,
            Reply::PitLookup(_) => Opcode::PitLookup,
        }
    }

    /// Appends the reply's body. Server texts too long for their prefix
    /// are cut short rather than refused.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Hello(h) => {
                wire::put_u8(out, h.version);
                wire::put_u8(out, h.role as u8);
                wire::put_str16_truncated(out, &h.identity);
                wire::put_str16_truncated(out, &h.server);
                wire::put_u32(out, h.max_frame);
            }
            Reply::Ping(p) => wire::put_bytes32_truncated(out, p),
            Reply::RegistryGet {
                version,
                registry_json,
            } => {
                wire::put_u64(out, *version);
                wire::put_str32_truncated(out, registry_json);
            }
            Reply::RegistryPlan {
                version,
                changes,
                plan,
            } => {
                wire::put_u64(out, *version);
                wire::put_u8(out, u8::from(*changes));
                wire::put_str32_truncated(out, plan);
            }
            Reply::RegistryApply { version, plan } => {
                wire::put_u64(out, *version);
                wire::put_str32_truncated(out, plan);
            }
            Reply::RegistryHistory(entries) => {
                wire::put_u32(out, u32::try_from(entries.len()).unwrap_or(u32::MAX));
                for e in entries.iter().take(u32::MAX as usize) {
                    wire::put_u64(out, e.version);
                    wire::put_i64(out, e.time_us);
                    wire::put_str16_truncated(out, &e.identity);
                    wire::put_str32_truncated(out, &e.diff);
                }
            }
            Reply::Put(c) | Reply::Delete(c) => {
                wire::put_u64(out, c.seq);
                wire::put_i64(out, c.ingest_ts);
                wire::put_u32(out, c.rows);
            }
            Reply::GetSlate(s) => out.extend_from_slice(s.body().bytes()),
            Reply::History(h) | Reply::Export(h) => out.extend_from_slice(h.body().bytes()),
            Reply::PitLookup(s) => out.extend_from_slice(s.body().bytes()),
            Reply::Stats(s) => wire::put_str32_truncated(out, s),
            Reply::ImportBegin(b) => {
                wire::put_u64(out, b.session);
                wire::put_u32(out, b.max_rows_per_s);
            }
            Reply::ImportRows(r) => {
                wire::put_u32(out, r.accepted);
                wire::put_u32(out, u32::try_from(r.rejected.len()).unwrap_or(u32::MAX));
                for j in r.rejected.iter().take(u32::MAX as usize) {
                    wire::put_u64(out, j.row);
                    wire::put_str16_truncated(out, &j.reason);
                }
            }
            Reply::ImportCommit(c) => {
                wire::put_u64(out, c.rows);
                wire::put_u64(out, c.first_seq);
                wire::put_u64(out, c.last_seq);
                wire::put_i64(out, c.ingest_ts);
                wire::put_u32(out, c.files);
            }
            Reply::ImportAbort => {}
        }
    }

    /// Decodes the body of a reply to a request with opcode `op`.
    pub fn decode(op: Opcode, body: Body) -> Result<Reply, DecodeError> {
        match op {
            Opcode::GetSlate => SlateReply::decode(body).map(Reply::GetSlate),
            Opcode::History => HistoryReply::decode(body).map(Reply::History),
            Opcode::Export => HistoryReply::decode(body).map(Reply::Export),
            Opcode::PitLookup => SlateReply::decode(body).map(Reply::PitLookup),
            _ => decode_row_reply(op, body.bytes()),
        }
    }
}

/// Decodes a reply that is not columnar.
fn decode_row_reply(op: Opcode, body: &[u8]) -> Result<Reply, DecodeError> {
    let mut r = Reader::new(body);
    let reply = match op {
        Opcode::Hello => {
            let version = r.u8("version")?;
            let code = r.u8("role")?;
            let role = Role::from_u8(code).ok_or(DecodeError::UnknownValue {
                what: "role",
                value: u64::from(code),
            })?;
            Reply::Hello(HelloReply {
                version,
                role,
                identity: r.str16("identity")?.to_owned(),
                server: r.str16("server")?.to_owned(),
                max_frame: r.u32("max_frame")?,
            })
        }
        Opcode::Ping => Reply::Ping(r.bytes32("ping payload")?.to_vec()),
        Opcode::RegistryGet => Reply::RegistryGet {
            version: r.u64("version")?,
            registry_json: r.str32("registry")?.to_owned(),
        },
        Opcode::RegistryPlan => Reply::RegistryPlan {
            version: r.u64("version")?,
            changes: match r.u8("changes")? {
                0 => false,
                1 => true,
                v => {
                    return Err(DecodeError::UnknownValue {
                        what: "changes",
                        value: u64::from(v),
                    })
                }
            },
            plan: r.str32("plan")?.to_owned(),
        },
        Opcode::RegistryApply => Reply::RegistryApply {
            version: r.u64("version")?,
            plan: r.str32("plan")?.to_owned(),
        },
        Opcode::RegistryHistory => {
            let n = r.count32("audit records")?;
            let mut entries = Vec::with_capacity(r.capacity_for(n, 22));
            for _ in 0..n {
                entries.push(AuditEntry {
                    version: r.u64("record version")?,
                    time_us: r.i64("record time")?,
                    identity: r.str16("record identity")?.to_owned(),
                    diff: r.str32("record diff")?.to_owned(),
                });
            }
            Reply::RegistryHistory(entries)
        }
        Opcode::Put | Opcode::Delete => {
            let c = CommitReply {
                seq: r.u64("seq")?,
                ingest_ts: r.i64("ingest_ts")?,
                rows: r.u32("rows")?,
            };
            if op == Opcode::Put {
                Reply::Put(c)
            } else {
                Reply::Delete(c)
            }
        }
        Opcode::Stats => Reply::Stats(r.str32("stats")?.to_owned()),
        Opcode::ImportBegin => Reply::ImportBegin(ImportBegun {
            session: r.u64("session")?,
            max_rows_per_s: r.u32("max_rows_per_s")?,
        }),
        Opcode::ImportRows => {
            let accepted = r.u32("accepted")?;
            let n = r.count32("rejections")?;
            let mut rejected = Vec::with_capacity(r.capacity_for(n, 10));
            for _ in 0..n {
                rejected.push(Rejection {
                    row: r.u64("rejected row")?,
                    reason: r.str16("rejection reason")?.to_owned(),
                });
            }
            Reply::ImportRows(ImportRowsReply { accepted, rejected })
        }
        Opcode::ImportCommit => Reply::ImportCommit(ImportCommitted {
            rows: r.u64("rows")?,
            first_seq: r.u64("first_seq")?,
            last_seq: r.u64("last_seq")?,
            ingest_ts: r.i64("ingest_ts")?,
            files: r.u32("files")?,
        }),
        Opcode::ImportAbort => Reply::ImportAbort,
        Opcode::GetSlate | Opcode::History | Opcode::Export | Opcode::PitLookup => {
            return Err(DecodeError::Malformed {
                what: "reply",
                reason: "columnar replies decode as slates",
            })
        }
    };
    r.finish()?;
    Ok(reply)
}

/// Appends a whole request frame. Nothing is appended on error.
pub fn encode_request(
    request_id: u64,
    request: &Request,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let frame = begin_frame(request_id, request.opcode() as u8, 0, out);
    if let Err(e) = request.encode_body(out) {
        out.truncate(start);
        return Err(e);
    }
    finish_frame(out, frame);
    Ok(())
}

/// Appends a whole reply frame.
pub fn encode_reply(request_id: u64, reply: &Reply, out: &mut Vec<u8>) {
    let frame = begin_reply_frame(request_id, reply.opcode(), out);
    reply.encode_body(out);
    finish_frame(out, frame);
}

/// Appends an error frame answering a request with opcode `opcode` (a raw
/// byte: the opcode may be unknown).
pub fn encode_error(request_id: u64, opcode: u8, error: &ErrorBody, out: &mut Vec<u8>) {
    let frame = begin_frame(request_id, opcode, flags::REPLY | flags::ERROR, out);
    wire::put_u16(out, error.code as u16);
    wire::put_str16_truncated(out, &error.message);
    finish_frame(out, frame);
}

/// Decodes an error body.
pub fn decode_error(body: &[u8]) -> Result<ErrorBody, DecodeError> {
    let mut r = Reader::new(body);
    let raw = r.u16("error code")?;
    let code = ErrorCode::from_u16(raw).ok_or(DecodeError::UnknownValue {
        what: "error code",
        value: u64::from(raw),
    })?;
    let message = r.str16("error message")?.to_owned();
    r.finish()?;
    Ok(ErrorBody { code, message })
}

#[cfg(test)]
mod tests {
    use crate::import_batch::ColumnSpec;
    use crate::value::tag;

    /// Column types of generated import batches (embeddings need a
    /// dimension, so they are left out).
    const BATCH_TAGS: [u8; 11] = [
        tag::BOOL,
        tag::INT32,
        tag::INT64,
        tag::FLOAT32,
        tag::FLOAT64,
        tag::STRING,
        tag::BYTES,
        tag::TIMESTAMP,
        tag::LIST_INT64,
        tag::LIST_FLOAT32,
        tag::LIST_STRING,
    ];
    use super::*;
    use crate::offline::ExportRange;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Key> {
        proptest::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(Value::Int64),
                "[a-z]{0,8}".prop_map(Value::String)
            ],
            1..3,
        )
    }

    fn names() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z_]{1,12}", 0..4)
    }

    fn files() -> impl Strategy<Value = Vec<SpecFile>> {
        proptest::collection::vec(
            ("[a-z.]{1,10}", ".{0,40}").prop_map(|(name, text)| SpecFile { name, text }),
            0..3,
        )
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u8>(), any::<u8>(), ".{0,10}", ".{0,10}").prop_map(|(a, b, c, t)| {
                Request::Hello(Hello {
                    min_version: a,
                    max_version: b,
                    client: c,
                    token: t,
                })
            }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Request::Ping),
            Just(Request::RegistryGet),
            Just(Request::Stats),
            files().prop_map(Request::RegistryPlan),
            (any::<u64>(), files()).prop_map(|(v, f)| Request::RegistryApply {
                expected_version: v,
                files: f
            }),
            any::<u32>().prop_map(|limit| Request::RegistryHistory { limit }),
            (names(), 0usize..4).prop_flat_map(|(columns, rows)| {
                let width = columns.len();
                let row = (
                    any::<i64>(),
                    proptest::collection::vec(crate::value::tests::any_value(), width),
                )
                    .prop_map(|(event_ts, values)| PutRow { event_ts, values });
                ("[a-z]{1,8}", proptest::collection::vec(row, rows)).prop_map(
                    move |(group, rows)| {
                        Request::Put(Put {
                            group,
                            columns: columns.clone(),
                            rows,
                        })
                    },
                )
            }),
            (
                "[a-z]{1,8}",
                proptest::collection::vec((any::<i64>(), key()), 0..4)
            )
                .prop_map(|(group, keys)| Request::Delete(Delete { group, keys })),
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::collection::vec(
                    (
                        "[a-z]{1,8}",
                        names(),
                        proptest::collection::vec(key(), 0..5)
                    )
                        .prop_map(|(group, features, keys)| SlatePart {
                            group,
                            features,
                            keys
                        }),
                    0..4
                )
            )
                .prop_map(|(as_of, known_at, parts)| Request::GetSlate(SlateRequest {
                    as_of,
                    known_at,
                    parts
                })),
            ("[a-z]{1,8}", names(), any::<bool>(), any::<u32>()).prop_map(
                |(group, columns, reject_invalid, max_rows_per_s)| {
                    Request::ImportBegin(ImportBegin {
                        group,
                        columns,
                        reject_invalid,
                        max_rows_per_s,
                    })
                }
            ),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(0usize..BATCH_TAGS.len(), 0..4),
                0usize..4
            )
                .prop_flat_map(|(session, first_row, tags, rows)| {
                    let width = tags.len();
                    let row = (
                        any::<i64>(),
                        proptest::collection::vec(crate::value::tests::any_value(), width),
                    );
                    proptest::collection::vec(row, rows).prop_map(move |rows| {
                        // Values of another type than their column's are nulls.
                        let rows: Vec<PutRow> = rows
                            .into_iter()
                            .map(|(event_ts, values)| PutRow {
                                event_ts,
                                values: values
                                    .into_iter()
                                    .zip(&tags)
                                    .map(|(v, &t)| {
                                        if v.tag() == BATCH_TAGS[t] {
                                            v
                                        } else {
                                            Value::Null
                                        }
                                    })
                                    .collect(),
                            })
                            .collect();
                        let names: Vec<String> = (0..width).map(|k| format!("c{k}")).collect();
                        let specs: Vec<ColumnSpec<'_>> = names
                            .iter()
                            .zip(&tags)
                            .map(|(name, &t)| ColumnSpec {
                                name,
                                tag: BATCH_TAGS[t],
                                dim: 0,
                            })
                            .collect();
                        Request::ImportRows(ImportRows {
                            session,
                            first_row,
                            rows: ImportBatch::from_rows(&specs, &rows).expect("a batch"),
                        })
                    })
                }),
            any::<u64>().prop_map(|session| Request::ImportCommit { session }),
            any::<u64>().prop_map(|session| Request::ImportAbort { session }),
            (
                "[a-z]{1,8}",
                names(),
                prop_oneof![
                    (
                        proptest::option::of(any::<i64>()),
                        proptest::option::of(any::<i64>())
                    )
                        .prop_map(|(as_of, known_at)| ExportRange::Snapshot { as_of, known_at }),
                    (any::<i64>(), any::<i64>())
                        .prop_map(|(from, to)| ExportRange::History { from, to }),
                ]
            )
                .prop_map(|(group, features, range)| Request::Export(ExportRequest {
                    group,
                    features,
                    range
                })),
            (
                "[a-z]{1,8}",
                names(),
                proptest::option::of(any::<i64>()),
                proptest::collection::vec((any::<i64>(), key()), 0..5)
            )
                .prop_map(|(group, features, known_at_lag, keys)| {
                    Request::PitLookup(PitLookup {
                        group,
                        features,
                        known_at_lag,
                        keys,
                    })
                }),
            ("[a-z]{1,8}", key(), any::<i64>(), any::<i64>(), names()).prop_map(
                |(group, key, from, to, features)| {
                    Request::History(HistoryRequest {
                        group,
                        key,
                        from,
                        to,
                        features,
                    })
                }
            ),
        ]
    }

    /// Splits one frame into its header and body.
    fn split(frame: &[u8]) -> (crate::FrameHeader, &[u8]) {
        let header: &[u8; crate::HEADER_LEN] =
            frame[..crate::HEADER_LEN].try_into().expect("header");
        let h = crate::FrameHeader::decode(header, usize::MAX).expect("valid header");
        assert_eq!(h.body_len as usize, frame.len() - crate::HEADER_LEN);
        (h, &frame[crate::HEADER_LEN..])
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request(), id in any::<u64>()) {
            let mut frame = Vec::new();
            encode_request(id, &req, &mut frame).expect("encodes");
            let (h, body) = split(&frame);
            prop_assert_eq!(h.request_id, id);
            let op = Opcode::from_u8(h.opcode).expect("known opcode");
            prop_assert_eq!(Request::decode(op, body).expect("decodes"), req);
        }

        #[test]
        fn any_body_decodes_or_fails_for_every_opcode(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            for op in Opcode::ALL {
                let _ = Request::decode(op, &body);
                let _ = Reply::decode(op, Body::copy_from(&body));
            }
            let _ = decode_error(&body);
        }

        #[test]
        fn a_truncated_request_is_refused(req in request(), cut in any::<prop::sample::Index>()) {
            let mut frame = Vec::new();
            encode_request(1, &req, &mut frame).expect("encodes");
            let (h, body) = split(&frame);
            prop_assume!(!body.is_empty());
            let op = Opcode::from_u8(h.opcode).expect("known opcode");
            let n = cut.index(body.len());
            prop_assert!(Request::decode(op, &body[..n]).is_err());
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = vec![
            Reply::Hello(HelloReply {
                version: 1,
                role: Role::Write,
                identity: "pipeline".into(),
                server: "tessera 0.1.0".into(),
                max_frame: 1 << 24,
            }),
            Reply::Ping(vec![1, 2, 3]),
            Reply::RegistryGet {
                version: 4,
                registry_json: "{}".into(),
            },
            Reply::RegistryPlan {
                version: 4,
                changes: true,
                plan: "+ group x".into(),
            },
            Reply::RegistryApply {
                version: 5,
                plan: "+ group x".into(),
            },
            Reply::RegistryHistory(vec![AuditEntry {
                version: 5,
                time_us: 77,
                identity: "ops".into(),
                diff: "+ group x".into(),
            }]),
            Reply::Put(CommitReply {
                seq: 9,
                ingest_ts: 10,
                rows: 11,
            }),
            Reply::Delete(CommitReply {
                seq: 12,
                ingest_ts: 13,
                rows: 1,
            }),
            Reply::Stats("{\"a\":1}".into()),
            Reply::ImportBegin(ImportBegun {
                session: 3,
                max_rows_per_s: 1000,
            }),
            Reply::ImportRows(ImportRowsReply {
                accepted: 9,
                rejected: vec![Rejection {
                    row: 4,
                    reason: "column `x`: expected int64".into(),
                }],
            }),
            Reply::ImportCommit(ImportCommitted {
                rows: 10,
                first_seq: 5,
                last_seq: 14,
                ingest_ts: 99,
                files: 1,
            }),
            Reply::ImportAbort,
        ];
        for reply in replies {
            let mut frame = Vec::new();
            encode_reply(3, &reply, &mut frame);
            let (h, body) = split(&frame);
            assert_eq!(h.flags, flags::REPLY);
            let back = Reply::decode(reply.opcode(), Body::copy_from(body)).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        }
    }

    #[test]
    fn limits_are_enforced_while_decoding() {
        let mut body = Vec::new();
        wire::put_bytes32(&mut body, &[0; crate::MAX_PING_BYTES + 1], "p").expect("fits");
        assert_eq!(
            Request::decode(Opcode::Ping, &body).map_err(|e| e.code()),
            Err(ErrorCode::LimitExceeded)
        );
        let parts = (0..=crate::MAX_SLATE_PARTS)
            .map(|_| SlatePart {
                group: "g".into(),
                features: vec![],
                keys: vec![],
            })
            .collect();
        let mut body = Vec::new();
        encode_slate(
            &SlateRequest {
                as_of: None,
                known_at: None,
                parts,
            },
            &mut body,
        )
        .expect("fits");
        assert_eq!(
            Request::decode(Opcode::GetSlate, &body).map_err(|e| e.code()),
            Err(ErrorCode::LimitExceeded)
        );
    }

    #[test]
    fn a_put_row_of_the_wrong_width_is_not_framed() {
        let put = Put {
            group: "g".into(),
            columns: vec!["a".into(), "b".into()],
            rows: vec![PutRow {
                event_ts: 1,
                values: vec![Value::Int64(1)],
            }],
        };
        let mut out = vec![7];
        assert!(encode_request(1, &Request::Put(put), &mut out).is_err());
        assert_eq!(out, [7], "nothing is appended on error");
    }

    #[test]
    fn error_frames_round_trip() {
        let mut frame = Vec::new();
        let e = ErrorBody {
            code: ErrorCode::Validation,
            message: "row 3, column `x`: expected int64".into(),
        };
        encode_error(5, 0x20, &e, &mut frame);
        let (h, body) = split(&frame);
        assert_eq!(h.flags, flags::REPLY | flags::ERROR);
        assert_eq!(decode_error(body), Ok(e));
    }
}
