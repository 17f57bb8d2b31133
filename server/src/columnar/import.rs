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
use tessera_protocol::{ColumnSpec, ImportBatch, Rejection};

/// Rows per Parquet record batch read, and at most per `IMPORT_ROWS`.
pub const READ_BATCH_ROWS: usize = 16_384;

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

/// Reads a file's rows and hands them to `send` as column-by-column
/// batches of at most [`READ_BATCH_ROWS`] rows and [`MAX_BATCH_BYTES`],
/// with the number (from 0 in the file) of each batch's first row. A row
/// that cannot go into a batch at all (a null event time, a null inside a
/// list, an embedding of another dimension) fails the read, or with
/// `rejecting` goes to `rejects` and the batch is split around it.
pub fn read_rows<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    file: &Path,
    mapping: &Mapping,
    rejecting: bool,
    send: &mut dyn FnMut(ImportBatch, u64) -> Result<(), String>,
    rejects: &mut Vec<(PathBuf, Rejection)>,
) -> Result<(), String> {
    let damaged = |e: String| format!("{}: the file is damaged or truncated: {e}", file.display());
    let mut reader = guarded(|| builder.with_batch_size(READ_BATCH_ROWS).build())
        .map_err(damaged)?
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut row_no = 0u64;
    let value_columns = mapping.columns.len().saturating_sub(1);
    while let Some(record) = guarded(|| reader.next()).map_err(damaged)? {
        let record = record.map_err(|e| damaged(e.to_string()))?;
        let columns = cast_columns(file, &record, mapping)?;
        let (values, ts) = columns.split_at(value_columns);
        let Some(ts) = ts.first() else {
            return Err(format!("{}: no event time column", file.display()));
        };
        let rows = CastRecord {
            mapping,
            values,
            ts,
        };
        let bad = rows.unreadable(record.num_rows());
        if let (Some((i, reason)), false) = (bad.first(), rejecting) {
            return Err(format!(
                "{}: row {}: {reason}",
                file.display(),
                row_no + *i as u64
            ));
        }
        let mut start = 0;
        for end in bad.iter().map(|(i, _)| *i).chain([record.num_rows()]) {
            rows.send(start..end, row_no, file, send)?;
            start = end + 1;
        }
        rejects.extend(bad.into_iter().map(|(i, reason)| {
            (
                file.to_path_buf(),
                Rejection {
                    row: row_no + i as u64,
                    reason,
                },
            )
        }));
        row_no += record.num_rows() as u64;
    }
    Ok(())
}

/// Most bytes of one batch on the wire: well under the default frame limit.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// A record batch's columns, cast for the group.
struct CastRecord<'a> {
    mapping: &'a Mapping,
    values: &'a [Column],
    ts: &'a Column,
}

impl CastRecord<'_> {
    /// Rows that cannot go into a batch, in order, with why.
    fn unreadable(&self, n: usize) -> Vec<(usize, String)> {
        let mut bad = Vec::new();
        let check_ts = self.ts.may_lack_event_ts();
        let lists: Vec<_> = self
            .values
            .iter()
            .zip(&self.mapping.columns)
            .filter(|(c, _)| c.may_be_unreadable())
            .collect();
        if !check_ts && lists.is_empty() {
            return bad;
        }
        for i in 0..n {
            if check_ts && self.ts.event_ts(i).is_none() {
                bad.push((i, "the event time is null".to_string()));
                continue;
            }
            let why = lists.iter().find_map(|(c, (name, _))| {
                c.unreadable(i)
                    .map(|reason| format!("column `{name}`: {reason}"))
            });
            if let Some(why) = why {
                bad.push((i, why));
            }
        }
        bad
    }

    /// Sends rows `range` (numbered from `first` in the file) as one batch,
    /// or as halves while a batch would be over [`MAX_BATCH_BYTES`].
    fn send(
        &self,
        range: std::ops::Range<usize>,
        first: u64,
        file: &Path,
        send: &mut dyn FnMut(ImportBatch, u64) -> Result<(), String>,
    ) -> Result<(), String> {
        if range.is_empty() {
            return Ok(());
        }
        let batch = self.batch(range.clone(), file)?;
        if batch.encoded_len() <= MAX_BATCH_BYTES || range.len() == 1 {
            return send(batch, first + range.start as u64);
        }
        let mid = range.start + range.len() / 2;
        self.send(range.start..mid, first, file, send)?;
        self.send(mid..range.end, first, file, send)
    }

    fn batch(&self, range: std::ops::Range<usize>, file: &Path) -> Result<ImportBatch, String> {
        let event_ts = self
            .ts
            .event_times(range.clone())
            .map_err(|i| format!("{}: row {i}: the event time is null", file.display()))?;
        let specs: Vec<ColumnSpec<'_>> = self
            .values
            .iter()
            .zip(&self.mapping.columns)
            .map(|(c, (name, _))| {
                let (tag, dim) = c.wire_type();
                ColumnSpec { name, tag, dim }
            })
            .collect();
        ImportBatch::build(&event_ts, &specs, |k, w| {
            self.values[k].push_rows(range.clone(), w)
        })
        .map_err(|e| format!("{}: {e}", file.display()))
    }
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
