//! Arrow columns (from Parquet) to typed [`Value`]s, and to the columns
//! of import batches, per the registry's types.
//!
//! Each column is first cast with Arrow's checked cast to one canonical
//! Arrow type per registry type (`int64` → `Int64`, `embedding(d)` →
//! `List<Float32>`, timestamps → microseconds...), so every input width,
//! time unit and time zone, every list flavour and dictionary encoding is
//! handled by Arrow, and a value that does not fit (an overflowing integer)
//! is an error, never a silent null. Values are then read from the
//! canonical arrays.

use super::arrow_columns::{arrow_type, key_arrow_type, list_of};
use crate::registry::{ElementType, FeatureType, KeyType};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, TimeUnit};
use tessera_protocol::{tag, ColumnError, ColumnWriter, Value};

/// What a column becomes.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// A key column.
    Key(KeyType),
    /// The event time column.
    EventTs,
    /// A feature.
    Feature(FeatureType),
}

/// One column of a record batch, cast to its canonical type.
pub struct Column {
    target: Target,
    array: ArrayRef,
}

/// The canonical Arrow type for `target`, given the input's type: the type
/// the column is written as ([`arrow_type`]), except that timestamps keep
/// the input's zone (the values are UTC either way) and embeddings are read
/// as lists, so that a `list<float>` column casts too.
fn canonical(target: Target, input: &DataType) -> Result<DataType, String> {
    Ok(match target {
        Target::Key(k) => key_arrow_type(k),
        Target::EventTs | Target::Feature(FeatureType::Timestamp) => timestamp_type(input)?,
        Target::Feature(FeatureType::Embedding(_)) => list_of(DataType::Float32),
        Target::Feature(ty) => arrow_type(ty),
    })
}

