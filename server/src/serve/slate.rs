//! `GET_SLATE`, `PIT_LOOKUP` and `HISTORY`: keys to engine reads to
//! columnar replies.
//!
//! A slate's keys, from every part, go to the engine in one batched read
//! (`with_latest_across`), so their memory latency overlaps; the reply is
//! written while the engine lends the rows where it found them, so they
//! are not copied out first. Each found row is read once, through the
//! part's cached projection, as stored bytes
//! ([`RawValue`](crate::row::RawValue)): numbers and embeddings are
//! little-endian in rows as on the wire, so they are copied straight into
//! the reply's columns.
//!
//! A reply is written into the connection's output buffer as it is built;
//! on any error the caller discards what was written (see
//! [`super::conn`]), so a client never sees half a reply.

use super::columns::write_columns;
use super::service::{fail, storage_failure, Failure, ReplyColumns, Service};
use crate::registry::{ElementType, FeatureType};
use crate::row::key::encode_key;
use crate::row::RowSchema;
use std::sync::Arc;
use tessera_protocol::{
    begin_reply_frame, finish_frame, tag, ErrorCode, HistoryRequest, Opcode, PartWriter, PitLookup,
    SlateReplyWriter, SlateRequest, MAX_HISTORY_VERSIONS, MAX_PIT_KEYS, MAX_SLATE_CELLS,
    MAX_SLATE_KEYS, MAX_SLATE_PARTS,
};
use tessera_storage::{AsOfQuery, Row, RowRef, TableKey, Timestamp};

/// The wire type tag and embedding dimension of a feature type.
pub fn wire_type(ty: FeatureType) -> (u8, u32) {
    match ty {
        FeatureType::Bool => (tag::BOOL, 0),
        FeatureType::Int32 => (tag::INT32, 0),
        FeatureType::Int64 => (tag::INT64, 0),
        FeatureType::Float32 => (tag::FLOAT32, 0),
        FeatureType::Float64 => (tag::FLOAT64, 0),
        FeatureType::String => (tag::STRING, 0),
        FeatureType::Bytes => (tag::BYTES, 0),
        FeatureType::Timestamp => (tag::TIMESTAMP, 0),
        FeatureType::Embedding(dim) => (tag::EMBEDDING, dim),
        FeatureType::List(ElementType::Int64) => (tag::LIST_INT64, 0),
        FeatureType::List(ElementType::Float32) => (tag::LIST_FLOAT32, 0),
        FeatureType::List(ElementType::String) => (tag::LIST_STRING, 0),
    }
}

/// One part of a slate, resolved.
pub(super) struct PartPlan {
    pub(super) schema: RowSchema,
    pub(super) reply: Arc<ReplyColumns>,
    /// Its keys' range in the slate's key list.
    pub(super) keys: std::ops::Range<usize>,
}

/// Executes `GET_SLATE`, appending the reply frame to `out`.
pub fn get_slate(
    service: &Service,
    request_id: u64,
    req: &SlateRequest,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let total: usize = req.parts.iter().map(|p| p.keys.len()).sum();
    if req.parts.len() > MAX_SLATE_PARTS || total > MAX_SLATE_KEYS {
        return Err(fail(
            ErrorCode::LimitExceeded,
            format!(
                "a slate holds at most {MAX_SLATE_PARTS} parts and {MAX_SLATE_KEYS} keys; \
                 this one has {} and {total}",
                req.parts.len()
            ),
        ));
    }
    let mut key_bytes = Vec::with_capacity(total * 16);
    let mut key_ends = Vec::with_capacity(total);
    let mut plans = Vec::with_capacity(req.parts.len());
    for part in &req.parts {
        let (schema, reply) = service.projection(&part.group, &part.features)?;
        let first = key_ends.len();
        for (i, key) in part.keys.iter().enumerate() {
            encode_key(schema.keys(), key, &mut key_bytes).map_err(|e| {
                fail(
                    ErrorCode::Validation,
                    format!("group `{}`, key {i}: {e}", part.group),
                )
            })?;
            key_ends.push(key_bytes.len());
        }
        check_cells(&part.group, part.keys.len(), reply.columns.len())?;
        plans.push(PartPlan {
            schema,
            reply,
            keys: first..key_ends.len(),
        });
    }
    let lookups = lookups(&plans, &key_bytes, &key_ends);
    let frame = begin_reply_frame(request_id, Opcode::GetSlate, out);
    let max_reply_bytes = service.max_reply_bytes();
    if req.as_of.is_none() && req.known_at.is_none() {
        service
            .engine()
            .with_latest_across(&lookups, |rows| {
                write_parts(out, &plans, rows, max_reply_bytes)
            })
            .map_err(storage_failure)??;
    } else {
        let rows = read_as_of(service, req, &plans, &lookups)?;
        write_parts(out, &plans, &borrowed(&rows), max_reply_bytes)?;
    }
    finish_frame(out, frame);
    Ok(())
}

