//! Encoding a batch of rows: validation of every value, the entity key, and
//! the row bytes in the group's newest layout.
//!
//! A [`RowWriter`] is made once per column list (`columns` of the batch, in
//! the order rows give their values): it resolves each column to a key
//! column or a feature slot, so per row only values are checked and copied.
//! Columns a batch leaves out are null, which is only allowed for nullable
//! features.
//!
//! Every value is validated; the first invalid one fails the whole batch
//! with an error naming its row and field, and nothing of the batch is
//! returned. Floats must be finite: NaN and ±infinity are refused (a missing
//! value is null).

use super::cell::{Cell, Rows};
use super::key::encode_column;
use super::layout::{Place, ROW_FORMAT_VERSION, ROW_HEADER_LEN, VAR_OFFSET_LEN};
use super::value::{finite, within, Value, ValueError};
use super::RowSchema;
use crate::registry::{ElementType, FeatureType, MAX_LIST_LEN, MAX_STRING_BYTES};
use tessera_protocol::ImportBatch;
use tessera_storage::MAX_VALUE_LEN;

/// Why a batch (or a writer) was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A column that is neither a key column nor a feature of the group.
    #[error("unknown column `{0}`: not a key column or feature of the group")]
    UnknownColumn(String),
    /// A column named twice.
    #[error("column `{0}` is given twice")]
    DuplicateColumn(String),
    /// A key column missing from the column list.
    #[error("key column `{0}` is missing from the columns; every row needs its key")]
    MissingKeyColumn(String),
    /// A non-nullable feature missing from the column list.
    #[error("feature `{0}` is not nullable, so every batch must carry it")]
    MissingFeature(String),
    /// A row with the wrong number of values.
    #[error("row {row}: {found} values for {expected} columns")]
    Arity {
        /// Index of the row in the batch.
        row: usize,
        /// Number of columns.
        expected: usize,
        /// Values in the row.
        found: usize,
    },
    /// A value unfit for its column.
    #[error("row {row}, field `{field}`: {problem}")]
    Invalid {
        /// Index of the row in the batch.
        row: usize,
        /// The key column or feature.
        field: String,
        /// What is wrong.
        problem: ValueError,
    },
    /// A row larger than the engine stores.
    #[error("row {row} encodes to {len} bytes; the engine's limit is {MAX_VALUE_LEN}")]
    RowTooLarge {
        /// Index of the row in the batch.
        row: usize,
        /// Its encoded size.
        len: usize,
    },
}

/// Encodes batches of rows with a fixed column list; see the module docs.
#[derive(Debug)]
pub struct RowWriter {
    schema: RowSchema,
    columns: usize,
    /// For each key column, the index of its value in a row.
    keys: Vec<usize>,
    /// For each slot of the newest layout, where its value comes from.
    slots: Vec<SlotSource>,
}

/// Where a slot's value comes from.
#[derive(Clone, Copy, Debug)]
struct SlotSource {
    /// Index of its value in a row; `None` when the batch leaves it out.
    column: Option<usize>,
    nullable: bool,
}

/// Encoded rows: for each, the engine key and the row bytes, in one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    data: Vec<u8>,
    /// Per row, the end of its key and the end of its row bytes in `data`.
    ends: Vec<(usize, usize)>,
}

impl EncodedBatch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of every key and row.
    pub fn total_bytes(&self) -> usize {
        self.data.len()
    }

    /// Each row's `(key, row bytes)`, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, end)| end));
        starts
            .zip(&self.ends)
            .map(|(start, &(key_end, end))| (&self.data[start..key_end], &self.data[key_end..end]))
    }
}

