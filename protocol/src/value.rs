//! Feature and key values, and their wire form: a type tag then a payload
//! (`docs/protocol.md`, "Values").
//!
//! A [`Value`] carries its own type; the server accepts it only for a
//! column of exactly that type (no implicit widening).

use crate::error::{DecodeError, EncodeError};
use crate::wire::{self, Reader};

/// Type tags.
pub mod tag {
    /// No value.
    pub const NULL: u8 = 0;
    /// `bool`: one byte, 0 or 1.
    pub const BOOL: u8 = 1;
    /// `int32`.
    pub const INT32: u8 = 2;
    /// `int64`.
    pub const INT64: u8 = 3;
    /// `float32`.
    pub const FLOAT32: u8 = 4;
    /// `float64`.
    pub const FLOAT64: u8 = 5;
    /// `string`: `str32`.
    pub const STRING: u8 = 6;
    /// `bytes`: `bytes32`.
    pub const BYTES: u8 = 7;
    /// `timestamp`: i64 µs since the Unix epoch.
    pub const TIMESTAMP: u8 = 8;
    /// `embedding(dim)`: `list32<f32>`.
    pub const EMBEDDING: u8 = 9;
    /// `list<int64>`.
    pub const LIST_INT64: u8 = 10;
    /// `list<float32>`.
    pub const LIST_FLOAT32: u8 = 11;
    /// `list<string>`.
    pub const LIST_STRING: u8 = 12;

    /// Width in bytes of one value of a fixed-width scalar type.
    pub fn fixed_width(tag: u8) -> Option<usize> {
        match tag {
            BOOL => Some(1),
            INT32 | FLOAT32 => Some(4),
            INT64 | FLOAT64 | TIMESTAMP => Some(8),
            _ => None,
        }
    }
}

/// One feature or key value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No value.
    Null,
    /// A `bool`.
    Bool(bool),
    /// An `int32`.
    Int32(i32),
    /// An `int64`, or an int64 key column.
    Int64(i64),
    /// A `float32`; finite.
    Float32(f32),
    /// A `float64`; finite.
    Float64(f64),
    /// A `string`, or a string key column.
    String(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// A `timestamp`: microseconds since the Unix epoch.
    Timestamp(i64),
    /// An `embedding(dim)`: exactly `dim` finite values.
    Embedding(Vec<f32>),
    /// A `list<int64>`.
    ListInt64(Vec<i64>),
    /// A `list<float32>`; finite elements.
    ListFloat32(Vec<f32>),
    /// A `list<string>`.
    ListString(Vec<String>),
}

/// An entity key: the values of its entity's key columns, in order.
pub type Key = Vec<Value>;

