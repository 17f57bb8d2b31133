//! The durable registry: a directory holding the registry file (a
//! checkpoint) and the audit log (the commit log), and the current registry
//! in memory.
//!
//! An apply validates the spec against the current registry, checks the
//! version the caller expected (optimistic concurrency: a stale apply fails
//! and changes nothing), appends and fsyncs its audit record (the commit
//! point), publishes the new registry, then rewrites the registry file.
//! Applies are serialized; readers take the current registry without
//! waiting for them, and keep the version they took for as long as they
//! hold it.
//!
//! Startup never serves a registry it cannot vouch for. A registry file or
//! audit log that is damaged (bad magic, version, length, checksum or JSON)
//! or decodes to a registry that fails validation is refused: [`open`]
//! fails with an error naming the file and the byte offset or the broken
//! rules, and the server does not start. Nothing is repaired silently except
//! a torn last audit record, which no client was told had committed.
//! Recovery from a damaged registry file is to move it aside: the registry
//! is then rebuilt by replaying the audit log.
//!
//! [`open`]: RegistryStore::open

mod audit;
mod registry_file;

pub use audit::{AuditRecord, AUDIT_FILE, AUDIT_FORMAT_VERSION, AUDIT_MAGIC};
pub use registry_file::{REGISTRY_FILE, REGISTRY_FORMAT_VERSION, REGISTRY_MAGIC};

use super::plan::{plan, Plan};
use super::spec::Spec;
use super::state::{ApplyError, Registry, RegistryVersion};
use super::validate::ValidationError;
use audit::{AuditLog, Located};
use parking_lot::{Mutex, RwLock};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the durable registry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system I/O call failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file's structure is damaged.
    #[error("corruption in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored checksum does not match the bytes read.
    #[error(
        "checksum mismatch in {} at offset {offset}: stored {stored:#018x}, computed {computed:#018x}",
        path.display()
    )]
    Checksum {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the checksummed region (or of its checksum).
        offset: u64,
        /// The checksum in the file.
        stored: u64,
        /// The checksum of the bytes read.
        computed: u64,
    },
    /// A registry file (or the registry rebuilt from the audit log) decodes
    /// but breaks validation rules.
    #[error("registry in {} fails validation: {problems}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The broken rules.
        problems: ValidationError,
    },
    /// The spec breaks validation rules; nothing was applied.
    #[error("the spec was not applied: {0}")]
    Validation(#[from] ValidationError),
    /// The change was made against another registry version; nothing was
    /// applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A change too large for one audit record.
    #[error("the change encodes to {bytes} bytes; an audit record holds at most 4 GiB")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
    },
    /// An earlier audit append failed, so whether that change committed is
    /// unknown until a restart reads the log back; applies are refused.
    #[error("the registry refuses changes until restarted: {0}")]
    Failed(String),
}

impl StoreError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// The result of an apply.
#[derive(Clone, Debug)]
pub struct Applied {
    /// What changed (empty if the spec matched the registry).
    pub plan: Plan,
    /// The registry after the change.
    pub registry: Arc<Registry>,
}

/// The registry, stored durably in one directory. One process opens a
/// directory at a time (the server holds its data directory's lock).
pub struct RegistryStore {
    dir: PathBuf,
    current: RwLock<Arc<Registry>>,
    writer: Mutex<Writer>,
}

/// The state applies serialize on.
struct Writer {
    log: AuditLog,
    /// Set when an append failed; see [`StoreError::Failed`].
    failed: Option<String>,
}

impl RegistryStore {
    /// Opens (or creates) the registry stored in `dir`: reads the registry
    /// file, replays newer audit records, and validates the result. Any
    /// damage or broken rule is an error naming the file; see the module
    /// documentation.
    pub fn open(dir: impl AsRef<Path>) -> Result<RegistryStore, StoreError> {
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create dir", &dir, e))?;
        let checkpoint = registry_file::read(&dir)?.unwrap_or_default();
        let checkpoint_version = checkpoint.version();
        let (mut log, records) = match AuditLog::open(&dir)? {
            Some(opened) => opened,
            None if checkpoint_version == 0 => (AuditLog::create(&dir)?, Vec::new()),
            None => {
                let reason = format!("the audit log is missing but the registry file is at version {checkpoint_version}");
                return Err(StoreError::Corrupt {
                    path: dir.join(AUDIT_FILE),
                    offset: 0,
                    reason,
                });
            }
        };
        let registry = replay(checkpoint, &records, log.path())?;
        // Only now, with everything checked, is anything on disk changed.
        log.drop_torn_tail()?;
        if registry.version() > checkpoint_version {
            tracing::warn!(
                dir = %dir.display(),
                checkpoint = checkpoint_version,
                version = registry.version(),
                "the registry file is behind the audit log; replayed the log and rewrote the file"
            );
            registry_file::write(&dir, &registry)?;
        }
        Ok(RegistryStore {
            dir,
            current: RwLock::new(Arc::new(registry)),
            writer: Mutex::new(Writer { log, failed: None }),
        })
    }

