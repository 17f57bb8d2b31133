//! `tessera pit-join`: point-in-time-correct training sets.
//!
//! For every row of the spine (a Parquet file of labels: entity keys, a
//! timestamp `ts`, anything else) and each requested group, the row gets
//! the group's features as they were at `ts`: the version with the
//! greatest `event_ts <= ts`, null if that version is a tombstone or older
//! than `ts - ttl`, never a later one; with `--known-at-lag L`, only among
//! versions ingested by `ts - L`. These are exactly the rules of a slate
//! read with `as_of = ts` (and `known_at = ts - L`), served by the same
//! engine read (`PIT_LOOKUP`), so training sees what serving saw.
//!
//! Every spine row is kept, in order, with its own columns; a row whose
//! key or timestamp is null, or that has no earlier version, gets nulls.
//! Each group adds `group__feature` columns and `group__event_ts`, the
//! event time of the version used. Groups keyed by different entities are
//! joined in the same pass: the spine is read in chunks sized to
//! [`CHUNK_BUDGET_BYTES`] of memory, each chunk is looked up in every group (its
//! lookups sorted in storage order, for locality on the server, and split over
//! `--connections` connections, which the server serves in parallel),
//! each reply is read into its connection's columns as it arrives (and
//! its memory is then free for the next), and the columns are gathered
//! (Arrow's `interleave`) into the spine's order, a batch at a time.
//! Memory is bounded by one chunk and its features. It is kept lean on
//! purpose: fresh memory costs page faults, and on a virtual machine whose
//! host reclaims free memory they are what a join waits on most.

use super::arrow_columns::{arrow_type, timestamp_type, ColumnBuilder};
use super::arrow_rows::{Column as SpineColumn, Target};
use super::export::chosen_features;
use super::import::open_parquet;
use super::parquet_out::{progress, ParquetOut};
use super::rows::RegistryView;
use super::{connect, CliError, ClientArgs};
use arrow_array::builder::TimestampMicrosecondBuilder;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use arrow_select::interleave::interleave;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tessera_protocol::{Client, Key, PitLookup, Reply, Request, SlateReply, Value, MAX_PIT_KEYS};
use tessera_server::registry::{parse_duration, FeatureType, KeyColumn};
use tessera_server::row::key::{decode_key_into, encode_key, MAX_ENCODED_KEY_LEN};

/// Spine rows per record batch read and written.
const SPINE_BATCH_ROWS: usize = 65_536;
/// Memory one chunk of the spine may take, with its lookups, replies and
/// output columns: what the command holds at a time. The larger the chunk,
/// the denser its sorted lookups, and the fewer blocks the server reads
/// per lookup.
const CHUNK_BUDGET_BYTES: usize = 320 << 20;
/// Fewest and most spine rows a chunk holds, whatever the budget says.
const MIN_CHUNK_ROWS: usize = SPINE_BATCH_ROWS;
const MAX_CHUNK_ROWS: usize = 4 << 20;
/// What a spine row costs its chunk besides the groups' values: the
/// spine's own columns and, per group, its lookup (key, time, order) and
/// its place in the output order.
const ROW_BYTES: usize = 32;
const LOOKUP_BYTES: usize = 136;
/// Bytes assumed for a value of variable width (strings, bytes, lists).
const VARIABLE_VALUE_BYTES: usize = 32;
/// Lookups per `PIT_LOOKUP`: as many as one may hold. Each is a bulk job
/// on the server, whose fixed costs (its thread, the hand-offs) are then
/// paid once per 4,096 lookups, and whose held blocks serve more of them;
/// the connections keep the server's cores busy while each waits for its
/// reply.
const LOOKUPS_PER_REQUEST: usize = MAX_PIT_KEYS;
/// Requests one connection builds and sends at a time: enough to keep the
/// pipeline full, few enough that a chunk's requests are never all in
/// memory at once.
const REQUESTS_PER_PIPELINE: usize = 32;
/// Encoded key bytes reserved per spine row: reserved memory that stays
/// unused costs nothing, while a buffer that grows is copied.
const RESERVED_KEY_BYTES: usize = 16;
/// Most connections `--connections` may ask for.
const MAX_CONNECTIONS: usize = 16;

