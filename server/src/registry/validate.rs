//! Validation: the rules a spec must pass before it is applied, and the rules
//! a registry file must pass before it is served.
//!
//! Validation runs on the server, against the registry it will change, so a
//! client with old rules can never land a bad change. It reports every
//! problem at once, each naming its file and the entity, group and feature
//! it concerns. The rules, with an example of each, are in `docs/registry.md`:
//! - form: names, types, durations, statuses, required fields, duplicates,
//!   and the named limits of [`model`](super::model);
//! - lifetimes: `ttl > 0`, `retention >= ttl`;
//! - cross-object: a group's entity is declared, no feature takes the name
//!   of a key column of its entity, a group's fixed-width features fit a row;
//! - evolution, against the current registry: no in-place change of a
//!   feature's type (or an embedding's dimension), of a group's entity or of
//!   an entity's keys; only deprecated features are removed; added features
//!   are nullable; a nullable feature stays nullable; a removed feature's
//!   name is not reused; no entity or group disappears.
//!
//! A spec that passes comes out as [`Desired`]: the same declarations with
//! every value parsed.

use super::duration::{format_duration, parse_duration};
use super::model::{
    Entity, FeatureGroup, FeatureType, KeyColumn, KeyType, Status, TableId, FIRST_TABLE_ID,
    MAX_DESCRIPTION_LEN, MAX_FEATURES_PER_GROUP, MAX_FIXED_ROW_BYTES, MAX_KEY_COLUMNS,
    MAX_LIFETIME_SECONDS, MAX_TAGS,
};
use super::name::{is_valid_name, NAME_PATTERN};
use super::spec::{EntitySpec, FeatureSpec, GroupSpec, Spec};
use super::state::Registry;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The file named by problems about objects that no spec file declares.
const NO_FILE: &str = "(spec)";

/// One broken rule, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The spec file (or registry file) holding the object.
    pub file: String,
    /// The entity concerned, if any.
    pub entity: Option<String>,
    /// The feature group concerned, if any.
    pub group: Option<String>,
    /// The feature concerned, if any.
    pub feature: Option<String>,
    /// What is wrong and, where it helps, what to do instead.
    pub message: String,
}