impl Value {
    /// The name of the value's type, as in specs (`embedding` without its
    /// dimension).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int32(_) => "int32",
            Value::Int64(_) => "int64",
            Value::Float32(_) => "float32",
            Value::Float64(_) => "float64",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
            Value::Embedding(_) => "embedding",
            Value::ListInt64(_) => "list<int64>",
            Value::ListFloat32(_) => "list<float32>",
            Value::ListString(_) => "list<string>",
        }
    }

    /// The value's type tag.
    pub fn tag(&self) -> u8 {
        match self {
            Value::Null => tag::NULL,
            Value::Bool(_) => tag::BOOL,
            Value::Int32(_) => tag::INT32,
            Value::Int64(_) => tag::INT64,
            Value::Float32(_) => tag::FLOAT32,
            Value::Float64(_) => tag::FLOAT64,
            Value::String(_) => tag::STRING,
            Value::Bytes(_) => tag::BYTES,
            Value::Timestamp(_) => tag::TIMESTAMP,
            Value::Embedding(_) => tag::EMBEDDING,
            Value::ListInt64(_) => tag::LIST_INT64,
            Value::ListFloat32(_) => tag::LIST_FLOAT32,
            Value::ListString(_) => tag::LIST_STRING,
        }
    }

    /// Appends the tag and payload.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.tag());
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Int32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Int64(v) | Value::Timestamp(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Float32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Float64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::String(s) => wire::put_str32(out, s, "string value")?,
            Value::Bytes(b) => wire::put_bytes32(out, b, "bytes value")?,
            Value::Embedding(v) | Value::ListFloat32(v) => {
                wire::put_count32(out, v.len(), "float list")?;
                out.extend_from_slice(bytemuck::cast_slice(&v[..]));
            }
            Value::ListInt64(v) => {
                wire::put_count32(out, v.len(), "int64 list")?;
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Value::ListString(v) => {
                wire::put_count32(out, v.len(), "string list")?;
                for s in v {
                    wire::put_str32(out, s, "string list element")?;
                }
            }
        }
        Ok(())
    }

    /// Reads one tagged value.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
        let t = r.u8("value tag")?;
        Ok(match t {
            tag::NULL => Value::Null,
            tag::BOOL => match r.u8("bool value")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                v => {
                    return Err(DecodeError::UnknownValue {
                        what: "bool value",
                        value: u64::from(v),
                    })
                }
            },
            tag::INT32 => Value::Int32(r.i32("int32 value")?),
            tag::INT64 => Value::Int64(r.i64("int64 value")?),
            tag::FLOAT32 => Value::Float32(r.f32("float32 value")?),
            tag::FLOAT64 => Value::Float64(r.f64("float64 value")?),
            tag::STRING => Value::String(r.str32("string value")?.to_owned()),
            tag::BYTES => Value::Bytes(r.bytes32("bytes value")?.to_vec()),
            tag::TIMESTAMP => Value::Timestamp(r.i64("timestamp value")?),
            tag::EMBEDDING => Value::Embedding(f32s(r, "embedding")?),
            tag::LIST_FLOAT32 => Value::ListFloat32(f32s(r, "float32 list")?),
            tag::LIST_INT64 => {
                let n = r.count32("int64 list")?;
                let bytes = r.bytes(n.saturating_mul(8), "int64 list")?;
                Value::ListInt64(
                    bytes
                        .chunks_exact(8)
                        .map(|c| {
                            i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect(),
                )
            }
            tag::LIST_STRING => {
                let n = r.count32("string list")?;
                let mut v = Vec::with_capacity(r.capacity_for(n, 4));
                for _ in 0..n {
                    v.push(r.str32("string list element")?.to_owned());
                }
                Value::ListString(v)
            }
            other => {
                return Err(DecodeError::UnknownValue {
                    what: "value tag",
                    value: u64::from(other),
                })
            }
        })
    }
}

fn f32s(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<f32>, DecodeError> {
    let n = r.count32(what)?;
    let bytes = r.bytes(n.saturating_mul(4), what)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Appends a `list16<value>` key.
pub(crate) fn encode_key(key: &[Value], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_count16(out, key.len(), "key columns")?;
    key.iter().try_for_each(|v| v.encode(out))
}

/// Reads a `list16<value>` key.
pub(crate) fn decode_key(r: &mut Reader<'_>) -> Result<Key, DecodeError> {
    let n = r.count16("key columns")?;
    if n > crate::MAX_KEY_COLUMNS {
        return Err(DecodeError::LimitExceeded {
            what: "key columns",
            found: n,
            limit: crate::MAX_KEY_COLUMNS,
        });
    }
    (0..n).map(|_| Value::decode(r)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            (-1e30f32..1e30).prop_map(Value::Float32),
            (-1e300f64..1e300).prop_map(Value::Float64),
            ".{0,20}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
            any::<i64>().prop_map(Value::Timestamp),
            proptest::collection::vec(-1e3f32..1e3, 0..10).prop_map(Value::Embedding),
            proptest::collection::vec(any::<i64>(), 0..10).prop_map(Value::ListInt64),
            proptest::collection::vec(-1e3f32..1e3, 0..10).prop_map(Value::ListFloat32),
            proptest::collection::vec(".{0,5}", 0..5).prop_map(Value::ListString),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip(v in any_value()) {
            let mut out = Vec::new();
            v.encode(&mut out).expect("encodes");
            let mut r = Reader::new(&out);
            prop_assert_eq!(Value::decode(&mut r).expect("decodes"), v);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = Value::decode(&mut r);
        }
    }

    #[test]
    fn a_huge_count_is_truncation_not_allocation() {
        let mut bytes = vec![tag::LIST_STRING];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Value::decode(&mut Reader::new(&bytes)),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