/// Arguments of `tessera pit-join`.
#[derive(Clone, Debug, clap::Args)]
pub struct PitJoinArgs {
    /// The spine: a Parquet file of label rows.
    #[arg(long)]
    pub spine: PathBuf,
    /// The spine's timestamp column.
    #[arg(long, default_value = "ts")]
    pub timestamp_column: String,
    /// `GROUP:f1,f2` (or `GROUP` for every active feature); repeat for
    /// more groups.
    #[arg(long = "features", required = true)]
    pub features: Vec<String>,
    /// `GROUP:key_column=spine_column`, for a key column the spine names
    /// differently; repeat as needed.
    #[arg(long = "key-map")]
    pub key_map: Vec<String>,
    /// Only versions ingested this long before each row's time (`30s`,
    /// `5m`, `1h`, `1d`).
    #[arg(long)]
    pub known_at_lag: Option<String>,
    /// The Parquet file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Connections the lookups are spread over: the server runs one
    /// connection's requests one at a time, so each adds up to a core.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Spine rows joined at a time (default: as many as a 320 MiB budget
    /// holds); fewer use less memory, more read fewer blocks per row.
    #[arg(long)]
    pub chunk_rows: Option<usize>,
}

/// One requested group, resolved against the registry and the spine.
struct GroupPlan {
    group: String,
    features: Vec<(String, FeatureType)>,
    /// The entity's key columns, in key order.
    key_columns: Vec<KeyColumn>,
    /// The spine column holding each key column.
    spine_keys: Vec<usize>,
}

/// Runs a point-in-time join.
pub fn pit_join(client: &ClientArgs, args: &PitJoinArgs) -> Result<(), CliError> {
    let lag = args
        .known_at_lag
        .as_deref()
        .map(|d| parse_duration(d).map(|s| s.saturating_mul(1_000_000)))
        .transpose()?;
    let spine = open_parquet(&args.spine)?;
    let total = spine.metadata().file_metadata().num_rows().max(0) as u64;
    let spine_schema = spine.schema().clone();
    let ts_index = spine_schema
        .index_of(&args.timestamp_column)
        .map_err(|_| column_missing(args, &args.timestamp_column, "the timestamp column"))?;
    if !(1..=MAX_CONNECTIONS).contains(&args.connections) {
        return Err(format!(
            "--connections {}: give 1 to {MAX_CONNECTIONS}",
            args.connections
        ));
    }
    if let Some(rows) = args
        .chunk_rows
        .filter(|r| !(1..=MAX_CHUNK_ROWS).contains(r))
    {
        return Err(format!("--chunk-rows {rows}: give 1 to {MAX_CHUNK_ROWS}"));
    }
    let mut clients = (0..args.connections)
        .map(|_| connect(client))
        .collect::<Result<Vec<_>, _>>()?;
    let registry = RegistryView::fetch(&mut clients[0])?;
    let plans = args
        .features
        .iter()
        .map(|spec| plan_group(&registry, &spine_schema, args, spec))
        .collect::<Result<Vec<_>, _>>()?;
    check_key_maps(args, &plans)?;
    let schema = output_schema(&spine_schema, &plans)?;
    let out = ParquetOut::create(&args.out, schema.clone())?;
    let reader = spine
        .with_batch_size(SPINE_BATCH_ROWS)
        .build()
        .map_err(|e| format!("{}: {e}", args.spine.display()))?;
    let bar = progress(Some(total));
    let started = Instant::now();
    // This thread reads the spine and looks it up; a second one builds the
    // output columns and writes them, so the two overlap.
    let (to_writer, chunks) = std::sync::mpsc::sync_channel::<Joined>(1);
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_chunks(out, &schema, chunks, &bar));
        let read = look_up_spine(
            &mut clients,
            args,
            reader,
            ts_index,
            &plans,
            lag,
            &to_writer,
        );
        drop(to_writer);
        let written = writer
            .join()
            .map_err(|_| "the writer thread panicked".to_string());
        // A failed lookup is the cause; the writer then only saw the end.
        read.and(written.and_then(|w| w))
    });
    let rows = written?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "joined {rows} spine rows with {} group(s) into {} in {secs:.2} s ({:.0} rows/s)",
        plans.len(),
        args.out.display(),
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn column_missing(args: &PitJoinArgs, column: &str, what: &str) -> String {
    format!(
        "{}: the spine has no column `{column}` ({what})",
        args.spine.display()
    )
}

