//! `tessera export`: a group's rows from one consistent snapshot to a
//! Parquet file.
//!
//! The default form writes each entity's row as of a time (`--as-of`,
//! default now; `--known-at` for the bitemporal read), TTL applied, as a
//! slate would read it. `--history` writes every version with an event
//! time in `[--from, --to]` instead, tombstones as rows with `deleted` set.
//! Columns: the entity's key columns, `event_ts`, with `--history` also
//! `ingest_ts` and `deleted`, then the features with the registry's types.
//! The server streams chunks from one snapshot; each becomes a record batch
//! written as it arrives, so memory stays bounded by one chunk and one row
//! group.

use super::arrow_columns::{
    arrow_type, key_arrow_type, key_feature_type, timestamp_type, ColumnBuilder,
};
use super::parquet_out::{progress, ParquetOut};
use super::rows::RegistryView;
use super::values::parse_ts_text;
use super::{connect, CliError, ClientArgs};
use arrow_array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tessera_protocol::{ExportRange, ExportRequest, HistoryReply};
use tessera_server::registry::{Entity, FeatureGroup, FeatureType, Status};

/// Arguments of `tessera export`.
#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// The feature group.
    #[arg(long)]
    pub group: String,
    /// Each entity's row as of this event time (µs or RFC 3339; default: now).
    #[arg(long, conflicts_with = "history")]
    pub as_of: Option<String>,
    /// Only versions ingested by this time (µs or RFC 3339).
    #[arg(long, conflicts_with = "history")]
    pub known_at: Option<String>,
    /// Every version in the event-time range instead of one row per entity.
    #[arg(long)]
    pub history: bool,
    /// With `--history`: earliest event time, inclusive (default: all).
    #[arg(long, requires = "history")]
    pub from: Option<String>,
    /// With `--history`: latest event time, inclusive (default: all).
    #[arg(long, requires = "history")]
    pub to: Option<String>,
    /// Features to export, comma-separated (default: every active feature).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// The Parquet file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// What one chunk's columns become.
struct Layout {
    schema: SchemaRef,
    keys: Vec<FeatureType>,
    features: Vec<FeatureType>,
    history: bool,
}

/// Runs an export.
pub fn export(client: &ClientArgs, args: &ExportArgs) -> Result<(), CliError> {
    let range = if args.history {
        let bound = |t: &Option<String>, default| t.as_deref().map_or(Ok(default), parse_ts_text);
        ExportRange::History {
            from: bound(&args.from, i64::MIN)?,
            to: bound(&args.to, i64::MAX)?,
        }
    } else {
        ExportRange::Snapshot {
            as_of: args.as_of.as_deref().map(parse_ts_text).transpose()?,
            known_at: args.known_at.as_deref().map(parse_ts_text).transpose()?,
        }
    };
    let mut c = connect(client)?;
    let registry = RegistryView::fetch(&mut c)?;
    let (group, entity) = registry.group(&args.group)?;
    let features = chosen_features(group, &args.features)?;
    let layout = layout(entity, &features, args.history);
    let mut out = ParquetOut::create(&args.out, layout.schema.clone())?;
    let request = ExportRequest {
        group: args.group.clone(),
        features: features.iter().map(|(name, _)| name.clone()).collect(),
        range,
    };
    let bar = progress(None);
    let started = Instant::now();
    let mut stream = c.export(&request).map_err(|e| e.to_string())?;
    while let Some(chunk) = stream.next_chunk().map_err(|e| e.to_string())? {
        let batch = to_batch(&layout, &chunk)?;
        out.write(&batch)?;
        bar.inc(chunk.rows() as u64);
    }
    drop(stream);
    let rows = out.finish()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "exported {rows} rows of `{}` to {} in {secs:.2} s ({:.0} rows/s)",
        args.group,
        args.out.display(),
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The features to export, with their types: those asked for, or every
/// active one.
pub(super) fn chosen_features(
    group: &FeatureGroup,
    asked: &[String],
) -> Result<Vec<(String, FeatureType)>, CliError> {
    if asked.is_empty() {
        let active = group.features.iter().filter(|f| f.status == Status::Active);
        return Ok(active.map(|f| (f.name.clone(), f.ty)).collect());
    }
    asked
        .iter()
        .map(|name| {
            let f = group
                .feature(name)
                .ok_or_else(|| format!("group `{}` has no feature `{name}`", group.name))?;
            Ok((f.name.clone(), f.ty))
        })
        .collect()
}

fn layout(entity: &Entity, features: &[(String, FeatureType)], history: bool) -> Layout {
    let mut fields: Vec<Field> = entity
        .keys
        .iter()
        .map(|k| Field::new(&k.name, key_arrow_type(k.ty), false))
        .collect();
    fields.push(Field::new("event_ts", timestamp_type(), false));
    if history {
        fields.push(Field::new("ingest_ts", timestamp_type(), false));
        fields.push(Field::new("deleted", DataType::Boolean, false));
    }
    fields.extend(
        features
            .iter()
            .map(|(name, ty)| Field::new(name, arrow_type(*ty), true)),
    );
    Layout {
        schema: Arc::new(Schema::new(fields)),
        keys: entity.keys.iter().map(|k| key_feature_type(k.ty)).collect(),
        features: features.iter().map(|(_, ty)| *ty).collect(),
        history,
    }
}

/// One chunk as a record batch of the output's schema.
fn to_batch(layout: &Layout, chunk: &HistoryReply) -> Result<RecordBatch, CliError> {
    let rows = chunk.rows();
    let marker = usize::from(layout.history);
    let expected = layout.keys.len() + marker + layout.features.len();
    if chunk.columns().len() != expected {
        return Err(format!(
            "the server sent {} columns; the registry says {expected}",
            chunk.columns().len()
        ));
    }
    let (keys, rest) = chunk.columns().split_at(layout.keys.len());
    let (deleted, features) = rest.split_at(marker);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(layout.schema.fields().len());
    let ts = |f: &dyn Fn(usize) -> i64| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from_iter_values((0..rows).map(f)).with_timezone("UTC"))
    };
    let build = |columns: &[tessera_protocol::Column], types: &[FeatureType]| {
        columns
            .iter()
            .zip(types)
            .map(|(column, ty)| {
                let mut builder = ColumnBuilder::new(*ty, rows);
                builder.append_column(column).map(|()| builder.finish())
            })
            .collect::<Result<Vec<ArrayRef>, String>>()
    };
    arrays.extend(build(keys, &layout.keys)?);
    arrays.push(ts(&|i| chunk.event_ts(i)));
    if let [marker] = deleted {
        arrays.push(ts(&|i| chunk.ingest_ts(i)));
        arrays.push(build(std::slice::from_ref(marker), &[FeatureType::Bool])?.remove(0));
    }
    arrays.extend(build(features, &layout.features)?);
    RecordBatch::try_new(layout.schema.clone(), arrays).map_err(|e| e.to_string())
}