impl Problem {
    /// A problem about a whole file.
    pub(crate) fn in_file(file: &str, message: impl Into<String>) -> Problem {
        Loc::file(file).problem(message.into())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        let mut parts = Vec::new();
        if let Some(e) = &self.entity {
            parts.push(format!("entity `{e}`"));
        }
        if let Some(g) = &self.group {
            parts.push(format!("group `{g}`"));
        }
        if let Some(x) = &self.feature {
            parts.push(format!("feature `{x}`"));
        }
        if !parts.is_empty() {
            write!(f, "{}: ", parts.join(", "))?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The problems; never empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            // Continuation lines (a TOML error's excerpt) stay under their problem.
            write!(f, "\n  {}", p.to_string().replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

/// A spec that passed validation: entities and groups with parsed values.
#[derive(Clone, Debug)]
pub(crate) struct Desired {
    pub entities: Vec<Entity>,
    pub groups: Vec<DesiredGroup>,
}

/// A group as the spec declares it.
#[derive(Clone, Debug)]
pub(crate) struct DesiredGroup {
    pub name: String,
    pub entity: String,
    pub ttl_seconds: i64,
    pub retention_seconds: i64,
    pub online: bool,
    pub owner: String,
    pub description: String,
    pub tags: Vec<String>,
    pub features: Vec<DesiredFeature>,
}

/// A feature as the spec declares it.
#[derive(Clone, Debug)]
pub(crate) struct DesiredFeature {
    pub name: String,
    pub ty: FeatureType,
    pub nullable: bool,
    pub description: String,
    pub tags: Vec<String>,
    pub status: Status,
}

/// Validates `spec` as the next state of `current`.
pub(crate) fn validate(current: &Registry, spec: &Spec) -> Result<Desired, ValidationError> {
    let mut report = Report::default();
    let draft = Draft::resolve(spec, &mut report);
    check_duplicates(&draft, &mut report);
    for group in &draft.groups {
        check_group(&draft, group, &mut report);
    }
    check_evolution(current, &draft, &mut report);
    // A value that did not parse was reported where it was parsed, so
    // `finish` fails only when there are problems already.
    match (report.problems.is_empty(), draft.finish()) {
        (true, Some(desired)) => Ok(desired),
        _ => Err(report.into_error()),
    }
}

/// The decoded contents of a registry file, before they become a
/// [`Registry`].
pub(crate) struct Stored<'a> {
    pub next_table_id: TableId,
    pub entities: Vec<&'a Entity>,
    pub groups: Vec<&'a FeatureGroup>,
}

/// Validates a registry read from `file`: every rule a spec must pass, and
/// the invariants of ids and versions.
pub(crate) fn validate_stored(file: &str, stored: &Stored<'_>) -> Result<(), ValidationError> {
    let mut r = Report::default();
    let top = Loc::file(file);
    let mut entities = HashMap::new();
    for &entity in &stored.entities {
        check_entity(top.entity(&entity.name), entity, &mut r);
        if entities.insert(entity.name.as_str(), entity).is_some() {
            r.add(top.entity(&entity.name), "entity is stored twice");
        }
    }
    let mut names = HashSet::new();
    let mut tables = HashSet::new();
    for &group in &stored.groups {
        let loc = top.group(&group.name);
        if !names.insert(group.name.as_str()) {
            r.add(loc, "group is stored twice");
        }
        if group.table_id < FIRST_TABLE_ID || group.table_id >= stored.next_table_id {
            r.add(
                loc,
                format!(
                    "table id {} is outside {FIRST_TABLE_ID}..{}",
                    group.table_id, stored.next_table_id
                ),
            );
        }
        if !tables.insert(group.table_id) {
            r.add(
                loc,
                format!("table id {} belongs to two groups", group.table_id),
            );
        }
        check_stored_group(
            loc,
            group,
            entities.get(group.entity.as_str()).copied(),
            &mut r,
        );
    }
    r.into_result()
}

/// Where a problem is.
#[derive(Clone, Copy)]
struct Loc<'a> {
    file: &'a str,
    entity: Option<&'a str>,
    group: Option<&'a str>,
    feature: Option<&'a str>,
}

impl<'a> Loc<'a> {
    fn file(file: &'a str) -> Self {
        Loc {
            file,
            entity: None,
            group: None,
            feature: None,
        }
    }
    fn entity(self, name: &'a str) -> Self {
        Loc {
            entity: Some(name),
            ..self
        }
    }
    fn group(self, name: &'a str) -> Self {
        Loc {
            group: Some(name),
            ..self
        }
    }
    fn feature(self, name: &'a str) -> Self {
        Loc {
            feature: Some(name),
            ..self
        }
    }
    fn problem(self, message: String) -> Problem {
        Problem {
            file: self.file.to_owned(),
            entity: self.entity.map(str::to_owned),
            group: self.group.map(str::to_owned),
            feature: self.feature.map(str::to_owned),
            message,
        }
    }
}

/// Problems collected so far.
#[derive(Default)]
struct Report {
    problems: Vec<Problem>,
}

impl Report {
    fn add(&mut self, loc: Loc<'_>, message: impl Into<String>) {
        self.problems.push(loc.problem(message.into()));
    }

    /// Records `result`'s error, if any, and passes its value on.
    fn ok<T, E: fmt::Display>(&mut self, loc: Loc<'_>, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.add(loc, e.to_string())).ok()
    }

    fn into_error(self) -> ValidationError {
        ValidationError {
            problems: self.problems,
        }
    }

    fn into_result(self) -> Result<(), ValidationError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }
}

/// A spec's declarations with each value parsed; `None` where it did not
/// parse (which is already reported).
struct Draft<'s> {
    entities: Vec<DraftEntity<'s>>,
    groups: Vec<DraftGroup<'s>>,
}

struct DraftEntity<'s> {
    file: &'s str,
    spec: &'s EntitySpec,
    keys: Vec<Option<KeyType>>,
}

struct DraftGroup<'s> {
    file: &'s str,
    spec: &'s GroupSpec,
    ttl: Option<i64>,
    retention: Option<i64>,
    features: Vec<DraftFeature<'s>>,
}

struct DraftFeature<'s> {
    spec: &'s FeatureSpec,
    ty: Option<FeatureType>,
    status: Option<Status>,
}

impl<'s> DraftGroup<'s> {
    fn loc(&self) -> Loc<'s> {
        Loc::file(self.file).group(&self.spec.name)
    }
}