impl RowWriter {
    pub(crate) fn new(schema: &RowSchema, columns: &[&str]) -> Result<RowWriter, EncodeError> {
        let layout = schema.newest();
        let group = schema.group();
        let mut keys = vec![None; schema.keys().len()];
        let mut sources = vec![None; layout.slots.len()];
        for (i, &name) in columns.iter().enumerate() {
            let target = match schema.keys().iter().position(|k| k.name == name) {
                Some(k) => &mut keys[k],
                None => {
                    let feature = group
                        .feature(name)
                        .ok_or_else(|| EncodeError::UnknownColumn(name.into()))?;
                    let (slot, _) = layout
                        .slot_of(feature.id)
                        .ok_or_else(|| EncodeError::UnknownColumn(name.into()))?;
                    &mut sources[slot]
                }
            };
            if target.replace(i).is_some() {
                return Err(EncodeError::DuplicateColumn(name.into()));
            }
        }
        let keys = keys
            .iter()
            .zip(schema.keys())
            .map(|(i, k)| i.ok_or_else(|| EncodeError::MissingKeyColumn(k.name.clone())))
            .collect::<Result<_, _>>()?;
        let mut slots = Vec::with_capacity(sources.len());
        for (slot, column) in layout.slots.iter().zip(sources) {
            let nullable = schema.feature(slot.id).is_none_or(|f| f.nullable);
            if !nullable && column.is_none() {
                return Err(EncodeError::MissingFeature(schema.field_name(slot.id)));
            }
            slots.push(SlotSource { column, nullable });
        }
        Ok(RowWriter {
            schema: schema.clone(),
            columns: columns.len(),
            keys,
            slots,
        })
    }

    /// Encodes `rows`, each one value per column. All or nothing: any invalid
    /// row fails the batch.
    pub fn encode_batch<R: AsRef<[Value]>>(&self, rows: &[R]) -> Result<EncodedBatch, EncodeError> {
        self.encode_all(rows)
    }

    /// Encodes an import batch, straight from its columns. All or nothing,
    /// as [`RowWriter::encode_batch`].
    pub fn encode_import(&self, batch: &ImportBatch) -> Result<EncodedBatch, EncodeError> {
        self.encode_all(batch)
    }

    fn encode_all<R: Rows + ?Sized>(&self, rows: &R) -> Result<EncodedBatch, EncodeError> {
        let mut batch = self.batch_for(rows.rows());
        for i in 0..rows.rows() {
            self.encode_into(rows, i, &mut batch)?;
        }
        Ok(batch)
    }

