//! `tessera-bench gen`: the news-feed dataset as Parquet files, for
//! `tessera import` or any other tool.
//!
//! Writes `users.parquet` and `articles.parquet` under `--out`: for every
//! entity, `--versions` versions (the same rows `tessera-bench load`
//! writes, deterministic for a given `--seed`), event times spread over
//! the last 30 days with the newest an hour old, in entity order. Columns:
//! the key (`user_id`, `article_id`), `event_ts` (µs, UTC), the groups'
//! int64 and float64 features and the embedding as
//! `fixed_size_list<float32>`, named as in the registry spec.

use crate::net_bench::{row_values_seeded, version_event_ts, BoxError, GroupFeatures};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_protocol::Value;

/// Rows per record batch and row group.
const BATCH_ROWS: usize = 65_536;

/// Arguments of `tessera-bench gen`.
#[derive(Clone, Debug, clap::Args)]
pub struct GenArgs {
    /// Directory the files are written to.
    #[arg(long, default_value = "./tessera-bench-data")]
    out: PathBuf,
    /// Users.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Articles.
    #[arg(long, default_value_t = 200_000)]
    articles: u64,
    /// Versions per entity.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    versions: u32,
    /// Seed of the values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The registry spec naming the features.
    #[arg(long, default_value = "examples/news_feed/registry.toml")]
    spec: PathBuf,
}

/// Writes both files.
pub fn run(args: &GenArgs) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.out)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    for (group, key, n, file) in [
        ("user_features", "user_id", args.users, "users.parquet"),
        (
            "article_features",
            "article_id",
            args.articles,
            "articles.parquet",
        ),
    ] {
        let features = GroupFeatures::from_spec(&args.spec, group)?;
        let path = args.out.join(file);
        let rows = write_group(&path, key, &features, n, args, now)?;
        println!("wrote {rows} rows of `{group}` to {}", path.display());
    }
    Ok(())
}

/// Writes `entities` × `versions` rows of a group (key column `key`) to
/// `path`: the rows `gen` writes for `seed`, event times relative to now.
/// Returns the rows written.
pub(crate) fn write_group_file(
    path: &Path,
    key: &str,
    f: &GroupFeatures,
    entities: u64,
    versions: u32,
    seed: u64,
) -> Result<u64, BoxError> {
    let args = GenArgs {
        out: PathBuf::new(),
        users: 0,
        articles: 0,
        versions: versions.max(1),
        seed,
        spec: PathBuf::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    write_group(path, key, f, entities, &args, now)
}

fn write_group(
    path: &Path,
    key: &str,
    f: &GroupFeatures,
    n: u64,
    args: &GenArgs,
    now: i64,
) -> Result<u64, BoxError> {
    let dim = f.embedding.1 as i32;
    let mut fields = vec![
        Field::new(key, DataType::Int64, false),
        Field::new(
            "event_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(f.ints.iter().map(|n| Field::new(n, DataType::Int64, true)));
    fields.extend(
        f.floats
            .iter()
            .map(|n| Field::new(n, DataType::Float64, true)),
    );
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    fields.push(Field::new(
        &f.embedding.0,
        DataType::FixedSizeList(item, dim),
        true,
    ));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_dictionary_enabled(false)
        .build();
    let tmp = path.with_extension("tmp");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema.clone(), Some(props))?;
    let versions = u64::from(args.versions);
    let total = n * versions;
    let mut done = 0;
    while done < total {
        let len = (total - done).min(BATCH_ROWS as u64);
        let rows: Vec<(u64, u32)> = (done..done + len)
            .map(|r| (r / versions, (r % versions) as u32))
            .collect();
        w.write(&batch(&schema, f, &rows, args, now)?)?;
        done += len;
    }
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(total)
}

/// The record batch of `(id, version)` rows.
fn batch(
    schema: &Arc<Schema>,
    f: &GroupFeatures,
    rows: &[(u64, u32)],
    args: &GenArgs,
    now: i64,
) -> Result<RecordBatch, BoxError> {
    let values: Vec<Vec<Value>> = rows
        .iter()
        .map(|&(id, v)| row_values_seeded(f, id, v, args.seed))
        .collect();
    let event_ts = rows
        .iter()
        .map(|&(id, v)| version_event_ts(now, id, v, args.versions));
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&(id, _)| id as i64),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(event_ts).with_timezone("UTC")),
    ];
    let column = |c: usize| values.iter().map(move |row| row.get(c));
    for c in 1..=f.ints.len() {
        columns.push(Arc::new(Int64Array::from_iter(column(c).map(
            |v| match v {
                Some(Value::Int64(x)) => Some(*x),
                _ => None,
            },
        ))));
    }
    for c in 1 + f.ints.len()..=f.ints.len() + f.floats.len() {
        columns.push(Arc::new(Float64Array::from_iter(column(c).map(
            |v| match v {
                Some(Value::Float64(x)) => Some(*x),
                _ => None,
            },
        ))));
    }
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), f.embedding.1 as i32);
    for v in column(1 + f.ints.len() + f.floats.len()) {
        match v {
            Some(Value::Embedding(e)) => {
                emb.values().append_slice(e);
                emb.append(true);
            }
            _ => {
                emb.values().append_nulls(f.embedding.1);
                emb.append(false);
            }
        }
    }
    columns.push(Arc::new(emb.finish()));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
