//! Projection decoding: reading some features of a row, in any schema
//! version of its group, without touching the others.
//!
//! A [`Projection`] is made once per list of requested features. For each
//! layout of the group it precomputes, per requested feature, the null
//! bitmap bit and either the fixed-section offset or the var-offsets index
//! (or that the feature did not exist yet, so it reads as null). Decoding a
//! row then reads its header, checks its length, and per requested feature
//! tests one bit and reads one place.
//!
//! Rows come from disk and the network: every read is bounds-checked, and
//! a truncated, padded or garbled row is an error, never a panic.

use super::layout::{Layout, Place, ROW_FORMAT_VERSION, ROW_HEADER_LEN, VAR_OFFSET_LEN};
use super::value::Value;
use super::RowSchema;
use crate::registry::{ElementType, FeatureType, SchemaVersion};

/// Why a row (or a projection) cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A requested feature that the group does not have (now).
    #[error("unknown feature `{0}`: not an active or deprecated feature of the group")]
    UnknownFeature(String),
    /// A row shorter than its header.
    #[error("row is {0} bytes, shorter than its header")]
    NoHeader(usize),
    /// A row format this code does not read.
    #[error("unknown row format version {0}; this build reads version {ROW_FORMAT_VERSION}")]
    UnknownFormat(u8),
    /// A schema version the group does not have (yet: the registry the
    /// projection was made from may be older than the row).
    #[error("row has schema version {version}; the group's schema versions are 1 to {newest}")]
    UnknownSchemaVersion {
        /// The row's version.
        version: SchemaVersion,
        /// The newest version the projection knows.
        newest: SchemaVersion,
    },
    /// A row whose length does not match its layout.
    #[error("row is {len} bytes but its layout makes it {expected}")]
    Length {
        /// Its length.
        len: usize,
        /// The length its layout and var offsets imply.
        expected: usize,
    },
    /// A feature's bytes are not a valid value of its type.
    #[error("feature slot {slot}: {reason}")]
    BadValue {
        /// The slot, in the row's layout.
        slot: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// How to read one requested feature from rows of one layout.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// The feature did not exist when the row was written: null.
    Absent,
    /// Slot `slot`: null bit `mask` of byte `byte`, value at `place`.
    Present {
        slot: usize,
        byte: usize,
        mask: u8,
        place: Place,
        ty: FeatureType,
    },
}

/// Decodes a fixed list of features from rows of one group; see the module
/// docs.
#[derive(Debug)]
pub struct Projection {
    schema: RowSchema,
    /// `reads[layout][i]`: how to read requested feature `i`.
    reads: Vec<Vec<Read>>,
}

