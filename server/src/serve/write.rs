//! `PUT` and `DELETE`: validated, all-or-nothing batches.
//!
//! Every row is validated and encoded before anything is written (the row
//! codec refuses the whole batch on any bad row, naming the row and the
//! column); the batch is then one engine commit, which is atomic and, with
//! `sync` durability, durable before the reply.

use super::service::{fail, storage_failure, Failure, Service};
use crate::row::key::encode_key;
use tessera_protocol::{CommitReply, Delete, ErrorCode, Put, MAX_PUT_ROWS};
use tessera_storage::WriteBatch;

fn check_rows(n: usize) -> Result<(), Failure> {
    if n > MAX_PUT_ROWS {
        return Err(fail(
            ErrorCode::LimitExceeded,
            format!("{n} rows in one batch; the limit is {MAX_PUT_ROWS}"),
        ));
    }
    if n == 0 {
        return Err(fail(ErrorCode::Validation, "the batch has no rows"));
    }
    Ok(())
}

/// Executes `PUT`.
pub fn put(service: &Service, put: &Put) -> Result<CommitReply, Failure> {
    check_rows(put.rows.len())?;
    let (schema, _) = service.schema(&put.group)?;
    let columns: Vec<&str> = put.columns.iter().map(String::as_str).collect();
    let invalid = |e: crate::row::EncodeError| {
        fail(ErrorCode::Validation, format!("group `{}`: {e}", put.group))
    };
    let writer = schema.writer(&columns).map_err(invalid)?;
    let values: Vec<&[tessera_protocol::Value]> =
        put.rows.iter().map(|r| r.values.as_slice()).collect();
    let encoded = writer.encode_batch(&values).map_err(invalid)?;
    let table = schema.group().table_id;
    let mut batch = WriteBatch::with_capacity(encoded.total_bytes() + 64 * put.rows.len());
    for ((key, row), source) in encoded.iter().zip(&put.rows) {
        batch
            .put(table, key, source.event_ts, row)
            .map_err(storage_failure)?;
    }
    service.commit(batch, put.rows.len())
}

/// Executes `DELETE`.
pub fn delete(service: &Service, del: &Delete) -> Result<CommitReply, Failure> {
    check_rows(del.keys.len())?;
    let (schema, _) = service.schema(&del.group)?;
    let table = schema.group().table_id;
    let mut batch = WriteBatch::new();
    let mut key = Vec::new();
    for (i, (event_ts, values)) in del.keys.iter().enumerate() {
        key.clear();
        encode_key(schema.keys(), values, &mut key).map_err(|e| {
            fail(
                ErrorCode::Validation,
                format!("group `{}`, key {i}: {e}", del.group),
            )
        })?;
        batch
            .delete(table, &key, *event_ts)
            .map_err(storage_failure)?;
    }
    service.commit(batch, del.keys.len())
}
