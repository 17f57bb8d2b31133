//! Entity keys as engine keys: bytes whose order is the key's order.
//!
//! A key is its columns' encodings back to back, in key order:
//! - `int64`: 8 bytes big-endian with the sign bit flipped, so negative
//!   numbers sort before positive ones;
//! - `string`: the UTF-8 bytes with each `0x00` written as `0x00 0xFF`,
//!   then the terminator `0x00 0x01`. The terminator sorts below every
//!   escaped or plain byte, so a string sorts before any longer string it is
//!   a prefix of, and the next column never bleeds into the comparison.
//!
//! Comparing two encoded keys bytewise therefore compares their columns in
//! order, integers numerically and strings bytewise, which is what range
//! scans of composite keys such as `(user_id, category)` need.

use super::cell::Cell;
use super::value::{within, Value, ValueError};
use crate::registry::{KeyColumn, KeyType, MAX_KEY_COLUMNS, MAX_KEY_STRING_BYTES};
use tessera_storage::MAX_KEY_LEN;

/// Escape byte; always followed by [`ESCAPED_ZERO`] or [`TERMINATOR`].
const ESCAPE: u8 = 0x00;
/// After [`ESCAPE`]: a literal zero byte.
const ESCAPED_ZERO: u8 = 0xFF;
/// After [`ESCAPE`]: the end of a string.
const TERMINATOR: u8 = 0x01;
/// Flips an int64's sign bit so its big-endian bytes sort numerically.
const SIGN_BIT: u64 = 1 << 63;

/// The longest encoded key: every column a string of zero bytes.
pub const MAX_ENCODED_KEY_LEN: usize = MAX_KEY_COLUMNS * (2 * MAX_KEY_STRING_BYTES + 2);
const _: () = assert!(
    MAX_ENCODED_KEY_LEN <= MAX_KEY_LEN,
    "keys must fit the engine's key limit"
);

