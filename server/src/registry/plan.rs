//! Plans: what applying a spec would change in the registry.
//!
//! A plan lists, per entity and per group, what the spec adds or changes,
//! and per feature whether it is added, deprecated, described, otherwise
//! changed, or removed. Objects the spec leaves as they are do not appear.
//!
//! A plan is made against one registry version (`base_version`) and carries
//! every id and schema version the change assigns, so applying it is
//! deterministic: [`Registry::apply`] of the same plan to the same registry
//! always gives the same result. The audit log stores plans, and replaying
//! them rebuilds the registry.
//!
//! Reordering the features of a spec is not a change: features keep their
//! ids, and a group lists them in id order. New groups get table ids in name
//! order; new features get ids in spec order.

use super::duration::format_duration;
use super::model::{Entity, Feature, FeatureGroup, FeatureId, SchemaVersion, Status, TableId};
use super::spec::Spec;
use super::state::{Registry, RegistryVersion};
use super::validate::{validate, Desired, DesiredFeature, DesiredGroup, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The difference between a registry version and a spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The registry version the plan was made against.
    pub base_version: RegistryVersion,
    /// Entity changes, by name.
    pub entities: Vec<EntityDiff>,
    /// Group changes, by name.
    pub groups: Vec<GroupDiff>,
}

/// One entity's change. An entity's keys never change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityDiff {
    /// A new entity.
    Added(Entity),
    /// A new description.
    Described {
        /// The entity.
        name: String,
        /// The old description.
        from: String,
        /// The new description.
        to: String,
    },
}

/// One group's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupDiff {
    /// A new group, with its table id and feature ids assigned.
    Added(FeatureGroup),
    /// Changes to an existing group.
    Changed(GroupChanges),
}

/// The changes to one existing group; together they make one new schema
/// version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChanges {
    /// The group.
    pub name: String,
    /// Its table id (unchanged).
    pub table_id: TableId,
    /// Its schema version before the change.
    pub from_version: SchemaVersion,
    /// Its schema version after the change: `from_version + 1`.
    pub to_version: SchemaVersion,
    /// Changed group settings.
    pub settings: Vec<SettingChange>,
    /// Changed features.
    pub features: Vec<FeatureDiff>,
}

/// A changed group setting, with its old and new values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // each variant's `from` and `to` are the old and new values
pub enum SettingChange {
    /// `ttl`, in seconds.
    Ttl { from: i64, to: i64 },
    /// `retention`, in seconds.
    Retention { from: i64, to: i64 },
    /// `online`.
    Online { from: bool, to: bool },
    /// `owner`.
    Owner { from: String, to: String },
    /// `description`.
    Description { from: String, to: String },
    /// `tags`.
    Tags { from: Vec<String>, to: Vec<String> },
}

/// One feature's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureDiff {
    /// A new feature, with its id and `added_in` assigned.
    Added(Feature),
    /// Changes to an existing feature.
    Changed {
        /// The feature's id.
        id: FeatureId,
        /// The feature's name.
        name: String,
        /// What changed.
        changes: Vec<FeatureChange>,
    },
    /// A deprecated feature leaves the group (its id is kept, see
    /// [`RemovedFeature`](super::model::RemovedFeature)).
    Removed {
        /// The feature's id.
        id: FeatureId,
        /// The feature's name.
        name: String,
    },
}

/// A changed feature property, with its old and new values. A feature's name
/// and type never change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // each variant's `from` and `to` are the old and new values
pub enum FeatureChange {
    /// `status`: deprecation or reactivation.
    Status { from: Status, to: Status },
    /// `nullable`: only ever from false to true.
    Nullable { from: bool, to: bool },
    /// `description`.
    Description { from: String, to: String },
    /// `tags`.
    Tags { from: Vec<String>, to: Vec<String> },
}

impl Plan {
    /// True if applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.groups.is_empty()
    }
}

impl FeatureDiff {
    /// The kind of change, as `plan` shows it: `added`, `removed`,
    /// `deprecated` (the status became deprecated), `described` (only the
    /// description or tags changed) or `changed`.
    pub fn kind(&self) -> &'static str {
        match self {
            FeatureDiff::Added(_) => "added",
            FeatureDiff::Removed { .. } => "removed",
            FeatureDiff::Changed { changes, .. } => {
                let deprecated = changes.iter().any(|c| {
                    matches!(
                        c,
                        FeatureChange::Status {
                            to: Status::Deprecated,
                            ..
                        }
                    )
                });
                let described = changes.iter().all(|c| {
                    matches!(
                        c,
                        FeatureChange::Description { .. } | FeatureChange::Tags { .. }
                    )
                });
                if deprecated {
                    "deprecated"
                } else if described {
                    "described"
                } else {
                    "changed"
                }
            }
        }
    }
}