/// The slate reply's parts, after its frame header.
fn write_parts(
    out: &mut Vec<u8>,
    plans: &[PartPlan],
    rows: &[Option<RowRef<'_>>],
    max_reply_bytes: usize,
) -> Result<(), Failure> {
    let mut writer = SlateReplyWriter::new(out, plans.len() as u16);
    for plan in plans {
        write_part(&mut writer, plan, &rows[plan.keys.clone()], max_reply_bytes)?;
    }
    Ok(())
}

/// `rows`, borrowed.
fn borrowed(rows: &[Option<Row>]) -> Vec<Option<RowRef<'_>>> {
    rows.iter()
        .map(|r| r.as_ref().map(Row::as_row_ref))
        .collect()
}

/// Writes one part: the found bitmap and event times of `rows`, then the
/// projected columns.
fn write_part(
    writer: &mut SlateReplyWriter<'_>,
    plan: &PartPlan,
    rows: &[Option<RowRef<'_>>],
    max_reply_bytes: usize,
) -> Result<(), Failure> {
    let found: Vec<bool> = rows.iter().map(Option::is_some).collect();
    let event_ts: Vec<i64> = rows.iter().map(|r| r.map_or(0, |r| r.event_ts)).collect();
    let mut part = writer.part(&found, &event_ts, plan.reply.columns.len() as u16);
    let values = rows.iter().map(|r| r.map(|r| r.value));
    write_columns(&mut part, plan, values, max_reply_bytes)
}

/// Refuses a part of `keys` rows of `columns` features over the cell limit.
fn check_cells(group: &str, keys: usize, columns: usize) -> Result<(), Failure> {
    let cells = keys.saturating_mul(columns);
    if cells > MAX_SLATE_CELLS {
        let msg = format!(
            "group `{group}`: {keys} keys × {columns} features is {cells} values; a part holds at most {MAX_SLATE_CELLS}"
        );
        return Err(fail(ErrorCode::LimitExceeded, msg));
    }
    Ok(())
}

/// Executes `PIT_LOOKUP`, appending the reply frame (a one-part slate, a
/// row per lookup) to `out`. Each key is read as of its own time, as a
/// slate with that `as_of` would read it; with a lag, as known at that
/// time minus the lag.
pub fn pit_lookup(
    service: &Service,
    request_id: u64,
    req: &PitLookup,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    if req.keys.len() > MAX_PIT_KEYS {
        let msg = format!(
            "a PIT_LOOKUP holds at most {MAX_PIT_KEYS} keys; this one has {}",
            req.keys.len()
        );
        return Err(fail(ErrorCode::LimitExceeded, msg));
    }
    if req.known_at_lag.is_some_and(|lag| lag < 0) {
        return Err(fail(
            ErrorCode::Validation,
            "known_at_lag must not be negative",
        ));
    }
    let (schema, reply) = service.projection(&req.group, &req.features)?;
    check_cells(&req.group, req.keys.len(), reply.columns.len())?;
    let mut key_bytes = Vec::with_capacity(req.keys.len() * 16);
    let mut key_ends = Vec::with_capacity(req.keys.len());
    for (i, (_, key)) in req.keys.iter().enumerate() {
        encode_key(schema.keys(), key, &mut key_bytes).map_err(|e| {
            fail(
                ErrorCode::Validation,
                format!("group `{}`, key {i}: {e}", req.group),
            )
        })?;
        key_ends.push(key_bytes.len());
    }
    let mut start = 0;
    let queries: Vec<AsOfQuery<'_>> = req
        .keys
        .iter()
        .zip(&key_ends)
        .map(|(&(as_of, _), &end)| {
            let key = &key_bytes[start..end];
            start = end;
            AsOfQuery {
                key,
                as_of,
                known_at: req.known_at_lag.map(|lag| as_of.saturating_sub(lag)),
            }
        })
        .collect();
    // The answers of `multi_as_of`, read without filling the block cache:
    // a join sweeps whole groups.
    let rows = service
        .engine()
        .bulk_as_of(schema.group().table_id, &queries)
        .map_err(storage_failure)?;
    let plan = PartPlan {
        schema,
        reply,
        keys: 0..rows.len(),
    };
    let frame = begin_reply_frame(request_id, Opcode::PitLookup, out);
    let mut writer = SlateReplyWriter::new(out, 1);
    write_part(
        &mut writer,
        &plan,
        &borrowed(&rows),
        service.max_reply_bytes(),
    )?;
    finish_frame(out, frame);
    Ok(())
}

/// Every key of the slate with its group's table.
fn lookups<'k>(plans: &[PartPlan], key_bytes: &'k [u8], key_ends: &[usize]) -> Vec<TableKey<'k>> {
    let mut out = Vec::with_capacity(key_ends.len());
    let mut start = 0;
    for plan in plans {
        let table = plan.schema.group().table_id;
        for &end in &key_ends[plan.keys.clone()] {
            out.push((table, &key_bytes[start..end]));
            start = end;
        }
    }
    out
}

