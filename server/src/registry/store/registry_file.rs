//! The registry file: one registry version, checksummed, replaced atomically.
//!
//! Layout (integers little-endian; `docs/registry.md` has the table):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TSRG` |
//! | 4 | 4 | format version, 1 |
//! | 8 | 8 | body length *n* |
//! | 16 | *n* | body: the registry as JSON |
//! | 16 + *n* | 8 | xxh3_64 of bytes `0 .. 16 + n` |
//!
//! A new version is written to [`REGISTRY_TMP_FILE`], fsynced, renamed over
//! [`REGISTRY_FILE`], and the directory fsynced, so a crash leaves the old
//! file or the new one, never a mix. Reading checks the magic, version,
//! length and checksum, then every validation rule: a file that fails any of
//! them is refused with its path and, for damage, the byte offset.

use super::{write_atomically, StoreError};
use crate::registry::model::{Entity, FeatureGroup, TableId};
use crate::registry::state::{Registry, RegistryVersion};
use crate::registry::validate::{validate_stored, Stored};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// Name of the registry file in the store's directory.
pub const REGISTRY_FILE: &str = "REGISTRY";
/// Name of the file a new registry is written to before the rename.
pub const REGISTRY_TMP_FILE: &str = "REGISTRY.tmp";
/// First four bytes of the file: ASCII `TSRG` read as a little-endian u32.
pub const REGISTRY_MAGIC: u32 = u32::from_le_bytes(*b"TSRG");
/// The registry file format this code reads and writes.
pub const REGISTRY_FORMAT_VERSION: u32 = 1;

/// Magic, format version and body length.
const PREFIX_LEN: usize = 4 + 4 + 8;
/// The trailing xxh3_64.
const CHECKSUM_LEN: usize = 8;

/// The body as written: a registry with its maps as lists in name order.
#[derive(Serialize)]
struct BodyRef<'a> {
    version: RegistryVersion,
    next_table_id: TableId,
    entities: Vec<&'a Entity>,
    groups: Vec<&'a FeatureGroup>,
}

/// The body as read.
#[derive(Deserialize)]
struct Body {
    version: RegistryVersion,
    next_table_id: TableId,
    entities: Vec<Entity>,
    groups: Vec<FeatureGroup>,
}

/// Atomically replaces the registry file in `dir` with `registry`.
pub(crate) fn write(dir: &Path, registry: &Registry) -> Result<(), StoreError> {
    let body = BodyRef {
        version: registry.version,
        next_table_id: registry.next_table_id,
        entities: registry.entities.values().map(Arc::as_ref).collect(),
        groups: registry.groups.values().map(Arc::as_ref).collect(),
    };
    let path = dir.join(REGISTRY_FILE);
    let json = serde_json::to_vec(&body).map_err(|e| StoreError::io("encode", &path, e.into()))?;
    let mut out = Vec::with_capacity(PREFIX_LEN + json.len() + CHECKSUM_LEN);
    out.extend_from_slice(&REGISTRY_MAGIC.to_le_bytes());
    out.extend_from_slice(&REGISTRY_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&xxh3_64(&out).to_le_bytes());
    write_atomically(dir, REGISTRY_FILE, REGISTRY_TMP_FILE, &out)
}

/// Reads the registry file in `dir`; `None` if there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<Registry>, StoreError> {
    let path = dir.join(REGISTRY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", &path, e)),
    }
}

/// Decodes and validates a registry file's bytes.
fn decode(path: &Path, bytes: &[u8]) -> Result<Registry, StoreError> {
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bytes.len() < PREFIX_LEN + CHECKSUM_LEN {
        let reason = format!(
            "file is {} bytes, shorter than the {} of an empty registry file",
            bytes.len(),
            PREFIX_LEN + CHECKSUM_LEN
        );
        return Err(corrupt(0, reason));
    }
    if word(0) != Some(REGISTRY_MAGIC) {
        return Err(corrupt(0, "bad magic: not a registry file".into()));
    }
    if word(4) != Some(REGISTRY_FORMAT_VERSION) {
        let reason = format!(
            "unknown format version {:?}; this build reads version {REGISTRY_FORMAT_VERSION}",
            word(4)
        );
        return Err(corrupt(4, reason));
    }
    let declared = read_u64(bytes, 8);
    let body_len = bytes.len() - PREFIX_LEN - CHECKSUM_LEN;
    if declared != body_len as u64 {
        let reason =
            format!("body length is {declared} but the file holds {body_len} bytes of body");
        return Err(corrupt(8, reason));
    }
    let checksum_at = PREFIX_LEN + body_len;
    let stored = read_u64(bytes, checksum_at);
    let computed = xxh3_64(&bytes[..checksum_at]);
    if stored != computed {
        return Err(StoreError::Checksum {
            path: path.to_owned(),
            offset: checksum_at as u64,
            stored,
            computed,
        });
    }
    let body: Body = serde_json::from_slice(&bytes[PREFIX_LEN..checksum_at])
        .map_err(|e| corrupt(PREFIX_LEN, format!("body does not decode: {e}")))?;
    into_registry(path, body)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Checks every validation rule on `registry`, read from (or rebuilt from)
/// `path`.
pub(crate) fn check(path: &Path, registry: &Registry) -> Result<(), StoreError> {
    let stored = Stored {
        next_table_id: registry.next_table_id,
        entities: registry.entities.values().map(Arc::as_ref).collect(),
        groups: registry.groups.values().map(Arc::as_ref).collect(),
    };
    check_stored(path, &stored)
}

fn check_stored(path: &Path, stored: &Stored<'_>) -> Result<(), StoreError> {
    validate_stored(&path.display().to_string(), stored).map_err(|problems| StoreError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Validates a decoded body and builds the registry it describes.
fn into_registry(path: &Path, body: Body) -> Result<Registry, StoreError> {
    let stored = Stored {
        next_table_id: body.next_table_id,
        entities: body.entities.iter().collect(),
        groups: body.groups.iter().collect(),
    };
    check_stored(path, &stored)?;
    Ok(Registry {
        version: body.version,
        next_table_id: body.next_table_id,
        entities: body
            .entities
            .into_iter()
            .map(|e| (e.name.clone(), Arc::new(e)))
            .collect(),
        groups: body
            .groups
            .into_iter()
            .map(|g| (g.name.clone(), Arc::new(g)))
            .collect(),
    })
}
