//! The registry's data model: entities, feature groups, features, their types,
//! and the named limits every object respects.
//!
//! Invariants (checked on every spec before it is applied, and again on every
//! registry file loaded at startup):
//! - every name matches [`NAME_PATTERN`](super::NAME_PATTERN);
//! - a group's `table_id` is assigned when the group is created, never
//!   changes, and is never given to another group: ids come from a counter
//!   that only grows;
//! - within a group, a feature's `id` is assigned the same way from
//!   `next_feature_id`. A removed feature moves to `removed`, keeping its id
//!   and type, so rows written before its removal still decode;
//! - every change to a group increments its `schema_version`; `added_in` and
//!   `removed_in` are the schema versions that added and removed a feature.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tessera_storage::TableOptions;

pub use tessera_storage::TableId;

/// The version of a feature group's schema; 1 when the group is created.
pub type SchemaVersion = u32;
/// A feature's stable id within its group.
pub type FeatureId = u32;

/// Most features (active and deprecated) one group may hold.
pub const MAX_FEATURES_PER_GROUP: usize = 1024;
/// Most key columns of one entity.
pub const MAX_KEY_COLUMNS: usize = 4;
/// Longest value of a string key column, in bytes. Bounded so that the
/// largest encoded key fits the engine's key limit (asserted in `row::key`).
pub const MAX_KEY_STRING_BYTES: usize = 120;
/// Longest `string` or `bytes` value, and longest element of a
/// `list<string>`, in bytes.
pub const MAX_STRING_BYTES: usize = 64 << 10;
/// Most elements of a list value.
pub const MAX_LIST_LEN: usize = 4096;
/// Largest `embedding(dim)` dimension.
pub const MAX_EMBEDDING_DIM: u32 = 4096;
/// Most bytes the fixed-width features of a group may take in one row.
pub const MAX_FIXED_ROW_BYTES: usize = 64 << 10;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Most tags on one object.
pub const MAX_TAGS: usize = 16;
/// Longest `ttl` or `retention`: 100 years, far from overflowing the
/// engine's microsecond timestamps.
pub const MAX_LIFETIME_SECONDS: i64 = 100 * 366 * 86_400;
/// The first table id the registry assigns; lower ids are left to the engine.
pub const FIRST_TABLE_ID: TableId = 1;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// What an entity key column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// A signed 64-bit integer.
    Int64,
    /// A UTF-8 string of at most [`MAX_KEY_STRING_BYTES`].
    String,
}

/// One column of an entity's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyColumn {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: KeyType,
}

/// A thing features describe (a user, an article), identified by its key
/// columns. Composite keys such as `(user_id, category)` are allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// Entity name.
    pub name: String,
    /// Key columns, in key order.
    pub keys: Vec<KeyColumn>,
    /// Free text.
    pub description: String,
}

/// The element type of a list feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// `list<int64>`
    Int64,
    /// `list<float32>`
    Float32,
    /// `list<string>`
    String,
}

/// The type of a feature. Written in specs as `bool`, `int32`, `int64`,
/// `float32`, `float64`, `string`, `bytes`, `timestamp`, `embedding(DIM)`,
/// `list<int64>`, `list<float32>` or `list<string>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FeatureType {
    /// True or false.
    Bool,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE 754 single precision.
    Float32,
    /// IEEE 754 double precision.
    Float64,
    /// UTF-8 text of at most [`MAX_STRING_BYTES`].
    String,
    /// Opaque bytes, at most [`MAX_STRING_BYTES`].
    Bytes,
    /// Microseconds since the Unix epoch.
    Timestamp,
    /// Exactly `dim` float32 values, `1 ..= MAX_EMBEDDING_DIM`.
    Embedding(u32),
    /// At most [`MAX_LIST_LEN`] elements of one type.
    List(ElementType),
}