impl<'s> Draft<'s> {
    /// Parses every value of `spec`, reporting what does not parse and every
    /// rule that concerns one object alone.
    fn resolve(spec: &'s Spec, r: &mut Report) -> Draft<'s> {
        let mut draft = Draft {
            entities: Vec::new(),
            groups: Vec::new(),
        };
        for file in &spec.files {
            for entity in &file.body.entities {
                draft.entities.push(resolve_entity(&file.name, entity, r));
            }
            for group in &file.body.groups {
                draft.groups.push(resolve_group(&file.name, group, r));
            }
        }
        draft
    }

    fn entity(&self, name: &str) -> Option<&DraftEntity<'s>> {
        self.entities.iter().find(|e| e.spec.name == name)
    }

    fn group(&self, name: &str) -> Option<&DraftGroup<'s>> {
        self.groups.iter().find(|g| g.spec.name == name)
    }

    /// The parsed declarations; `None` if any value did not parse.
    fn finish(&self) -> Option<Desired> {
        let entities = self
            .entities
            .iter()
            .map(DraftEntity::finish)
            .collect::<Option<_>>()?;
        let groups = self
            .groups
            .iter()
            .map(DraftGroup::finish)
            .collect::<Option<_>>()?;
        Some(Desired { entities, groups })
    }
}

impl DraftEntity<'_> {
    /// The entity's key columns, if every type parsed.
    fn key_columns(&self) -> Option<Vec<KeyColumn>> {
        self.spec
            .keys
            .iter()
            .zip(&self.keys)
            .map(|(k, ty)| {
                Some(KeyColumn {
                    name: k.name.clone(),
                    ty: (*ty)?,
                })
            })
            .collect()
    }

    fn finish(&self) -> Option<Entity> {
        Some(Entity {
            name: self.spec.name.clone(),
            keys: self.key_columns()?,
            description: self.spec.description.clone(),
        })
    }
}

impl DraftGroup<'_> {
    fn finish(&self) -> Option<DesiredGroup> {
        let s = self.spec;
        Some(DesiredGroup {
            name: s.name.clone(),
            entity: s.entity.clone()?,
            ttl_seconds: self.ttl?,
            retention_seconds: self.retention?,
            online: s.online,
            owner: s.owner.clone()?,
            description: s.description.clone(),
            tags: s.tags.clone(),
            features: self
                .features
                .iter()
                .map(DraftFeature::finish)
                .collect::<Option<_>>()?,
        })
    }
}

impl DraftFeature<'_> {
    fn finish(&self) -> Option<DesiredFeature> {
        let s = self.spec;
        Some(DesiredFeature {
            name: s.name.clone(),
            ty: self.ty?,
            nullable: s.nullable,
            description: s.description.clone(),
            tags: s.tags.clone(),
            status: self.status?,
        })
    }
}

fn resolve_entity<'s>(file: &'s str, spec: &'s EntitySpec, r: &mut Report) -> DraftEntity<'s> {
    let loc = Loc::file(file).entity(&spec.name);
    check_name(loc, "entity", &spec.name, r);
    check_description(loc, &spec.description, r);
    check_key_count(loc, spec.keys.len(), r);
    let mut seen = HashSet::new();
    let mut keys = Vec::with_capacity(spec.keys.len());
    for key in &spec.keys {
        check_name(loc, "key column", &key.name, r);
        if !seen.insert(key.name.as_str()) {
            r.add(loc, format!("key column `{}` is declared twice", key.name));
        }
        let ty = key
            .ty
            .parse::<KeyType>()
            .map_err(|e| format!("key column `{}`: {e}", key.name));
        keys.push(r.ok(loc, ty));
    }
    DraftEntity { file, spec, keys }
}

fn resolve_group<'s>(file: &'s str, spec: &'s GroupSpec, r: &mut Report) -> DraftGroup<'s> {
    let loc = Loc::file(file).group(&spec.name);
    check_name(loc, "group", &spec.name, r);
    if spec.entity.is_none() {
        r.add(
            loc,
            "`entity` is required: the entity whose key identifies each row",
        );
    }
    if spec.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
        r.add(loc, "`owner` is required: who to ask about the group");
    }
    check_description(loc, &spec.description, r);
    check_tags(loc, &spec.tags, r);
    check_feature_count(loc, spec.features.len(), r);
    let ttl = resolve_duration(loc, "ttl", spec.ttl.as_deref(), r);
    let retention = resolve_duration(loc, "retention", spec.retention.as_deref(), r);
    let mut seen = HashSet::new();
    let mut features = Vec::with_capacity(spec.features.len());
    for feature in &spec.features {
        if !seen.insert(feature.name.as_str()) {
            r.add(
                loc.feature(&feature.name),
                "feature is declared twice in the group",
            );
        }
        features.push(resolve_feature(loc.feature(&feature.name), feature, r));
    }
    DraftGroup {
        file,
        spec,
        ttl,
        retention,
        features,
    }
}

