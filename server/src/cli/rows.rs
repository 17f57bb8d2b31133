//! `tessera put` and `tessera delete`: JSON lines to batched writes.
//!
//! Each input line is one JSON object: the entity's key columns, `event_ts`
//! (integer µs or RFC 3339) and, for `put`, any features of the group (the
//! ones left out are null). Values are typed by the group's schema, fetched
//! from the server first, so a mistyped value is reported with its line
//! before anything is sent. Lines go out in batches; each batch is atomic.

use super::values::{feature_value, key_value, parse_ts};
use super::{connect, CliError, ClientArgs};
use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;
use tessera_protocol::{Client, Delete, Put, PutRow, Value};
use tessera_server::registry::{Entity, FeatureGroup, Status};

/// Rows per batch sent.
const BATCH_ROWS: usize = 1000;
/// The JSON field holding a row's event time.
const EVENT_TS_FIELD: &str = "event_ts";

/// The registry as `REGISTRY_GET` returns it.
#[derive(Deserialize)]
pub(super) struct RegistryView {
    pub(super) entities: Vec<Entity>,
    pub(super) groups: Vec<FeatureGroup>,
}

impl RegistryView {
    /// Fetches the registry from the server.
    pub(super) fn fetch(client: &mut Client) -> Result<RegistryView, CliError> {
        let (_, json) = client.registry_get().map_err(|e| e.to_string())?;
        serde_json::from_str(&json)
            .map_err(|e| format!("the server's registry does not parse: {e}"))
    }

    /// A group and its entity.
    pub(super) fn group(&self, name: &str) -> Result<(&FeatureGroup, &Entity), CliError> {
        let group = self
            .groups
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| format!("unknown group `{name}`"))?;
        let entity = self
            .entities
            .iter()
            .find(|e| e.name == group.entity)
            .ok_or_else(|| format!("group `{name}`: unknown entity `{}`", group.entity))?;
        Ok((group, entity))
    }
}

/// Opens `FILE`, or stdin for `-`.
fn lines(input: &Path) -> Result<Box<dyn BufRead>, CliError> {
    if input == Path::new("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let f = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    Ok(Box::new(std::io::BufReader::new(f)))
}

/// Calls `f` with each non-blank line parsed as a JSON object and its
/// 1-based line number.
fn for_each_object(
    input: &Path,
    mut f: impl FnMut(usize, serde_json::Map<String, serde_json::Value>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    for (i, line) in lines(input)?.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("{}: line {n}: {e}", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let object = match serde_json::from_str(&line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => return Err(format!("line {n}: not a JSON object")),
            Err(e) => return Err(format!("line {n}: {e}")),
        };
        f(n, object)?;
    }
    Ok(())
}

/// Sends rows of `group` read from `input`.
pub fn put(client: &ClientArgs, group: &str, input: &Path) -> Result<(), CliError> {
    let mut c = connect(client)?;
    let registry = RegistryView::fetch(&mut c)?;
    let (g, entity) = registry.group(group)?;
    let features: Vec<_> = g
        .features
        .iter()
        .filter(|f| f.status == Status::Active)
        .collect();
    let columns: Vec<String> = entity
        .keys
        .iter()
        .map(|k| k.name.clone())
        .chain(features.iter().map(|f| f.name.clone()))
        .collect();
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let (mut sent, mut last_seq) = (0usize, 0u64);
    let mut flush = |c: &mut Client, rows: &mut Vec<PutRow>| -> Result<(), CliError> {
        if rows.is_empty() {
            return Ok(());
        }
        let put = Put {
            group: group.to_string(),
            columns: columns.clone(),
            rows: std::mem::take(rows),
        };
        let commit = c.put(&put).map_err(|e| format!("after {sent} rows: {e}"))?;
        sent += put.rows.len();
        last_seq = commit.seq;
        Ok(())
    };
    for_each_object(input, |n, mut object| {
        let event_ts = take_event_ts(n, &mut object)?;
        let mut values = Vec::with_capacity(columns.len());
        for k in &entity.keys {
            let json = object
                .remove(&k.name)
                .ok_or_else(|| format!("line {n}: key column `{}` is missing", k.name))?;
            values
                .push(key_value(k.ty, &json).map_err(|e| format!("line {n}, `{}`: {e}", k.name))?);
        }
        for f in &features {
            let value = match object.remove(&f.name) {
                Some(json) => feature_value(f.ty, &json)
                    .map_err(|e| format!("line {n}, `{}`: {e}", f.name))?,
                None => Value::Null,
            };
            values.push(value);
        }
        if let Some(extra) = object.keys().next() {
            return Err(format!(
                "line {n}: `{extra}` is not a key column or active feature of `{group}`"
            ));
        }
        batch.push(PutRow { event_ts, values });
        if batch.len() == BATCH_ROWS {
            flush(&mut c, &mut batch)?;
        }
        Ok(())
    })?;
    flush(&mut c, &mut batch)?;
    println!("put {sent} rows into `{group}` (last commit sequence {last_seq})");
    Ok(())
}

/// Writes tombstones for the keys read from `input`.
pub fn delete(client: &ClientArgs, group: &str, input: &Path) -> Result<(), CliError> {
    let mut c = connect(client)?;
    let registry = RegistryView::fetch(&mut c)?;
    let (_, entity) = registry.group(group)?;
    let mut keys = Vec::new();
    for_each_object(input, |n, mut object| {
        let event_ts = take_event_ts(n, &mut object)?;
        let mut key = Vec::with_capacity(entity.keys.len());
        for k in &entity.keys {
            let json = object
                .remove(&k.name)
                .ok_or_else(|| format!("line {n}: key column `{}` is missing", k.name))?;
            key.push(key_value(k.ty, &json).map_err(|e| format!("line {n}, `{}`: {e}", k.name))?);
        }
        if let Some(extra) = object.keys().next() {
            return Err(format!(
                "line {n}: `{extra}` is not a key column of `{group}`"
            ));
        }
        keys.push((event_ts, key));
        Ok(())
    })?;
    let total = keys.len();
    for chunk in keys.chunks(BATCH_ROWS) {
        let del = Delete {
            group: group.to_string(),
            keys: chunk.to_vec(),
        };
        c.delete(&del).map_err(|e| e.to_string())?;
    }
    println!("deleted {total} keys from `{group}`");
    Ok(())
}

fn take_event_ts(
    line: usize,
    object: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<i64, CliError> {
    let json = object
        .remove(EVENT_TS_FIELD)
        .ok_or_else(|| format!("line {line}: `{EVENT_TS_FIELD}` is missing"))?;
    parse_ts(&json).map_err(|e| format!("line {line}: {e}"))
}