/// Resolves `GROUP[:f1,f2]`: its features and where the spine holds its
/// key columns.
fn plan_group(
    registry: &RegistryView,
    spine: &Schema,
    args: &PitJoinArgs,
    spec: &str,
) -> Result<GroupPlan, CliError> {
    let (name, list) = spec.split_once(':').unwrap_or((spec, ""));
    let (group, entity) = registry.group(name)?;
    let asked: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    let features = chosen_features(group, &asked)?;
    let spine_keys = entity
        .keys
        .iter()
        .map(|k| {
            let column = mapped_column(&args.key_map, name, &k.name).unwrap_or(&k.name);
            let what = format!("key `{}` of group `{name}`; map it with --key-map", k.name);
            let index = spine
                .index_of(column)
                .map_err(|_| column_missing(args, column, &what))?;
            Ok(index)
        })
        .collect::<Result<_, CliError>>()?;
    Ok(GroupPlan {
        group: name.to_owned(),
        features,
        key_columns: entity.keys.clone(),
        spine_keys,
    })
}

/// The spine column `--key-map` names for `group`'s key `key`.
fn mapped_column<'a>(maps: &'a [String], group: &str, key: &str) -> Option<&'a str> {
    maps.iter().find_map(|m| {
        let (g, pair) = m.split_once(':')?;
        let (k, column) = pair.split_once('=')?;
        (g == group && k == key).then_some(column)
    })
}

/// Every `--key-map` is well-formed and names a joined group's key.
fn check_key_maps(args: &PitJoinArgs, plans: &[GroupPlan]) -> Result<(), CliError> {
    for m in &args.key_map {
        let parsed = m
            .split_once(':')
            .and_then(|(g, pair)| pair.split_once('=').map(|(k, _)| (g, k)));
        let Some((group, _)) = parsed else {
            return Err(format!(
                "--key-map `{m}`: write GROUP:key_column=spine_column"
            ));
        };
        if !plans.iter().any(|p| p.group == group) {
            return Err(format!(
                "--key-map `{m}`: `{group}` is not one of the joined groups"
            ));
        }
    }
    Ok(())
}