fn resolve_feature<'s>(loc: Loc<'_>, spec: &'s FeatureSpec, r: &mut Report) -> DraftFeature<'s> {
    check_name(loc, "feature", &spec.name, r);
    check_description(loc, &spec.description, r);
    check_tags(loc, &spec.tags, r);
    let ty = r.ok(loc, spec.ty.parse::<FeatureType>());
    let status = match &spec.status {
        Some(s) => r.ok(loc, s.parse::<Status>()),
        None => Some(Status::Active),
    };
    DraftFeature { spec, ty, status }
}

fn resolve_duration(loc: Loc<'_>, field: &str, text: Option<&str>, r: &mut Report) -> Option<i64> {
    match text {
        Some(text) => r.ok(
            loc,
            parse_duration(text).map_err(|e| format!("{field}: {e}")),
        ),
        None => {
            r.add(
                loc,
                format!("`{field}` is required, e.g. {field} = \"30d\""),
            );
            None
        }
    }
}

/// Entity and group names are unique across all the spec's files.
fn check_duplicates(draft: &Draft<'_>, r: &mut Report) {
    let mut entities: HashMap<&str, &str> = HashMap::new();
    for e in &draft.entities {
        if let Some(first) = entities.insert(&e.spec.name, e.file) {
            let loc = Loc::file(e.file).entity(&e.spec.name);
            r.add(
                loc,
                format!("entity is declared more than once (also in {first})"),
            );
        }
    }
    let mut groups: HashMap<&str, &str> = HashMap::new();
    for g in &draft.groups {
        if let Some(first) = groups.insert(&g.spec.name, g.file) {
            r.add(
                g.loc(),
                format!("group is declared more than once (also in {first})"),
            );
        }
    }
}

/// Rules on a group and the objects it refers to.
fn check_group(draft: &Draft<'_>, group: &DraftGroup<'_>, r: &mut Report) {
    let loc = group.loc();
    if let (Some(ttl), Some(retention)) = (group.ttl, group.retention) {
        check_lifetimes(loc, ttl, retention, r);
    }
    check_fixed_width(loc, group.features.iter().filter_map(|f| f.ty), r);
    let Some(entity_name) = group.spec.entity.as_deref() else {
        return;
    };
    let Some(entity) = draft.entity(entity_name) else {
        r.add(
            loc,
            format!("entity `{entity_name}` is not declared in the spec"),
        );
        return;
    };
    let keys: Vec<&str> = entity.spec.keys.iter().map(|k| k.name.as_str()).collect();
    let names = group.features.iter().map(|f| f.spec.name.as_str());
    check_key_shadowing(loc, entity_name, &keys, names, r);
}

/// Rules on the change from `current` to `draft`.
fn check_evolution(current: &Registry, draft: &Draft<'_>, r: &mut Report) {
    for entity in current.entities() {
        let Some(wanted) = draft.entity(&entity.name) else {
            let loc = Loc::file(NO_FILE).entity(&entity.name);
            r.add(
                loc,
                "is in the registry but no spec file declares it; entities cannot be removed",
            );
            continue;
        };
        let loc = Loc::file(wanted.file).entity(&entity.name);
        if wanted.key_columns().is_some_and(|keys| keys != entity.keys) {
            r.add(
                loc,
                format!(
                    "changing an entity's keys in place is forbidden ({} -> {}): declare a new entity",
                    describe_keys(entity.keys.iter().map(|k| (k.name.as_str(), k.ty.to_string()))),
                    describe_keys(wanted.spec.keys.iter().map(|k| (k.name.as_str(), k.ty.clone()))),
                ),
            );
        }
    }
    for group in current.groups() {
        match draft.group(&group.name) {
            Some(wanted) => check_group_evolution(group, wanted, r),
            None => {
                let loc = Loc::file(NO_FILE).group(&group.name);
                let msg = format!(
                    "is in the registry (table {}) but no spec file declares it; groups cannot be removed",
                    group.table_id
                );
                r.add(loc, msg);
            }
        }
    }
}

