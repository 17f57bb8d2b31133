//! `tessera-bench load` and `tessera-bench slate` against a running
//! `tessera serve`: the news-feed workload over the binary protocol.
//!
//! `load` writes the dataset (users and articles, each version a row of the
//! news-feed groups' int64 and float64 features and embedding) with `PUT`
//! batches. `slate` sends the standard slate: 1 user with its int64, float64
//! and embedding features (21), and 50 Zipf-chosen articles with their 10
//! float64 features and embedding, closed-loop on N connections or
//! open-loop at a fixed rate shared by the connections (latency then counts
//! from each slate's scheduled send time, which corrects for coordinated
//! omission). It
//! reports slates/s, p50/p99/p999/max, and CPU µs per slate of the server
//! (from `/proc/<pid>/stat`) and of this client.

use crate::cassandra_peer::{self, CassandraSlates, CassandraWriter, Compression};
use crate::redis_peer::{self, Layout, RedisSlates, RedisWriter};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_protocol::{Client, ClientOptions, Put, PutRow, SlatePart, SlateRequest, Value};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The two groups of the news-feed registry (`examples/news_feed`).
pub(crate) const USER_GROUP: &str = "user_features";
pub(crate) const ARTICLE_GROUP: &str = "article_features";
pub(crate) const USER_KEY: &str = "user_id";
const ARTICLE_KEY: &str = "article_id";
/// Candidate articles per slate.
pub(crate) const ARTICLES_PER_SLATE: usize = 50;
/// Rows per `PUT` while loading.
const LOAD_BATCH_ROWS: usize = 500;
/// Span of event times: 30 days, µs.
const SPAN_US: i64 = 30 * 24 * 3600 * 1_000_000;
/// An hour, µs.
const HOUR_US: i64 = 3600 * 1_000_000;

/// The systems `load` and `slate` drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `tessera serve`.
    Tessera,
    /// A Redis server (see `bench/peers/redis.sh`).
    Redis,
    /// Apache Cassandra 2.1.0 (see `bench/peers/cassandra.sh`).
    Cassandra,
}

/// Arguments shared by the network subcommands.
#[derive(Clone, Debug, clap::Args)]
pub struct TargetArgs {
    /// The system under test.
    #[arg(long, value_enum, default_value_t = Target::Tessera)]
    target: Target,
    /// Server address (default: 127.0.0.1:7411 for tessera, 127.0.0.1:6379
    /// for redis).
    #[arg(long)]
    addr: Option<String>,
    /// Access token (tessera).
    #[arg(long, env = "TESSERA_TOKEN", default_value = "")]
    pub(crate) token: String,
    /// Users in the dataset.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) users: u64,
    /// Articles in the dataset.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) articles: u64,
    /// Spin on the socket for replies instead of sleeping (tessera; see
    /// `ClientOptions::busy_poll`).
    #[arg(long)]
    pub(crate) busy_poll: bool,
    /// How Redis stores entities.
    #[arg(long, value_enum, default_value_t = Layout::Hash)]
    layout: Layout,
    /// Whether Cassandra's tables compress their SSTables.
    #[arg(long, value_enum, default_value_t = Compression::On)]
    compression: Compression,
    /// The registry spec naming the features (for targets without a
    /// registry).
    #[arg(long, default_value = "examples/news_feed/registry.toml")]
    spec: std::path::PathBuf,
}

impl TargetArgs {
    pub(crate) fn addr(&self) -> String {
        self.addr.clone().unwrap_or_else(|| {
            match self.target {
                Target::Tessera => "127.0.0.1:7411",
                Target::Redis => "127.0.0.1:6379",
                Target::Cassandra => "127.0.0.1:9042",
            }
            .to_string()
        })
    }

    /// The features of `group`: from the server's registry for Tessera,
    /// from the spec file otherwise.
    pub(crate) fn features(&self, group: &str) -> Result<GroupFeatures, BoxError> {
        match self.target {
            Target::Tessera => group_features(&mut connect(self)?, group),
            Target::Redis | Target::Cassandra => GroupFeatures::from_spec(&self.spec, group),
        }
    }
}

/// Arguments of `tessera-bench load`.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Versions written per entity.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    versions: u32,
    /// Loader connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
}

