//! One version of the registry: every entity and feature group.
//!
//! A [`Registry`] value never changes. [`Registry::apply`] builds the next
//! version, sharing every untouched entity and group (the same `Arc`) with
//! the previous one: a change to one group allocates only that group, and a
//! reader holding the old registry, or any group of it, is never disturbed.
//!
//! Invariants: `version` counts the changes applied since the empty registry
//! (version 0); `next_table_id` is above every table id ever assigned, so
//! ids are never reused.

use super::model::{Entity, FeatureGroup, RemovedFeature, TableId, FIRST_TABLE_ID};
use super::plan::{
    EntityDiff, FeatureChange, FeatureDiff, GroupChanges, GroupDiff, Plan, SettingChange,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The number of changes applied to a registry since it was empty.
pub type RegistryVersion = u64;

/// Every entity and group, at one version.
#[derive(Clone, Debug, PartialEq)]
pub struct Registry {
    pub(crate) version: RegistryVersion,
    pub(crate) next_table_id: TableId,
    pub(crate) entities: BTreeMap<String, Arc<Entity>>,
    pub(crate) groups: BTreeMap<String, Arc<FeatureGroup>>,
}

/// Why a plan cannot be applied to a registry.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The registry moved on since the plan (or the caller) saw it.
    #[error(
        "the registry is at version {current} but the change expected version {expected}: \
         another change was applied first; plan again against version {current}"
    )]
    Stale {
        /// The version the change was made against.
        expected: RegistryVersion,
        /// The registry's version.
        current: RegistryVersion,
    },
    /// The plan refers to objects or versions the registry does not have
    /// (only possible for a plan that was not computed from this registry).
    #[error("the plan does not fit registry version {version}: {reason}")]
    Mismatch {
        /// The registry's version.
        version: RegistryVersion,
        /// What does not fit.
        reason: String,
    },
}

impl Default for Registry {
    fn default() -> Self {
        Registry::empty()
    }
}

