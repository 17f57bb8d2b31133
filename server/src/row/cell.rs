//! [`Cell`]: one value as the row encoder reads it, borrowed either from a
//! protocol [`Value`] (`PUT`) or straight from a column of an import batch
//! (`IMPORT_ROWS`), so both paths share one validation and one encoding.
//!
//! [`Rows`] is a batch of cells by row and column: a slice of value rows,
//! or an [`ImportBatch`]. Numbers, embeddings and lists in a cell are the
//! little-endian bytes the row format stores (the codec is little-endian
//! only), so a batch's floats are checked and copied, never converted.

use super::value::Value;
use tessera_protocol::{tag, Column, ImportBatch};

/// One value; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    /// No value.
    Null,
    /// A `bool`.
    Bool(bool),
    /// An `int32`.
    Int32(i32),
    /// An `int64`.
    Int64(i64),
    /// A `timestamp`, µs.
    Timestamp(i64),
    /// A `float32`.
    Float32(f32),
    /// A `float64`.
    Float64(f64),
    /// A `string`.
    String(&'a str),
    /// `bytes`.
    Bytes(&'a [u8]),
    /// An embedding: little-endian `f32`s.
    Embedding(&'a [u8]),
    /// A `list<int64>`: little-endian `i64`s.
    ListInt64(&'a [u8]),
    /// A `list<float32>`: little-endian `f32`s.
    ListFloat32(&'a [u8]),
    /// A `list<string>`.
    ListString(Vec<&'a str>),
}

impl<'a> Cell<'a> {
    /// The type's name, as in specs.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "bool",
            Cell::Int32(_) => "int32",
            Cell::Int64(_) => "int64",
            Cell::Timestamp(_) => "timestamp",
            Cell::Float32(_) => "float32",
            Cell::Float64(_) => "float64",
            Cell::String(_) => "string",
            Cell::Bytes(_) => "bytes",
            Cell::Embedding(_) => "embedding",
            Cell::ListInt64(_) => "list<int64>",
            Cell::ListFloat32(_) => "list<float32>",
            Cell::ListString(_) => "list<string>",
        }
    }

    /// A borrowed view of `value`.
    pub(crate) fn of(value: &'a Value) -> Cell<'a> {
        match value {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Int32(v) => Cell::Int32(*v),
            Value::Int64(v) => Cell::Int64(*v),
            Value::Timestamp(v) => Cell::Timestamp(*v),
            Value::Float32(v) => Cell::Float32(*v),
            Value::Float64(v) => Cell::Float64(*v),
            Value::String(s) => Cell::String(s),
            Value::Bytes(b) => Cell::Bytes(b),
            Value::Embedding(v) => Cell::Embedding(bytemuck::cast_slice(v)),
            Value::ListInt64(v) => Cell::ListInt64(bytemuck::cast_slice(v)),
            Value::ListFloat32(v) => Cell::ListFloat32(bytemuck::cast_slice(v)),
            Value::ListString(v) => Cell::ListString(v.iter().map(String::as_str).collect()),
        }
    }

    /// Row `i` of a batch column; null where not valid.
    pub(crate) fn in_column(column: &'a Column, i: usize) -> Cell<'a> {
        let cell = match column.tag() {
            tag::BOOL => column.bool_at(i).map(Cell::Bool),
            tag::INT32 => column.i32_at(i).map(Cell::Int32),
            tag::INT64 => column.i64_at(i).map(Cell::Int64),
            tag::TIMESTAMP => column.i64_at(i).map(Cell::Timestamp),
            tag::FLOAT32 => column.f32_at(i).map(Cell::Float32),
            tag::FLOAT64 => column.f64_at(i).map(Cell::Float64),
            tag::STRING => column.str_at(i).map(Cell::String),
            tag::BYTES => column.bytes_at(i).map(Cell::Bytes),
            tag::EMBEDDING => column.fixed_le(i).map(Cell::Embedding),
            tag::LIST_INT64 => column.list_le(i).map(Cell::ListInt64),
            tag::LIST_FLOAT32 => column.list_le(i).map(Cell::ListFloat32),
            tag::LIST_STRING => column.strings_at(i).map(Cell::ListString),
            _ => None,
        };
        cell.unwrap_or(Cell::Null)
    }
}

/// A batch of cells, by row and column.
pub(crate) trait Rows {
    /// Rows in the batch.
    fn rows(&self) -> usize;
    /// Values row `row` has (for a columnar batch, its column count).
    fn width(&self, row: usize) -> usize;
    /// The cell at `row`, `column` (both in range).
    fn cell(&self, row: usize, column: usize) -> Cell<'_>;
}

impl<R: AsRef<[Value]>> Rows for [R] {
    fn rows(&self) -> usize {
        self.len()
    }

    fn width(&self, row: usize) -> usize {
        self[row].as_ref().len()
    }

    fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        Cell::of(&self[row].as_ref()[column])
    }
}

impl Rows for ImportBatch {
    fn rows(&self) -> usize {
        ImportBatch::rows(self)
    }

    fn width(&self, _row: usize) -> usize {
        self.columns().len()
    }

    fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        Cell::in_column(&self.columns()[column], row)
    }
}