impl FeatureType {
    /// Bytes the type takes in a row's fixed-width section, or `None` for the
    /// variable-length types (strings, bytes and lists).
    pub fn fixed_width(self) -> Option<usize> {
        match self {
            FeatureType::Bool => Some(1),
            FeatureType::Int32 | FeatureType::Float32 => Some(4),
            FeatureType::Int64 | FeatureType::Float64 | FeatureType::Timestamp => Some(8),
            FeatureType::Embedding(dim) => Some(dim as usize * 4),
            FeatureType::String | FeatureType::Bytes | FeatureType::List(_) => None,
        }
    }
}

/// The spellings of every type, for error messages.
pub const TYPE_NAMES: &str = "bool, int32, int64, float32, float64, string, bytes, timestamp, \
                              embedding(DIM), list<int64>, list<float32>, list<string>";

/// Why a type name did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// Not one of [`TYPE_NAMES`].
    #[error("unknown type `{0}`; the types are {TYPE_NAMES}")]
    Unknown(String),
    /// `embedding(N)` with N out of range.
    #[error("embedding dimension `{0}` must be a whole number from 1 to {MAX_EMBEDDING_DIM}")]
    EmbeddingDim(String),
}

impl FromStr for FeatureType {
    type Err = TypeError;

    fn from_str(s: &str) -> Result<Self, TypeError> {
        let ty = match s {
            "bool" => FeatureType::Bool,
            "int32" => FeatureType::Int32,
            "int64" => FeatureType::Int64,
            "float32" => FeatureType::Float32,
            "float64" => FeatureType::Float64,
            "string" => FeatureType::String,
            "bytes" => FeatureType::Bytes,
            "timestamp" => FeatureType::Timestamp,
            "list<int64>" => FeatureType::List(ElementType::Int64),
            "list<float32>" => FeatureType::List(ElementType::Float32),
            "list<string>" => FeatureType::List(ElementType::String),
            _ => return parse_embedding(s),
        };
        Ok(ty)
    }
}

/// Parses `embedding(DIM)`.
fn parse_embedding(s: &str) -> Result<FeatureType, TypeError> {
    let dim = s
        .strip_prefix("embedding(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| TypeError::Unknown(s.to_owned()))?;
    match dim.parse::<u32>() {
        Ok(d) if (1..=MAX_EMBEDDING_DIM).contains(&d) => Ok(FeatureType::Embedding(d)),
        _ => Err(TypeError::EmbeddingDim(dim.to_owned())),
    }
}

impl fmt::Display for FeatureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureType::Bool => f.write_str("bool"),
            FeatureType::Int32 => f.write_str("int32"),
            FeatureType::Int64 => f.write_str("int64"),
            FeatureType::Float32 => f.write_str("float32"),
            FeatureType::Float64 => f.write_str("float64"),
            FeatureType::String => f.write_str("string"),
            FeatureType::Bytes => f.write_str("bytes"),
            FeatureType::Timestamp => f.write_str("timestamp"),
            FeatureType::Embedding(dim) => write!(f, "embedding({dim})"),
            FeatureType::List(ElementType::Int64) => f.write_str("list<int64>"),
            FeatureType::List(ElementType::Float32) => f.write_str("list<float32>"),
            FeatureType::List(ElementType::String) => f.write_str("list<string>"),
        }
    }
}

impl TryFrom<String> for FeatureType {
    type Error = TypeError;

    fn try_from(s: String) -> Result<Self, TypeError> {
        s.parse()
    }
}

impl From<FeatureType> for String {
    fn from(ty: FeatureType) -> String {
        ty.to_string()
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "int64" => Ok(KeyType::Int64),
            "string" => Ok(KeyType::String),
            _ => Err(format!(
                "unknown key type `{s}`; key columns are int64 or string"
            )),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Int64 => "int64",
            KeyType::String => "string",
        })
    }
}

/// Whether a feature is meant to be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In use; the default.
    Active,
    /// Still written and read, but on its way out; only a deprecated feature
    /// may be removed.
    Deprecated,
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Status::Active),
            "deprecated" => Ok(Status::Deprecated),
            _ => Err(format!(
                "unknown status `{s}`; a status is active or deprecated"
            )),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
        })
    }
}

