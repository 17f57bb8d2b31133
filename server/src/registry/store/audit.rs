//! The audit log: one checksummed record per applied change, with its time,
//! the identity that applied it and its plan.
//!
//! It is also the registry's commit log. A change is committed once its
//! record is durable (appended and fsynced); the registry file is a
//! checkpoint of the state the records lead to, and records newer than the
//! checkpoint are replayed at startup. Record `i` (counting from 1) holds
//! the change that made registry version `i`.
//!
//! Layout (integers little-endian; `docs/registry.md` has the tables): a
//! 16-byte header (magic `TSAU`, format version 1, xxh3_64 of the first 8
//! bytes), then records back to back, each a u32 payload length, the
//! payload's xxh3_64 and the payload, an [`AuditRecord`] as JSON. The file is
//! created with its header through a temporary file and a rename, so it
//! never exists without one.
//!
//! A crash during an append leaves a torn last record, which was never
//! acknowledged: a record that reaches the end of the file and is incomplete
//! or fails its checksum, or a tail of zero bytes. It is skipped, and cut
//! from the file once the store has checked everything else. Damage
//! anywhere else is refused with the file and offset.

use super::{write_atomically, StoreError};
use crate::registry::plan::Plan;
use crate::registry::state::RegistryVersion;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// Name of the audit log in the store's directory.
pub const AUDIT_FILE: &str = "AUDIT";
/// Name of the file a new audit log's header is written to before the rename.
pub const AUDIT_TMP_FILE: &str = "AUDIT.tmp";
/// First four bytes of the file: ASCII `TSAU` read as a little-endian u32.
pub const AUDIT_MAGIC: u32 = u32::from_le_bytes(*b"TSAU");
/// The audit log format this code reads and writes.
pub const AUDIT_FORMAT_VERSION: u32 = 1;

/// Magic, format version, and the xxh3_64 of both.
const HEADER_LEN: usize = 16;
/// Payload length u32 and payload xxh3_64.
const RECORD_HEADER_LEN: usize = 4 + 8;

/// One applied change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The registry version the change produced.
    pub version: RegistryVersion,
    /// When it was applied, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// Who applied it, as authenticated by the server.
    pub identity: String,
    /// What it changed.
    pub plan: Plan,
}

/// A record and where it starts in the file.
pub(crate) struct Located {
    pub offset: u64,
    pub record: AuditRecord,
}

/// The open audit log, positioned for appends.
pub(crate) struct AuditLog {
    path: PathBuf,
    file: File,
    /// Length of the valid records; bytes after it are a torn record.
    valid_len: u64,
}

impl AuditLog {
    /// Creates an empty audit log in `dir`.
    pub fn create(dir: &Path) -> Result<AuditLog, StoreError> {
        write_atomically(dir, AUDIT_FILE, AUDIT_TMP_FILE, &header())?;
        let path = dir.join(AUDIT_FILE);
        let file = open_for_append(&path)?;
        Ok(AuditLog {
            path,
            file,
            valid_len: HEADER_LEN as u64,
        })
    }

    /// Opens the audit log in `dir` and reads every record; `None` if there
    /// is no log. Changes nothing on disk: a torn last record is skipped
    /// here and cut off by [`AuditLog::drop_torn_tail`].
    pub fn open(dir: &Path) -> Result<Option<(AuditLog, Vec<Located>)>, StoreError> {
        let path = dir.join(AUDIT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        let (records, valid_len) = parse(&path, &bytes)?;
        let file = open_for_append(&path)?;
        Ok(Some((
            AuditLog {
                path,
                file,
                valid_len,
            },
            records,
        )))
    }

    /// Cuts a torn last record off the file, so appends follow the last
    /// valid record.
    pub fn drop_torn_tail(&mut self) -> Result<(), StoreError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| StoreError::io("stat", &self.path, e))?
            .len();
        if len == self.valid_len {
            return Ok(());
        }
        tracing::warn!(
            path = %self.path.display(),
            offset = self.valid_len,
            dropped_bytes = len - self.valid_len,
            "the audit log ends in a torn record from an interrupted apply; dropping it"
        );
        self.file
            .set_len(self.valid_len)
            .map_err(|e| StoreError::io("truncate", &self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| StoreError::io("fsync", &self.path, e))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and makes it durable. After an error the log must not
    /// be appended to again: whether the record is durable is unknown.
    pub fn append(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        let payload = serde_json::to_vec(record)
            .map_err(|e| StoreError::io("encode", &self.path, e.into()))?;
        let len = u32::try_from(payload.len()).map_err(|_| StoreError::TooLarge {
            bytes: payload.len(),
        })?;
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        self.file
            .write_all(&buf)
            .map_err(|e| StoreError::io("append", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fsync", &self.path, e))
    }

    /// Every record in the file.
    pub fn read_all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let bytes = std::fs::read(&self.path).map_err(|e| StoreError::io("read", &self.path, e))?;
        let (records, _) = parse(&self.path, &bytes)?;
        Ok(records.into_iter().map(|l| l.record).collect())
    }
}

fn open_for_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&AUDIT_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&AUDIT_FORMAT_VERSION.to_le_bytes());
    let checksum = xxh3_64(&h[0..8]);
    h[8..16].copy_from_slice(&checksum.to_le_bytes());
    h
}

/// The records of an audit log and the length of its valid prefix.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Located>, u64), StoreError> {
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    if bytes.get(..HEADER_LEN) != Some(&header()[..]) {
        return Err(corrupt(
            0,
            "bad header: not an audit log of format version 1".into(),
        ));
    }
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < RECORD_HEADER_LEN || rest.iter().all(|&b| b == 0) {
            break; // torn: an incomplete record header, or unwritten space
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&rest[4..12]);
        let stored = u64::from_le_bytes(sum);
        let end = RECORD_HEADER_LEN + len;
        let Some(payload) = rest.get(RECORD_HEADER_LEN..end) else {
            break; // torn: the payload runs past the end of the file
        };
        let computed = xxh3_64(payload);
        if stored != computed {
            if end == rest.len() {
                break; // torn: the last record, partly written
            }
            return Err(StoreError::Checksum {
                path: path.to_owned(),
                offset: pos as u64,
                stored,
                computed,
            });
        }
        let record = serde_json::from_slice(payload)
            .map_err(|e| corrupt(pos, format!("record does not decode: {e}")))?;
        records.push(Located {
            offset: pos as u64,
            record,
        });
        pos += end;
    }
    Ok((records, pos as u64))
}
