//! `IMPORT_ROWS` batches: rows laid out column by column, in the layout of
//! one slate reply part (`docs/protocol.md`, "Slate and history replies"),
//! so a bulk import moves whole columns instead of one tagged value per
//! cell.
//!
//! A batch is a part whose rows are all present (the found bitmap is all
//! ones), whose `event_ts` array holds each row's event time, and whose
//! columns are the session's, in its order. It is validated once when
//! built or decoded; afterwards the server reads its cells straight from
//! the body, without a decoded value per cell.

use crate::body::Body;
use crate::error::DecodeError;
use crate::message::PutRow;
use crate::slate::{Column, ColumnError, ColumnWriter, PartView, PartWriter};
use crate::wire::Reader;

/// One column of a batch being built: its name, type tag (see
/// [`crate::tag`]) and embedding dimension (0 for other types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnSpec<'a> {
    /// The session's column name.
    pub name: &'a str,
    /// The values' type tag.
    pub tag: u8,
    /// The embedding dimension, else 0.
    pub dim: u32,
}

/// A validated batch of import rows; see the module docs.
#[derive(Clone, Debug)]
pub struct ImportBatch {
    body: Body,
    part: PartView,
}

impl PartialEq for ImportBatch {
    fn eq(&self, other: &ImportBatch) -> bool {
        self.body.bytes() == other.body.bytes()
    }
}

