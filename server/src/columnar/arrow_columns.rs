//! Reply columns (protocol views) to Arrow arrays, per the registry's
//! types: the write side of `tessera export` and `tessera pit-join`.
//!
//! Each registry type has one Arrow type ([`arrow_type`]): timestamps are
//! microseconds in UTC, embeddings `fixed_size_list<float32>` of their
//! dimension, lists Arrow lists. A [`ColumnBuilder`] appends rows from any
//! number of replies (one export chunk after another, or the lookups of a
//! join in spine order) and finishes into one array.

use crate::registry::{ElementType, FeatureType, KeyType};
use arrow_array::builder::PrimitiveBuilder;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType};
use arrow_schema::{DataType, Field, TimeUnit};
use std::sync::Arc;
use tessera_protocol::{tag, Column, Value};

/// The time zone every timestamp column is written with.
pub const UTC: &str = "UTC";

/// The Arrow type of a timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// An Arrow list of `element`, nullable items (as Arrow's builders make).
pub fn list_of(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

/// The Arrow type a feature of type `ty` is written as.
pub fn arrow_type(ty: FeatureType) -> DataType {
    match ty {
        FeatureType::Bool => DataType::Boolean,
        FeatureType::Int32 => DataType::Int32,
        FeatureType::Int64 => DataType::Int64,
        FeatureType::Float32 => DataType::Float32,
        FeatureType::Float64 => DataType::Float64,
        FeatureType::String => DataType::Utf8,
        FeatureType::Bytes => DataType::Binary,
        FeatureType::Timestamp => timestamp_type(),
        FeatureType::Embedding(dim) => DataType::FixedSizeList(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            dim as i32,
        ),
        FeatureType::List(ElementType::Int64) => list_of(DataType::Int64),
        FeatureType::List(ElementType::Float32) => list_of(DataType::Float32),
        FeatureType::List(ElementType::String) => list_of(DataType::Utf8),
    }
}

/// The Arrow type of a key column.
pub fn key_arrow_type(ty: KeyType) -> DataType {
    match ty {
        KeyType::Int64 => DataType::Int64,
        KeyType::String => DataType::Utf8,
    }
}

/// The feature type a key column's values have on the wire.
pub fn key_feature_type(ty: KeyType) -> FeatureType {
    match ty {
        KeyType::Int64 => FeatureType::Int64,
        KeyType::String => FeatureType::String,
    }
}

/// Builds one Arrow column, row by row, from reply columns of one type.
pub enum ColumnBuilder {
    /// `bool`.
    Bool(BooleanBuilder),
    /// `int32`.
    Int32(Int32Builder),
    /// `int64`.
    Int64(Int64Builder),
    /// `float32`.
    Float32(Float32Builder),
    /// `float64`.
    Float64(Float64Builder),
    /// `string`.
    String(StringBuilder),
    /// `bytes`.
    Bytes(BinaryBuilder),
    /// `timestamp`.
    Timestamp(TimestampMicrosecondBuilder),
    /// `embedding(dim)`.
    Embedding(FixedSizeListBuilder<Float32Builder>),
    /// `list<int64>`.
    ListInt64(ListBuilder<Int64Builder>),
    /// `list<float32>`.
    ListFloat32(ListBuilder<Float32Builder>),
    /// `list<string>`.
    ListString(ListBuilder<StringBuilder>),
}

impl ColumnBuilder {
    /// A builder for a feature of type `ty`, sized for `rows`.
    pub fn new(ty: FeatureType, rows: usize) -> ColumnBuilder {
        match ty {
            FeatureType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            FeatureType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(rows)),
            FeatureType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(rows)),
            FeatureType::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(rows)),
            FeatureType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(rows)),
            FeatureType::String => ColumnBuilder::String(StringBuilder::with_capacity(rows, 0)),
            FeatureType::Bytes => ColumnBuilder::Bytes(BinaryBuilder::with_capacity(rows, 0)),
            FeatureType::Timestamp => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC),
            ),
            FeatureType::Embedding(dim) => {
                let values = Float32Builder::with_capacity(rows * dim as usize);
                ColumnBuilder::Embedding(FixedSizeListBuilder::with_capacity(
                    values, dim as i32, rows,
                ))
            }
            FeatureType::List(ElementType::Int64) => {
                ColumnBuilder::ListInt64(ListBuilder::with_capacity(Int64Builder::new(), rows))
            }
            FeatureType::List(ElementType::Float32) => {
                ColumnBuilder::ListFloat32(ListBuilder::with_capacity(Float32Builder::new(), rows))
            }
            FeatureType::List(ElementType::String) => {
                ColumnBuilder::ListString(ListBuilder::with_capacity(StringBuilder::new(), rows))
            }
        }
    }

    /// Appends a null.
    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::String(b) => b.append_null(),
            ColumnBuilder::Bytes(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Embedding(b) => {
                let dim = b.value_length() as usize;
                b.values().append_nulls(dim);
                b.append(false);
            }
            ColumnBuilder::ListInt64(b) => b.append_null(),
            ColumnBuilder::ListFloat32(b) => b.append_null(),
            ColumnBuilder::ListString(b) => b.append_null(),
        }
    }

    /// Appends row `i` of `column` (null when it has no value there). A
    /// value of another type than the builder's is an error: the server
    /// and the registry disagree.
    pub fn append(&mut self, column: &Column, i: usize) -> Result<(), String> {
        if !column.is_valid(i) {
            self.append_null();
            return Ok(());
        }
        let mismatch = || {
            format!(
                "column `{}`: the server sent type tag {}, not the registry's type",
                column.name(),
                column.tag()
            )
        };
        match self {
            ColumnBuilder::Bool(b) => b.append_value(column.bool_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Int32(b) => b.append_value(column.i32_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Int64(b) => b.append_value(column.i64_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Float32(b) => b.append_value(column.f32_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Float64(b) => b.append_value(column.f64_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::String(b) => b.append_value(column.str_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Bytes(b) => b.append_value(column.bytes_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Timestamp(b) => b.append_value(column.i64_at(i).ok_or_else(mismatch)?),
            ColumnBuilder::Embedding(b) => {
                let values = column.embedding_at(i).ok_or_else(mismatch)?;
                if values.len() != b.value_length() as usize {
                    return Err(mismatch());
                }
                b.values().append_slice(values);
                b.append(true);
            }
            ColumnBuilder::ListInt64(b) => match column.value(i) {
                Value::ListInt64(v) => b.append_value(v.into_iter().map(Some)),
                _ => return Err(mismatch()),
            },
            ColumnBuilder::ListFloat32(b) => match column.value(i) {
                Value::ListFloat32(v) => b.append_value(v.into_iter().map(Some)),
                _ => return Err(mismatch()),
            },
            ColumnBuilder::ListString(b) => match column.value(i) {
                Value::ListString(v) => b.append_value(v.into_iter().map(Some)),
                _ => return Err(mismatch()),
            },
        }
        Ok(())
    }

    /// Appends every row of `column`, in order. Number columns are copied
    /// in one piece (with their validity); the rest row by row.
    pub fn append_column(&mut self, column: &Column) -> Result<(), String> {
        let copied = match self {
            ColumnBuilder::Float32(b) if column.tag() == tag::FLOAT32 => {
                append_whole(b, column, column.f32s())
            }
            ColumnBuilder::Float64(b) => append_whole(b, column, column.f64s()),
            ColumnBuilder::Int64(b) => append_whole(b, column, column.i64s()),
            ColumnBuilder::Timestamp(b) => append_whole(b, column, column.i64s()),
            _ => false,
        };
        if copied {
            return Ok(());
        }
        (0..column.rows()).try_for_each(|i| self.append(column, i))
    }

    /// The array of everything appended; the builder starts over empty.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::String(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Embedding(b) => Arc::new(b.finish()),
            ColumnBuilder::ListInt64(b) => Arc::new(b.finish()),
            ColumnBuilder::ListFloat32(b) => Arc::new(b.finish()),
            ColumnBuilder::ListString(b) => Arc::new(b.finish()),
        }
    }
}

/// Appends `values`, the whole of `column` as one slice, with its validity;
/// false (nothing appended) when the column has no such slice.
fn append_whole<T: ArrowPrimitiveType>(
    builder: &mut PrimitiveBuilder<T>,
    column: &Column,
    values: Option<&[T::Native]>,
) -> bool {
    let Some(values) = values else {
        return false;
    };
    let valid: Vec<bool> = (0..column.rows()).map(|i| column.is_valid(i)).collect();
    builder.append_values(values, &valid);
    true
}