impl Projection {
    pub(crate) fn new(schema: &RowSchema, features: &[&str]) -> Result<Projection, DecodeError> {
        let ids = features
            .iter()
            .map(|&name| {
                let feature = schema.group().feature(name);
                feature
                    .map(|f| f.id)
                    .ok_or_else(|| DecodeError::UnknownFeature(name.into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reads = schema
            .layouts()
            .all()
            .iter()
            .map(|layout| ids.iter().map(|&id| plan_read(layout, id)).collect())
            .collect();
        Ok(Projection {
            schema: schema.clone(),
            reads,
        })
    }

    /// Number of features each decoded row has.
    pub fn len(&self) -> usize {
        self.reads.first().map_or(0, Vec::len)
    }

    /// True if the projection requests no feature.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes the requested features of `row` into `out` (cleared first), in
    /// request order.
    pub fn decode_into(&self, row: &[u8], out: &mut Vec<Value>) -> Result<(), DecodeError> {
        out.clear();
        let (reads, layout) = self.reads_for(row)?;
        for read in reads {
            out.push(to_value(read_raw(row, layout, read)?, read)?);
        }
        Ok(())
    }

    /// The reads and layout for `row`'s schema version, after checking its
    /// header and length.
    fn reads_for(&self, row: &[u8]) -> Result<(&[Read], &Layout), DecodeError> {
        let version = read_header(row)?;
        let (index, layout) =
            self.schema
                .layouts()
                .get(version)
                .ok_or(DecodeError::UnknownSchemaVersion {
                    version,
                    newest: self.schema.newest_version(),
                })?;
        check_length(row, layout)?;
        let reads = self.reads.get(index).map_or(&[][..], Vec::as_slice);
        Ok((reads, layout))
    }

    /// Calls `f(i, value)` for each requested feature `i` of `row`, with the
    /// value's stored bytes rather than a decoded [`Value`]: numbers,
    /// embeddings and lists are little-endian, as the wire wants them, so a
    /// server copies them straight into a reply.
    pub fn visit_raw<'r>(
        &self,
        row: &'r [u8],
        mut f: impl FnMut(usize, RawValue<'r>),
    ) -> Result<(), DecodeError> {
        let (reads, layout) = self.reads_for(row)?;
        for (i, read) in reads.iter().enumerate() {
            f(i, read_raw(row, layout, read)?);
        }
        Ok(())
    }

    /// Decodes the requested features of `row`, in request order.
    pub fn decode(&self, row: &[u8]) -> Result<Vec<Value>, DecodeError> {
        let mut out = Vec::with_capacity(self.len());
        self.decode_into(row, &mut out)?;
        Ok(out)
    }
}

fn plan_read(layout: &Layout, id: u32) -> Read {
    match layout.slot_of(id) {
        Some((slot, s)) => Read::Present {
            slot,
            byte: ROW_HEADER_LEN + slot / 8,
            mask: 1 << (slot % 8),
            place: s.place,
            ty: s.ty,
        },
        None => Read::Absent,
    }
}

/// The schema version of a row, after checking its format version.
fn read_header(row: &[u8]) -> Result<SchemaVersion, DecodeError> {
    match row {
        [format, v0, v1, v2, v3, ..] if *format == ROW_FORMAT_VERSION => {
            Ok(u32::from_le_bytes([*v0, *v1, *v2, *v3]))
        }
        [format, _, _, _, _, ..] => Err(DecodeError::UnknownFormat(*format)),
        _ => Err(DecodeError::NoHeader(row.len())),
    }
}

/// Checks that `row` is exactly as long as its layout and last var offset
/// say, so that every fixed read is in bounds and every var read is within
/// the var data.
fn check_length(row: &[u8], layout: &Layout) -> Result<(), DecodeError> {
    let data_start = layout.data_start();
    let expected = match layout.var_count.checked_sub(1) {
        None => data_start,
        Some(last) => {
            let end = u32_at(row, layout.offsets_start + VAR_OFFSET_LEN * last).ok_or(
                DecodeError::Length {
                    len: row.len(),
                    expected: data_start,
                },
            )?;
            data_start + end as usize
        }
    };
    if row.len() == expected {
        Ok(())
    } else {
        Err(DecodeError::Length {
            len: row.len(),
            expected,
        })
    }
}

/// A requested feature's stored bytes in one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawValue<'r> {
    /// Null, or a feature the row's schema version did not have.
    Null,
    /// A fixed-width value (numbers, bools, timestamps, embeddings):
    /// exactly its type's width, little-endian.
    Fixed(FeatureType, &'r [u8]),
    /// A variable-length value (strings, bytes, lists) as stored; see
    /// [`layout`](super::layout) for lists.
    Var(FeatureType, &'r [u8]),
}

fn read_raw<'r>(row: &'r [u8], layout: &Layout, read: &Read) -> Result<RawValue<'r>, DecodeError> {
    let &Read::Present {
        slot,
        byte,
        mask,
        place,
        ty,
    } = read
    else {
        return Ok(RawValue::Null);
    };
    let bad = |reason| DecodeError::BadValue { slot, reason };
    let present = row.get(byte).ok_or(bad("null bitmap out of bounds"))? & mask != 0;
    if !present {
        return Ok(RawValue::Null);
    }
    match place {
        Place::Fixed { at, width } => {
            let bytes = row
                .get(at..at + width)
                .ok_or(bad("fixed value out of bounds"))?;
            Ok(RawValue::Fixed(ty, bytes))
        }
        Place::Var(k) => {
            let bytes =
                var_bytes(row, layout, k).ok_or(bad("var offsets out of order or bounds"))?;
            Ok(RawValue::Var(ty, bytes))
        }
    }
}

impl RawValue<'_> {
    /// The value these bytes hold; `None` if they are not a valid value of
    /// their type.
    pub fn to_value(self) -> Option<Value> {
        match self {
            RawValue::Null => Some(Value::Null),
            RawValue::Fixed(ty, bytes) => read_fixed(ty, bytes),
            RawValue::Var(ty, bytes) => read_var(ty, bytes),
        }
    }
}

fn to_value(raw: RawValue<'_>, read: &Read) -> Result<Value, DecodeError> {
    let slot = match read {
        Read::Present { slot, .. } => *slot,
        Read::Absent => 0,
    };
    let reason = match raw {
        RawValue::Fixed(..) => "invalid fixed-width value",
        _ => "invalid variable-length value",
    };
    raw.to_value().ok_or(DecodeError::BadValue { slot, reason })
}

/// A fixed-width value from exactly its bytes.
fn read_fixed(ty: FeatureType, bytes: &[u8]) -> Option<Value> {
    let value = match ty {
        FeatureType::Bool => match bytes {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return None,
        },
        FeatureType::Int32 => Value::Int32(i32::from_le_bytes(bytes.try_into().ok()?)),
        FeatureType::Int64 => Value::Int64(i64::from_le_bytes(bytes.try_into().ok()?)),
        FeatureType::Timestamp => Value::Timestamp(i64::from_le_bytes(bytes.try_into().ok()?)),
        FeatureType::Float32 => Value::Float32(f32::from_le_bytes(bytes.try_into().ok()?)),
        FeatureType::Float64 => Value::Float64(f64::from_le_bytes(bytes.try_into().ok()?)),
        FeatureType::Embedding(_) => Value::Embedding(bytemuck::pod_collect_to_vec(bytes)),
        FeatureType::String | FeatureType::Bytes | FeatureType::List(_) => return None,
    };
    Some(value)
}

/// The bytes of var slot `k`.
fn var_bytes<'r>(row: &'r [u8], layout: &Layout, k: usize) -> Option<&'r [u8]> {
    let table = layout.offsets_start;
    let end = u32_at(row, table + VAR_OFFSET_LEN * k)? as usize;
    let start = match k.checked_sub(1) {
        Some(prev) => u32_at(row, table + VAR_OFFSET_LEN * prev)? as usize,
        None => 0,
    };
    let data = row.get(layout.data_start()..)?;
    data.get(start..end)
}