impl Registry {
    /// The registry before any change: version 0, no entities, no groups.
    pub fn empty() -> Registry {
        Registry {
            version: 0,
            next_table_id: FIRST_TABLE_ID,
            entities: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// The number of changes applied since the registry was empty.
    pub fn version(&self) -> RegistryVersion {
        self.version
    }

    /// The entity called `name`.
    pub fn entity(&self, name: &str) -> Option<&Arc<Entity>> {
        self.entities.get(name)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Arc<FeatureGroup>> {
        self.groups.get(name)
    }

    /// Every entity, by name.
    pub fn entities(&self) -> impl Iterator<Item = &Arc<Entity>> {
        self.entities.values()
    }

    /// Every group, by name.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<FeatureGroup>> {
        self.groups.values()
    }

    /// The next version: this one with `plan` applied. The plan must have been
    /// made against this version.
    pub fn apply(&self, plan: &Plan) -> Result<Registry, ApplyError> {
        if plan.base_version != self.version {
            return Err(ApplyError::Stale {
                expected: plan.base_version,
                current: self.version,
            });
        }
        let mut next = self.clone();
        for diff in &plan.entities {
            next.apply_entity(diff)?;
        }
        for diff in &plan.groups {
            next.apply_group(diff)?;
        }
        next.version = self.version + 1;
        Ok(next)
    }

    fn mismatch(&self, reason: String) -> ApplyError {
        ApplyError::Mismatch {
            version: self.version,
            reason,
        }
    }

    fn apply_entity(&mut self, diff: &EntityDiff) -> Result<(), ApplyError> {
        match diff {
            EntityDiff::Added(entity) => {
                if self.entities.contains_key(&entity.name) {
                    return Err(self.mismatch(format!("entity `{}` already exists", entity.name)));
                }
                self.entities
                    .insert(entity.name.clone(), Arc::new(entity.clone()));
            }
            EntityDiff::Described { name, to, .. } => {
                let Some(entity) = self.entities.get_mut(name) else {
                    return Err(self.mismatch(format!("no entity `{name}`")));
                };
                Arc::make_mut(entity).description.clone_from(to);
            }
        }
        Ok(())
    }

    fn apply_group(&mut self, diff: &GroupDiff) -> Result<(), ApplyError> {
        match diff {
            GroupDiff::Added(group) => {
                if self.groups.contains_key(&group.name) || group.table_id < self.next_table_id {
                    let reason = format!(
                        "group `{}` or table {} already exists",
                        group.name, group.table_id
                    );
                    return Err(self.mismatch(reason));
                }
                self.next_table_id = group.table_id + 1;
                self.groups
                    .insert(group.name.clone(), Arc::new(group.clone()));
            }
            GroupDiff::Changed(changes) => {
                let Some(group) = self.groups.get(&changes.name) else {
                    return Err(self.mismatch(format!("no group `{}`", changes.name)));
                };
                let changed = apply_group_changes(group, changes).map_err(|r| self.mismatch(r))?;
                self.groups.insert(changes.name.clone(), Arc::new(changed));
            }
        }
        Ok(())
    }
}

/// `group` with `changes` applied, or why they do not fit it.
fn apply_group_changes(
    group: &FeatureGroup,
    changes: &GroupChanges,
) -> Result<FeatureGroup, String> {
    if group.schema_version != changes.from_version || group.table_id != changes.table_id {
        return Err(format!(
            "group `{}` is table {} at schema version {}, not table {} at {}",
            group.name,
            group.table_id,
            group.schema_version,
            changes.table_id,
            changes.from_version
        ));
    }
    let mut g = group.clone();
    g.schema_version = changes.to_version;
    for setting in &changes.settings {
        apply_setting(&mut g, setting);
    }
    for diff in &changes.features {
        apply_feature(&mut g, diff, changes.to_version)?;
    }
    Ok(g)
}

fn apply_setting(g: &mut FeatureGroup, change: &SettingChange) {
    match change {
        SettingChange::Ttl { to, .. } => g.ttl_seconds = *to,
        SettingChange::Retention { to, .. } => g.retention_seconds = *to,
        SettingChange::Online { to, .. } => g.online = *to,
        SettingChange::Owner { to, .. } => g.owner.clone_from(to),
        SettingChange::Description { to, .. } => g.description.clone_from(to),
        SettingChange::Tags { to, .. } => g.tags.clone_from(to),
    }
}

fn apply_feature(g: &mut FeatureGroup, diff: &FeatureDiff, version: u32) -> Result<(), String> {
    match diff {
        FeatureDiff::Added(feature) => {
            if feature.id < g.next_feature_id {
                return Err(format!("feature id {} is already taken", feature.id));
            }
            g.next_feature_id = feature.id + 1;
            g.features.push(feature.clone());
        }
        FeatureDiff::Changed { id, changes, .. } => {
            let feature = g
                .features
                .iter_mut()
                .find(|f| f.id == *id)
                .ok_or_else(|| format!("no feature with id {id}"))?;
            for change in changes {
                match change {
                    FeatureChange::Status { to, .. } => feature.status = *to,
                    FeatureChange::Nullable { to, .. } => feature.nullable = *to,
                    FeatureChange::Description { to, .. } => feature.description.clone_from(to),
                    FeatureChange::Tags { to, .. } => feature.tags.clone_from(to),
                }
            }
        }
        FeatureDiff::Removed { id, .. } => {
            let at = g
                .features
                .iter()
                .position(|f| f.id == *id)
                .ok_or_else(|| format!("no feature with id {id}"))?;
            let f = g.features.remove(at);
            g.removed.push(RemovedFeature {
                id: f.id,
                name: f.name,
                ty: f.ty,
                added_in: f.added_in,
                removed_in: version,
            });
        }
    }
    Ok(())
}