/// Microsecond timestamps, keeping the input's zone; integers are taken
/// as microseconds already, dates as midnight UTC.
fn timestamp_type(input: &DataType) -> Result<DataType, String> {
    let value_type = match input {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    match value_type {
        DataType::Timestamp(_, tz) => Ok(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
        DataType::Date32 | DataType::Date64 => Ok(DataType::Timestamp(TimeUnit::Microsecond, None)),
        t if t.is_integer() => Ok(DataType::Int64),
        other => Err(format!("{other} is not a timestamp type")),
    }
}

impl Column {
    /// Casts `array` for `target`.
    pub fn new(target: Target, array: &ArrayRef) -> Result<Column, String> {
        let to = canonical(target, array.data_type())?;
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let array = cast_with_options(array, &to, &options).map_err(|e| {
            format!(
                "cannot read {} as {}: {e}",
                array.data_type(),
                describe(target)
            )
        })?;
        Ok(Column { target, array })
    }

    /// Row `i`'s value; an error for what no registry value can hold (a
    /// null inside a list).
    pub fn value(&self, i: usize) -> Result<Value, String> {
        let a = &self.array;
        if a.is_null(i) {
            return Ok(Value::Null);
        }
        Ok(match a.data_type() {
            DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
            DataType::Int32 => Value::Int32(a.as_primitive::<Int32Type>().value(i)),
            DataType::Int64 => {
                let v = a.as_primitive::<Int64Type>().value(i);
                match self.target {
                    Target::EventTs => Value::Timestamp(v),
                    Target::Feature(FeatureType::Timestamp) => Value::Timestamp(v),
                    _ => Value::Int64(v),
                }
            }
            DataType::Float32 => Value::Float32(a.as_primitive::<Float32Type>().value(i)),
            DataType::Float64 => Value::Float64(a.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_owned()),
            DataType::Binary => Value::Bytes(a.as_binary::<i32>().value(i).to_vec()),
            DataType::Timestamp(..) => {
                Value::Timestamp(a.as_primitive::<TimestampMicrosecondType>().value(i))
            }
            DataType::List(_) => self.list_value(i)?,
            other => return Err(format!("unexpected column type {other}")),
        })
    }

    fn list_value(&self, i: usize) -> Result<Value, String> {
        let items = self.array.as_list::<i32>().value(i);
        if items.null_count() > 0 {
            return Err("a list holds a null element".into());
        }
        Ok(match self.target {
            Target::Feature(FeatureType::Embedding(_)) => {
                Value::Embedding(items.as_primitive::<Float32Type>().values().to_vec())
            }
            Target::Feature(FeatureType::List(ElementType::Float32)) => {
                Value::ListFloat32(items.as_primitive::<Float32Type>().values().to_vec())
            }
            Target::Feature(FeatureType::List(ElementType::Int64)) => {
                Value::ListInt64(items.as_primitive::<Int64Type>().values().to_vec())
            }
            Target::Feature(FeatureType::List(ElementType::String)) => {
                let s = items.as_string::<i32>();
                Value::ListString((0..s.len()).map(|j| s.value(j).to_owned()).collect())
            }
            _ => return Err("a list where none is expected".into()),
        })
    }

    /// Row `i` as an event time; `None` if null.
    pub fn event_ts(&self, i: usize) -> Option<i64> {
        match self.value(i) {
            Ok(Value::Timestamp(t) | Value::Int64(t)) => Some(t),
            _ => None,
        }
    }

    /// The wire type of the column's values.
    pub fn wire_type(&self) -> (u8, u32) {
        match self.target {
            Target::Key(KeyType::Int64) => (tag::INT64, 0),
            Target::Key(KeyType::String) => (tag::STRING, 0),
            Target::EventTs => (tag::TIMESTAMP, 0),
            Target::Feature(ty) => crate::serve::wire_type(ty),
        }
    }

    /// Whether [`Column::event_ts`] can be `None` for some row: the
    /// column has nulls or is not of a time type read straight.
    pub fn may_lack_event_ts(&self) -> bool {
        self.array.null_count() > 0
            || !matches!(
                self.array.data_type(),
                DataType::Timestamp(..) | DataType::Int64
            )
    }

    /// Whether [`Column::unreadable`] can name any row: only list columns
    /// can hold what a batch cannot.
    pub fn may_be_unreadable(&self) -> bool {
        matches!(self.array.data_type(), DataType::List(_))
    }

    /// Why row `i` cannot go into a batch at all, if it cannot: a null
    /// inside a list, or an embedding of another dimension (a batch's
    /// embedding column has one width). Everything else is the server's to
    /// validate.
    pub fn unreadable(&self, i: usize) -> Option<String> {
        let DataType::List(_) = self.array.data_type() else {
            return None;
        };
        if self.array.is_null(i) {
            return None;
        }
        let items = self.array.as_list::<i32>().value(i);
        if items.null_count() > 0 {
            return Some("a list holds a null element".into());
        }
        match self.target {
            Target::Feature(FeatureType::Embedding(dim)) if items.len() != dim as usize => Some(
                crate::row::ValueError::EmbeddingDim {
                    expected: dim,
                    found: items.len(),
                }
                .to_string(),
            ),
            _ => None,
        }
    }

    /// Pushes rows `rows` (none of them [`Column::unreadable`]) into a
    /// batch column, typed array by typed array rather than value by value.
    pub fn push_rows(
        &self,
        rows: std::ops::Range<usize>,
        w: &mut ColumnWriter<'_>,
    ) -> Result<(), ColumnError> {
        let a = &self.array;
        let each =
            |w: &mut ColumnWriter<'_>,
             push: &mut dyn FnMut(&mut ColumnWriter<'_>, usize) -> Result<(), ColumnError>|
             -> Result<(), ColumnError> {
                for i in rows.clone() {
                    if a.is_null(i) {
                        w.push_null()?;
                    } else {
                        push(w, i)?;
                    }
                }
                Ok(())
            };
        if let Some(width) = a.data_type().primitive_width() {
            // The canonical numbers and timestamps: the values buffer holds
            // each row's little-endian bytes, as the wire does.
            let data = a.to_data();
            let bytes = &data.buffers()[0].as_slice()[data.offset() * width..];
            if a.null_count() == 0 {
                return w.push_fixed_le_run(&bytes[rows.start * width..rows.end * width]);
            }
            return each(w, &mut |w, i| {
                w.push_fixed_le(&bytes[i * width..(i + 1) * width])
            });
        }
        match a.data_type() {
            DataType::Boolean => {
                let v = a.as_boolean();
                each(w, &mut |w, i| w.push_fixed_le(&[u8::from(v.value(i))]))
            }
            DataType::Utf8 => {
                let v = a.as_string::<i32>();
                each(w, &mut |w, i| w.push_str(v.value(i)))
            }
            DataType::Binary => {
                let v = a.as_binary::<i32>();
                each(w, &mut |w, i| w.push_var(v.value(i)))
            }
            DataType::List(_)
                if matches!(self.target, Target::Feature(FeatureType::Embedding(_))) =>
            {
                let lists = a.as_list::<i32>();
                each(w, &mut |w, i| {
                    let items = lists.value(i);
                    let floats = items.as_primitive::<Float32Type>().values();
                    w.push_fixed_le(bytemuck::cast_slice(&floats[..]))
                })
            }
            _ => each(w, &mut |w, i| {
                let value = self.value(i).map_err(|reason| ColumnError {
                    column: String::new(),
                    tag: 0,
                    reason,
                })?;
                w.push(&value)
            }),
        }
    }

    /// The event times of rows `rows`; `Err(i)` names the first null.
    pub fn event_times(&self, rows: std::ops::Range<usize>) -> Result<Vec<i64>, usize> {
        let a = &self.array;
        let values = match a.data_type() {
            DataType::Timestamp(..) => a.as_primitive::<TimestampMicrosecondType>().values(),
            DataType::Int64 => a.as_primitive::<Int64Type>().values(),
            _ => return rows.map(|i| self.event_ts(i).ok_or(i)).collect(),
        };
        match rows.clone().find(|&i| a.is_null(i)) {
            Some(i) => Err(i),
            None => Ok(values[rows].to_vec()),
        }
    }
}

fn describe(target: Target) -> String {
    match target {
        Target::Key(k) => format!("a {k} key"),
        Target::EventTs => "an event time".into(),
        Target::Feature(ty) => ty.to_string(),
    }
}