/// Validates `spec` against `current` and lists what applying it would
/// change. Every problem is reported at once.
pub fn plan(current: &Registry, spec: &Spec) -> Result<Plan, ValidationError> {
    let desired = validate(current, spec)?;
    Ok(diff(current, &desired))
}

fn diff(current: &Registry, desired: &Desired) -> Plan {
    let mut entities: Vec<&Entity> = desired.entities.iter().collect();
    entities.sort_by(|a, b| a.name.cmp(&b.name));
    let entities = entities
        .into_iter()
        .filter_map(|wanted| match current.entity(&wanted.name) {
            None => Some(EntityDiff::Added(wanted.clone())),
            Some(e) if e.description != wanted.description => Some(EntityDiff::Described {
                name: wanted.name.clone(),
                from: e.description.clone(),
                to: wanted.description.clone(),
            }),
            Some(_) => None,
        })
        .collect();
    let mut groups: Vec<&DesiredGroup> = desired.groups.iter().collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let mut next_table_id = current.next_table_id;
    let groups = groups
        .into_iter()
        .filter_map(|wanted| match current.group(&wanted.name) {
            None => {
                let group = new_group(wanted, next_table_id);
                next_table_id += 1;
                Some(GroupDiff::Added(group))
            }
            Some(group) => group_changes(group, wanted).map(GroupDiff::Changed),
        })
        .collect();
    Plan {
        base_version: current.version(),
        entities,
        groups,
    }
}

fn new_group(wanted: &DesiredGroup, table_id: TableId) -> FeatureGroup {
    const FIRST_VERSION: SchemaVersion = 1;
    let features: Vec<Feature> = wanted
        .features
        .iter()
        .zip(0..)
        .map(|(f, id)| new_feature(f, id, FIRST_VERSION))
        .collect();
    FeatureGroup {
        name: wanted.name.clone(),
        table_id,
        schema_version: FIRST_VERSION,
        entity: wanted.entity.clone(),
        next_feature_id: features.len() as FeatureId,
        features,
        removed: Vec::new(),
        ttl_seconds: wanted.ttl_seconds,
        retention_seconds: wanted.retention_seconds,
        online: wanted.online,
        owner: wanted.owner.clone(),
        description: wanted.description.clone(),
        tags: wanted.tags.clone(),
    }
}

fn new_feature(f: &DesiredFeature, id: FeatureId, added_in: SchemaVersion) -> Feature {
    Feature {
        id,
        name: f.name.clone(),
        ty: f.ty,
        nullable: f.nullable,
        description: f.description.clone(),
        tags: f.tags.clone(),
        status: f.status,
        added_in,
    }
}

/// The changes from `group` to `wanted`, or `None` if there are none.
fn group_changes(group: &FeatureGroup, wanted: &DesiredGroup) -> Option<GroupChanges> {
    let to_version = group.schema_version + 1;
    let settings = setting_changes(group, wanted);
    let mut features = Vec::new();
    let mut next_id = group.next_feature_id;
    for w in &wanted.features {
        match group.feature(&w.name) {
            Some(f) => {
                let changes = feature_changes(f, w);
                if !changes.is_empty() {
                    features.push(FeatureDiff::Changed {
                        id: f.id,
                        name: f.name.clone(),
                        changes,
                    });
                }
            }
            None => {
                features.push(FeatureDiff::Added(new_feature(w, next_id, to_version)));
                next_id += 1;
            }
        }
    }
    for f in &group.features {
        if !wanted.features.iter().any(|w| w.name == f.name) {
            features.push(FeatureDiff::Removed {
                id: f.id,
                name: f.name.clone(),
            });
        }
    }
    if settings.is_empty() && features.is_empty() {
        return None;
    }
    Some(GroupChanges {
        name: group.name.clone(),
        table_id: group.table_id,
        from_version: group.schema_version,
        to_version,
        settings,
        features,
    })
}

fn setting_changes(g: &FeatureGroup, w: &DesiredGroup) -> Vec<SettingChange> {
    let mut out = Vec::new();
    if g.ttl_seconds != w.ttl_seconds {
        out.push(SettingChange::Ttl {
            from: g.ttl_seconds,
            to: w.ttl_seconds,
        });
    }
    if g.retention_seconds != w.retention_seconds {
        out.push(SettingChange::Retention {
            from: g.retention_seconds,
            to: w.retention_seconds,
        });
    }
    if g.online != w.online {
        out.push(SettingChange::Online {
            from: g.online,
            to: w.online,
        });
    }
    if g.owner != w.owner {
        out.push(SettingChange::Owner {
            from: g.owner.clone(),
            to: w.owner.clone(),
        });
    }
    if g.description != w.description {
        out.push(SettingChange::Description {
            from: g.description.clone(),
            to: w.description.clone(),
        });
    }
    if g.tags != w.tags {
        out.push(SettingChange::Tags {
            from: g.tags.clone(),
            to: w.tags.clone(),
        });
    }
    out
}

