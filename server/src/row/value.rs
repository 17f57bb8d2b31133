//! Feature and key values, and the ways a value can be unfit for its column.
//!
//! [`Value`] is the wire's (`tessera_protocol`): it carries its own type,
//! and the codec accepts it only for a column of exactly that type (no
//! implicit widening), so what is read back is exactly what was written.

pub use tessera_protocol::Value;

use super::cell::Cell;

/// Why a value cannot be written to its column.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// The value's type is not the column's.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The column's type.
        expected: String,
        /// The value's type.
        found: &'static str,
    },
    /// Null in a feature that is not nullable.
    #[error("null in a feature that is not nullable")]
    NotNullable,
    /// Null in a key column, or the column left out.
    #[error("missing: every key column needs a value")]
    MissingKey,
    /// NaN or an infinity.
    #[error("{value} is not allowed: floats must be finite (write null for a missing value)")]
    NotFinite {
        /// The offending value.
        value: f64,
    },
    /// An embedding with the wrong number of values.
    #[error("embedding has {found} values; the feature is embedding({expected})")]
    EmbeddingDim {
        /// The feature's dimension.
        expected: u32,
        /// The value's length.
        found: usize,
    },
    /// A string or bytes value (or list element) over its limit.
    #[error("{len} bytes; the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list with too many elements.
    #[error("list has {len} elements; the limit is {max}")]
    ListTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl ValueError {
    pub(crate) fn wrong_type(expected: impl ToString, found: &Cell<'_>) -> ValueError {
        ValueError::WrongType {
            expected: expected.to_string(),
            found: found.type_name(),
        }
    }
}

/// Checks that a float is finite.
pub(crate) fn finite(value: f64) -> Result<(), ValueError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ValueError::NotFinite { value })
    }
}

/// Checks a string or bytes length against `max`.
pub(crate) fn within(len: usize, max: usize) -> Result<(), ValueError> {
    if len <= max {
        Ok(())
    } else {
        Err(ValueError::TooLong { len, max })
    }
}