/// Why a key cannot be encoded or decoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KeyError {
    /// Not one value per key column.
    #[error("the key has {expected} columns but {found} values were given")]
    Arity {
        /// The entity's key columns.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A value unfit for its column.
    #[error("key column `{column}`: {problem}")]
    Value {
        /// The column.
        column: String,
        /// What is wrong.
        problem: ValueError,
    },
    /// Encoded bytes that are not a key of these columns.
    #[error("malformed key at byte {offset}: {reason}")]
    Malformed {
        /// Where decoding stopped.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Appends the encoding of `values` (one per column of `columns`) to `out`.
pub fn encode_key(
    columns: &[KeyColumn],
    values: &[Value],
    out: &mut Vec<u8>,
) -> Result<(), KeyError> {
    if values.len() != columns.len() {
        return Err(KeyError::Arity {
            expected: columns.len(),
            found: values.len(),
        });
    }
    for (column, value) in columns.iter().zip(values) {
        encode_column(column, &Cell::of(value), out).map_err(|problem| KeyError::Value {
            column: column.name.clone(),
            problem,
        })?;
    }
    Ok(())
}

/// Appends one column's encoding to `out`.
pub(crate) fn encode_column(
    column: &KeyColumn,
    value: &Cell<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    match (column.ty, value) {
        (_, Cell::Null) => return Err(ValueError::MissingKey),
        (KeyType::Int64, Cell::Int64(v)) => {
            out.extend_from_slice(&((*v as u64) ^ SIGN_BIT).to_be_bytes())
        }
        (KeyType::String, Cell::String(s)) => {
            within(s.len(), MAX_KEY_STRING_BYTES)?;
            for &b in s.as_bytes() {
                match b {
                    0 => out.extend_from_slice(&[ESCAPE, ESCAPED_ZERO]),
                    b => out.push(b),
                }
            }
            out.extend_from_slice(&[ESCAPE, TERMINATOR]);
        }
        (ty, value) => return Err(ValueError::wrong_type(ty, value)),
    }
    Ok(())
}

/// The values of an encoded key of `columns`.
pub fn decode_key(columns: &[KeyColumn], bytes: &[u8]) -> Result<Vec<Value>, KeyError> {
    let mut values = Vec::with_capacity(columns.len());
    decode_key_into(columns, bytes, &mut values)?;
    Ok(values)
}

/// [`decode_key`], appending the values to `values` (so that many keys
/// decode into one buffer); on error, what was appended is unspecified.
pub fn decode_key_into(
    columns: &[KeyColumn],
    bytes: &[u8],
    values: &mut Vec<Value>,
) -> Result<(), KeyError> {
    let mut pos = 0;
    for column in columns {
        let (value, len) = match column.ty {
            KeyType::Int64 => decode_int64(&bytes[pos..]),
            KeyType::String => decode_string(&bytes[pos..]),
        }
        .map_err(|(at, reason)| KeyError::Malformed {
            offset: pos + at,
            reason,
        })?;
        values.push(value);
        pos += len;
    }
    if pos != bytes.len() {
        return Err(KeyError::Malformed {
            offset: pos,
            reason: "bytes after the last column",
        });
    }
    Ok(())
}

/// Column `c` of keys whose `columns` columns are all int64, appended to
/// `out` as each key's value in little-endian bytes, back to back (the
/// layout of an int64 column on the wire): a reply's key column without a
/// [`Value`] per key. A key that is not `8 × columns` bytes is malformed.
pub fn int64_column_le<'a>(
    columns: usize,
    c: usize,
    keys: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), KeyError> {
    let at = 8 * c;
    for key in keys {
        let word = key
            .get(at..at + 8)
            .filter(|_| key.len() == 8 * columns)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or(KeyError::Malformed {
                offset: key.len().min(at),
                reason: "not a key of int64 columns",
            })?;
        out.extend_from_slice(&(u64::from_be_bytes(word) ^ SIGN_BIT).to_le_bytes());
    }
    Ok(())
}

type Decoded = Result<(Value, usize), (usize, &'static str)>;

fn decode_int64(bytes: &[u8]) -> Decoded {
    let word: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or((0, "int64 column needs 8 bytes"))?;
    Ok((
        Value::Int64((u64::from_be_bytes(word) ^ SIGN_BIT) as i64),
        8,
    ))
}

fn decode_string(bytes: &[u8]) -> Decoded {
    let mut text = Vec::new();
    let mut pos = 0;
    loop {
        match bytes.get(pos..pos + 2) {
            Some([ESCAPE, TERMINATOR]) => break,
            Some([ESCAPE, ESCAPED_ZERO]) => {
                text.push(0);
                pos += 2;
            }
            Some([ESCAPE, _]) => return Err((pos, "zero byte not followed by 0xFF or 0x01")),
            _ => match bytes.get(pos) {
                Some(&b) if b != ESCAPE => {
                    text.push(b);
                    pos += 1;
                }
                _ => return Err((pos, "string column has no terminator")),
            },
        }
    }
    let text = String::from_utf8(text).map_err(|_| (0, "string column is not UTF-8"))?;
    Ok((Value::String(text), pos + 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn columns() -> Vec<KeyColumn> {
        vec![
            KeyColumn {
                name: "user_id".into(),
                ty: KeyType::Int64,
            },
            KeyColumn {
                name: "category".into(),
                ty: KeyType::String,
            },
        ]
    }

    fn encode(id: i64, category: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(
            &columns(),
            &[Value::Int64(id), Value::String(category.into())],
            &mut out,
        )
        .expect("encode");
        out
    }

    #[test]
    fn int64_columns_read_as_decoding_does() {
        let pair = [
            KeyColumn {
                name: "a".into(),
                ty: KeyType::Int64,
            },
            KeyColumn {
                name: "b".into(),
                ty: KeyType::Int64,
            },
        ];
        let ids = [(i64::MIN, 7), (-1, 0), (0, i64::MAX), (255, -256)];
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|&(a, b)| {
                let mut k = Vec::new();
                encode_key(&pair, &[Value::Int64(a), Value::Int64(b)], &mut k).expect("encode");
                k
            })
            .collect();
        for c in 0..2 {
            let mut le = Vec::new();
            int64_column_le(2, c, keys.iter().map(Vec::as_slice), &mut le).expect("column");
            let read: Vec<i64> = le
                .chunks_exact(8)
                .map(|w| i64::from_le_bytes(w.try_into().expect("8 bytes")))
                .collect();
            let decoded: Vec<i64> = keys
                .iter()
                .map(|k| match decode_key(&pair, k).expect("decode")[c] {
                    Value::Int64(v) => v,
                    ref other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(read, decoded);
        }
        let short = [&keys[0][..12]];
        assert!(int64_column_le(2, 1, short.into_iter(), &mut Vec::new()).is_err());
        assert!(int64_column_le(1, 0, keys.iter().map(Vec::as_slice), &mut Vec::new()).is_err());
    }

    #[test]
    fn int64_orders_numerically() {
        let ids = [i64::MIN, -1_000, -1, 0, 1, 255, 256, i64::MAX];
        for pair in ids.windows(2) {
            assert!(encode(pair[0], "") < encode(pair[1], ""), "{pair:?}");
        }
    }

    #[test]
    fn a_prefix_sorts_first_even_with_zero_bytes() {
        assert!(encode(1, "ab") < encode(1, "abc"));
        assert!(encode(1, "ab") < encode(1, "ab\0"));
        assert!(encode(1, "ab\0") < encode(1, "ab\u{1}"));
        assert!(encode(1, "zz") < encode(2, ""));
    }

    #[test]
    fn invalid_values_name_the_column() {
        let mut out = Vec::new();
        let err =
            encode_key(&columns(), &[Value::Int64(1), Value::Null], &mut out).expect_err("null");
        assert_eq!(
            err.to_string(),
            "key column `category`: missing: every key column needs a value"
        );
        let err = encode_key(
            &columns(),
            &[Value::String("1".into()), Value::String("a".into())],
            &mut out,
        )
        .expect_err("type");
        assert_eq!(
            err.to_string(),
            "key column `user_id`: expected int64, found string"
        );
        let long = "x".repeat(MAX_KEY_STRING_BYTES + 1);
        let err = encode_key(
            &columns(),
            &[Value::Int64(1), Value::String(long)],
            &mut out,
        )
        .expect_err("long");
        assert_eq!(
            err.to_string(),
            format!("key column `category`: 121 bytes; the limit is {MAX_KEY_STRING_BYTES}")
        );
        let err = encode_key(&columns(), &[Value::Int64(1)], &mut out).expect_err("arity");
        assert!(matches!(
            err,
            KeyError::Arity {
                expected: 2,
                found: 1
            }
        ));
    }

    proptest! {
        #[test]
        fn order_and_round_trip(a in (any::<i64>(), ".{0,8}"), b in (any::<i64>(), "[a\\x00\\x01\\u{ff}]{0,6}")) {
            let (ka, kb) = (encode(a.0, &a.1), encode(b.0, &b.1));
            let by_value = (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes()));
            prop_assert_eq!(ka.cmp(&kb), by_value);
            let decoded = decode_key(&columns(), &ka).expect("decode");
            prop_assert_eq!(decoded, vec![Value::Int64(a.0), Value::String(a.1.clone())]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_key(&columns(), &bytes);
        }
    }
}
