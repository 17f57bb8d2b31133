//! `tessera import`: Parquet files into a feature group, as one import
//! session (all or nothing) over the protocol.
//!
//! Columns map to the group by name: the entity's key columns, the event
//! time column (`event_ts` unless `--timestamp-column` says otherwise) and
//! any of the group's active features; other columns are ignored (and
//! named). Every file must carry the first file's features. Rows go out in
//! batches numbered by file row, so the server's messages name the file,
//! the row and the column. With `--reject-file`, invalid rows are written
//! to a Parquet dead-letter file (`source_file`, `source_row`, `reason`)
//! and the rest commits; without it the first invalid row fails the import
//! and nothing is committed.

use super::parquet_out::{progress, ParquetOut};
use super::rows::RegistryView;
use super::{connect, CliError, ClientArgs};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tessera_protocol::{ImportBatch, ImportBegin, ImportRows, Rejection};
use tessera_server::columnar::import::{self as reader, Mapping};
use tessera_server::registry::FeatureGroup;

/// `IMPORT_ROWS` sent ahead of their replies.
const IMPORT_BATCHES_IN_FLIGHT: usize = 1;

/// Arguments of `tessera import`.
#[derive(Clone, Debug, clap::Args)]
pub struct ImportArgs {
    /// The feature group.
    #[arg(long)]
    pub group: String,
    /// The column holding each row's event time.
    #[arg(long, default_value = "event_ts")]
    pub timestamp_column: String,
    /// Rows per second to send at most (default: the server's limit).
    #[arg(long, default_value_t = 0)]
    pub max_rows_per_s: u32,
    /// Write invalid rows here (Parquet) and import the rest.
    #[arg(long)]
    pub reject_file: Option<PathBuf>,
    /// Parquet files, or directories of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

/// Runs an import.
pub fn import(client: &ClientArgs, args: &ImportArgs) -> Result<(), CliError> {
    let files = parquet_files(&args.inputs)?;
    let mut c = connect(client)?;
    let registry = RegistryView::fetch(&mut c)?;
    let (group, entity) = registry.group(&args.group)?;
    let total: u64 = files
        .iter()
        .map(|f| file_rows(f))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    let mapping = mapping(&files[0], group, entity, &args.timestamp_column)?;
    let begun = c
        .import_begin(&ImportBegin {
            group: args.group.clone(),
            columns: mapping.names.clone(),
            reject_invalid: args.reject_file.is_some(),
            max_rows_per_s: args.max_rows_per_s,
        })
        .map_err(|e| e.to_string())?;
    let bar = progress(Some(total));
    let started = Instant::now();
    let mut rejects = Vec::new();
    let mut sent = 0u64;
    // Batches sent and not yet answered, with their file: one in flight
    // while the next is read from Parquet, so client and server overlap.
    let mut in_flight: std::collections::VecDeque<(PathBuf, u64)> =
        std::collections::VecDeque::new();
    let mut receive = |c: &mut tessera_protocol::Client,
                       in_flight: &mut std::collections::VecDeque<(PathBuf, u64)>,
                       rejects: &mut Vec<(PathBuf, Rejection)>|
     -> Result<(), CliError> {
        let Some((file, n)) = in_flight.pop_front() else {
            return Ok(());
        };
        let reply = c
            .receive_import_rows()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        rejects.extend(reply.rejected.into_iter().map(|r| (file.clone(), r)));
        sent += n;
        bar.set_position(sent);
        Ok(())
    };
    for file in &files {
        let mut unreadable = Vec::new();
        let mut send = |rows: ImportBatch, first_row: u64| -> Result<(), CliError> {
            let n = rows.rows() as u64;
            let batch = ImportRows {
                session: begun.session,
                first_row,
                rows,
            };
            c.send_import_rows(&batch)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            in_flight.push_back((file.clone(), n));
            if in_flight.len() > IMPORT_BATCHES_IN_FLIGHT {
                receive(&mut c, &mut in_flight, &mut rejects)?;
            }
            Ok(())
        };
        read_file(
            file,
            &mapping,
            args.reject_file.is_some(),
            &mut send,
            &mut unreadable,
        )?;
        rejects.extend(unreadable);
    }
    while !in_flight.is_empty() {
        receive(&mut c, &mut in_flight, &mut rejects)?;
    }
    let committed = c.import_commit(begun.session).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {} rows into `{}` from {} file(s) in {secs:.1} s ({:.0} rows/s); {} rejected",
        committed.rows,
        args.group,
        files.len(),
        committed.rows as f64 / secs.max(1e-9),
        rejects.len()
    );
    if let Some(path) = &args.reject_file {
        write_rejects(path, &rejects)?;
        if !rejects.is_empty() {
            println!("rejected rows written to {}", path.display());
        }
    }
    Ok(())
}

/// The Parquet files named, directories walked (skipping hidden and `_`
/// files such as `_SUCCESS`), in name order.
fn parquet_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
        if meta.is_dir() {
            walk(input, &mut files)?;
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err("no Parquet files found in the inputs".into());
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let read = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Opens a Parquet file for reading, or says why it is not one.
pub(super) fn open_parquet(
    file: &Path,
) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>, CliError> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    reader::open_parquet(f, file)
}

fn file_rows(file: &Path) -> Result<u64, CliError> {
    Ok(u64::try_from(open_parquet(file)?.metadata().file_metadata().num_rows()).unwrap_or(0))
}

/// Maps the first file's columns to the group, naming the columns ignored.
fn mapping(
    file: &Path,
    group: &FeatureGroup,
    entity: &tessera_server::registry::Entity,
    ts_column: &str,
) -> Result<Mapping, CliError> {
    let builder = open_parquet(file)?;
    let mapping = reader::mapping(builder.schema(), file, group, entity, ts_column)?;
    if !mapping.ignored.is_empty() {
        eprintln!(
            "ignoring columns that are not active features of `{}`: {}",
            group.name,
            mapping.ignored.join(", ")
        );
    }
    Ok(mapping)
}

/// Reads one file's rows and hands them to `send` in batches, numbered
/// from 0 in the file (see [`reader::read_rows`]).
fn read_file(
    file: &Path,
    mapping: &Mapping,
    rejecting: bool,
    send: &mut dyn FnMut(ImportBatch, u64) -> Result<(), CliError>,
    rejects: &mut Vec<(PathBuf, Rejection)>,
) -> Result<(), CliError> {
    reader::read_rows(open_parquet(file)?, file, mapping, rejecting, send, rejects)
}

/// Writes the dead-letter file: source file, row, reason.
fn write_rejects(path: &Path, rejects: &[(PathBuf, Rejection)]) -> Result<(), CliError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("source_file", DataType::Utf8, false),
        Field::new("source_row", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
    ]));
    let files: ArrayRef = Arc::new(StringArray::from_iter_values(
        rejects.iter().map(|(f, _)| f.display().to_string()),
    ));
    let rows: ArrayRef = Arc::new(UInt64Array::from_iter_values(
        rejects.iter().map(|(_, r)| r.row),
    ));
    let reasons: ArrayRef = Arc::new(StringArray::from_iter_values(
        rejects.iter().map(|(_, r)| r.reason.clone()),
    ));
    let batch = RecordBatch::try_new(schema.clone(), vec![files, rows, reasons])
        .map_err(|e| e.to_string())?;
    let mut out = ParquetOut::create(path, schema)?;
    out.write(&batch)?;
    out.finish()?;
    Ok(())
}
