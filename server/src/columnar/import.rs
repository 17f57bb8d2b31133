//! The read side of `tessera import`: a Parquet file's columns mapped to a
//! feature group, and its rows read as typed [`PutRow`]s.
//!
//! Columns map to the group by name: the entity's key columns, the event
//! time column and any of the group's active features; other columns are
//! ignored (and listed in [`Mapping::ignored`]). The reader works on any
//! [`ChunkReader`] (a file, or bytes in memory), so the fuzz target
//! `parquet_import` runs exactly the code the command runs.

use super::arrow_rows::{Column, Target};
use crate::registry::{Entity, FeatureGroup, Status};
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;
use std::path::{Path, PathBuf};
use tessera_protocol::{PutRow, Rejection};

/// Rows per `IMPORT_ROWS` batch handed to `send`.
pub const BATCH_ROWS: usize = 16_384;
/// Rows per Parquet record batch read.
const READ_BATCH_ROWS: usize = 16_384;

/// How a file's columns map to the group.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// `(file column, target)` in the order values are sent; the event
    /// time column last.
    pub columns: Vec<(String, Target)>,
    /// The names the import session is opened with (every column but the
    /// event time).
    pub names: Vec<String>,
    /// The file's columns that are neither keys, the event time nor active
    /// features.
    pub ignored: Vec<String>,
}

/// Opens Parquet data for reading (`file` names it in messages), or says
/// why it is not Parquet.
pub fn open_parquet<R: ChunkReader + 'static>(
    data: R,
    file: &Path,
) -> Result<ParquetRecordBatchReaderBuilder<R>, String> {
    let not_parquet = |e: String| format!("{}: not a readable Parquet file: {e}", file.display());
    guarded(|| ParquetRecordBatchReaderBuilder::try_new(data))
        .map_err(not_parquet)?
        .map_err(|e| not_parquet(e.to_string()))
}

/// Runs a step of the Parquet reader on untrusted bytes. parquet 59 panics
/// on some malformed files instead of returning an error (a malformed
/// `ARROW:schema` in the footer, apache/arrow-rs#10437; a bit width over 32
/// in a dictionary-encoded page); such a file is refused like any other
/// damaged one. The reader is not used again after a panic.
fn guarded<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        format!("the Parquet reader failed: {what}")
    })
}

/// Maps a file's columns (its `schema`) to `group`, whose entity is
/// `entity`, with the event time in column `ts_column`.
pub fn mapping(
    schema: &Schema,
    file: &Path,
    group: &FeatureGroup,
    entity: &Entity,
    ts_column: &str,
) -> Result<Mapping, String> {
    let has = |name: &str| schema.field_with_name(name).is_ok();
    let mut columns = Vec::new();
    for k in &entity.keys {
        if !has(&k.name) {
            return Err(format!(
                "{}: no column `{}`, a key column of `{}`",
                file.display(),
                k.name,
                entity.name
            ));
        }
        columns.push((k.name.clone(), Target::Key(k.ty)));
    }
    if !has(ts_column) {
        return Err(format!(
            "{}: no event time column `{ts_column}` (see --timestamp-column)",
            file.display()
        ));
    }
    let mut ignored = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        if name == ts_column || entity.keys.iter().any(|k| &k.name == name) {
            continue;
        }
        match group
            .features
            .iter()
            .find(|f| &f.name == name && f.status == Status::Active)
        {
            Some(f) => columns.push((name.clone(), Target::Feature(f.ty))),
            None => ignored.push(name.clone()),
        }
    }
    let names = columns.iter().map(|(n, _)| n.clone()).collect();
    columns.push((ts_column.to_string(), Target::EventTs));
    Ok(Mapping {
        columns,
        names,
        ignored,
    })
}

/// Reads a file's rows and hands them to `send` in batches of at most
/// [`BATCH_ROWS`], with the number (from 0 in the file) of each batch's
/// first row. A row whose values cannot be read at all (a null event
/// time, a null inside a list) fails the read, or with `rejecting` goes to
/// `rejects`.
pub fn read_rows<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    file: &Path,
    mapping: &Mapping,
    rejecting: bool,
    send: &mut dyn FnMut(Vec<PutRow>, u64) -> Result<(), String>,
    rejects: &mut Vec<(PathBuf, Rejection)>,
) -> Result<(), String> {
    let damaged = |e: String| format!("{}: the file is damaged or truncated: {e}", file.display());
    let mut reader = guarded(|| builder.with_batch_size(READ_BATCH_ROWS).build())
        .map_err(damaged)?
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let (mut batch, mut batch_first, mut row_no) = (Vec::with_capacity(BATCH_ROWS), 0u64, 0u64);
    let value_columns = mapping.columns.len().saturating_sub(1);
    while let Some(record) = guarded(|| reader.next()).map_err(damaged)? {
        let record = record.map_err(|e| damaged(e.to_string()))?;
        let columns = cast_columns(file, &record, mapping)?;
        let (values, ts) = columns.split_at(value_columns);
        let Some(ts) = ts.first() else {
            return Err(format!("{}: no event time column", file.display()));
        };
        for i in 0..record.num_rows() {
            match read_row(values, ts, i) {
                Ok(row) => batch.push(row),
                Err(reason) if !rejecting => {
                    return Err(format!("{}: row {row_no}: {reason}", file.display()));
                }
                Err(reason) => rejects.push((
                    file.to_path_buf(),
                    Rejection {
                        row: row_no,
                        reason,
                    },
                )),
            }
            row_no += 1;
            if batch.len() == BATCH_ROWS {
                send(
                    std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS)),
                    batch_first,
                )?;
                batch_first = row_no;
            }
        }
    }
    if !batch.is_empty() {
        send(batch, batch_first)?;
    }
    Ok(())
}

fn cast_columns(
    file: &Path,
    record: &RecordBatch,
    mapping: &Mapping,
) -> Result<Vec<Column>, String> {
    mapping
        .columns
        .iter()
        .map(|(name, target)| {
            let array = record.column_by_name(name).ok_or_else(|| {
                format!(
                    "{}: no column `{name}` (every file must carry the first file's columns)",
                    file.display()
                )
            })?;
            Column::new(*target, array)
                .map_err(|e| format!("{}: column `{name}`: {e}", file.display()))
        })
        .collect()
}

fn read_row(values: &[Column], ts: &Column, i: usize) -> Result<PutRow, String> {
    let event_ts = ts.event_ts(i).ok_or("the event time is null")?;
    let values = values
        .iter()
        .map(|c| c.value(i))
        .collect::<Result<_, _>>()?;
    Ok(PutRow { event_ts, values })
}