/// The spine's columns, then each group's `group__feature` columns and
/// `group__event_ts`.
fn output_schema(spine: &Schema, plans: &[GroupPlan]) -> Result<SchemaRef, CliError> {
    let mut fields: Vec<Field> = spine.fields().iter().map(|f| f.as_ref().clone()).collect();
    for plan in plans {
        for (name, ty) in &plan.features {
            fields.push(Field::new(
                format!("{}__{name}", plan.group),
                arrow_type(*ty),
                true,
            ));
        }
        fields.push(Field::new(
            format!("{}__event_ts", plan.group),
            timestamp_type(),
            true,
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = fields.iter().find(|f| !seen.insert(f.name().clone())) {
        return Err(format!(
            "the output would have two columns named `{}` (is a group joined twice, or does the spine already have it?)",
            dup.name()
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A chunk of the spine and its lookups in every group, in plan order.
struct Joined {
    batches: Vec<RecordBatch>,
    groups: Vec<GroupColumns>,
}

/// Spine rows per chunk: what [`CHUNK_BUDGET_BYTES`] holds, each group's
/// values counted twice (as columns in lookup order, and as the replies
/// and gathered batches they pass through), in whole record batches.
fn chunk_rows(plans: &[GroupPlan]) -> usize {
    let per_row: usize = ROW_BYTES
        + plans
            .iter()
            .map(|p| {
                let values: usize = p
                    .features
                    .iter()
                    .map(|(_, ty)| ty.fixed_width().unwrap_or(VARIABLE_VALUE_BYTES))
                    .sum();
                // The event time of the version used is one more value.
                LOOKUP_BYTES + 2 * (values + 8)
            })
            .sum::<usize>();
    let rows = (CHUNK_BUDGET_BYTES / per_row).clamp(MIN_CHUNK_ROWS, MAX_CHUNK_ROWS);
    rows / SPINE_BATCH_ROWS * SPINE_BATCH_ROWS
}

/// Reads the spine in chunks and looks each up in every group, handing
/// the results to the writer.
fn look_up_spine(
    clients: &mut [Client],
    args: &PitJoinArgs,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    ts_index: usize,
    plans: &[GroupPlan],
    lag: Option<i64>,
    to_writer: &std::sync::mpsc::SyncSender<Joined>,
) -> Result<(), CliError> {
    let chunk_rows = args.chunk_rows.unwrap_or_else(|| chunk_rows(plans));
    let mut batches = reader.peekable();
    while batches.peek().is_some() {
        // Whole record batches, up to `chunk_rows` rows.
        let mut chunk = Vec::new();
        let mut rows = 0;
        while rows < chunk_rows {
            let Some(batch) = batches.next() else { break };
            let batch = batch.map_err(|e| format!("{}: {e}", args.spine.display()))?;
            rows += batch.num_rows();
            chunk.push(batch);
        }
        let times = chunk
            .iter()
            .map(|b| spine_times(args, b, ts_index))
            .collect::<Result<Vec<_>, _>>()?;
        let groups = plans
            .iter()
            .map(|plan| look_up_chunk(clients, plan, &chunk, &times, lag))
            .collect::<Result<Vec<_>, _>>()?;
        let joined = Joined {
            batches: chunk,
            groups,
        };
        if to_writer.send(joined).is_err() {
            // The writer failed; its error is reported.
            return Ok(());
        }
    }
    Ok(())
}

/// Builds and writes the output of each chunk, in spine order; returns the
/// rows written. One thread gathers the output batches while this one
/// encodes and writes those before them.
fn write_chunks(
    mut out: ParquetOut,
    schema: &SchemaRef,
    chunks: std::sync::mpsc::Receiver<Joined>,
    bar: &indicatif::ProgressBar,
) -> Result<u64, CliError> {
    let (to_writer, gathered) = std::sync::mpsc::sync_channel::<RecordBatch>(GATHERED_AHEAD);
    std::thread::scope(|scope| {
        let gatherer = scope.spawn(move || gather_chunks(schema, chunks, &to_writer));
        let written = gathered.iter().try_for_each(|batch| {
            out.write(&batch)?;
            bar.inc(batch.num_rows() as u64);
            Ok::<(), CliError>(())
        });
        // Stops the gatherer if writing failed.
        drop(gathered);
        let gathered = gatherer
            .join()
            .map_err(|_| "the gathering thread panicked".to_string());
        written.and(gathered.and_then(|g| g))
    })?;
    out.finish()
}

/// Output batches gathered ahead of the one being written.
const GATHERED_AHEAD: usize = 2;

/// Gathers each chunk's output batches (the spine's columns and every
/// group's, in spine order) and sends them on until the writer stops.
fn gather_chunks(
    schema: &SchemaRef,
    chunks: std::sync::mpsc::Receiver<Joined>,
    to_writer: &std::sync::mpsc::SyncSender<RecordBatch>,
) -> Result<(), CliError> {
    for joined in chunks {
        let mut first = 0;
        for batch in &joined.batches {
            let rows = first..first + batch.num_rows();
            let mut columns = batch.columns().to_vec();
            for group in &joined.groups {
                columns.extend(group.gather(rows.clone())?);
            }
            let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
            if to_writer.send(batch).is_err() {
                // The writer failed; its error is reported.
                return Ok(());
            }
            first = rows.end;
        }
    }
    Ok(())
}

/// The spine's timestamp column of `batch`.
fn spine_times(
    args: &PitJoinArgs,
    batch: &RecordBatch,
    ts_index: usize,
) -> Result<SpineColumn, CliError> {
    SpineColumn::new(Target::EventTs, batch.column(ts_index)).map_err(|e| {
        format!(
            "{}: column `{}`: {e}",
            args.spine.display(),
            args.timestamp_column
        )
    })
}

/// One group's answers for a chunk of the spine: its output columns in
/// sorted lookup order, one set per connection's run of lookups (which
/// are consecutive), and for each spine row of the chunk its lookup's
/// position among them ([`NOT_LOOKED_UP`] if none).
struct GroupColumns {
    /// Each run's columns (features, then the event time), and last a
    /// one-row run of nulls that rows not looked up take.
    runs: Vec<Vec<ArrayRef>>,
    /// The sorted position of each run's first lookup.
    run_starts: Vec<u32>,
    slots: Vec<u32>,
}

/// The slot of a spine row that was not looked up. A chunk holds fewer
/// than [`MAX_CHUNK_ROWS`] rows and one record batch, so no position
/// reaches it.
const NOT_LOOKED_UP: u32 = u32::MAX;

/// Looks up a chunk of spine batches in one group. The lookups go out
/// sorted by key, so the server reads each block of the group about once
/// rather than once per lookup.
fn look_up_chunk(
    clients: &mut [Client],
    plan: &GroupPlan,
    batches: &[RecordBatch],
    times: &[SpineColumn],
    lag: Option<i64>,
) -> Result<GroupColumns, CliError> {
    // Rows with a null key column or time are not looked up: they get
    // nulls. Keys are sorted by their engine encoding, which is the order
    // the engine stores them in.
    // Reserved up front: growing these would copy them into fresh memory.
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut order: Vec<Lookup> = Vec::with_capacity(rows);
    let mut encoded = Vec::with_capacity(rows * RESERVED_KEY_BYTES);
    let mut key: Key = Vec::with_capacity(plan.key_columns.len());
    let mut row = 0;
    for (batch, times) in batches.iter().zip(times) {
        let key_columns = plan
            .spine_keys
            .iter()
            .zip(&plan.key_columns)
            .map(|(&index, k)| SpineColumn::new(Target::Key(k.ty), batch.column(index)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("group `{}`: {e}", plan.group))?;
        for i in 0..batch.num_rows() {
            let Some(ts) = times.event_ts(i) else {
                continue;
            };
            key.clear();
            key.extend(
                key_columns
                    .iter()
                    .map_while(|k| k.value(i).ok().filter(|v| *v != Value::Null)),
            );
            if key.len() == key_columns.len() {
                let start = encoded.len();
                encode_key(&plan.key_columns, &key, &mut encoded)
                    .map_err(|e| format!("group `{}`, spine row {}: {e}", plan.group, row + i))?;
                order.push(Lookup::new(row + i, ts, &encoded, start));
            }
        }
        row += batch.num_rows();
    }
    order.sort_unstable_by(|a, b| a.cmp(b, &encoded));
    let mut slots = vec![NOT_LOOKED_UP; row];
    for (sorted, lookup) in order.iter().enumerate() {
        // `sorted` < `row`, which fits (see NOT_LOOKED_UP).
        slots[lookup.spine_row as usize] = u32::try_from(sorted).unwrap_or(NOT_LOOKED_UP);
    }
    let (mut runs, run_starts) = look_up(clients, plan, &order, &encoded, lag)?;
    runs.push(null_run(plan));
    Ok(GroupColumns {
        runs,
        run_starts,
        slots,
    })
}

/// One row of nulls in every output column of `plan`.
fn null_run(plan: &GroupPlan) -> Vec<ArrayRef> {
    let types = plan.features.iter().map(|(_, ty)| arrow_type(*ty));
    types
        .chain(std::iter::once(timestamp_type()))
        .map(|ty| arrow_array::new_null_array(&ty, 1))
        .collect()
}

impl GroupColumns {
    /// The group's columns for spine rows `rows` of the chunk, in spine
    /// order: each row's lookup, or null where it was not looked up.
    fn gather(&self, rows: Range<usize>) -> Result<Vec<ArrayRef>, CliError> {
        let null_run = self.runs.len() - 1;
        let indices: Vec<(usize, usize)> = self.slots[rows]
            .iter()
            .map(|&slot| {
                if slot == NOT_LOOKED_UP {
                    return (null_run, 0);
                }
                let run = self.run_starts.partition_point(|&start| start <= slot) - 1;
                (run, (slot - self.run_starts[run]) as usize)
            })
            .collect();
        (0..self.runs[null_run].len())
            .map(|column| {
                let arrays: Vec<&dyn Array> =
                    self.runs.iter().map(|run| run[column].as_ref()).collect();
                interleave(&arrays, &indices).map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// One run's output columns, built reply by reply as the replies arrive,
/// so that a reply's memory is free for the next one.
struct RunBuilder<'p> {
    plan: &'p GroupPlan,
    features: Vec<ColumnBuilder>,
    event_ts: TimestampMicrosecondBuilder,
}

impl<'p> RunBuilder<'p> {
    fn new(plan: &'p GroupPlan, rows: usize) -> RunBuilder<'p> {
        RunBuilder {
            plan,
            features: plan
                .features
                .iter()
                .map(|(_, ty)| ColumnBuilder::new(*ty, rows))
                .collect(),
            event_ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
        }
    }

    /// Appends the rows of `reply`, which answered `asked` lookups.
    fn append(&mut self, reply: &SlateReply, asked: usize) -> Result<(), CliError> {
        let group = &self.plan.group;
        let [part] = reply.parts() else {
            return Err("a PIT_LOOKUP reply without its one part".into());
        };
        if part.rows() != asked {
            return Err(format!(
                "group `{group}`: {} rows answered {asked} lookups",
                part.rows()
            ));
        }
        if part.columns().len() != self.features.len() {
            return Err(format!("group `{group}`: a reply with other columns"));
        }
        for (builder, column) in self.features.iter_mut().zip(part.columns()) {
            builder
                .append_column(column)
                .map_err(|e| format!("group `{group}`: {e}"))?;
        }
        for row in 0..part.rows() {
            self.event_ts
                .append_option(part.found(row).then(|| part.event_ts(row)));
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let mut arrays: Vec<ArrayRef> = self
            .features
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        arrays.push(Arc::new(self.event_ts.finish()));
        arrays
    }
}

/// One spine row's lookup in one group, as it is sorted: 32 bytes, since
/// a chunk holds millions and sorting moves them.
struct Lookup {
    /// The encoded key's first [`PREFIX_BYTES`] bytes as one big-endian
    /// number (zero-padded): it orders the keys as their bytes do, unless
    /// it ties and one of them is longer.
    prefix: u64,
    ts: i64,
    /// Where the encoded key starts in the chunk's buffer of keys.
    key_start: usize,
    /// The spine row, within the chunk ([`MAX_CHUNK_ROWS`] fits).
    spine_row: u32,
    /// The encoded key's length ([`MAX_ENCODED_KEY_LEN`] fits).
    key_len: u16,
}

/// Bytes of a key that [`Lookup::prefix`] holds: all of an `int64` key.
const PREFIX_BYTES: usize = 8;
const _: () = assert!(MAX_CHUNK_ROWS <= u32::MAX as usize);
const _: () = assert!(MAX_ENCODED_KEY_LEN <= u16::MAX as usize);

impl Lookup {
    /// The lookup of the key encoded in `encoded[start..]`.
    fn new(spine_row: usize, ts: i64, encoded: &[u8], start: usize) -> Lookup {
        let bytes = &encoded[start..];
        let mut prefix = [0u8; PREFIX_BYTES];
        let n = bytes.len().min(PREFIX_BYTES);
        prefix[..n].copy_from_slice(&bytes[..n]);
        Lookup {
            prefix: u64::from_be_bytes(prefix),
            ts,
            key_start: start,
            // Both bounded by the constants asserted above.
            spine_row: spine_row as u32,
            key_len: bytes.len() as u16,
        }
    }

    /// The encoded key's range in the chunk's buffer of keys.
    fn key(&self) -> Range<usize> {
        self.key_start..self.key_start + usize::from(self.key_len)
    }

    /// Storage order: key order (the engine's), then time, newest first,
    /// as the engine keeps a key's versions, so the blocks the lookups
    /// read only ever move forward.
    fn cmp(&self, other: &Lookup, encoded: &[u8]) -> std::cmp::Ordering {
        let (a, b) = (usize::from(self.key_len), usize::from(other.key_len));
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| {
                if a <= PREFIX_BYTES && b <= PREFIX_BYTES {
                    // Equal prefixes of whole keys: the shorter sorts first.
                    a.cmp(&b)
                } else {
                    encoded[self.key()].cmp(&encoded[other.key()])
                }
            })
            .then(other.ts.cmp(&self.ts))
    }
}

/// Sends the lookups in pipelined `PIT_LOOKUP`s, split in consecutive
/// runs over `clients` (each run on its own thread); each run's columns
/// and the sorted position of its first lookup.
fn look_up(
    clients: &mut [Client],
    plan: &GroupPlan,
    sorted: &[Lookup],
    encoded: &[u8],
    lag: Option<i64>,
) -> Result<(Vec<Vec<ArrayRef>>, Vec<u32>), CliError> {
    let requests = sorted.len().div_ceil(LOOKUPS_PER_REQUEST);
    let per_client = requests.div_ceil(clients.len().max(1)).max(1) * LOOKUPS_PER_REQUEST;
    let runs: Vec<Result<Vec<ArrayRef>, CliError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = clients
            .iter_mut()
            .zip(sorted.chunks(per_client))
            .map(|(c, run)| scope.spawn(move || look_up_run(c, plan, encoded, run, lag)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a lookup thread panicked".into()))
            })
            .collect()
    });
    let starts = (0..runs.len())
        // Below `sorted.len()`, which is below MAX_CHUNK_ROWS.
        .map(|i| (i * per_client) as u32)
        .collect();
    Ok((runs.into_iter().collect::<Result<_, _>>()?, starts))
}

/// One connection's run of lookups, [`REQUESTS_PER_PIPELINE`] requests at a
/// time, each filled just before it goes (so a run's requests are never
/// all in memory, and their keys' memory is reused); its output columns,
/// built as the replies arrive.
fn look_up_run(
    c: &mut Client,
    plan: &GroupPlan,
    encoded: &[u8],
    run: &[Lookup],
    lag: Option<i64>,
) -> Result<Vec<ArrayRef>, CliError> {
    let features: Vec<String> = plan.features.iter().map(|(n, _)| n.clone()).collect();
    let mut columns = RunBuilder::new(plan, run.len());
    let mut requests: Vec<Request> = Vec::with_capacity(REQUESTS_PER_PIPELINE);
    for window in run.chunks(LOOKUPS_PER_REQUEST * REQUESTS_PER_PIPELINE) {
        let batches = window.chunks(LOOKUPS_PER_REQUEST);
        requests.truncate(batches.len());
        while requests.len() < batches.len() {
            requests.push(Request::PitLookup(PitLookup {
                group: plan.group.clone(),
                features: features.clone(),
                known_at_lag: lag,
                keys: Vec::with_capacity(LOOKUPS_PER_REQUEST),
            }));
        }
        for (request, lookups) in requests.iter_mut().zip(batches.clone()) {
            if let Request::PitLookup(request) = request {
                fill_keys(plan, encoded, lookups, &mut request.keys)?;
            }
        }
        let replies = c.pipeline(&requests).map_err(|e| e.to_string())?;
        for (reply, lookups) in replies.into_iter().zip(batches) {
            match reply {
                Ok(Reply::PitLookup(reply)) => columns.append(&reply, lookups.len())?,
                Ok(other) => return Err(format!("unexpected {} reply", other.opcode().name())),
                Err(e) => return Err(format!("group `{}`: {e}", plan.group)),
            }
        }
    }
    Ok(columns.finish())
}

/// Sets `keys` to the time and decoded key of each of `lookups`, reusing
/// the memory `keys` holds.
fn fill_keys(
    plan: &GroupPlan,
    encoded: &[u8],
    lookups: &[Lookup],
    keys: &mut Vec<(i64, Key)>,
) -> Result<(), CliError> {
    keys.truncate(lookups.len());
    keys.resize_with(lookups.len(), || {
        (0, Key::with_capacity(plan.key_columns.len()))
    });
    for ((ts, key), lookup) in keys.iter_mut().zip(lookups) {
        *ts = lookup.ts;
        key.clear();
        decode_key_into(&plan.key_columns, &encoded[lookup.key()], key)
            .map_err(|e| format!("group `{}`: a key does not decode: {e}", plan.group))?;
    }
    Ok(())
}