/// One feature (a column) of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// Stable id within the group; rows address features by id.
    pub id: FeatureId,
    /// Feature name.
    pub name: String,
    /// Value type; never changes.
    #[serde(rename = "type")]
    pub ty: FeatureType,
    /// Whether a row may leave it null.
    pub nullable: bool,
    /// Free text.
    pub description: String,
    /// Labels.
    pub tags: Vec<String>,
    /// Active or deprecated.
    pub status: Status,
    /// The group schema version that added it.
    pub added_in: SchemaVersion,
}

/// A feature that was removed from its group. Kept so that rows written
/// while it existed still decode; its name may not be used again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedFeature {
    /// The id it had.
    pub id: FeatureId,
    /// The name it had.
    pub name: String,
    /// The type it had.
    #[serde(rename = "type")]
    pub ty: FeatureType,
    /// The group schema version that added it.
    pub added_in: SchemaVersion,
    /// The group schema version that removed it.
    pub removed_in: SchemaVersion,
}

/// A set of features of one entity, stored together as one engine table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureGroup {
    /// Group name.
    pub name: String,
    /// The engine table holding its rows.
    pub table_id: TableId,
    /// Incremented on every change.
    pub schema_version: SchemaVersion,
    /// The entity whose key identifies each row.
    pub entity: String,
    /// Active and deprecated features, in id order.
    pub features: Vec<Feature>,
    /// Removed features, in the order they were removed.
    pub removed: Vec<RemovedFeature>,
    /// The id the next added feature gets.
    pub next_feature_id: FeatureId,
    /// How long a value is served after its event time, in seconds.
    pub ttl_seconds: i64,
    /// How long a value is kept after its event time, in seconds; ≥ ttl.
    pub retention_seconds: i64,
    /// Whether the group is served online.
    pub online: bool,
    /// Who to ask about it.
    pub owner: String,
    /// Free text.
    pub description: String,
    /// Labels.
    pub tags: Vec<String>,
}

impl FeatureGroup {
    /// The active or deprecated feature called `name`.
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The engine's lifetime rules for the group's table.
    pub fn table_options(&self) -> TableOptions {
        // Validation bounds both by MAX_LIFETIME_SECONDS, far from
        // saturating; saturation only guards groups built by hand.
        TableOptions {
            ttl_us: Some(self.ttl_seconds.saturating_mul(MICROS_PER_SECOND)),
            retention_us: Some(self.retention_seconds.saturating_mul(MICROS_PER_SECOND)),
        }
    }
}

// The engine's microsecond lifetimes hold the longest allowed lifetime.
const _: () = assert!(MAX_LIFETIME_SECONDS <= i64::MAX / MICROS_PER_SECOND);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_round_trips() {
        let all = [
            "bool",
            "int32",
            "int64",
            "float32",
            "float64",
            "string",
            "bytes",
            "timestamp",
            "embedding(1)",
            "embedding(4096)",
            "list<int64>",
            "list<float32>",
            "list<string>",
        ];
        for name in all {
            let ty: FeatureType = name.parse().expect(name);
            assert_eq!(ty.to_string(), name);
        }
    }

    #[test]
    fn bad_type_names_say_why() {
        let err = "int128".parse::<FeatureType>().expect_err("unknown");
        assert!(err
            .to_string()
            .starts_with("unknown type `int128`; the types are bool"));
        for dim in ["0", "4097", "-1", "x", ""] {
            let err = format!("embedding({dim})")
                .parse::<FeatureType>()
                .expect_err(dim);
            assert_eq!(err, TypeError::EmbeddingDim(dim.to_owned()));
        }
        assert!(matches!(
            "list<bool>".parse::<FeatureType>(),
            Err(TypeError::Unknown(_))
        ));
    }

    #[test]
    fn fixed_widths() {
        assert_eq!(FeatureType::Embedding(64).fixed_width(), Some(256));
        assert_eq!(FeatureType::Bool.fixed_width(), Some(1));
        assert_eq!(FeatureType::List(ElementType::Int64).fixed_width(), None);
    }
}
