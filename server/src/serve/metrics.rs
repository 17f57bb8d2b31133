//! The server's metrics, exported in Prometheus text format at `/metrics`.
//!
//! Per operation: requests, errors by code, and a latency histogram (from
//! the moment a request's frame is read to the moment its reply is
//! queued). Per server: bytes in and out, open and refused connections.
//! Engine gauges (memtable bytes, SSTs per level, compaction backlog, WAL
//! fsyncs, block-cache hits) are read from the engine at each scrape.
//!
//! A request's counters and latency are pre-resolved handles: no label
//! lookup, no lock. Errors, rarer, look their labels up.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;
use tessera_protocol::{ErrorCode, Opcode};
use tessera_storage::EngineStats;

/// Latency buckets, seconds: 10 µs to about 2.6 s, doubling.
const LATENCY_BUCKET_START_S: f64 = 10e-6;
const LATENCY_BUCKET_FACTOR: f64 = 2.0;
const LATENCY_BUCKETS: usize = 19;

/// Handles for one operation.
struct OpMetrics {
    requests: IntCounter,
    latency: Histogram,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    ops: Vec<(Opcode, OpMetrics)>,
    errors: IntCounterVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    connections: IntGauge,
    refused: IntCounter,
    engine: EngineGauges,
}

/// Gauges refreshed from [`EngineStats`] at each scrape.
struct EngineGauges {
    /// Serializes scrapes: counters advance by the difference since the
    /// last one.
    updating: parking_lot::Mutex<()>,
    memtable_bytes: IntGauge,
    ssts: IntGaugeVec,
    level_bytes: IntGaugeVec,
    compaction_backlog: IntGauge,
    wal_fsyncs: IntCounter,
    wal_fsync_micros_total: IntCounter,
    wal_fsync_micros_max: IntGauge,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_bytes: IntGauge,
    index_entities: IntGauge,
    index_bytes: IntGauge,
    table_memory_bytes: IntGauge,
    read_only: IntGauge,
}