/// A variable-length value from exactly its bytes.
fn read_var(ty: FeatureType, bytes: &[u8]) -> Option<Value> {
    let value = match ty {
        FeatureType::String => Value::String(String::from_utf8(bytes.to_vec()).ok()?),
        FeatureType::Bytes => Value::Bytes(bytes.to_vec()),
        FeatureType::List(ElementType::Int64) => Value::ListInt64(pod_vec(bytes)?),
        FeatureType::List(ElementType::Float32) => Value::ListFloat32(pod_vec(bytes)?),
        FeatureType::List(ElementType::String) => Value::ListString(read_string_list(bytes)?),
        _ => return None,
    };
    Some(value)
}

/// `bytes` as a vector of `T`; `None` if it is not a whole number of them.
fn pod_vec<T: bytemuck::Pod>(bytes: &[u8]) -> Option<Vec<T>> {
    (bytes.len() % size_of::<T>() == 0).then(|| bytemuck::pod_collect_to_vec(bytes))
}

/// A `list<string>`: u32 count, count u32 end offsets, the strings' bytes.
fn read_string_list(bytes: &[u8]) -> Option<Vec<String>> {
    let count = u32_at(bytes, 0)? as usize;
    let ends_len = count.checked_mul(4)?;
    let text = bytes.get(4 + ends_len..)?;
    let mut items = Vec::with_capacity(count.min(text.len() + 1));
    let mut start = 0;
    for i in 0..count {
        let end = u32_at(bytes, 4 + 4 * i)? as usize;
        items.push(String::from_utf8(text.get(start..end)?.to_vec()).ok()?);
        start = end;
    }
    (start == text.len()).then_some(items)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}
