//! # tessera-server
//!
//! The server side of Tessera, as a library the `tessera` binary builds on:
//! - [`registry`]: typed entities and feature groups, their validation,
//!   evolution rules, durable storage and audit log;
//! - [`row`]: the typed row codec that turns feature values into the bytes
//!   the storage engine keeps, per a group's schema;
//! - [`serve`]: the network server (`tessera serve`);
//! - [`columnar`]: Arrow and Parquet conversions for the offline commands.

#![deny(missing_docs)]

pub mod columnar;
pub mod registry;
pub mod row;
pub mod serve;