fn describe_keys<'a>(keys: impl Iterator<Item = (&'a str, String)>) -> String {
    let keys: Vec<String> = keys.map(|(name, ty)| format!("{name} {ty}")).collect();
    format!("({})", keys.join(", "))
}

fn check_group_evolution(current: &FeatureGroup, wanted: &DraftGroup<'_>, r: &mut Report) {
    let loc = wanted.loc();
    if let Some(entity) = wanted
        .spec
        .entity
        .as_deref()
        .filter(|e| *e != current.entity)
    {
        r.add(
            loc,
            format!(
                "changing a group's entity in place is forbidden (`{}` -> `{entity}`): create a new group",
                current.entity
            ),
        );
    }
    for feature in &current.features {
        let loc = loc.feature(&feature.name);
        match wanted.features.iter().find(|f| f.spec.name == feature.name) {
            Some(w) => {
                if let Some(ty) = w.ty.filter(|ty| *ty != feature.ty) {
                    r.add(loc, type_change_message(feature.ty, ty));
                }
                if feature.nullable && !w.spec.nullable {
                    r.add(loc, "making a nullable feature non-nullable is forbidden: rows already written may hold nulls");
                }
            }
            None if feature.status != Status::Deprecated => {
                r.add(loc, "removing an active feature is forbidden: deprecate it first (status = \"deprecated\"), apply, then remove it");
            }
            None => {}
        }
    }
    for w in &wanted.features {
        if current.feature(&w.spec.name).is_some() {
            continue;
        }
        let loc = loc.feature(&w.spec.name);
        if let Some(gone) = current.removed.iter().find(|f| f.name == w.spec.name) {
            r.add(
                loc,
                format!(
                    "the name belonged to a feature removed in schema version {}; choose a new name",
                    gone.removed_in
                ),
            );
        }
        if !w.spec.nullable {
            r.add(loc, "a feature added to an existing group must be nullable: rows written before it read as null");
        }
    }
}

fn type_change_message(from: FeatureType, to: FeatureType) -> String {
    match (from, to) {
        (FeatureType::Embedding(a), FeatureType::Embedding(b)) => format!(
            "changing an embedding's dimension in place is forbidden ({a} -> {b}): add a new feature with a new name"
        ),
        _ => format!(
            "changing a feature's type in place is forbidden ({from} -> {to}): add a new feature with a new name"
        ),
    }
}

/// Rules on one stored group, with `entity` its entity if stored.
fn check_stored_group(loc: Loc<'_>, g: &FeatureGroup, entity: Option<&Entity>, r: &mut Report) {
    check_name(loc, "group", &g.name, r);
    check_description(loc, &g.description, r);
    check_tags(loc, &g.tags, r);
    check_lifetimes(loc, g.ttl_seconds, g.retention_seconds, r);
    check_feature_count(loc, g.features.len(), r);
    check_fixed_width(loc, g.features.iter().map(|f| f.ty), r);
    if g.owner.trim().is_empty() {
        r.add(loc, "owner is empty");
    }
    if g.schema_version == 0 {
        r.add(loc, "schema version is 0; versions start at 1");
    }
    match entity {
        Some(e) => {
            let keys: Vec<&str> = e.keys.iter().map(|k| k.name.as_str()).collect();
            check_key_shadowing(
                loc,
                &e.name,
                &keys,
                g.features.iter().map(|f| f.name.as_str()),
                r,
            );
        }
        None => r.add(loc, format!("entity `{}` is not stored", g.entity)),
    }
    check_stored_features(loc, g, r);
}