/// Arguments of `tessera-bench slate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SlateArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent connections (one client thread each).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Open-loop rate, slates/s over all connections, each slate sent by
    /// whichever connection is free when it is due (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Zipf exponent of user and article popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// The server's pid, for its CPU time per slate.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `tessera-bench mixed`.
#[derive(Clone, Debug, clap::Args)]
pub struct MixedArgs {
    #[command(flatten)]
    slate: SlateArgs,
    /// Article rows written per second while the slates run (new versions
    /// of Zipf-chosen articles: their popularity counters move).
    #[arg(long, default_value_t = 20_000)]
    write_rate: u64,
}

/// Rows per write while mixing, so the pace is kept in small steps.
const MIXED_WRITE_BATCH: usize = 100;

/// A group's feature names by type.
pub(crate) struct GroupFeatures {
    pub(crate) ints: Vec<String>,
    pub(crate) floats: Vec<String>,
    pub(crate) embedding: (String, usize),
}

impl GroupFeatures {
    /// Every name, in row order: ints, floats, embedding.
    pub(crate) fn names(&self) -> Vec<String> {
        let all = self
            .ints
            .iter()
            .chain(&self.floats)
            .chain(std::iter::once(&self.embedding.0));
        all.cloned().collect()
    }

    /// The features of `group` in a registry spec file.
    pub(crate) fn from_spec(
        path: &std::path::Path,
        group: &str,
    ) -> Result<GroupFeatures, BoxError> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let spec: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let features = spec
            .get("group")
            .and_then(toml::Value::as_array)
            .and_then(|gs| {
                gs.iter()
                    .find(|g| g.get("name").and_then(toml::Value::as_str) == Some(group))
            })
            .and_then(|g| g.get("feature"))
            .and_then(toml::Value::as_array)
            .ok_or_else(|| format!("{}: no group `{group}`", path.display()))?;
        let typed: Vec<(String, String)> = features
            .iter()
            .filter_map(|f| {
                let name = f.get("name")?.as_str()?.to_string();
                Some((name, f.get("type")?.as_str()?.to_string()))
            })
            .collect();
        GroupFeatures::from_typed(group, &typed)
    }

    /// From `(name, type)` pairs of active features.
    fn from_typed(group: &str, typed: &[(String, String)]) -> Result<GroupFeatures, BoxError> {
        let of_type = |ty: &str| {
            typed
                .iter()
                .filter(|(_, t)| t == ty)
                .map(|(n, _)| n.clone())
                .collect()
        };
        let embedding = typed
            .iter()
            .find_map(|(n, t)| {
                let dim = t
                    .strip_prefix("embedding(")?
                    .strip_suffix(')')?
                    .parse()
                    .ok()?;
                Some((n.clone(), dim))
            })
            .ok_or_else(|| format!("group `{group}` has no embedding"))?;
        Ok(GroupFeatures {
            ints: of_type("int64"),
            floats: of_type("float64"),
            embedding,
        })
    }
}

pub(crate) fn connect(t: &TargetArgs) -> Result<Client, BoxError> {
    if t.target != Target::Tessera {
        return Err(format!(
            "target `{:?}` does not speak the Tessera protocol",
            t.target
        )
        .into());
    }
    let opts = ClientOptions {
        token: t.token.clone(),
        client_name: "tessera-bench".into(),
        busy_poll: t.busy_poll,
        ..ClientOptions::default()
    };
    Ok(Client::connect(t.addr().as_str(), opts)?)
}