/// The visible row of each key as of the request's times.
fn read_as_of(
    service: &Service,
    req: &SlateRequest,
    plans: &[PartPlan],
    lookups: &[TableKey<'_>],
) -> Result<Vec<Option<Row>>, Failure> {
    let engine = service.engine();
    // `known_at` alone asks what a latest read at that time returned: read
    // as of that time too, so TTL counts from it (as a latest read counts
    // from its own now), not from the end of time.
    let as_of = req.as_of.or(req.known_at).unwrap_or(Timestamp::MAX);
    let mut rows = Vec::with_capacity(lookups.len());
    for plan in plans {
        let table = plan.schema.group().table_id;
        let queries: Vec<AsOfQuery<'_>> = lookups[plan.keys.clone()]
            .iter()
            .map(|&(_, key)| AsOfQuery {
                key,
                as_of,
                known_at: req.known_at,
            })
            .collect();
        rows.extend(
            engine
                .multi_as_of(table, &queries)
                .map_err(storage_failure)?,
        );
    }
    Ok(rows)
}

/// Executes `HISTORY`, appending the reply frame to `out`.
pub fn history(
    service: &Service,
    request_id: u64,
    req: &HistoryRequest,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let (schema, reply) = service.projection(&req.group, &req.features)?;
    let mut key = Vec::new();
    encode_key(schema.keys(), &req.key, &mut key)
        .map_err(|e| fail(ErrorCode::Validation, format!("group `{}`: {e}", req.group)))?;
    let versions = service
        .engine()
        .history(schema.group().table_id, &key, req.from, req.to)
        .map_err(storage_failure)?;
    if versions.len() > MAX_HISTORY_VERSIONS {
        let msg = format!(
            "group `{}`: {} versions in the range; a reply holds at most {MAX_HISTORY_VERSIONS}, narrow the range",
            req.group,
            versions.len()
        );
        return Err(fail(ErrorCode::LimitExceeded, msg));
    }
    let found: Vec<bool> = versions.iter().map(|v| !v.is_tombstone()).collect();
    let event_ts: Vec<i64> = versions.iter().map(|v| v.event_ts).collect();
    let ingest_ts: Vec<i64> = versions.iter().map(|v| v.ingest_ts).collect();
    let seq: Vec<u64> = versions.iter().map(|v| v.seq).collect();
    let plan = PartPlan {
        schema,
        reply,
        keys: 0..versions.len(),
    };
    let frame = begin_reply_frame(request_id, Opcode::History, out);
    let mut part = PartWriter::history(
        out,
        &found,
        &event_ts,
        &ingest_ts,
        &seq,
        plan.reply.columns.len() as u16,
    );
    let values = versions.iter().map(|v| v.value.as_deref());
    write_columns(&mut part, &plan, values, service.max_reply_bytes())?;
    finish_frame(out, frame);
    Ok(())
}
