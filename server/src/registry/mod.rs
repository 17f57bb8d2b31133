//! The feature registry: typed entities and feature groups, declared in
//! TOML specs, validated on the server, changed only through plans that
//! keep every row already written readable, and stored durably with an
//! audit log.
//!
//! The server's path through it:
//! 1. [`RegistryStore::open`] at startup (refuses a damaged or invalid
//!    registry with a precise error);
//! 2. [`Spec::parse`] of the spec files a client sends;
//! 3. [`RegistryStore::plan`] to show the diff and every problem, and
//!    [`RegistryStore::apply`] with the registry version the client
//!    expects and the client's identity;
//! 4. [`RegistryStore::registry`] for the current [`Registry`], whose
//!    [`FeatureGroup`]s the [`row`](crate::row) codec encodes and decodes by;
//! 5. [`RegistryStore::history`] for the audit trail.
//!
//! `docs/registry.md` describes the spec format, every rule and the file
//! formats.

mod duration;
mod model;
mod name;
mod plan;
mod spec;
mod state;
mod store;
mod validate;

pub use duration::{format_duration, parse_duration};
pub use model::{
    ElementType, Entity, Feature, FeatureGroup, FeatureId, FeatureType, KeyColumn, KeyType,
    RemovedFeature, SchemaVersion, Status, TableId, TypeError, FIRST_TABLE_ID, MAX_DESCRIPTION_LEN,
    MAX_EMBEDDING_DIM, MAX_FEATURES_PER_GROUP, MAX_FIXED_ROW_BYTES, MAX_KEY_COLUMNS,
    MAX_KEY_STRING_BYTES, MAX_LIFETIME_SECONDS, MAX_LIST_LEN, MAX_STRING_BYTES, MAX_TAGS,
    TYPE_NAMES,
};
pub use name::{is_valid_name, MAX_NAME_LEN, NAME_PATTERN};
pub use plan::{
    plan, EntityDiff, FeatureChange, FeatureDiff, GroupChanges, GroupDiff, Plan, SettingChange,
};
pub use spec::{Spec, SpecError};
pub use state::{ApplyError, Registry, RegistryVersion};
pub use store::{
    Applied, AuditRecord, RegistryStore, StoreError, AUDIT_FILE, AUDIT_FORMAT_VERSION, AUDIT_MAGIC,
    REGISTRY_FILE, REGISTRY_FORMAT_VERSION, REGISTRY_MAGIC,
};
pub use validate::{Problem, ValidationError};
