//! # tessera-storage
//!
//! Tessera's storage engine: a versioned LSM/hash hybrid for entity-keyed
//! feature rows. Every version of a row is kept with its event time; an
//! in-memory hash index makes "latest value of these keys" one probe per key
//! whatever the LSM depth, and the sorted, versioned SSTables make "value as
//! of time T" a seek.
//!
//! The crate knows nothing of the network. Its public surface is [`Engine`],
//! [`Snapshot`], [`WriteBatch`], [`Options`] and the types they take and
//! return. `docs/design.md` explains the architecture; `docs/format.md` gives
//! every file layout.

#![deny(missing_docs)]

mod batch;
mod bulk_read;
mod check;
mod codec;
mod commit;
mod compaction;
mod digest;
mod engine;
mod error;
mod flush;
mod ingest;
mod memtable;
mod merge;
mod options;
mod prefetch;
mod read;
mod recovery;
mod snapshot;
mod stats;
mod types;
mod version;

pub mod cache;
pub mod fs;
pub mod hash_index;
pub mod manifest;
pub mod sstable;
pub mod wal;

pub use batch::{BatchOp, WriteBatch};
pub use check::IndexReport;
pub use commit::{CommitInfo, MAX_GROUP_BYTES};
pub use digest::Digest;
pub use engine::Engine;
pub use error::{Error, Result};
pub use ingest::{Ingest, IngestInfo};
pub use options::{
    Clock, Durability, Options, SystemClock, TableOptions, DEFAULT_BLOCK_BYTES,
    DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_INGEST_BLOCK_BYTES, DEFAULT_INGEST_RUN_BYTES,
    DEFAULT_MEMTABLE_BYTES, DEFAULT_SST_TARGET_BYTES, DEFAULT_ZSTD_LEVEL,
};
pub use read::{AsOfQuery, TableKey, MAX_BATCH_KEYS};
pub use snapshot::{AsOfScan, Scan, Snapshot};
pub use stats::EngineStats;
pub use types::{
    check_limits, cmp_entity, cmp_internal, Entry, EntryRef, Kind, Row, RowRef, SeqNo, TableId,
    Timestamp, Version, MAX_KEY_LEN, MAX_VALUE_LEN,
};
pub use version::NUM_LEVELS;
