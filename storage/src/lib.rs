//! # tessera-storage
//!
//! Tessera's storage engine: a versioned LSM/hash hybrid for entity-keyed
//! feature rows. Every version of a row is kept with its event time; an
//! in-memory hash index makes "latest value of these keys" one probe per key
//! whatever the LSM depth, and the sorted, versioned SSTables make "value as
//! of time T" a seek.
//!
//! The crate knows nothing of the network. Its public surface is [`Engine`]
//! and the types it takes and returns.

#![deny(missing_docs)]

mod digest;
mod error;
pub mod fs;
mod options;
mod types;

pub mod cache;
pub mod hash_index;
pub mod manifest;
pub mod sstable;
pub mod wal;

pub use digest::Digest;
pub use error::{Error, Result};
pub use options::{
    Clock, Durability, Options, SystemClock, TableOptions, DEFAULT_BLOCK_BYTES,
    DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_MEMTABLE_BYTES, DEFAULT_SST_TARGET_BYTES,
};
pub use types::{
    check_limits, cmp_entity, cmp_internal, Entry, EntryRef, Kind, Row, SeqNo, TableId, Timestamp,
    Version, MAX_KEY_LEN, MAX_VALUE_LEN,
};