fn group_features(client: &mut Client, group: &str) -> Result<GroupFeatures, BoxError> {
    let (_, json) = client.registry_get()?;
    let registry: serde_json::Value = serde_json::from_str(&json)?;
    let features = registry["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == group))
        .and_then(|g| g["features"].as_array())
        .ok_or_else(|| {
            format!("the server has no group `{group}`: apply examples/news_feed/registry.toml")
        })?;
    let typed: Vec<(String, String)> = features
        .iter()
        .filter(|f| f["status"] == "active")
        .filter_map(|f| {
            Some((
                f["name"].as_str()?.to_string(),
                f["type"].as_str()?.to_string(),
            ))
        })
        .collect();
    GroupFeatures::from_typed(group, &typed)
}

/// A deterministic row of `features` for `(id, version)`.
fn row_values(f: &GroupFeatures, id: u64, version: u32) -> Vec<Value> {
    row_values_seeded(f, id, version, 0)
}

/// [`row_values`] of the dataset of `seed`.
pub(crate) fn row_values_seeded(f: &GroupFeatures, id: u64, version: u32, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(version) ^ seed.rotate_left(32),
    );
    let mut v = Vec::with_capacity(1 + f.ints.len() + f.floats.len() + 1);
    v.push(Value::Int64(id as i64));
    v.extend(
        f.ints
            .iter()
            .map(|_| Value::Int64(rng.gen_range(0..1_000_000))),
    );
    v.extend(f.floats.iter().map(|_| Value::Float64(rng.gen())));
    v.push(Value::Embedding(
        (0..f.embedding.1)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect(),
    ));
    v
}

