//! The service: executes decoded requests against the engine and the
//! registry. It knows nothing of sockets; [`super::conn`] feeds it.
//!
//! It keeps, per registry version, each group's [`RowSchema`] and the
//! projections clients ask for, so a slate does not rebuild them. A
//! registry apply replaces the cache whole (a new version), and configures
//! the engine tables of changed groups; groups the apply did not touch keep
//! being served throughout.

use super::auth::Session;
use super::slate;
use crate::registry::{RegistryStore, RegistryVersion, Spec, Status, StoreError};
use crate::row::{Projection, RowSchema};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_protocol::{AuditEntry, CommitReply, ErrorBody, ErrorCode, Reply, Request, SpecFile};
use tessera_storage::Engine;

/// What a failed request answers.
pub type Failure = ErrorBody;

/// A failure with `code` and `message`.
pub fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    ErrorBody {
        code,
        message: message.into(),
    }
}

/// A storage error as the client sees it.
pub fn storage_failure(e: tessera_storage::Error) -> Failure {
    match e {
        tessera_storage::Error::ReadOnly(reason) => fail(ErrorCode::ReadOnly, reason),
        tessera_storage::Error::InvalidArgument(m) => fail(ErrorCode::Validation, m),
        other => fail(ErrorCode::Internal, other.to_string()),
    }
}

/// Group schemas of one registry version.
struct Schemas {
    version: RegistryVersion,
    groups: HashMap<String, RowSchema>,
}

/// Projections clients asked for, for one registry version: per group, the
/// feature lists seen (few per group: a lookup compares them in place, with
/// no allocation or hashing of the list).
#[derive(Default)]
struct Projections {
    version: RegistryVersion,
    by_group: HashMap<String, Vec<CachedProjection>>,
    count: usize,
}

/// A requested feature list and its resolved columns.
type CachedProjection = (Vec<String>, Arc<ReplyColumns>);

/// A projection and the reply columns it fills: names, wire type tags and
/// embedding dimensions, resolved once per registry version.
pub struct ReplyColumns {
    /// Decodes the requested features from stored rows.
    pub projection: Projection,
    /// `(name, tag, dim)` of each column, in request order.
    pub columns: Vec<(String, u8, u32)>,
}

/// Most projections cached per registry version: client-chosen feature
/// lists must not grow memory without bound.
const MAX_CACHED_PROJECTIONS: usize = 1024;

/// Resolves the columns of a projection of `features` (every active
/// feature when empty).
fn reply_columns(
    schema: &RowSchema,
    group: &str,
    features: &[String],
) -> Result<ReplyColumns, Failure> {
    let unknown = |e: String| fail(ErrorCode::UnknownFeature, format!("group `{group}`: {e}"));
    let names: Vec<&str> = if features.is_empty() {
        let active = schema
            .group()
            .features
            .iter()
            .filter(|f| f.status == Status::Active);
        active.map(|f| f.name.as_str()).collect()
    } else {
        features.iter().map(String::as_str).collect()
    };
    // Each feature at most once: with repeats, a small request could ask
    // for an unbounded reply.
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    if let Some(dup) = names.iter().find(|n| !seen.insert(**n)) {
        let msg = format!("group `{group}`: feature `{dup}` is asked for twice");
        return Err(fail(ErrorCode::Validation, msg));
    }
    let projection = schema
        .projection(&names)
        .map_err(|e| unknown(e.to_string()))?;
    let columns = names
        .iter()
        .map(|&name| {
            let feature = schema.group().feature(name);
            let (tag, dim) = super::slate::wire_type(
                feature
                    .map(|f| f.ty)
                    .ok_or_else(|| unknown(format!("unknown feature `{name}`")))?,
            );
            Ok((name.to_string(), tag, dim))
        })
        .collect::<Result<_, Failure>>()?;
    Ok(ReplyColumns {
        projection,
        columns,
    })
}

/// The engine and registry, shared by every connection.
pub struct Service {
    engine: Engine,
    /// Largest reply frame; building one stops as soon as it is passed.
    max_reply_bytes: usize,
    registry: RegistryStore,
    schemas: RwLock<Arc<Schemas>>,
    /// Serializes schema refreshes, so two applies finishing together
    /// cannot store an older registry's schemas after a newer one's.
    refreshing: parking_lot::Mutex<()>,
    projections: RwLock<Projections>,
}

impl Service {
    /// Serves `engine` with `registry`, configuring every group's table.
    pub fn new(
        engine: Engine,
        registry: RegistryStore,
        max_reply_bytes: usize,
    ) -> Result<Service, Failure> {
        let service = Service {
            max_reply_bytes,
            engine,
            registry,
            refreshing: parking_lot::Mutex::new(()),
            schemas: RwLock::new(Arc::new(Schemas {
                version: 0,
                groups: HashMap::new(),
            })),
            projections: RwLock::new(Projections::default()),
        };
        service.refresh_schemas(true)?;
        Ok(service)
    }