fn feature_changes(f: &Feature, w: &DesiredFeature) -> Vec<FeatureChange> {
    let mut out = Vec::new();
    if f.status != w.status {
        out.push(FeatureChange::Status {
            from: f.status,
            to: w.status,
        });
    }
    if f.nullable != w.nullable {
        out.push(FeatureChange::Nullable {
            from: f.nullable,
            to: w.nullable,
        });
    }
    if f.description != w.description {
        out.push(FeatureChange::Description {
            from: f.description.clone(),
            to: w.description.clone(),
        });
    }
    if f.tags != w.tags {
        out.push(FeatureChange::Tags {
            from: f.tags.clone(),
            to: w.tags.clone(),
        });
    }
    out
}

impl fmt::Display for Plan {
    /// The plan as `tessera plan` shows it: `+` added, `~` changed, `-`
    /// removed, one line per object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no changes (registry version {})", self.base_version);
        }
        write!(
            f,
            "registry version {} -> {}",
            self.base_version,
            self.base_version + 1
        )?;
        for diff in &self.entities {
            match diff {
                EntityDiff::Added(e) => {
                    let keys: Vec<String> = e
                        .keys
                        .iter()
                        .map(|k| format!("{} {}", k.name, k.ty))
                        .collect();
                    write!(f, "\n+ entity {} ({})", e.name, keys.join(", "))?;
                }
                EntityDiff::Described { name, from, to } => {
                    write!(f, "\n~ entity {name}: description {from:?} -> {to:?}")?;
                }
            }
        }
        for diff in &self.groups {
            match diff {
                GroupDiff::Added(g) => {
                    write!(
                        f,
                        "\n+ group {} (table {}, entity {}, schema version 1)",
                        g.name, g.table_id, g.entity
                    )?;
                    for feature in &g.features {
                        write!(f, "\n    + feature {}", describe_feature(feature))?;
                    }
                }
                GroupDiff::Changed(c) => write!(f, "\n{c}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for GroupChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "~ group {} (table {}, schema version {} -> {})",
            self.name, self.table_id, self.from_version, self.to_version
        )?;
        for s in &self.settings {
            write!(f, "\n    {s}")?;
        }
        for diff in &self.features {
            match diff {
                FeatureDiff::Added(feature) => {
                    write!(f, "\n    + feature {}", describe_feature(feature))?
                }
                FeatureDiff::Removed { name, .. } => write!(f, "\n    - feature {name}: removed")?,
                FeatureDiff::Changed { name, changes, .. } => {
                    let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
                    write!(
                        f,
                        "\n    ~ feature {name}: {}: {}",
                        diff.kind(),
                        changes.join("; ")
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn describe_feature(feature: &Feature) -> String {
    let nullable = if feature.nullable {
        "nullable"
    } else {
        "not null"
    };
    format!(
        "{} {} {nullable} (id {})",
        feature.name, feature.ty, feature.id
    )
}

impl fmt::Display for SettingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingChange::Ttl { from, to } => {
                write!(
                    f,
                    "ttl {} -> {}",
                    format_duration(*from),
                    format_duration(*to)
                )
            }
            SettingChange::Retention { from, to } => {
                write!(
                    f,
                    "retention {} -> {}",
                    format_duration(*from),
                    format_duration(*to)
                )
            }
            SettingChange::Online { from, to } => write!(f, "online {from} -> {to}"),
            SettingChange::Owner { from, to } => write!(f, "owner {from:?} -> {to:?}"),
            SettingChange::Description { from, to } => write!(f, "description {from:?} -> {to:?}"),
            SettingChange::Tags { from, to } => write!(f, "tags {from:?} -> {to:?}"),
        }
    }
}

impl fmt::Display for FeatureChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureChange::Status { from, to } => write!(f, "status {from} -> {to}"),
            FeatureChange::Nullable { from, to } => write!(f, "nullable {from} -> {to}"),
            FeatureChange::Description { from, to } => write!(f, "description {from:?} -> {to:?}"),
            FeatureChange::Tags { from, to } => write!(f, "tags {from:?} -> {to:?}"),
        }
    }
}
