//! The Cassandra peer: Apache Cassandra 2.1.0, a 2014 release (the only
//! Cassandra this machine's package registries carry; see
//! `bench/peers/cassandra.sh`), driven through the CQL v3 client of
//! [`crate::cql`].
//!
//! Each news-feed group is a table with the same columns: `id bigint`
//! primary key (the partition key), the int64 features as `bigint`, the
//! float64 features as `double` and the embedding as a `blob` of
//! little-endian float32s; one row per entity, its newest version. A slate
//! is 51 prepared `SELECT`s by partition key (the projected columns),
//! pipelined on one connection at consistency ONE. Tables are created
//! with LZ4 compression (Cassandra's default) or without, by name.

use crate::cql::{Cql, Prepared, ServerError, MAX_IN_FLIGHT};
use crate::net_bench::{BoxError, GroupFeatures, RowWriter as _};
use tessera_protocol::Value;

/// The benchmark's keyspace.
const KEYSPACE: &str = "tessera_bench";
/// Inserts in flight while loading.
const LOAD_IN_FLIGHT: usize = MAX_IN_FLIGHT;
// A slate's 51 selects are in flight at once, each on its own stream.
const _: () = assert!(crate::net_bench::ARTICLES_PER_SLATE < MAX_IN_FLIGHT);

/// Whether tables compress their SSTables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// LZ4, Cassandra's default.
    On,
    /// None.
    Off,
}

/// The table of `group` ("users" or "articles").
fn table(group: &str, compression: Compression) -> String {
    let suffix = match compression {
        Compression::On => "lz4",
        Compression::Off => "plain",
    };
    format!("{KEYSPACE}.{group}_{suffix}")
}

/// A cell's bytes in CQL's encoding (big-endian numbers, raw blobs).
fn cell(v: &Value) -> Vec<u8> {
    match v {
        Value::Int64(i) => i.to_be_bytes().to_vec(),
        Value::Float64(f) => f.to_be_bytes().to_vec(),
        Value::Embedding(e) => e.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => Vec::new(),
    }
}

/// Creates the keyspace and the table of `group` if missing.
fn create(
    cql: &mut Cql,
    group: &str,
    compression: Compression,
    f: &GroupFeatures,
) -> Result<(), BoxError> {
    cql.query(&format!(
        "CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    ))?;
    let t = table(group, compression);
    let columns: Vec<String> = f
        .ints
        .iter()
        .map(|n| format!("{n} bigint"))
        .chain(f.floats.iter().map(|n| format!("{n} double")))
        .chain(std::iter::once(format!("{} blob", f.embedding.0)))
        .collect();
    let sstable_compression = match compression {
        Compression::On => "LZ4Compressor",
        Compression::Off => "",
    };
    cql.query(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (id bigint PRIMARY KEY, {}) \
         WITH compression = {{'sstable_compression': '{sstable_compression}'}}",
        columns.join(", ")
    ))?;
    Ok(())
}

/// Loads `n` entities of `group` over `connections` connections;
/// `values(id)` gives the newest version's values, key first, then
/// `features.names()` in order.
pub fn load(
    addr: &str,
    compression: Compression,
    group: &str,
    n: u64,
    features: &GroupFeatures,
    connections: usize,
    values: impl Fn(u64) -> Vec<Value> + Sync,
) -> Result<u64, BoxError> {
    create(&mut Cql::connect(addr)?, group, compression, features)?;
    let connections = connections.max(1) as u64;
    std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..connections)
            .map(|w| {
                let values = &values;
                scope.spawn(move || -> Result<u64, BoxError> {
                    let mut writer = CassandraWriter::connect(addr, compression, group, features)?;
                    let ids: Vec<u64> = (w..n).step_by(connections as usize).collect();
                    for chunk in ids.chunks(LOAD_IN_FLIGHT) {
                        let rows: Vec<_> = chunk.iter().map(|&id| (id, values(id))).collect();
                        writer.write(&rows)?;
                    }
                    Ok(ids.len() as u64)
                })
            })
            .collect();
        loaders
            .into_iter()
            .map(|l| {
                l.join()
                    .map_err(|_| BoxError::from("a loader thread panicked"))?
            })
            .sum()
    })
}

