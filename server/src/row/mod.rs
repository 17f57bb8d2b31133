//! The typed row codec: feature values to and from the bytes the storage
//! engine keeps, per the schema of a feature group.
//!
//! A [`RowSchema`] is built once per group version from the registry. It
//! makes [`RowWriter`]s, which validate and encode batches of rows (the
//! entity key with [`key`] encoding, the row in the group's newest layout),
//! and [`Projection`]s, which decode chosen features from rows written under
//! any schema version of the group: a feature added after a row was written
//! reads as null, and deprecated features still decode.
//!
//! The byte layout is in [`layout`] and in `docs/registry.md`. Numbers are
//! stored little-endian, so embeddings and lists are copied with `bytemuck`
//! rather than converted element by element.

pub mod key;
pub mod layout;

mod cell;
mod decode;
mod encode;
mod value;

pub use decode::{DecodeError, Projection, RawValue};
pub use encode::{EncodeError, EncodedBatch, RowWriter};
pub use value::{Value, ValueError};

use crate::registry::{Feature, FeatureGroup, FeatureId, KeyColumn, Registry, SchemaVersion};
use layout::{Layout, Layouts};
use std::sync::Arc;

#[cfg(not(target_endian = "little"))]
compile_error!("the row codec copies numbers as little-endian bytes with bytemuck");

/// A group's schema, in every version, ready to encode and decode rows.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct RowSchema {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    group: Arc<FeatureGroup>,
    keys: Vec<KeyColumn>,
    layouts: Layouts,
    /// The layout new rows are written with.
    newest: Layout,
}

impl RowSchema {
    /// The schema of `group` in `registry`; `None` if the registry has no
    /// such group.
    pub fn new(registry: &Registry, group: &str) -> Option<RowSchema> {
        let group = registry.group(group)?.clone();
        let keys = registry.entity(&group.entity)?.keys.clone();
        let layouts = Layouts::of(&group);
        let newest = layouts.newest()?.clone();
        Some(RowSchema {
            inner: Arc::new(Inner {
                group,
                keys,
                layouts,
                newest,
            }),
        })
    }

    /// The group, at the version the schema was built from.
    pub fn group(&self) -> &FeatureGroup {
        &self.inner.group
    }

    /// The entity's key columns.
    pub fn keys(&self) -> &[KeyColumn] {
        &self.inner.keys
    }

    /// The schema version rows are written with.
    pub fn newest_version(&self) -> SchemaVersion {
        self.inner.group.schema_version
    }

    /// A writer for batches whose rows give values for `columns`, in that
    /// order: key columns and features, by name.
    pub fn writer(&self, columns: &[&str]) -> Result<RowWriter, EncodeError> {
        RowWriter::new(self, columns)
    }

    /// A projection decoding `features`, by name, in that order.
    pub fn projection(&self, features: &[&str]) -> Result<Projection, DecodeError> {
        Projection::new(self, features)
    }

    pub(crate) fn layouts(&self) -> &Layouts {
        &self.inner.layouts
    }

    pub(crate) fn newest(&self) -> &Layout {
        &self.inner.newest
    }

    pub(crate) fn feature(&self, id: FeatureId) -> Option<&Feature> {
        self.inner.group.features.iter().find(|f| f.id == id)
    }

    /// The name of feature `id`, for error messages.
    pub(crate) fn field_name(&self, id: FeatureId) -> String {
        self.feature(id)
            .map_or_else(|| format!("#{id}"), |f| f.name.clone())
    }
}
