//! Bulk import sessions: `IMPORT_BEGIN`, `IMPORT_ROWS`, `IMPORT_COMMIT`
//! and `IMPORT_ABORT`.
//!
//! A session belongs to the connection that opened it and lives in that
//! connection's [`Imports`]; it holds an engine [`Ingest`], so its rows
//! bypass the WAL and the memtable and become visible all at once at
//! commit. A session that fails, is aborted, or whose connection closes is
//! dropped, and dropping the ingest removes everything it wrote: an import
//! that does not commit leaves no trace.
//!
//! Limits: at most `max_concurrent_imports` sessions are open in the whole
//! server, and each is fed at most `import_max_rows_per_s` rows per second
//! (or the lower rate its client asked for). A session over its rate is
//! made to wait before its rows are taken; its batches and commit run as
//! bulk work ([`super::bulk`]), below serving's priority, so a bulk load
//! cannot take the CPU and disk that serving needs.

use super::service::{fail, storage_failure, Failure, Service};
use crate::row::{EncodeError, RowSchema, RowWriter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_protocol::{
    ErrorCode, ImportBatch, ImportBegin, ImportCommitted, ImportRows, ImportRowsReply, Rejection,
    MAX_PUT_ROWS,
};
use tessera_storage::Ingest;

/// The server-wide count of open sessions, against its limit.
pub(crate) struct ImportSlots {
    open: AtomicUsize,
    max: usize,
}

impl ImportSlots {
    pub(crate) fn new(max: usize) -> Arc<ImportSlots> {
        Arc::new(ImportSlots {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a slot, or says why not.
    fn take(self: &Arc<Self>) -> Result<Slot, Failure> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(self.clone())),
            Err(_) => Err(fail(
                ErrorCode::Unavailable,
                format!(
                    "{} imports are already running, the server's limit; retry later",
                    self.max
                ),
            )),
        }
    }
}

/// An open session's hold on [`ImportSlots`]; released on drop.
struct Slot(Arc<ImportSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds a session to a rate: rows may be taken no faster than
/// `rows_per_s` on average since the session began.
struct Pacer {
    rows_per_s: u32,
    started: Instant,
    rows: u64,
}

impl Pacer {
    /// How long to wait before taking `n` more rows.
    fn delay_for(&mut self, n: u64) -> Duration {
        self.rows += n;
        let due = Duration::from_secs_f64(self.rows as f64 / f64::from(self.rows_per_s.max(1)));
        due.saturating_sub(self.started.elapsed())
    }
}

/// One open import.
pub(crate) struct ImportSession {
    group: String,
    /// The session's columns, which every batch carries in this order.
    columns: Vec<String>,
    schema: RowSchema,
    writer: RowWriter,
    ingest: Ingest,
    reject_invalid: bool,
    pacer: Pacer,
    _slot: Slot,
}

/// A connection's open sessions.
#[derive(Default)]
pub(crate) struct Imports {
    sessions: HashMap<u64, ImportSession>,
    next: u64,
}

impl Imports {
    /// Keeps `session`, returning its id.
    pub(crate) fn insert(&mut self, session: ImportSession) -> u64 {
        self.next += 1;
        self.sessions.insert(self.next, session);
        self.next
    }

    /// Takes session `id` out (to run it on the blocking pool).
    pub(crate) fn take(&mut self, id: u64) -> Result<ImportSession, Failure> {
        self.sessions.remove(&id).ok_or_else(|| {
            fail(
                ErrorCode::BadRequest,
                format!("no import session {id} on this connection (it failed, ended, or was never begun)"),
            )
        })
    }

    /// Puts a session taken out back.
    pub(crate) fn put_back(&mut self, id: u64, session: ImportSession) {
        self.sessions.insert(id, session);
    }
}

/// `IMPORT_BEGIN`: checks the group and columns and opens a session.
pub(crate) fn begin(
    service: &Service,
    slots: &Arc<ImportSlots>,
    server_max_rows_per_s: u32,
    begin: &ImportBegin,
) -> Result<(ImportSession, u32), Failure> {
    let (schema, _) = service.schema(&begin.group)?;
    let columns: Vec<&str> = begin.columns.iter().map(String::as_str).collect();
    let writer = schema.writer(&columns).map_err(|e| {
        fail(
            ErrorCode::Validation,
            format!("group `{}`: {e}", begin.group),
        )
    })?;
    let slot = slots.take()?;
    let ingest = service
        .engine()
        .begin_ingest(schema.group().table_id)
        .map_err(storage_failure)?;
    let rows_per_s = match begin.max_rows_per_s {
        0 => server_max_rows_per_s,
        asked => asked.min(server_max_rows_per_s),
    };
    let session = ImportSession {
        group: begin.group.clone(),
        columns: begin.columns.clone(),
        schema,
        writer,
        ingest,
        reject_invalid: begin.reject_invalid,
        pacer: Pacer {
            rows_per_s,
            started: Instant::now(),
            rows: 0,
        },
        _slot: slot,
    };
    Ok((session, rows_per_s))
}

impl ImportSession {
    /// `IMPORT_ROWS`: validates and takes a batch, after waiting out the
    /// session's rate. Without `reject_invalid`, an invalid row fails the
    /// batch (and the caller drops the session); with it, invalid rows are
    /// skipped and reported.
    pub(crate) fn add_rows(&mut self, batch: &ImportRows) -> Result<ImportRowsReply, Failure> {
        let rows = &batch.rows;
        if rows.rows() > MAX_PUT_ROWS {
            return Err(fail(
                ErrorCode::LimitExceeded,
                format!(
                    "{} rows in one batch; the limit is {MAX_PUT_ROWS}",
                    rows.rows()
                ),
            ));
        }
        self.check_columns(rows)?;
        std::thread::sleep(self.pacer.delay_for(rows.rows() as u64));
        let mut rejected = Vec::new();
        let accepted = if self.reject_invalid {
            self.add_valid_rows(batch, &mut rejected)?
        } else {
            self.add_all_rows(batch)?
        };
        Ok(ImportRowsReply {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            rejected,
        })
    }

    /// A batch carries the session's columns, by name and in order.
    fn check_columns(&self, rows: &ImportBatch) -> Result<(), Failure> {
        let names: Vec<&str> = rows.columns().iter().map(|c| c.name()).collect();
        if names == self.columns {
            return Ok(());
        }
        Err(fail(
            ErrorCode::Validation,
            format!(
                "group `{}`: the batch's columns are [{}]; the session's are [{}]",
                self.group,
                names.join(", "),
                self.columns.join(", ")
            ),
        ))
    }

    fn add_all_rows(&mut self, batch: &ImportRows) -> Result<usize, Failure> {
        let encoded = self
            .writer
            .encode_import(&batch.rows)
            .map_err(|e| fail(ErrorCode::Validation, self.describe(&e, batch.first_row)))?;
        for (i, (key, row)) in encoded.iter().enumerate() {
            self.ingest
                .put(key, batch.rows.event_ts(i), row)
                .map_err(storage_failure)?;
        }
        Ok(encoded.len())
    }

    fn add_valid_rows(
        &mut self,
        batch: &ImportRows,
        rejected: &mut Vec<Rejection>,
    ) -> Result<usize, Failure> {
        let rows = &batch.rows;
        let mut encoded = self.writer.batch_for(rows.rows());
        let mut sources = Vec::with_capacity(rows.rows());
        for i in 0..rows.rows() {
            match self.writer.encode_into(rows, i, &mut encoded) {
                Ok(()) => sources.push(i),
                Err(e) => rejected.push(Rejection {
                    row: batch.first_row + i as u64,
                    reason: reason(&e),
                }),
            }
        }
        for ((key, row), &i) in encoded.iter().zip(&sources) {
            self.ingest
                .put(key, rows.event_ts(i), row)
                .map_err(storage_failure)?;
        }
        Ok(sources.len())
    }

    /// A batch error as the client reads it: the row by its number in the
    /// client's input.
    fn describe(&self, e: &EncodeError, first_row: u64) -> String {
        match row_index(e) {
            Some(i) => format!(
                "group `{}`, row {}: {}",
                self.group,
                first_row + i as u64,
                reason(e)
            ),
            None => format!("group `{}`: {e}", self.group),
        }
    }

    /// `IMPORT_COMMIT`.
    pub(crate) fn commit(self) -> Result<ImportCommitted, Failure> {
        let table = self.schema.group().table_id;
        let info = self.ingest.commit().map_err(storage_failure)?;
        tracing::info!(group = %self.group, table, rows = info.versions, files = info.files, "import committed");
        Ok(ImportCommitted {
            rows: info.versions,
            first_seq: info.first_seq,
            last_seq: info.last_seq,
            ingest_ts: info.ingest_ts,
            files: u32::try_from(info.files).unwrap_or(u32::MAX),
        })
    }
}

/// The batch index of the row an error is about.
fn row_index(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::Arity { row, .. }
        | EncodeError::Invalid { row, .. }
        | EncodeError::RowTooLarge { row, .. } => Some(*row),
        _ => None,
    }
}

/// What is wrong with a row, without its batch index.
fn reason(e: &EncodeError) -> String {
    match e {
        EncodeError::Invalid { field, problem, .. } => format!("column `{field}`: {problem}"),
        EncodeError::Arity {
            expected, found, ..
        } => format!("{found} values for {expected} columns"),
        EncodeError::RowTooLarge { len, .. } => {
            format!(
                "encodes to {len} bytes, over the engine's limit of {}",
                tessera_storage::MAX_VALUE_LEN
            )
        }
        other => other.to_string(),
    }
}
