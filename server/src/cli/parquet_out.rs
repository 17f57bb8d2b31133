//! Parquet output files of the offline commands, and their progress bars.
//!
//! A file is written under a temporary name next to its destination and
//! renamed into place only when complete, so a failed or interrupted
//! command never leaves a truncated file where a reader expects a good
//! one. Columns are zstd-compressed, and dictionary-encoded only for
//! top-level strings and bytes, where values repeat; a row group closes at
//! [`ROW_GROUP_ROWS`] rows or once its buffered data passes
//! [`ROW_GROUP_BYTES`], which bounds the writer's memory whatever the row
//! width. Each batch's columns are encoded on [`ENCODE_THREADS`] threads,
//! a share of the columns each: encoding and compressing is most of a
//! write.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Most rows in one row group.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// A row group is closed once its buffered (encoded) data passes this.
pub const ROW_GROUP_BYTES: usize = 128 << 20;
/// Threads a batch's columns are encoded on.
pub const ENCODE_THREADS: usize = 2;

/// A Parquet file being written.
pub struct ParquetOut {
    /// `None` once finished.
    file: Option<SerializedFileWriter<File>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The open row group's writers, one per leaf column; empty when none
    /// is open.
    group: Vec<ArrowColumnWriter>,
    group_rows: usize,
    /// Row groups written.
    groups: usize,
    temp: PathBuf,
    path: PathBuf,
    rows: u64,
    /// Set once the file is in place; until then dropping removes it.
    placed: bool,
}

impl ParquetOut {
    /// Starts `path` with `schema`.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<ParquetOut, String> {
        let name = path
            .file_name()
            .ok_or_else(|| format!("{}: not a file name", path.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(".partial");
        let temp = path.with_file_name(temp_name);
        let file = File::create(&temp).map_err(|e| format!("{}: {e}", temp.display()))?;
        // Dictionary encoding only where values repeat: for features such
        // as floats it costs a hash per value and falls back anyway.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_dictionary_enabled(false);
        for field in schema.fields() {
            if matches!(field.data_type(), DataType::Utf8 | DataType::Binary) {
                let column = ColumnPath::from(field.name().as_str());
                props = props.set_column_dictionary_enabled(column, true);
            }
        }
        let props = props.build();
        // The high-level writer sets up the file (its Parquet schema, the
        // Arrow schema in its metadata); its parts write the columns.
        let (file, factory) = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ParquetOut {
            file: Some(file),
            factory,
            schema,
            group: Vec::new(),
            group_rows: 0,
            groups: 0,
            temp,
            path: path.to_path_buf(),
            rows: 0,
            placed: false,
        })
    }

    /// Appends a batch of rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let mut done = 0;
        while done < batch.num_rows() {
            let room = ROW_GROUP_ROWS - self.group_rows;
            let part = batch.slice(done, room.min(batch.num_rows() - done));
            self.write_part(&part)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            done += part.num_rows();
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Appends rows that fit the open row group, closing it once full.
    fn write_part(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        if self.file.is_none() {
            return Err(ParquetError::General("the file is already closed".into()));
        }
        if self.group.is_empty() {
            self.group = self.factory.create_column_writers(self.groups)?;
        }
        let mut leaves = Vec::with_capacity(self.group.len());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        if leaves.len() != self.group.len() {
            return Err(ParquetError::General(format!(
                "{} leaf columns for {} writers",
                leaves.len(),
                self.group.len()
            )));
        }
        encode(&mut self.group, &leaves)?;
        self.group_rows += batch.num_rows();
        let buffered: usize = self
            .group
            .iter()
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum();
        if self.group_rows >= ROW_GROUP_ROWS || buffered > ROW_GROUP_BYTES {
            self.close_group()?;
        }
        Ok(())
    }

    /// Writes the open row group to the file.
    fn close_group(&mut self) -> Result<(), ParquetError> {
        let writers = std::mem::take(&mut self.group);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ParquetError::General("the file is already closed".into()))?;
        let mut row_group = file.next_row_group()?;
        for writer in writers {
            writer.close()?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.groups += 1;
        self.group_rows = 0;
        Ok(())
    }

    /// Completes the file and moves it into place; returns its rows.
    pub fn finish(mut self) -> Result<u64, String> {
        let path = self.path.clone();
        if self.group_rows > 0 {
            self.close_group()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let writer = self.file.take().ok_or("the file is already closed")?;
        let file = writer
            .into_inner()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.sync_all()
            .map_err(|e| format!("{}: {e}", self.temp.display()))?;
        std::fs::rename(&self.temp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.placed = true;
        Ok(self.rows)
    }
}

/// Encodes each leaf column with its writer, the pairs dealt round-robin
/// over [`ENCODE_THREADS`] threads.
fn encode(
    writers: &mut [ArrowColumnWriter],
    leaves: &[ArrowLeafColumn],
) -> Result<(), ParquetError> {
    let mut shares: Vec<Vec<(&mut ArrowColumnWriter, &ArrowLeafColumn)>> =
        (0..ENCODE_THREADS).map(|_| Vec::new()).collect();
    for (i, pair) in writers.iter_mut().zip(leaves).enumerate() {
        shares[i % ENCODE_THREADS].push(pair);
    }
    std::thread::scope(|scope| {
        let threads: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .try_for_each(|(writer, leaf)| writer.write(leaf))
                })
            })
            .collect();
        threads.into_iter().try_for_each(|t| {
            t.join().unwrap_or_else(|_| {
                Err(ParquetError::General(
                    "a column encoding thread panicked".into(),
                ))
            })
        })
    })
}

impl Drop for ParquetOut {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A progress bar over `total` rows, or a counter with the rate when the
/// total is not known.
pub fn progress(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {pos} rows  {per_sec}  {elapsed}",
        ),
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("m", DataType::Int64, true),
        ]))
    }

    fn batch(from: i64, rows: i64) -> RecordBatch {
        let n = Int64Array::from_iter_values(from..from + rows);
        let s = StringArray::from_iter(
            (from..from + rows).map(|i| (i % 3 != 0).then(|| format!("v{}", i % 7))),
        );
        let m = Int64Array::from_iter((from..from + rows).map(|i| (i % 5 != 0).then_some(-i)));
        RecordBatch::try_new(schema(), vec![Arc::new(n), Arc::new(s), Arc::new(m)]).expect("batch")
    }

    #[test]
    fn row_groups_hold_at_most_their_rows_and_every_value_reads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.parquet");
        let mut out = ParquetOut::create(&path, schema()).expect("create");
        let per_batch = 300_000;
        let total = 4 * per_batch;
        for b in 0..4 {
            out.write(&batch(b * per_batch, per_batch)).expect("write");
        }
        assert!(!path.exists(), "the file is in place before it is finished");
        assert_eq!(out.finish().expect("finish"), total as u64);
        let file = File::open(&path).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("reader");
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(
            groups,
            [ROW_GROUP_ROWS as i64, total - ROW_GROUP_ROWS as i64]
        );
        assert_eq!(reader.schema().as_ref(), schema().as_ref());
        let mut next = 0;
        for read in reader.build().expect("build") {
            let read = read.expect("batch");
            let want = batch(next, read.num_rows() as i64);
            assert_eq!(read, want);
            assert_eq!(read.column(0).as_primitive::<Int64Type>().value(0), next);
            next += read.num_rows() as i64;
        }
        assert_eq!(next, total);
    }

    #[test]
    fn an_unfinished_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("never.parquet");
        let mut out = ParquetOut::create(&path, schema()).expect("create");
        out.write(&batch(0, 1000)).expect("write");
        drop(out);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