    /// Largest reply frame, header included.
    pub fn max_reply_bytes(&self) -> usize {
        self.max_reply_bytes
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Consumes the service, returning the engine (to close it).
    pub fn into_engine(self) -> Engine {
        self.engine
    }

    /// Rebuilds the schema cache if the registry moved on, configuring the
    /// engine tables of every group whose schema version changed (all of
    /// them when `all`).
    fn refresh_schemas(&self, all: bool) -> Result<(), Failure> {
        let _one_at_a_time = self.refreshing.lock();
        let registry = self.registry.registry();
        let old = self.schemas.read().clone();
        if !all && old.version >= registry.version() {
            return Ok(());
        }
        let mut groups = HashMap::new();
        for group in registry.groups() {
            let changed = old
                .groups
                .get(&group.name)
                .is_none_or(|s| s.group().schema_version != group.schema_version);
            if all || changed {
                self.engine
                    .configure_table(group.table_id, group.table_options())
                    .map_err(storage_failure)?;
            }
            if let Some(schema) = RowSchema::new(&registry, &group.name) {
                groups.insert(group.name.clone(), schema);
            }
        }
        *self.schemas.write() = Arc::new(Schemas {
            version: registry.version(),
            groups,
        });
        Ok(())
    }

    /// The schema of `group`, and the registry version it belongs to.
    pub(super) fn schema(&self, group: &str) -> Result<(RowSchema, RegistryVersion), Failure> {
        let schemas = self.schemas.read();
        let schema = schemas.groups.get(group).cloned();
        let schema = schema
            .ok_or_else(|| fail(ErrorCode::UnknownGroup, format!("unknown group `{group}`")))?;
        Ok((schema, schemas.version))
    }

    /// The reply columns of `features` of `group` (every active feature
    /// when empty), cached per registry version.
    pub(super) fn projection(
        &self,
        group: &str,
        features: &[String],
    ) -> Result<(RowSchema, Arc<ReplyColumns>), Failure> {
        let (schema, version) = self.schema(group)?;
        {
            let cache = self.projections.read();
            if cache.version == version {
                let cached = cache.by_group.get(group).into_iter().flatten();
                if let Some((_, p)) = cached.into_iter().find(|(f, _)| f.as_slice() == features) {
                    return Ok((schema, p.clone()));
                }
            }
        }
        let columns = Arc::new(reply_columns(&schema, group, features)?);
        let mut cache = self.projections.write();
        // A request that began before an apply must not replace the newer
        // version's cache with its own.
        if cache.version > version {
            return Ok((schema, columns));
        }
        // A full cache starts over: feature lists that clients really use
        // come back at once, and memory stays bounded (every entry holds at
        // most a group's features).
        if cache.version < version || cache.count >= MAX_CACHED_PROJECTIONS {
            *cache = Projections {
                version,
                ..Projections::default()
            };
        }
        cache.count += 1;
        let entry = (features.to_vec(), columns.clone());
        cache
            .by_group
            .entry(group.to_string())
            .or_default()
            .push(entry);
        Ok((schema, columns))
    }

    /// Executes a request other than `HELLO`; the reply is appended to
    /// `out` as a whole frame.
    pub fn execute(
        &self,
        session: &Session,
        request_id: u64,
        request: Request,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let reply = match request {
            Request::GetSlate(req) => return slate::get_slate(self, request_id, &req, out),
            Request::History(req) => return slate::history(self, request_id, &req, out),
            Request::PitLookup(req) => return slate::pit_lookup(self, request_id, &req, out),
            Request::Ping(payload) => Reply::Ping(payload),
            Request::Put(put) => Reply::Put(super::write::put(self, &put)?),
            Request::Delete(del) => Reply::Delete(super::write::delete(self, &del)?),
            Request::RegistryGet => self.registry_get()?,
            Request::RegistryPlan(files) => self.registry_plan(&files)?,
            Request::RegistryApply {
                expected_version,
                files,
            } => self.registry_apply(session, expected_version, &files)?,
            Request::RegistryHistory { limit } => self.registry_history(limit)?,
            Request::Hello(_) => {
                return Err(fail(ErrorCode::BadRequest, "HELLO was already sent"));
            }
            Request::Stats
            | Request::Export(_)
            | Request::ImportBegin(_)
            | Request::ImportRows(_)
            | Request::ImportCommit { .. }
            | Request::ImportAbort { .. } => {
                // `conn` runs these: import sessions belong to connections,
                // an export streams on its connection, and STATS adds the
                // server's counters.
                return Err(fail(
                    ErrorCode::Internal,
                    "a per-connection request reached the stateless path",
                ));
            }
        };
        tessera_protocol::encode_reply(request_id, &reply, out);
        Ok(())
    }

    /// Commits a batch and answers with its sequence.
    pub(super) fn commit(
        &self,
        batch: tessera_storage::WriteBatch,
        rows: usize,
    ) -> Result<CommitReply, Failure> {
        let info = self.engine.write(batch).map_err(storage_failure)?;
        Ok(CommitReply {
            seq: info.last_seq,
            ingest_ts: info.ingest_ts,
            rows: u32::try_from(rows).unwrap_or(u32::MAX),
        })
    }

    /// The engine's and the registry's figures, as `STATS` reports them.
    pub(super) fn stats_json(&self) -> serde_json::Value {
        let s = self.engine.stats();
        serde_json::json!({
            "registry_version": self.registry.registry().version(),
            "memtable_bytes": s.memtable_bytes,
            "ssts_per_level": s.ssts_per_level,
            "bytes_per_level": s.bytes_per_level,
            "compaction_backlog_bytes": s.compaction_backlog_bytes,
            "index_entities": s.index_entities,
            "index_bytes": s.index_bytes,
            "table_memory_bytes": s.table_memory_bytes,
            "block_cache_hits": s.block_cache_hits,
            "block_cache_misses": s.block_cache_misses,
            "block_cache_bytes": s.block_cache_bytes,
            "wal_fsyncs": s.wal_fsyncs,
            "wal_fsync_micros_total": s.wal_fsync_micros_total,
            "wal_fsync_micros_max": s.wal_fsync_micros_max,
            "write_amplification": s.write_amplification,
            "read_only": s.read_only,
            "flush_error": s.flush_error,
            "compaction_error": s.compaction_error,
        })
    }

    fn registry_get(&self) -> Result<Reply, Failure> {
        let registry = self.registry.registry();
        let entities: Vec<_> = registry.entities().map(|e| &**e).collect();
        let groups: Vec<_> = registry.groups().map(|g| &**g).collect();
        let json = serde_json::json!({
            "version": registry.version(),
            "entities": entities,
            "groups": groups,
        });
        Ok(Reply::RegistryGet {
            version: registry.version(),
            registry_json: json.to_string(),
        })
    }

    fn parse_spec(files: &[SpecFile]) -> Result<Spec, Failure> {
        Spec::parse(files.iter().map(|f| (f.name.clone(), f.text.as_str())))
            .map_err(|e| fail(ErrorCode::Validation, e.to_string()))
    }

    fn registry_plan(&self, files: &[SpecFile]) -> Result<Reply, Failure> {
        let spec = Self::parse_spec(files)?;
        let plan = self
            .registry
            .plan(&spec)
            .map_err(|e| fail(ErrorCode::Validation, e.to_string()))?;
        Ok(Reply::RegistryPlan {
            version: plan.base_version,
            changes: !plan.is_empty(),
            plan: plan.to_string(),
        })
    }

    fn registry_apply(
        &self,
        session: &Session,
        expected_version: u64,
        files: &[SpecFile],
    ) -> Result<Reply, Failure> {
        let spec = Self::parse_spec(files)?;
        let applied = self
            .registry
            .apply(&spec, expected_version, &session.identity)
            .map_err(|e| match e {
                StoreError::Validation(v) => fail(ErrorCode::Validation, v.to_string()),
                StoreError::Apply(a) => fail(ErrorCode::StaleRegistry, a.to_string()),
                other => fail(ErrorCode::Internal, other.to_string()),
            })?;
        // The apply is committed whatever follows: say so, and say loudly if
        // serving could not pick it up.
        let mut plan = applied.plan.to_string();
        if let Err(e) = self.refresh_schemas(false) {
            tracing::error!(error = %e.message, "an applied registry change could not be loaded for serving");
            plan.push_str(&format!(
                "\nwarning: applied, but the server could not load it for serving: {}",
                e.message
            ));
        }
        Ok(Reply::RegistryApply {
            version: applied.registry.version(),
            plan,
        })
    }

    fn registry_history(&self, limit: u32) -> Result<Reply, Failure> {
        let records = self
            .registry
            .history()
            .map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        let take = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let entries = records
            .into_iter()
            .rev()
            .take(take)
            .map(|r| AuditEntry {
                version: r.version,
                time_us: r.time_us,
                identity: r.identity,
                diff: r.plan.to_string(),
            })
            .collect();
        Ok(Reply::RegistryHistory(entries))
    }
}