/// Loads the dataset into the server.
pub fn load(args: &LoadArgs) -> Result<(), BoxError> {
    let t = &args.target;
    let started = Instant::now();
    let mut rows = 0u64;
    for (group, key, n) in [
        (USER_GROUP, USER_KEY, t.users),
        (ARTICLE_GROUP, ARTICLE_KEY, t.articles),
    ] {
        let features = Arc::new(t.features(group)?);
        let newest = args.versions - 1;
        let values = |id| row_values(&features, id, newest);
        if t.target == Target::Redis {
            let short = if group == USER_GROUP { "u" } else { "a" };
            rows += redis_peer::load(&t.addr(), t.layout, short, n, &features, values)?;
            continue;
        }
        if t.target == Target::Cassandra {
            let table = if group == USER_GROUP {
                "users"
            } else {
                "articles"
            };
            let (addr, conns) = (t.addr(), args.connections);
            rows += cassandra_peer::load(&addr, t.compression, table, n, &features, conns, values)?;
            continue;
        }
        let columns: Vec<String> = std::iter::once(key.to_string())
            .chain(features.ints.iter().cloned())
            .chain(features.floats.iter().cloned())
            .chain(std::iter::once(features.embedding.0.clone()))
            .collect();
        let workers: Vec<_> = (0..args.connections as u64)
            .map(|w| {
                let (t, features, columns) = (t.clone(), features.clone(), columns.clone());
                let (versions, connections) = (args.versions, args.connections as u64);
                std::thread::spawn(move || -> Result<u64, BoxError> {
                    let mut client = connect(&t)?;
                    let now = now_us();
                    let mut batch = Vec::with_capacity(LOAD_BATCH_ROWS);
                    let mut written = 0;
                    for id in (w..n).step_by(connections as usize) {
                        for version in 0..versions {
                            batch.push(PutRow {
                                event_ts: version_event_ts(now, id, version, versions),
                                values: row_values(&features, id, version),
                            });
                            if batch.len() == LOAD_BATCH_ROWS {
                                written += send(&mut client, group, &columns, &mut batch)?;
                            }
                        }
                    }
                    written += send(&mut client, group, &columns, &mut batch)?;
                    Ok(written)
                })
            })
            .collect();
        for w in workers {
            rows += w.join().map_err(|_| "a loader thread panicked")??;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {rows} rows in {secs:.1} s ({:.0} rows/s)",
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn send(
    client: &mut Client,
    group: &str,
    columns: &[String],
    batch: &mut Vec<PutRow>,
) -> Result<u64, BoxError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let put = Put {
        group: group.into(),
        columns: columns.to_vec(),
        rows: std::mem::take(batch),
    };
    client.put(&put)?;
    Ok(put.rows.len() as u64)
}

/// The event time of version `version` of `versions` of entity `id`:
/// spread over the span, the newest an hour old (inside every group's
/// TTL), a few µs apart between entities.
pub(crate) fn version_event_ts(now: i64, id: u64, version: u32, versions: u32) -> i64 {
    let age = i64::from(versions - 1 - version);
    now - HOUR_US - age * (SPAN_US / i64::from(versions)) + (id % 1000) as i64
}

/// Wall-clock time, µs since the epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The figures of a slate run.
#[derive(Serialize)]
struct SlateReport {
    target: String,
    connections: usize,
    mode: String,
    slates: u64,
    slates_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    server_cpu_us_per_slate: Option<f64>,
    client_cpu_us_per_slate: f64,
    rows_found_per_slate: f64,
    /// Rows written per second during the measurement (`mixed`).
    writes_per_s: Option<f64>,
    /// Open loop: how late the client sent its slates (from when each was
    /// due until it went out), p99. This lateness is in the latency too,
    /// as it must be, but it is the client's and the host's, not the
    /// server's: a thread that slept past its send time, or waited for the
    /// previous slates to free a connection.
    send_late_p99_us: Option<f64>,
}

/// One slate thread's measurements.
struct Tally {
    /// From each slate's due time (its send time, closed loop) to its reply.
    latency: Histogram<u64>,
    /// From due to sent.
    late: Histogram<u64>,
    slates: u64,
    found: u64,
}

impl Tally {
    fn new() -> Result<Tally, BoxError> {
        Ok(Tally {
            latency: Histogram::new(3)?,
            late: Histogram::new(3)?,
            slates: 0,
            found: 0,
        })
    }

    fn record(
        &mut self,
        due: Instant,
        sent: Instant,
        done: Instant,
        rows: u64,
    ) -> Result<(), BoxError> {
        self.latency
            .record(((done - due).as_nanos() as u64).max(1))?;
        self.late
            .record(((sent.saturating_duration_since(due)).as_nanos() as u64).max(1))?;
        self.slates += 1;
        self.found += rows;
        Ok(())
    }

    fn add(&mut self, other: &Tally) -> Result<(), BoxError> {
        self.latency.add(&other.latency)?;
        self.late.add(&other.late)?;
        self.slates += other.slates;
        self.found += other.found;
        Ok(())
    }
}

/// Runs slates and reports their latency and cost.
pub fn slate(args: &SlateArgs) -> Result<(), BoxError> {
    run_slates(args, 0)
}

/// Runs slates while article rows are written at `write_rate` rows/s.
pub fn mixed(args: &MixedArgs) -> Result<(), BoxError> {
    run_slates(&args.slate, args.write_rate)
}

fn run_slates(args: &SlateArgs, write_rate: u64) -> Result<(), BoxError> {
    let t = &args.target;
    let (user_features, article_features) = slate_features(t)?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let schedule = args
        .rate
        .map(|r| Arc::new(Schedule::new(Duration::from_secs_f64(1.0 / r))));
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let (t, measuring, stop) = (t.clone(), measuring.clone(), stop.clone());
            let (uf, af, zipf) = (user_features.clone(), article_features.clone(), args.zipf);
            let schedule = schedule.clone();
            std::thread::spawn(move || -> Result<Tally, BoxError> {
                let mut slates = SlateLoop::new(&t, &uf, &af, zipf, 42 + w as u64)?;
                let mut tally = Tally::new()?;
                while !stop.load(Ordering::Relaxed) {
                    let due = schedule
                        .as_deref()
                        .map_or_else(Instant::now, Schedule::take);
                    let sent = Instant::now();
                    let rows = slates.next_slate()?;
                    let done = Instant::now();
                    if measuring.load(Ordering::Relaxed) {
                        tally.record(due, sent, done, rows)?;
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    let written = Arc::new(AtomicU64::new(0));
    let writer = (write_rate > 0).then(|| {
        let (t, measuring, stop, written) =
            (t.clone(), measuring.clone(), stop.clone(), written.clone());
        let zipf = args.zipf;
        std::thread::spawn(move || {
            write_articles(&t, write_rate, zipf, &measuring, &stop, &written)
        })
    });
    std::thread::sleep(Duration::from_secs(args.warmup));
    let server_before = args.server_pid.map(process_cpu_us).transpose()?;
    let client_before = self_cpu_us();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.duration));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let server_after = args.server_pid.map(process_cpu_us).transpose()?;
    let client_after = self_cpu_us();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::new()?;
    for w in workers {
        tally.add(&w.join().map_err(|_| "a slate thread panicked")??)?;
    }
    let Tally {
        latency: hist,
        late,
        slates,
        found,
    } = tally;
    if let Some(w) = writer {
        w.join().map_err(|_| "the writer thread panicked")??;
    }
    let writes_per_s = (write_rate > 0).then(|| written.load(Ordering::Relaxed) as f64 / elapsed);
    let per_slate =
        |before: u64, after: u64| (after.saturating_sub(before)) as f64 / slates.max(1) as f64;
    let report = SlateReport {
        target: match (t.target, t.layout) {
            (Target::Tessera, _) => "tessera".into(),
            (Target::Redis, layout) => format!("redis ({layout:?} layout)").to_lowercase(),
            (Target::Cassandra, _) => {
                format!("cassandra 2.1.0 (compression {:?})", t.compression).to_lowercase()
            }
        },
        connections: args.connections,
        mode: match args.rate {
            Some(r) => format!("open loop at {r} slates/s"),
            None => "closed loop".into(),
        },
        slates,
        slates_per_s: slates as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
        p999_us: hist.value_at_quantile(0.999) as f64 / 1e3,
        max_us: hist.max() as f64 / 1e3,
        server_cpu_us_per_slate: server_before
            .zip(server_after)
            .map(|(b, a)| per_slate(b, a)),
        client_cpu_us_per_slate: per_slate(client_before, client_after),
        rows_found_per_slate: found as f64 / slates.max(1) as f64,
        writes_per_s,
        send_late_p99_us: args.rate.map(|_| late.value_at_quantile(0.99) as f64 / 1e3),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("| figure | value |\n|---|---|");
        println!(
            "| target | {} ({} connections, {}) |",
            report.target, report.connections, report.mode
        );
        println!("| slates/s | {:.0} |", report.slates_per_s);
        println!(
            "| p50 / p99 / p999 / max | {:.1} / {:.1} / {:.1} / {:.1} µs |",
            report.p50_us, report.p99_us, report.p999_us, report.max_us
        );
        if let Some(cpu) = report.server_cpu_us_per_slate {
            println!("| server CPU per slate | {cpu:.1} µs |");
        }
        println!(
            "| client CPU per slate | {:.1} µs |",
            report.client_cpu_us_per_slate
        );
        println!(
            "| rows found per slate | {:.1} of 51 |",
            report.rows_found_per_slate
        );
        if let Some(w) = report.writes_per_s {
            println!("| article rows written | {w:.0} /s |");
        }
        if let Some(l) = report.send_late_p99_us {
            println!("| sends late by (p99) | {l:.1} µs |");
        }
    }
    Ok(())
}

/// The features the standard slate projects: the user's int64, float64
/// and embedding features, and each article's float64 features and
/// embedding.
pub(crate) fn slate_features(t: &TargetArgs) -> Result<(Vec<String>, Vec<String>), BoxError> {
    let user_f = t.features(USER_GROUP)?;
    let article_f = t.features(ARTICLE_GROUP)?;
    let user_features = user_f
        .ints
        .iter()
        .chain(&user_f.floats)
        .chain(std::iter::once(&user_f.embedding.0))
        .cloned()
        .collect();
    let article_features = article_f
        .floats
        .iter()
        .chain(std::iter::once(&article_f.embedding.0))
        .cloned()
        .collect();
    Ok((user_features, article_features))
}

/// One connection sending standard slates of Zipf-chosen users and
/// articles: what each `slate` worker runs, one slate per call.
pub(crate) struct SlateLoop {
    client: Box<dyn SlateClient>,
    rng: StdRng,
    users: Zipf<f64>,
    articles: Zipf<f64>,
    n_users: u64,
    n_articles: u64,
}

impl SlateLoop {
    /// Connects to the target; `seed` picks the sequence of keys.
    pub(crate) fn new(
        t: &TargetArgs,
        uf: &[String],
        af: &[String],
        zipf: f64,
        seed: u64,
    ) -> Result<SlateLoop, BoxError> {
        Ok(SlateLoop {
            client: slate_client(t, uf.to_vec(), af.to_vec())?,
            rng: StdRng::seed_from_u64(seed),
            users: Zipf::new(t.users, zipf)?,
            articles: Zipf::new(t.articles, zipf)?,
            n_users: t.users,
            n_articles: t.articles,
        })
    }

    /// Sends one slate and waits for it; returns the rows found.
    pub(crate) fn next_slate(&mut self) -> Result<u64, BoxError> {
        let user = scatter(self.users.sample(&mut self.rng) as u64 - 1, self.n_users);
        let arts: Vec<u64> = (0..ARTICLES_PER_SLATE)
            .map(|_| {
                let rank = self.articles.sample(&mut self.rng) as u64 - 1;
                scatter(rank, self.n_articles)
            })
            .collect();
        self.client.slate(user, &arts)
    }
}

/// One connection's way of writing whole rows of one group.
pub(crate) trait RowWriter {
    /// Writes `(id, values)` rows (key first, then the group's features),
    /// waiting until all are acknowledged.
    fn write(&mut self, rows: &[(u64, Vec<Value>)]) -> Result<(), BoxError>;
}

/// Writes new versions of Zipf-chosen articles at `rate` rows/s until
/// `stop`, counting into `written` the rows acknowledged while `measuring`.
pub(crate) fn write_articles(
    t: &TargetArgs,
    rate: u64,
    zipf: f64,
    measuring: &AtomicBool,
    stop: &AtomicBool,
    written: &AtomicU64,
) -> Result<(), BoxError> {
    let features = t.features(ARTICLE_GROUP)?;
    let mut writer: Box<dyn RowWriter> = match t.target {
        Target::Tessera => Box::new(TesseraWriter {
            client: connect(t)?,
            columns: std::iter::once(ARTICLE_KEY.to_string())
                .chain(features.names())
                .collect(),
        }),
        Target::Redis => Box::new(RedisWriter::connect(&t.addr(), t.layout, "a", &features)?),
        Target::Cassandra => Box::new(CassandraWriter::connect(
            &t.addr(),
            t.compression,
            "articles",
            &features,
        )?),
    };
    let articles = Zipf::new(t.articles, zipf)?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut pacer = Pacer::new(Duration::from_secs_f64(
        MIXED_WRITE_BATCH as f64 / rate as f64,
    ));
    let mut version = 1_000;
    while !stop.load(Ordering::Relaxed) {
        pacer.wait();
        version += 1;
        let rows: Vec<(u64, Vec<Value>)> = (0..MIXED_WRITE_BATCH)
            .map(|_| {
                let id = scatter(articles.sample(&mut rng) as u64 - 1, t.articles);
                (id, row_values(&features, id, version))
            })
            .collect();
        writer.write(&rows)?;
        if measuring.load(Ordering::Relaxed) {
            written.fetch_add(rows.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Writes rows with `PUT`, event time now.
struct TesseraWriter {
    client: Client,
    columns: Vec<String>,
}

impl RowWriter for TesseraWriter {
    fn write(&mut self, rows: &[(u64, Vec<Value>)]) -> Result<(), BoxError> {
        let event_ts = now_us();
        let put = Put {
            group: ARTICLE_GROUP.into(),
            columns: self.columns.clone(),
            rows: rows
                .iter()
                .map(|(_, values)| PutRow {
                    event_ts,
                    values: values.clone(),
                })
                .collect(),
        };
        self.client.put(&put)?;
        Ok(())
    }
}

/// An open-loop schedule shared by a run's connections, as an
/// application's connection pool shares its callers' requests: the k-th
/// slate is due at `start + k × step`, and whichever connection is free
/// takes the next one. A slate that waits for a free connection counts
/// that wait in its latency (no coordinated omission), but one slow reply
/// holds up only its own connection, not a share of the schedule fixed to
/// it.
pub(crate) struct Schedule {
    start: Instant,
    step: Duration,
    taken: AtomicU64,
}

impl Schedule {
    pub(crate) fn new(step: Duration) -> Schedule {
        Schedule {
            start: Instant::now(),
            step,
            taken: AtomicU64::new(0),
        }
    }

    /// Takes the next slate of the schedule, sleeps until it is due and
    /// returns when it was due, the instant its latency counts from.
    pub(crate) fn take(&self) -> Instant {
        let k = self.taken.fetch_add(1, Ordering::Relaxed);
        let due = self.start + self.step.mul_f64(k as f64);
        sleep_until(due);
        due
    }
}

/// Sleeps until `t`, if it is still ahead.
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Open-loop pacing for one thread: one send every `step`, on a fixed
/// schedule, so a slow reply delays neither the next send nor the latency
/// count of the ones it held up (no coordinated omission).
pub(crate) struct Pacer {
    step: Duration,
    next: Instant,
}

impl Pacer {
    pub(crate) fn new(step: Duration) -> Pacer {
        Pacer {
            step,
            next: Instant::now(),
        }
    }

    /// Sleeps until the next send is due; returns when it was due, the
    /// instant its latency counts from.
    pub(crate) fn wait(&mut self) -> Instant {
        let due = self.next;
        sleep_until(due);
        self.next += self.step;
        due
    }

    /// [`Pacer::wait`], but a schedule more than `max_lag` behind (after a
    /// stall) starts again from now instead of catching up in a burst.
    pub(crate) fn wait_without_burst(&mut self, max_lag: Duration) {
        if Instant::now() > self.next + max_lag {
            self.restart();
        }
        self.wait();
    }

    /// Starts the schedule again from now (after a reconnect).
    pub(crate) fn restart(&mut self) {
        self.next = Instant::now();
    }
}

/// One connection's way of reading the standard slate.
pub(crate) trait SlateClient {
    /// Reads the slate of `user` and `articles`; returns the rows found.
    fn slate(&mut self, user: u64, articles: &[u64]) -> Result<u64, BoxError>;
}

/// A connection to the target, projecting `uf` of the user and `af` of
/// each article.
fn slate_client(
    t: &TargetArgs,
    uf: Vec<String>,
    af: Vec<String>,
) -> Result<Box<dyn SlateClient>, BoxError> {
    Ok(match t.target {
        Target::Tessera => Box::new(TesseraSlates {
            client: connect(t)?,
            request: slate_request(&uf, &af),
        }),
        Target::Redis => Box::new(RedisSlates::connect(&t.addr(), t.layout, uf, af)?),
        Target::Cassandra => Box::new(CassandraSlates::connect(
            &t.addr(),
            t.compression,
            &uf,
            &af,
        )?),
    })
}

/// Slates over the Tessera protocol. The request is built once; each
/// slate only rewrites its keys.
struct TesseraSlates {
    client: Client,
    request: SlateRequest,
}

impl SlateClient for TesseraSlates {
    fn slate(&mut self, user: u64, articles: &[u64]) -> Result<u64, BoxError> {
        let [u, a] = &mut self.request.parts[..] else {
            return Err("the slate request has two parts".into());
        };
        u.keys[0][0] = Value::Int64(user as i64);
        for (key, &id) in a.keys.iter_mut().zip(articles) {
            key[0] = Value::Int64(id as i64);
        }
        let reply = self.client.get_slate(&self.request)?;
        let parts = reply.parts().iter();
        Ok(parts
            .map(|p| (0..p.rows()).filter(|&i| p.found(i)).count() as u64)
            .sum())
    }
}

pub(crate) fn slate_request(uf: &[String], af: &[String]) -> SlateRequest {
    SlateRequest {
        as_of: None,
        known_at: None,
        parts: vec![
            SlatePart {
                group: USER_GROUP.into(),
                features: uf.to_vec(),
                keys: vec![vec![Value::Int64(0)]],
            },
            SlatePart {
                group: ARTICLE_GROUP.into(),
                features: af.to_vec(),
                keys: vec![vec![Value::Int64(0)]; ARTICLES_PER_SLATE],
            },
        ],
    }
}

/// Popularity rank to id, through a fixed permutation so hot ids are spread.
fn scatter(rank: u64, n: u64) -> u64 {
    rank.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n.max(1)
}

/// User + system CPU of process `pid`, µs, from `/proc/<pid>/stat`.
pub(crate) fn process_cpu_us(pid: u32) -> Result<u64, BoxError> {
    stat_cpu_us(&format!("/proc/{pid}/stat"))
}

/// User + system CPU, µs, from a `/proc/.../stat` file (a process's or a
/// thread's).
pub(crate) fn stat_cpu_us(path: &str) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
        + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000 / hz)
}

/// This process's user + system CPU, µs.
fn self_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}
