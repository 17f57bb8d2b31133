//! Parquet output files of the offline commands, and their progress bars.
//!
//! A file is written under a temporary name next to its destination and
//! renamed into place only when complete, so a failed or interrupted
//! command never leaves a truncated file where a reader expects a good
//! one. Columns are zstd-compressed, and dictionary-encoded only for
//! top-level strings and bytes, where values repeat; a row group closes at
//! [`ROW_GROUP_ROWS`] rows or once its buffered data passes
//! [`ROW_GROUP_BYTES`], which bounds the writer's memory whatever the row
//! width.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Most rows in one row group.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// A row group is closed once its buffered (encoded) data passes this.
pub const ROW_GROUP_BYTES: usize = 128 << 20;

/// A Parquet file being written.
pub struct ParquetOut {
    writer: Option<ArrowWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    rows: u64,
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
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_dictionary_enabled(false);
        for field in schema.fields() {
            if matches!(field.data_type(), DataType::Utf8 | DataType::Binary) {
                let column = ColumnPath::from(field.name().as_str());
                props = props.set_column_dictionary_enabled(column, true);
            }
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ParquetOut {
            writer: Some(writer),
            temp,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    /// Appends a batch of rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let path = &self.path;
        let writer = self.writer.as_mut().ok_or("the file is already closed")?;
        writer
            .write(batch)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if writer.in_progress_size() > ROW_GROUP_BYTES {
            writer
                .flush()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Completes the file and moves it into place; returns its rows.
    pub fn finish(mut self) -> Result<u64, String> {
        let writer = self.writer.take().ok_or("the file is already closed")?;
        let file = writer
            .into_inner()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        file.sync_all()
            .map_err(|e| format!("{}: {e}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(self.rows)
    }
}

impl Drop for ParquetOut {
    fn drop(&mut self) {
        if self.writer.is_some() {
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