impl ImportBatch {
    /// Builds a batch of `event_ts.len()` rows: `fill(k, writer)` pushes
    /// one value per row into column `k` of `columns`.
    pub fn build(
        event_ts: &[i64],
        columns: &[ColumnSpec<'_>],
        mut fill: impl FnMut(usize, &mut ColumnWriter<'_>) -> Result<(), ColumnError>,
    ) -> Result<ImportBatch, ColumnError> {
        let too_many = |what: &str| ColumnError {
            column: String::new(),
            tag: 0,
            reason: format!("too many {what} for one batch"),
        };
        if event_ts.len() > crate::MAX_PUT_ROWS {
            return Err(too_many("rows"));
        }
        let n = u16::try_from(columns.len()).map_err(|_| too_many("columns"))?;
        // Room for the event times and about 8 bytes a value, so that
        // numeric columns never regrow the buffer.
        let mut out = Vec::with_capacity(event_ts.len() * 8 * (2 + columns.len()) + 4096);
        let mut part = PartWriter::single(&mut out, &vec![true; event_ts.len()], event_ts, n);
        for (k, spec) in columns.iter().enumerate() {
            let mut column = part.column(spec.name, spec.tag, spec.dim);
            fill(k, &mut column)?;
            column.finish()?;
        }
        let body = Body::copy_from(&out);
        ImportBatch::from_body(body).map_err(|e| ColumnError {
            column: String::new(),
            tag: 0,
            reason: format!("the batch does not decode: {e}"),
        })
    }

    /// A batch of `rows` (one value per column of `columns`, in order), for
    /// callers that hold rows; a value of another type than its column's
    /// is refused.
    pub fn from_rows(
        columns: &[ColumnSpec<'_>],
        rows: &[PutRow],
    ) -> Result<ImportBatch, ColumnError> {
        let event_ts: Vec<i64> = rows.iter().map(|r| r.event_ts).collect();
        ImportBatch::build(&event_ts, columns, |k, w| {
            rows.iter().try_for_each(|row| match row.values.get(k) {
                Some(v) => w.push(v),
                None => w.push_null(),
            })
        })
    }

    /// Validates a received batch.
    pub(crate) fn from_body(body: Body) -> Result<ImportBatch, DecodeError> {
        let mut r = Reader::new(body.bytes());
        let part = PartView::decode_one(&body, &mut r)?;
        r.finish()?;
        if part.rows() > crate::MAX_PUT_ROWS {
            return Err(DecodeError::LimitExceeded {
                what: "rows in a batch",
                found: part.rows(),
                limit: crate::MAX_PUT_ROWS,
            });
        }
        if !(0..part.rows()).all(|i| part.found(i)) {
            return Err(DecodeError::Malformed {
                what: "import batch",
                reason: "every row must be present (found)",
            });
        }
        Ok(ImportBatch { body, part })
    }

    /// The batch's bytes as they go on the wire.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.body.bytes()
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.part.rows()
    }

    /// Row `i`'s event time.
    pub fn event_ts(&self, i: usize) -> i64 {
        self.part.event_ts(i)
    }

    /// The columns, in the session's order.
    pub fn columns(&self) -> &[Column] {
        self.part.columns()
    }

    /// Bytes the batch takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.body.bytes().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{tag, Value};

    fn specs() -> [ColumnSpec<'static>; 3] {
        [
            ColumnSpec {
                name: "id",
                tag: tag::INT64,
                dim: 0,
            },
            ColumnSpec {
                name: "name",
                tag: tag::STRING,
                dim: 0,
            },
            ColumnSpec {
                name: "e",
                tag: tag::EMBEDDING,
                dim: 2,
            },
        ]
    }

    #[test]
    fn rows_go_in_and_come_out_by_column() {
        let rows: Vec<PutRow> = (0..10)
            .map(|i| PutRow {
                event_ts: 100 + i,
                values: vec![
                    Value::Int64(i),
                    if i % 3 == 0 {
                        Value::Null
                    } else {
                        Value::String(format!("n{i}"))
                    },
                    Value::Embedding(vec![i as f32, -1.5]),
                ],
            })
            .collect();
        let batch = ImportBatch::from_rows(&specs(), &rows).expect("builds");
        let again = ImportBatch::from_body(Body::copy_from(batch.bytes())).expect("decodes");
        assert_eq!(batch, again);
        assert_eq!(again.rows(), 10);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(again.event_ts(i), row.event_ts);
            for (k, v) in row.values.iter().enumerate() {
                assert_eq!(&again.columns()[k].value(i), v);
            }
        }
    }

    #[test]
    fn runs_of_fixed_values_equal_values_pushed_one_by_one() {
        let specs = [ColumnSpec {
            name: "id",
            tag: tag::INT64,
            dim: 0,
        }];
        for rows in [1usize, 7, 8, 9, 23, 64] {
            let ts: Vec<i64> = (0..rows as i64).collect();
            let bytes: Vec<u8> = ts.iter().flat_map(|v| (v * 3).to_le_bytes()).collect();
            // A run starting off a byte boundary, between single values.
            let by_runs = ImportBatch::build(&ts, &specs, |_, w| {
                w.push_fixed_le(&bytes[..8])?;
                if rows > 1 {
                    w.push_fixed_le_run(&bytes[8..(rows - 1) * 8])?;
                    w.push_fixed_le(&bytes[(rows - 1) * 8..])?;
                }
                Ok(())
            })
            .expect("builds");
            let one_by_one = ImportBatch::build(&ts, &specs, |_, w| {
                ts.iter().try_for_each(|v| w.push(&Value::Int64(v * 3)))
            })
            .expect("builds");
            assert_eq!(by_runs.bytes(), one_by_one.bytes(), "{rows} rows");
        }
        let too_many = ImportBatch::build(&[1], &specs, |_, w| w.push_fixed_le_run(&[0; 16]));
        assert!(too_many.is_err());
    }

    #[test]
    fn a_value_of_another_type_is_refused() {
        let rows = vec![PutRow {
            event_ts: 1,
            values: vec![Value::String("x".into()), Value::Null, Value::Null],
        }];
        assert!(ImportBatch::from_rows(&specs(), &rows).is_err());
    }

    #[test]
    fn every_truncation_is_refused() {
        let rows: Vec<PutRow> = (0..3)
            .map(|i| PutRow {
                event_ts: i,
                values: vec![Value::Int64(i), Value::String("s".into()), Value::Null],
            })
            .collect();
        let batch = ImportBatch::from_rows(&specs(), &rows).expect("builds");
        for n in 0..batch.bytes().len() {
            assert!(ImportBatch::from_body(Body::copy_from(&batch.bytes()[..n])).is_err());
        }
    }
}
