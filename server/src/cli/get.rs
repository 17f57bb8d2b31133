//! `tessera get`, `tessera history` and `tessera stats`.

use super::rows::RegistryView;
use super::values::{
    format_ts, key_value, key_value_text, parse_ts, parse_ts_text, to_cell, to_json,
};
use super::{connect, CliError, ClientArgs};
use serde::Deserialize;
use std::path::PathBuf;
use tessera_protocol::{HistoryRequest, Key, SlatePart, SlateRequest, Value};

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per key.
    Json,
}

/// Arguments of `tessera get`.
#[derive(Clone, Debug, clap::Args)]
pub struct GetArgs {
    /// The feature group.
    #[arg(long, required_unless_present = "request")]
    pub group: Option<String>,
    /// An entity key; a composite key's columns are separated by commas.
    #[arg(long = "key", required_unless_present = "request")]
    pub keys: Vec<String>,
    /// Features to return, comma-separated (default: every active feature).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Read as of this event time (RFC 3339 or µs).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Only versions ingested by this time (RFC 3339 or µs).
    #[arg(long)]
    pub known_at: Option<String>,
    /// A JSON file holding a whole multi-group slate request.
    #[arg(long, conflicts_with_all = ["group", "keys"])]
    pub request: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A slate request file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    as_of: Option<serde_json::Value>,
    known_at: Option<serde_json::Value>,
    parts: Vec<PartFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartFile {
    group: String,
    #[serde(default)]
    features: Vec<String>,
    /// Each key: one value per key column (or a bare value for one column).
    keys: Vec<serde_json::Value>,
}

/// Fetches and prints one group's part of a slate, or a whole slate.
pub fn get(client: &ClientArgs, args: &GetArgs) -> Result<(), CliError> {
    let mut c = connect(client)?;
    let registry = RegistryView::fetch(&mut c)?;
    let request = match &args.request {
        Some(path) => request_from_file(&registry, path)?,
        None => request_from_args(&registry, args)?,
    };
    let reply = c.get_slate(&request).map_err(|e| e.to_string())?;
    let mut json_out = Vec::new();
    for (part, view) in request.parts.iter().zip(reply.parts()) {
        let names: Vec<&str> = view.columns().iter().map(|c| c.name()).collect();
        let mut table = vec![header(&names)];
        for (i, key) in part.keys.iter().enumerate() {
            let values: Vec<Value> = view.columns().iter().map(|c| c.value(i)).collect();
            let key_text = key.iter().map(to_cell).collect::<Vec<_>>().join(",");
            match args.format {
                Format::Json => {
                    let mut o = serde_json::Map::new();
                    o.insert("group".into(), part.group.clone().into());
                    o.insert(
                        "key".into(),
                        key.iter().map(to_json).collect::<Vec<_>>().into(),
                    );
                    o.insert("found".into(), view.found(i).into());
                    if view.found(i) {
                        o.insert("event_ts".into(), view.event_ts(i).into());
                        for (name, v) in names.iter().zip(&values) {
                            o.insert((*name).into(), to_json(v));
                        }
                    }
                    json_out.push(serde_json::Value::Object(o));
                }
                Format::Table => {
                    let mut row = vec![key_text, view.found(i).to_string()];
                    row.push(if view.found(i) {
                        format_ts(view.event_ts(i))
                    } else {
                        "-".into()
                    });
                    row.extend(values.iter().map(to_cell));
                    table.push(row);
                }
            }
        }
        if args.format == Format::Table {
            println!("{}:", part.group);
            print_table(&table);
        }
    }
    if args.format == Format::Json {
        for o in json_out {
            println!("{o}");
        }
    }
    Ok(())
}

fn header(names: &[&str]) -> Vec<String> {
    ["key", "found", "event_ts"]
        .iter()
        .chain(names)
        .map(|s| s.to_string())
        .collect()
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

fn request_from_args(registry: &RegistryView, args: &GetArgs) -> Result<SlateRequest, CliError> {
    let group = args.group.clone().unwrap_or_default();
    let (_, entity) = registry.group(&group)?;
    let keys = args
        .keys
        .iter()
        .map(|text| {
            let parts: Vec<&str> = text.split(',').collect();
            if parts.len() != entity.keys.len() {
                return Err(format!(
                    "key `{text}`: `{}` has {} key columns",
                    entity.name,
                    entity.keys.len()
                ));
            }
            entity
                .keys
                .iter()
                .zip(parts)
                .map(|(k, p)| key_value_text(k.ty, p).map_err(|e| format!("key `{text}`: {e}")))
                .collect::<Result<Key, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SlateRequest {
        as_of: args.as_of.as_deref().map(parse_ts_text).transpose()?,
        known_at: args.known_at.as_deref().map(parse_ts_text).transpose()?,
        parts: vec![SlatePart {
            group,
            features: args.features.clone(),
            keys,
        }],
    })
}

fn request_from_file(registry: &RegistryView, path: &PathBuf) -> Result<SlateRequest, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: RequestFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut parts = Vec::with_capacity(file.parts.len());
    for p in file.parts {
        let (_, entity) = registry.group(&p.group)?;
        let keys = p
            .keys
            .iter()
            .map(|k| {
                let columns: Vec<serde_json::Value> = match k {
                    serde_json::Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                if columns.len() != entity.keys.len() {
                    return Err(format!(
                        "group `{}`: key {k} has the wrong number of columns",
                        p.group
                    ));
                }
                entity
                    .keys
                    .iter()
                    .zip(&columns)
                    .map(|(c, v)| {
                        key_value(c.ty, v).map_err(|e| format!("group `{}`: {e}", p.group))
                    })
                    .collect::<Result<Key, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        parts.push(SlatePart {
            group: p.group,
            features: p.features,
            keys,
        });
    }
    Ok(SlateRequest {
        as_of: file.as_of.as_ref().map(parse_ts).transpose()?,
        known_at: file.known_at.as_ref().map(parse_ts).transpose()?,
        parts,
    })
}

/// Arguments of `tessera history`.
#[derive(Clone, Debug, clap::Args)]
pub struct HistoryArgs {
    /// The feature group.
    #[arg(long)]
    pub group: String,
    /// The entity key; a composite key's columns are separated by commas.
    #[arg(long)]
    pub key: String,
    /// Earliest event time (RFC 3339 or µs; default: the beginning).
    #[arg(long)]
    pub from: Option<String>,
    /// Latest event time (RFC 3339 or µs; default: the end).
    #[arg(long)]
    pub to: Option<String>,
    /// Features to return, comma-separated (default: every active feature).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
}

/// Prints every version of one key, newest first.
pub fn history(client: &ClientArgs, args: &HistoryArgs) -> Result<(), CliError> {
    let mut c = connect(client)?;
    let registry = RegistryView::fetch(&mut c)?;
    let (_, entity) = registry.group(&args.group)?;
    let parts: Vec<&str> = args.key.split(',').collect();
    if parts.len() != entity.keys.len() {
        return Err(format!(
            "key `{}`: `{}` has {} key columns",
            args.key,
            entity.name,
            entity.keys.len()
        ));
    }
    let key = entity
        .keys
        .iter()
        .zip(parts)
        .map(|(k, p)| key_value_text(k.ty, p))
        .collect::<Result<Key, _>>()?;
    let request = HistoryRequest {
        group: args.group.clone(),
        key,
        from: args
            .from
            .as_deref()
            .map(parse_ts_text)
            .transpose()?
            .unwrap_or(i64::MIN),
        to: args
            .to
            .as_deref()
            .map(parse_ts_text)
            .transpose()?
            .unwrap_or(i64::MAX),
        features: args.features.clone(),
    };
    let reply = c.history(&request).map_err(|e| e.to_string())?;
    let names: Vec<&str> = reply.columns().iter().map(|c| c.name()).collect();
    let mut table = vec![["event_ts", "ingest_ts", "seq", "kind"]
        .iter()
        .chain(&names)
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for i in 0..reply.rows() {
        let mut row = vec![
            format_ts(reply.event_ts(i)),
            format_ts(reply.ingest_ts(i)),
            reply.seq(i).to_string(),
            if reply.tombstone(i) {
                "tombstone"
            } else {
                "put"
            }
            .to_string(),
        ];
        row.extend(reply.columns().iter().map(|c| to_cell(&c.value(i))));
        table.push(row);
    }
    print_table(&table);
    Ok(())
}

/// Prints the server's counters as JSON.
pub fn stats(client: &ClientArgs) -> Result<(), CliError> {
    let mut c = connect(client)?;
    let json = c.stats().map_err(|e| e.to_string())?;
    let pretty = serde_json::from_str::<serde_json::Value>(&json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(json);
    println!("{pretty}");
    Ok(())
}
