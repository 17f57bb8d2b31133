//! Feature values between Arrow arrays (Parquet files) and the protocol's
//! typed values, per the registry's types: the conversions of the
//! `tessera` binary's `import`, `export` and `pit-join` commands.
//!
//! - [`arrow_columns`]: reply columns to Arrow arrays (export, pit-join);
//! - [`arrow_rows`]: Arrow arrays to typed values and import batch columns
//!   (import, pit-join);
//! - [`import`]: the import's reader, a Parquet file's rows for a group.
//!
//! The binary is their user; they live in the library so that the fuzz
//! target `parquet_import` runs the import's reader.

pub mod arrow_columns;
pub mod arrow_rows;
pub mod import;