/// Feature names and ids are unique (removed features included), ids are
/// below `next_feature_id`, and versions are within the group's.
fn check_stored_features(loc: Loc<'_>, g: &FeatureGroup, r: &mut Report) {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    let live = g
        .features
        .iter()
        .map(|f| (f.id, f.name.as_str(), f.added_in, None));
    let removed = g
        .removed
        .iter()
        .map(|f| (f.id, f.name.as_str(), f.added_in, Some(f.removed_in)));
    for (id, name, added_in, removed_in) in live.chain(removed) {
        let loc = loc.feature(name);
        check_name(loc, "feature", name, r);
        if !names.insert(name) {
            r.add(loc, "feature name is stored twice");
        }
        if !ids.insert(id) || id >= g.next_feature_id {
            r.add(
                loc,
                format!(
                    "feature id {id} is reused or not below {}",
                    g.next_feature_id
                ),
            );
        }
        let end = removed_in.unwrap_or(g.schema_version);
        if added_in == 0 || added_in > end || end > g.schema_version {
            r.add(
                loc,
                format!(
                    "versions {added_in}..{end} do not fit schema version {}",
                    g.schema_version
                ),
            );
        }
    }
    for f in &g.features {
        let loc = loc.feature(&f.name);
        check_description(loc, &f.description, r);
        check_tags(loc, &f.tags, r);
    }
}

fn check_entity(loc: Loc<'_>, e: &Entity, r: &mut Report) {
    check_name(loc, "entity", &e.name, r);
    check_description(loc, &e.description, r);
    check_key_count(loc, e.keys.len(), r);
    let mut seen = HashSet::new();
    for key in &e.keys {
        check_name(loc, "key column", &key.name, r);
        if !seen.insert(key.name.as_str()) {
            r.add(loc, format!("key column `{}` is declared twice", key.name));
        }
    }
}

fn check_name(loc: Loc<'_>, kind: &str, name: &str, r: &mut Report) {
    if !is_valid_name(name) {
        r.add(
            loc,
            format!("`{name}` is not a valid {kind} name: names match {NAME_PATTERN}"),
        );
    }
}

fn check_description(loc: Loc<'_>, description: &str, r: &mut Report) {
    if description.len() > MAX_DESCRIPTION_LEN {
        r.add(
            loc,
            format!(
                "description is {} bytes; the limit is {MAX_DESCRIPTION_LEN}",
                description.len()
            ),
        );
    }
}

fn check_tags(loc: Loc<'_>, tags: &[String], r: &mut Report) {
    if tags.len() > MAX_TAGS {
        r.add(loc, format!("{} tags; the limit is {MAX_TAGS}", tags.len()));
    }
    for tag in tags {
        check_name(loc, "tag", tag, r);
    }
}

fn check_key_count(loc: Loc<'_>, n: usize, r: &mut Report) {
    if !(1..=MAX_KEY_COLUMNS).contains(&n) {
        r.add(
            loc,
            format!("an entity has 1 to {MAX_KEY_COLUMNS} key columns; found {n}"),
        );
    }
}

fn check_feature_count(loc: Loc<'_>, n: usize, r: &mut Report) {
    if !(1..=MAX_FEATURES_PER_GROUP).contains(&n) {
        r.add(
            loc,
            format!("a group has 1 to {MAX_FEATURES_PER_GROUP} features; found {n}"),
        );
    }
}

fn check_lifetimes(loc: Loc<'_>, ttl: i64, retention: i64, r: &mut Report) {
    for (field, secs) in [("ttl", ttl), ("retention", retention)] {
        if secs <= 0 {
            r.add(
                loc,
                format!("{field} must be positive; found {}", format_duration(secs)),
            );
        } else if secs > MAX_LIFETIME_SECONDS {
            let max = format_duration(MAX_LIFETIME_SECONDS);
            r.add(
                loc,
                format!("{field} is {}; the limit is {max}", format_duration(secs)),
            );
        }
    }
    if ttl > 0 && retention < ttl {
        r.add(
            loc,
            format!(
                "retention ({}) must be at least the ttl ({}): a value must not be deleted while it can still be served",
                format_duration(retention),
                format_duration(ttl)
            ),
        );
    }
}

fn check_fixed_width(loc: Loc<'_>, types: impl Iterator<Item = FeatureType>, r: &mut Report) {
    let width: usize = types.filter_map(FeatureType::fixed_width).sum();
    if width > MAX_FIXED_ROW_BYTES {
        r.add(
            loc,
            format!("fixed-width features take {width} bytes per row; the limit is {MAX_FIXED_ROW_BYTES}"),
        );
    }
}

fn check_key_shadowing<'a>(
    loc: Loc<'_>,
    entity: &str,
    keys: &[&str],
    features: impl Iterator<Item = &'a str>,
    r: &mut Report,
) {
    for name in features.filter(|name| keys.contains(name)) {
        r.add(
            loc.feature(name),
            format!(
                "has the name of a key column of entity `{entity}`; key columns are not features"
            ),
        );
    }
}