    /// An empty batch with room for `rows` rows of the newest layout.
    pub(crate) fn batch_for(&self, rows: usize) -> EncodedBatch {
        EncodedBatch {
            data: Vec::with_capacity(rows * (self.schema.newest().data_start() + 16)),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends row `i` of `rows` to `batch`; on error `batch` is as it was.
    pub(crate) fn encode_into<R: Rows + ?Sized>(
        &self,
        rows: &R,
        i: usize,
        batch: &mut EncodedBatch,
    ) -> Result<(), EncodeError> {
        let start = batch.data.len();
        let encoded = self.encode_one(rows, i, &mut batch.data);
        match encoded {
            Ok(key_end) => {
                batch.ends.push((key_end, batch.data.len()));
                Ok(())
            }
            Err(e) => {
                batch.data.truncate(start);
                Err(e)
            }
        }
    }

    /// Appends row `i`'s key and row bytes to `out`; returns the key's end.
    fn encode_one<R: Rows + ?Sized>(
        &self,
        rows: &R,
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        let width = rows.width(i);
        if width != self.columns {
            return Err(EncodeError::Arity {
                row: i,
                expected: self.columns,
                found: width,
            });
        }
        self.encode_key(rows, i, out)?;
        let key_end = out.len();
        self.encode_row(rows, i, out)?;
        let len = out.len() - key_end;
        if len > MAX_VALUE_LEN {
            return Err(EncodeError::RowTooLarge { row: i, len });
        }
        Ok(key_end)
    }

    fn encode_key<R: Rows + ?Sized>(
        &self,
        rows: &R,
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        for (column, &i) in self.schema.keys().iter().zip(&self.keys) {
            encode_column(column, &rows.cell(row, i), out).map_err(|problem| {
                EncodeError::Invalid {
                    row,
                    field: column.name.clone(),
                    problem,
                }
            })?;
        }
        Ok(())
    }

    /// Appends the row bytes of row `row` to `out`.
    fn encode_row<R: Rows + ?Sized>(
        &self,
        rows: &R,
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let layout = self.schema.newest();
        let start = out.len();
        out.push(ROW_FORMAT_VERSION);
        out.extend_from_slice(&self.schema.newest_version().to_le_bytes());
        out.resize(start + layout.data_start(), 0);
        let data_start = out.len();
        for (i, (slot, source)) in layout.slots.iter().zip(&self.slots).enumerate() {
            let value = source.column.map_or(Cell::Null, |c| rows.cell(row, c));
            let invalid = |problem| EncodeError::Invalid {
                row,
                field: self.schema.field_name(slot.id),
                problem,
            };
            if value == Cell::Null {
                if !source.nullable {
                    return Err(invalid(ValueError::NotNullable));
                }
            } else {
                out[start + ROW_HEADER_LEN + i / 8] |= 1 << (i % 8);
            }
            match slot.place {
                Place::Fixed { at, width } => {
                    put_fixed(slot.ty, &value, &mut out[start + at..start + at + width])
                        .map_err(invalid)?;
                }
                Place::Var(k) => {
                    put_var(slot.ty, &value, out).map_err(invalid)?;
                    let end = (out.len() - data_start) as u32;
                    let at = start + layout.offsets_start + VAR_OFFSET_LEN * k;
                    out[at..at + VAR_OFFSET_LEN].copy_from_slice(&end.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Writes a fixed-width value into `dst`, which is exactly its width and
/// zeroed. Null writes nothing.
fn put_fixed(ty: FeatureType, value: &Cell<'_>, dst: &mut [u8]) -> Result<(), ValueError> {
    match (ty, value) {
        (_, Cell::Null) => {}
        (FeatureType::Bool, Cell::Bool(b)) => dst[0] = u8::from(*b),
        (FeatureType::Int32, Cell::Int32(v)) => dst.copy_from_slice(&v.to_le_bytes()),
        (FeatureType::Int64, Cell::Int64(v)) | (FeatureType::Timestamp, Cell::Timestamp(v)) => {
            dst.copy_from_slice(&v.to_le_bytes())
        }
        (FeatureType::Float32, Cell::Float32(v)) => {
            finite(f64::from(*v))?;
            dst.copy_from_slice(&v.to_le_bytes());
        }
        (FeatureType::Float64, Cell::Float64(v)) => {
            finite(*v)?;
            dst.copy_from_slice(&v.to_le_bytes());
        }
        (FeatureType::Embedding(dim), Cell::Embedding(v)) => {
            if v.len() != dim as usize * 4 {
                return Err(ValueError::EmbeddingDim {
                    expected: dim,
                    found: v.len() / 4,
                });
            }
            all_finite(v)?;
            dst.copy_from_slice(v);
        }
        (ty, value) => return Err(ValueError::wrong_type(ty, value)),
    }
    Ok(())
}

/// Appends a variable-length value's bytes to `out`. Null appends nothing.
fn put_var(ty: FeatureType, value: &Cell<'_>, out: &mut Vec<u8>) -> Result<(), ValueError> {
    match (ty, value) {
        (_, Cell::Null) => {}
        (FeatureType::String, Cell::String(s)) => {
            within(s.len(), MAX_STRING_BYTES)?;
            out.extend_from_slice(s.as_bytes());
        }
        (FeatureType::Bytes, Cell::Bytes(b)) => {
            within(b.len(), MAX_STRING_BYTES)?;
            out.extend_from_slice(b);
        }
        (FeatureType::List(ElementType::Int64), Cell::ListInt64(v)) => {
            list_len(v.len() / 8)?;
            out.extend_from_slice(v);
        }
        (FeatureType::List(ElementType::Float32), Cell::ListFloat32(v)) => {
            list_len(v.len() / 4)?;
            all_finite(v)?;
            out.extend_from_slice(v);
        }
        (FeatureType::List(ElementType::String), Cell::ListString(v)) => put_string_list(v, out)?,
        (ty, value) => return Err(ValueError::wrong_type(ty, value)),
    }
    Ok(())
}

/// A `list<string>`: u32 count, then each element's u32 end offset
/// (relative to the first element's bytes), then the elements' bytes.
fn put_string_list(items: &[&str], out: &mut Vec<u8>) -> Result<(), ValueError> {
    list_len(items.len())?;
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    let mut end = 0u32;
    for item in items {
        within(item.len(), MAX_STRING_BYTES)?;
        // At most MAX_LIST_LEN * MAX_STRING_BYTES = 256 MiB: fits a u32.
        end += item.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    for item in items {
        out.extend_from_slice(item.as_bytes());
    }
    Ok(())
}

fn list_len(len: usize) -> Result<(), ValueError> {
    if len <= MAX_LIST_LEN {
        Ok(())
    } else {
        Err(ValueError::ListTooLong {
            len,
            max: MAX_LIST_LEN,
        })
    }
}

/// Checks little-endian `f32`s are finite.
fn all_finite(le: &[u8]) -> Result<(), ValueError> {
    le.chunks_exact(4)
        .try_for_each(|c| finite(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
}

const _: () = assert!(MAX_LIST_LEN * MAX_STRING_BYTES <= u32::MAX as usize);
