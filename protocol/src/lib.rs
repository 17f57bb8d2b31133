//! Tessera's wire protocol and its Rust client.
//!
//! `docs/protocol.md` is the specification; this crate implements it for
//! both sides and knows nothing of storage:
//! - [`frame`]: the 24-byte frame header, flags and frame building;
//! - [`message`]: request and reply types and their body codecs;
//! - [`slate`]: columnar slate and history replies, written in place by
//!   the server and read without copying by the client;
//! - [`value`]: typed feature and key values;
//! - [`Client`] and [`Pool`]: a blocking client with pipelining, timeouts
//!   and reconnection, and a pool of them.
//!
//! Decoding never panics, and what it allocates is bounded by the frame
//! size and by the counts of [`limits`] (rows, values and keys per batch),
//! every one a named constant.

#![deny(missing_docs)]

mod body;
mod client;
mod error;
pub mod frame;
mod import_batch;
pub mod limits;
pub mod message;
mod offline;
mod op;
mod pool;
pub mod slate;
pub mod value;
mod wire;

pub use body::Body;
pub use client::{
    Client, ClientError, ClientOptions, ExportStream, IMPORT_COMMIT_TIMEOUT, PIPELINE_WINDOW_BYTES,
    PIPELINE_WINDOW_REQUESTS,
};
pub use error::{DecodeError, EncodeError, ErrorBody, ErrorCode};
pub use frame::{
    begin_frame, begin_reply_frame, finish_frame, flags, FrameError, FrameHeader, FrameStart,
    MAGIC, PROTOCOL_VERSION,
};
pub use import_batch::{ColumnSpec, ImportBatch};
pub use limits::*;
pub use message::{
    decode_error, encode_error, encode_reply, encode_request, AuditEntry, CommitReply, Delete,
    Hello, HelloReply, HistoryRequest, ImportBegin, ImportBegun, ImportCommitted, ImportRows,
    ImportRowsReply, Put, PutRow, Rejection, Reply, Request, SlatePart, SlateRequest, SpecFile,
};
pub use offline::{ExportRange, ExportRequest, PitLookup};
pub use op::{Opcode, Role};
pub use pool::{Pool, Pooled, POOL_IDLE_MAX};
pub use slate::{
    Column, ColumnError, ColumnWriter, HistoryReply, PartView, PartWriter, SlateReply,
    SlateReplyWriter,
};
pub use value::{tag, Key, Value};
