//! `EXPORT`: one group's rows from one engine snapshot, streamed in chunks.
//!
//! The snapshot is taken when the request arrives; every chunk reads from
//! it, so the export is consistent however long it takes and whatever is
//! written meanwhile. A chunk is a frame laid out as a `HISTORY` reply in
//! which every row is found; its columns are the entity's key columns,
//! then, for a history export, the `bool` column [`DELETED_COLUMN`] (true
//! for a tombstone, whose features are null), then the projected features.
//! Every frame but the last has `MORE` set. A chunk holds at most
//! [`MAX_EXPORT_CHUNK_ROWS`] rows and stops growing once its stored rows
//! pass a quarter of the reply limit, so the server holds one chunk per
//! export, and a client that stops reading stops the export (the socket
//! write waits) rather than making it buffer.

use super::columns::write_columns;
use super::service::{fail, storage_failure, Failure, Service};
use super::slate::PartPlan;
use crate::registry::KeyType;
use crate::row::key::{decode_key_into, int64_column_le};
use bytes::Bytes;
use tessera_protocol::{
    begin_frame, finish_frame, flags, tag, ErrorCode, ExportRange, ExportRequest, Opcode,
    PartWriter, Value, MAX_EXPORT_CHUNK_ROWS,
};
use tessera_storage::Timestamp;

/// The column of a history export that marks tombstones. Its name cannot
/// be a feature's (names start with a letter).
pub(crate) const DELETED_COLUMN: &str = "__deleted";

/// One exported version.
struct ExportRow {
    key: Bytes,
    event_ts: Timestamp,
    ingest_ts: Timestamp,
    seq: u64,
    /// `None` for a tombstone (history exports only).
    value: Option<Bytes>,
}

type Rows = Box<dyn Iterator<Item = tessera_storage::Result<ExportRow>> + Send>;

/// An export in progress.
pub(crate) struct Export {
    plan: PartPlan,
    rows: Rows,
    /// A history export, whose chunks mark tombstones.
    history: bool,
}

impl Export {
    /// Resolves the request and takes the snapshot.
    pub(crate) fn open(service: &Service, req: &ExportRequest) -> Result<Export, Failure> {
        let (schema, reply) = service.projection(&req.group, &req.features)?;
        let table = schema.group().table_id;
        let snapshot = service.engine().snapshot();
        let rows: Rows = match req.range {
            ExportRange::Snapshot { as_of, known_at } => {
                // As a slate reads: `known_at` alone reads as of that time.
                let as_of = as_of.or(known_at).unwrap_or(snapshot.now());
                let scan = snapshot.scan_as_of(table, as_of, known_at);
                Box::new(scan.map(|r| {
                    r.map(|(key, row)| ExportRow {
                        key,
                        event_ts: row.event_ts,
                        ingest_ts: row.ingest_ts,
                        seq: row.seq,
                        value: Some(row.value),
                    })
                }))
            }
            ExportRange::History { from, to } => {
                if from > to {
                    let msg = format!("the range is empty: from {from} is after to {to}");
                    return Err(fail(ErrorCode::Validation, msg));
                }
                let scan = snapshot.scan(table);
                Box::new(
                    scan.filter(move |r| {
                        r.as_ref()
                            .map_or(true, |e| (from..=to).contains(&e.event_ts))
                    })
                    .map(|r| {
                        r.map(|e| ExportRow {
                            value: (e.kind == tessera_storage::Kind::Put).then_some(e.value),
                            key: e.key,
                            event_ts: e.event_ts,
                            ingest_ts: e.ingest_ts,
                            seq: e.seq,
                        })
                    }),
                )
            }
        };
        let plan = PartPlan {
            schema,
            reply,
            keys: 0..0,
        };
        let history = matches!(req.range, ExportRange::History { .. });
        Ok(Export {
            plan,
            rows,
            history,
        })
    }