    /// The current registry. Holding it never blocks applies.
    pub fn registry(&self) -> Arc<Registry> {
        self.current.read().clone()
    }

    /// Validates `spec` against the current registry and lists what applying
    /// it would change.
    pub fn plan(&self, spec: &Spec) -> Result<Plan, ValidationError> {
        plan(&self.registry(), spec)
    }

    /// Applies `spec` if the registry is still at `expected_version`,
    /// recording `identity` in the audit log. All or nothing: after any
    /// error the registry is unchanged, except when appending the audit
    /// record fails: the change may then have reached the disk, the store
    /// refuses further applies ([`StoreError::Failed`]), and the next start
    /// reads the log back to settle it. A spec that changes nothing succeeds
    /// without a new version.
    pub fn apply(
        &self,
        spec: &Spec,
        expected_version: RegistryVersion,
        identity: &str,
    ) -> Result<Applied, StoreError> {
        let mut writer = self.writer.lock();
        if let Some(reason) = &writer.failed {
            return Err(StoreError::Failed(reason.clone()));
        }
        let current = self.registry();
        if current.version() != expected_version {
            return Err(ApplyError::Stale {
                expected: expected_version,
                current: current.version(),
            }
            .into());
        }
        let plan = plan(&current, spec)?;
        if plan.is_empty() {
            return Ok(Applied {
                plan,
                registry: current,
            });
        }
        let next = Arc::new(current.apply(&plan)?);
        let record = AuditRecord {
            version: next.version(),
            time_us: now_us(),
            identity: identity.to_owned(),
            plan,
        };
        if let Err(e) = writer.log.append(&record) {
            writer.failed = Some(e.to_string());
            return Err(e);
        }
        *self.current.write() = next.clone();
        // The change is committed; a stale checkpoint is caught up at the
        // next open by replaying the log, so a failure here is not the
        // caller's.
        if let Err(e) = registry_file::write(&self.dir, &next) {
            tracing::warn!(error = %e, "registry file not rewritten; the next open replays the audit log");
        }
        Ok(Applied {
            plan: record.plan,
            registry: next,
        })
    }

    /// Every applied change, oldest first, read from the audit log.
    pub fn history(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.writer.lock().log.read_all()
    }
}

/// `checkpoint` brought up to date with the audit records. Record `i`
/// (from 1) must produce version `i`; the log must reach at least the
/// checkpoint's version.
fn replay(
    checkpoint: Registry,
    records: &[Located],
    log_path: &Path,
) -> Result<Registry, StoreError> {
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt {
        path: log_path.to_owned(),
        offset,
        reason,
    };
    for (i, located) in records.iter().enumerate() {
        let expected = i as RegistryVersion + 1;
        if located.record.version != expected {
            let reason = format!(
                "record {expected} is for registry version {}",
                located.record.version
            );
            return Err(corrupt(located.offset, reason));
        }
    }
    let logged = records.len() as RegistryVersion;
    if logged < checkpoint.version() {
        let reason = format!(
            "the audit log ends at registry version {logged} but the registry file is at version {}: records are missing",
            checkpoint.version()
        );
        return Err(corrupt(0, reason));
    }
    let mut registry = checkpoint;
    let newer = &records[registry.version() as usize..];
    for located in newer {
        registry = registry
            .apply(&located.record.plan)
            .map_err(|e| corrupt(located.offset, format!("record does not replay: {e}")))?;
    }
    if !newer.is_empty() {
        registry_file::check(log_path, &registry)?;
    }
    Ok(registry)
}

/// Writes `bytes` to `dir/name` atomically: to `dir/tmp_name` first, fsync,
/// rename over `name`, fsync the directory.
fn write_atomically(
    dir: &Path,
    name: &str,
    tmp_name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tmp = dir.join(tmp_name);
    let mut file = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| StoreError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", &tmp, e))?;
    drop(file);
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename", &tmp, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync dir", dir, e))
}

fn now_us() -> i64 {
    // A clock before 1970 records as 0 rather than failing the apply.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