/// Writes whole rows of one table (upserts), pipelined.
pub struct CassandraWriter {
    cql: Cql,
    insert: Prepared,
}

impl CassandraWriter {
    /// A writer of rows of `group` ("users" or "articles").
    pub fn connect(
        addr: &str,
        compression: Compression,
        group: &str,
        features: &GroupFeatures,
    ) -> Result<CassandraWriter, BoxError> {
        let mut cql = Cql::connect(addr)?;
        let names = features.names();
        let marks = vec!["?"; names.len() + 1].join(", ");
        let t = table(group, compression);
        let insert = cql.prepare(&format!(
            "INSERT INTO {t} (id, {}) VALUES ({marks})",
            names.join(", ")
        ))?;
        Ok(CassandraWriter { cql, insert })
    }
}

impl crate::net_bench::RowWriter for CassandraWriter {
    fn write(&mut self, rows: &[(u64, Vec<Value>)]) -> Result<(), BoxError> {
        for chunk in rows.chunks(LOAD_IN_FLIGHT) {
            let mut attempt = 1;
            while let Err(e) = self.write_chunk(chunk) {
                // Inserts of whole rows are idempotent: a chunk that timed
                // out in part is sent again whole.
                let transient = e
                    .downcast_ref::<ServerError>()
                    .is_some_and(ServerError::is_transient);
                if !transient || attempt == WRITE_ATTEMPTS {
                    return Err(e);
                }
                std::thread::sleep(RETRY_PAUSE * attempt);
                attempt += 1;
            }
        }
        Ok(())
    }
}

/// Times a chunk of inserts is sent before a transient error fails the
/// load (Cassandra 2.1 times out writes while it flushes and compacts on
/// this machine's two cores).
const WRITE_ATTEMPTS: u32 = 5;
/// Pause before the second attempt; it grows by as much each time.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

impl CassandraWriter {
    /// Sends one pipelined chunk of inserts and reads every reply; the
    /// first error reply, once all are read.
    fn write_chunk(&mut self, chunk: &[(u64, Vec<Value>)]) -> Result<(), BoxError> {
        for (_, row) in chunk {
            let cells: Vec<Vec<u8>> = row.iter().map(cell).collect();
            let refs: Vec<&[u8]> = cells.iter().map(Vec::as_slice).collect();
            self.cql.execute(&self.insert, &refs)?;
        }
        self.cql.flush()?;
        let mut first_error = None;
        for _ in chunk {
            match self.cql.receive_rows() {
                Ok(_) => {}
                // The reply was read whole: the connection is in step.
                Err(e) if e.is::<ServerError>() => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Slates against Cassandra.
pub struct CassandraSlates {
    cql: Cql,
    user: Prepared,
    article: Prepared,
}

impl CassandraSlates {
    /// Connects and prepares the two projections.
    pub fn connect(
        addr: &str,
        compression: Compression,
        user_fields: &[String],
        article_fields: &[String],
    ) -> Result<CassandraSlates, BoxError> {
        let mut cql = Cql::connect(addr)?;
        let mut select = |group: &str, fields: &[String]| {
            let t = table(group, compression);
            cql.prepare(&format!(
                "SELECT {} FROM {t} WHERE id = ?",
                fields.join(", ")
            ))
        };
        let user = select("users", user_fields)?;
        let article = select("articles", article_fields)?;
        Ok(CassandraSlates { cql, user, article })
    }
}

impl crate::net_bench::SlateClient for CassandraSlates {
    fn slate(&mut self, user: u64, articles: &[u64]) -> Result<u64, BoxError> {
        let id = (user as i64).to_be_bytes();
        self.cql.execute(&self.user, &[&id])?;
        for &a in articles {
            let id = (a as i64).to_be_bytes();
            self.cql.execute(&self.article, &[&id])?;
        }
        self.cql.flush()?;
        let mut found = 0;
        for _ in 0..=articles.len() {
            let (_, rows) = self.cql.receive_rows()?;
            found += u64::from(!rows.is_empty());
        }
        Ok(found)
    }
}
