//! The declarative spec: TOML files, kept in git, that declare the desired
//! entities and feature groups.
//!
//! This module only reads the files' structure. Values that need checking
//! (names, types, durations, statuses) are kept as written, so that
//! validation can report each problem with its file, group and feature
//! rather than stopping at the first one. Unknown keys are refused, so a
//! misspelt field never silently falls back to a default.
//!
//! A spec is the whole desired registry: together its files must declare
//! every entity and group the registry holds. Each object remembers the file
//! it came from.

use super::validate::{Problem, ValidationError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A parsed set of spec files.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub(crate) files: Vec<SpecFile>,
}

/// One spec file.
#[derive(Clone, Debug)]
pub(crate) struct SpecFile {
    /// The file's name as given, used in every message about it.
    pub name: String,
    pub body: SpecBody,
}

/// Error reading spec files from disk.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A file could not be read.
    #[error("cannot read spec file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a well-formed spec.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl Spec {
    /// Parses spec files given as `(name, text)` pairs. Every file is parsed;
    /// each one that is not well-formed TOML of the spec's shape gives one
    /// problem naming it.
    pub fn parse<N, T>(files: impl IntoIterator<Item = (N, T)>) -> Result<Spec, ValidationError>
    where
        N: Into<String>,
        T: AsRef<str>,
    {
        let mut spec = Spec::default();
        let mut problems = Vec::new();
        for (name, text) in files {
            let name = name.into();
            match toml::from_str::<SpecBody>(text.as_ref()) {
                Ok(body) => spec.files.push(SpecFile { name, body }),
                Err(e) => problems.push(Problem::in_file(&name, e.to_string().trim_end())),
            }
        }
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(ValidationError { problems })
        }
    }

    /// Reads and parses spec files from disk.
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<Spec, SpecError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
                path: path.to_owned(),
                source,
            })?;
            files.push((path.display().to_string(), text));
        }
        Ok(Spec::parse(files)?)
    }
}

/// The top level of a spec file: `[[entity]]` and `[[group]]` tables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpecBody {
    #[serde(default, rename = "entity")]
    pub entities: Vec<EntitySpec>,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupSpec>,
}

/// An `[[entity]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntitySpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
}

/// One entry of an entity's `keys` array.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// A `[[group]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSpec {
    pub name: String,
    pub entity: Option<String>,
    pub ttl: Option<String>,
    pub retention: Option<String>,
    #[serde(default)]
    pub online: bool,
    pub owner: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, rename = "feature")]
    pub features: Vec<FeatureSpec>,
}

/// A `[[group.feature]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeatureSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default = "nullable_by_default")]
    pub nullable: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub status: Option<String>,
}

/// Features are nullable unless the spec says otherwise: a row need not
/// carry every feature.
fn nullable_by_default() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shape_and_keeps_values_as_written() {
        let text = r#"
            [[entity]]
            name = "users"
            keys = [{ name = "user_id", type = "int64" }]

            [[group]]
            name = "user_features"
            entity = "users"
            ttl = "7d"
            retention = "30d"
            owner = "feed"

            [[group.feature]]
            name = "clicks"
            type = "int128"
        "#;
        let spec = Spec::parse([("a.toml", text)]).expect("parse");
        let body = &spec.files[0].body;
        assert_eq!(body.entities[0].keys[0].ty, "int64");
        let feature = &body.groups[0].features[0];
        assert_eq!(feature.ty, "int128");
        assert!(feature.nullable);
        assert_eq!(feature.status, None);
    }

    #[test]
    fn every_malformed_file_is_named() {
        let err = Spec::parse([
            ("good.toml", "[[entity]]\nname = \"users\"\n"),
            ("syntax.toml", "[[entity]\n"),
            ("field.toml", "[[group]]\nname = \"g\"\ncolour = \"red\"\n"),
        ])
        .expect_err("malformed");
        assert_eq!(err.problems.len(), 2);
        assert!(err.problems[0].to_string().starts_with("syntax.toml: "));
        let unknown = err.problems[1].to_string();
        assert!(unknown.starts_with("field.toml: "), "{unknown}");
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let err = Spec::read(&["/nonexistent/registry.toml"]).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/registry.toml"));
    }
}