    /// Appends the next chunk's frame to `out`; `Ok(true)` if it was the
    /// last. On error nothing is appended.
    pub(crate) fn next_chunk(
        &mut self,
        request_id: u64,
        max_reply_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, Failure> {
        let (rows, stored, last) = self.take_rows(max_reply_bytes / 4)?;
        // Room for the stored rows and the per-row arrays and bitmaps, so
        // the frame is not copied as it grows.
        out.reserve(stored + rows.len() * 48 + 4096);
        let start = out.len();
        let flags = if last {
            flags::REPLY
        } else {
            flags::REPLY | flags::MORE
        };
        let frame = begin_frame(request_id, Opcode::Export as u8, flags, out);
        if let Err(e) = self.write_chunk(&rows, max_reply_bytes, out) {
            out.truncate(start);
            return Err(e);
        }
        finish_frame(out, frame);
        Ok(last)
    }

    /// The next rows, up to the chunk limits, their stored bytes (keys and
    /// values), and whether the scan ended.
    fn take_rows(&mut self, budget: usize) -> Result<(Vec<ExportRow>, usize, bool), Failure> {
        let mut rows = Vec::new();
        let mut bytes = 0;
        while rows.len() < MAX_EXPORT_CHUNK_ROWS && bytes < budget {
            match self.rows.next() {
                None => return Ok((rows, bytes, true)),
                Some(Err(e)) => return Err(storage_failure(e)),
                Some(Ok(row)) => {
                    bytes += row.key.len() + row.value.as_ref().map_or(0, Bytes::len);
                    rows.push(row);
                }
            }
        }
        Ok((rows, bytes, false))
    }

    fn write_chunk(
        &self,
        rows: &[ExportRow],
        max_reply_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let found = vec![true; rows.len()];
        let event_ts: Vec<i64> = rows.iter().map(|r| r.event_ts).collect();
        let ingest_ts: Vec<i64> = rows.iter().map(|r| r.ingest_ts).collect();
        let seq: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        let keys = self.plan.schema.keys();
        let columns = keys.len() + usize::from(self.history) + self.plan.reply.columns.len();
        let mut part =
            PartWriter::history(out, &found, &event_ts, &ingest_ts, &seq, columns as u16);
        self.write_keys(&mut part, rows)?;
        if self.history {
            let mut deleted = part.column(DELETED_COLUMN, tag::BOOL, 0);
            for row in rows {
                let tombstone = Value::Bool(row.value.is_none());
                deleted
                    .push(&tombstone)
                    .map_err(|e| fail(ErrorCode::Internal, format!("export: {e}")))?;
            }
            deleted
                .finish()
                .map_err(|e| fail(ErrorCode::Internal, format!("export: {e}")))?;
        }
        let values = rows.iter().map(|r| r.value.as_deref());
        write_columns(&mut part, &self.plan, values, max_reply_bytes)
    }

    /// One column per key column, decoded from the engine keys.
    fn write_keys(&self, part: &mut PartWriter<'_>, rows: &[ExportRow]) -> Result<(), Failure> {
        let keys = self.plan.schema.keys();
        let corrupt = |e: String| {
            let group = &self.plan.schema.group().name;
            fail(
                ErrorCode::Internal,
                format!("group `{group}`: a stored key does not decode: {e}"),
            )
        };
        if keys.iter().all(|k| k.ty == KeyType::Int64) {
            // The common case, copied column by column from the keys.
            let mut le = Vec::with_capacity(8 * rows.len());
            for (c, column) in keys.iter().enumerate() {
                le.clear();
                let stored = rows.iter().map(|r| &r.key[..]);
                int64_column_le(keys.len(), c, stored, &mut le)
                    .map_err(|e| corrupt(e.to_string()))?;
                let mut writer = part.column(&column.name, tag::INT64, 0);
                writer
                    .push_fixed_le_run(&le)
                    .map_err(|e| corrupt(e.to_string()))?;
                writer.finish().map_err(|e| corrupt(e.to_string()))?;
            }
            return Ok(());
        }
        // Every row's key values, row-major, in one buffer.
        let mut decoded = Vec::with_capacity(rows.len() * keys.len());
        for row in rows {
            decode_key_into(keys, &row.key, &mut decoded).map_err(|e| corrupt(e.to_string()))?;
        }
        for (c, column) in keys.iter().enumerate() {
            let ty = match column.ty {
                KeyType::Int64 => tag::INT64,
                KeyType::String => tag::STRING,
            };
            let mut writer = part.column(&column.name, ty, 0);
            for value in decoded.iter().skip(c).step_by(keys.len().max(1)) {
                writer.push(value).map_err(|e| corrupt(e.to_string()))?;
            }
            writer.finish().map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }
}