/// Errors building the metrics (only from duplicate or invalid names, which
/// the code fixes).
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new_custom(Some("tessera".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests executed, by operation (refused ones count only in errors_total).",
            ),
            &["op"],
        )?;
        let buckets = prometheus::exponential_buckets(
            LATENCY_BUCKET_START_S,
            LATENCY_BUCKET_FACTOR,
            LATENCY_BUCKETS,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a request's frame being read to its reply being queued.",
            )
            .buckets(buckets),
            &["op"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "Error replies, by operation and code."),
            &["op", "code"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        let ops = Opcode::ALL
            .iter()
            .map(|&op| {
                let m = OpMetrics {
                    requests: requests.with_label_values(&[op.name()]),
                    latency: latency.with_label_values(&[op.name()]),
                };
                (op, m)
            })
            .collect();
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let bytes_in = counter("bytes_in_total", "Bytes of frames received.")?;
        let bytes_out = counter("bytes_out_total", "Bytes of frames sent.")?;
        let refused = counter(
            "connections_refused_total",
            "Connections refused at the connection limit.",
        )?;
        let connections = IntGauge::new("connections_open", "Open client connections.")?;
        registry.register(Box::new(connections.clone()))?;
        let engine = EngineGauges::new(&registry)?;
        Ok(Metrics {
            registry,
            ops,
            errors,
            bytes_in,
            bytes_out,
            connections,
            refused,
            engine,
        })
    }

    fn op(&self, op: Opcode) -> Option<&OpMetrics> {
        self.ops.iter().find(|(o, _)| *o == op).map(|(_, m)| m)
    }

    /// Records one request of `op` that took `elapsed`.
    pub fn request(&self, op: Opcode, elapsed: Duration) {
        if let Some(m) = self.op(op) {
            m.requests.inc();
            m.latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Records an error reply.
    pub fn error(&self, op: Option<Opcode>, code: ErrorCode) {
        let op = op.map_or("unknown", Opcode::name);
        self.errors.with_label_values(&[op, code.name()]).inc();
    }

    /// Counts bytes received.
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// Counts bytes sent.
    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.inc_by(n as u64);
    }

    /// A connection opened.
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// A connection was refused.
    pub fn connection_refused(&self) {
        self.refused.inc();
    }

    /// The server's own counters (the engine's are not included) as JSON,
    /// for `STATS`: each metric by name, per label value where it has one;
    /// histograms as their count and sum.
    pub fn server_json(&self) -> serde_json::Value {
        use prometheus::proto::MetricType;
        let mut out = serde_json::Map::new();
        for family in self.registry.gather() {
            let name = family.get_name().trim_start_matches("tessera_").to_string();
            if name.starts_with("engine_") {
                continue;
            }
            let value_of = |m: &prometheus::proto::Metric| match family.get_field_type() {
                MetricType::COUNTER => serde_json::json!(m.get_counter().get_value()),
                MetricType::GAUGE => serde_json::json!(m.get_gauge().get_value()),
                MetricType::HISTOGRAM => serde_json::json!({
                    "count": m.get_histogram().get_sample_count(),
                    "sum_seconds": m.get_histogram().get_sample_sum(),
                }),
                _ => serde_json::Value::Null,
            };
            let metrics = family.get_metric();
            let value = match metrics {
                [only] if only.get_label().is_empty() => value_of(only),
                many => {
                    let by_label: serde_json::Map<String, serde_json::Value> = many
                        .iter()
                        .map(|m| {
                            let label = m
                                .get_label()
                                .iter()
                                .map(|l| l.get_value())
                                .collect::<Vec<_>>()
                                .join(",");
                            (label, value_of(m))
                        })
                        .collect();
                    serde_json::Value::Object(by_label)
                }
            };
            out.insert(name, value);
        }
        serde_json::Value::Object(out)
    }

    /// The Prometheus text exposition, with engine gauges from `stats`.
    pub fn render(&self, stats: &EngineStats) -> String {
        self.engine.update(stats);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric family the
        // encoder rejects would be a bug in this module, so render the rest.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl EngineGauges {
    fn new(registry: &Registry) -> Result<EngineGauges, MetricsError> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        // The engine's totals, mirrored as counters (they only grow).
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let by_level = |name: &str, help: &str| -> Result<IntGaugeVec, MetricsError> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["level"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(EngineGauges {
            updating: parking_lot::Mutex::new(()),
            memtable_bytes: gauge(
                "engine_memtable_bytes",
                "Bytes in the active and frozen memtables.",
            )?,
            ssts: by_level("engine_ssts", "SST files per LSM level.")?,
            level_bytes: by_level("engine_level_bytes", "SST bytes per LSM level.")?,
            compaction_backlog: gauge(
                "engine_compaction_backlog_bytes",
                "Bytes over their level's target, waiting for compaction.",
            )?,
            wal_fsyncs: counter("engine_wal_fsyncs_total", "WAL fsyncs since open.")?,
            wal_fsync_micros_total: counter(
                "engine_wal_fsync_micros_total",
                "Microseconds spent in WAL fsyncs since open (divide by fsyncs for the mean).",
            )?,
            wal_fsync_micros_max: gauge(
                "engine_wal_fsync_micros_max",
                "Longest WAL fsync since open, microseconds.",
            )?,
            cache_hits: counter(
                "engine_block_cache_hits_total",
                "Block-cache hits since open.",
            )?,
            cache_misses: counter(
                "engine_block_cache_misses_total",
                "Block-cache misses since open.",
            )?,
            cache_bytes: gauge("engine_block_cache_bytes", "Bytes of cached blocks.")?,
            index_entities: gauge("engine_index_entities", "Entities in the hash index.")?,
            index_bytes: gauge("engine_index_bytes", "Heap bytes of the hash index.")?,
            table_memory_bytes: gauge(
                "engine_table_memory_bytes",
                "Heap bytes the live SSTs keep loaded (indexes, bloom filters), cached blocks aside.",
            )?,
            read_only: gauge(
                "engine_read_only",
                "1 if the engine refuses writes after a failure.",
            )?,
        })
    }

    fn update(&self, s: &EngineStats) {
        let _one_scrape_at_a_time = self.updating.lock();
        let set = |g: &IntGauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        let advance = |c: &IntCounter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        set(&self.memtable_bytes, s.memtable_bytes);
        for (level, (&files, &bytes)) in s.ssts_per_level.iter().zip(&s.bytes_per_level).enumerate()
        {
            let level = level.to_string();
            set(&self.ssts.with_label_values(&[&level]), files);
            set(&self.level_bytes.with_label_values(&[&level]), bytes);
        }
        set(&self.compaction_backlog, s.compaction_backlog_bytes);
        advance(&self.wal_fsyncs, s.wal_fsyncs);
        advance(&self.wal_fsync_micros_total, s.wal_fsync_micros_total);
        set(&self.wal_fsync_micros_max, s.wal_fsync_micros_max);
        advance(&self.cache_hits, s.block_cache_hits);
        advance(&self.cache_misses, s.block_cache_misses);
        set(&self.cache_bytes, s.block_cache_bytes);
        set(&self.index_entities, s.index_entities);
        set(&self.index_bytes, s.index_bytes);
        set(&self.table_memory_bytes, s.table_memory_bytes);
        self.read_only.set(i64::from(s.read_only));
    }
}
