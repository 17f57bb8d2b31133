//! Stored rows to a reply's feature columns.
//!
//! A reply is column-major and stored rows are row-major, so rows are
//! transposed on the way. Each stored row is read once, in order, and its
//! values are gathered into one buffer per column: fixed-width values
//! (numbers, timestamps, embeddings) are copied there, little-endian as
//! stored and as the wire wants them; variable-length ones are kept by
//! reference. Each column is then written in one pass over its own
//! buffer, its null-free stretches in one copy each. Reading each row once
//! matters for long replies (an export chunk, a `PIT_LOOKUP`): their rows
//! do not fit the CPU cache, and a pass per column would miss it once per
//! value.

use super::service::{fail, Failure};
use super::slate::PartPlan;
use crate::registry::FeatureType;
use crate::row::RawValue;
use tessera_protocol::{ColumnError, ColumnWriter, ErrorCode, PartWriter, Value, HEADER_LEN};

/// Writes the projected columns of `rows` (`None`: not found), failing
/// with `LimitExceeded` once the reply passes `max_reply_bytes`.
pub(super) fn write_columns<'r>(
    part: &mut PartWriter<'_>,
    plan: &PartPlan,
    rows: impl ExactSizeIterator<Item = Option<&'r [u8]>>,
    max_reply_bytes: usize,
) -> Result<(), Failure> {
    let gathered = gather(plan, rows)?;
    for ((name, tag, dim), values) in plan.reply.columns.iter().zip(&gathered) {
        let mut column = part.column(name, *tag, *dim);
        values.write(name, &mut column)?;
        column.finish().map_err(column_failure)?;
        // Stop as soon as the reply cannot fit, not after building it all.
        if part.body_len() + HEADER_LEN > max_reply_bytes {
            let msg = format!("the reply would be over the frame limit of {max_reply_bytes} bytes; ask for fewer keys or features");
            return Err(fail(ErrorCode::LimitExceeded, msg));
        }
    }
    Ok(())
}

/// Reads every row once, sorting its values into their columns.
fn gather<'r>(
    plan: &PartPlan,
    rows: impl ExactSizeIterator<Item = Option<&'r [u8]>>,
) -> Result<Vec<Gathered<'r>>, Failure> {
    let n = rows.len();
    let mut columns: Vec<Gathered<'r>> = (0..plan.reply.columns.len())
        .map(|_| Gathered::with_rows(n))
        .collect();
    for (row, stored) in rows.enumerate() {
        let Some(bytes) = stored else {
            columns.iter_mut().for_each(|c| c.nulls.push(row));
            continue;
        };
        let decoded = plan.reply.projection.visit_raw(bytes, |i, value| {
            if let Some(column) = columns.get_mut(i) {
                column.push(row, value);
            }
        });
        decoded.map_err(|e| {
            let group = &plan.schema.group().name;
            let msg = format!("group `{group}`: a stored row does not decode: {e}");
            fail(ErrorCode::Internal, msg)
        })?;
    }
    Ok(columns)
}

/// One column's values, in row order within each kind.
struct Gathered<'r> {
    /// Rows in the reply.
    rows: usize,
    /// The non-null fixed-width values, back to back.
    fixed: Vec<u8>,
    /// The width of every fixed-width value; `None` before the first.
    width: Option<usize>,
    /// The variable-length values and their rows.
    var: Vec<(usize, RawValue<'r>)>,
    /// The null rows, ascending.
    nulls: Vec<usize>,
    /// A value whose width is not the others': the stored rows and the
    /// schema disagree.
    mismatch: Option<usize>,
}

impl<'r> Gathered<'r> {
    fn with_rows(rows: usize) -> Gathered<'r> {
        Gathered {
            rows,
            fixed: Vec::new(),
            width: None,
            var: Vec::new(),
            nulls: Vec::new(),
            mismatch: None,
        }
    }

    fn push(&mut self, row: usize, value: RawValue<'r>) {
        match value {
            RawValue::Null => self.nulls.push(row),
            RawValue::Fixed(_, bytes) => {
                let width = *self.width.get_or_insert(bytes.len());
                if width != bytes.len() {
                    self.mismatch = Some(bytes.len());
                }
                if self.fixed.capacity() == 0 {
                    self.fixed.reserve_exact(self.rows * width);
                }
                self.fixed.extend_from_slice(bytes);
            }
            RawValue::Var(..) => self.var.push((row, value)),
        }
    }

    /// Writes the column's values, all its rows in order.
    fn write(&self, name: &str, column: &mut ColumnWriter<'_>) -> Result<(), Failure> {
        if let (Some(len), Some(width)) = (self.mismatch, self.width) {
            return Err(failure(
                name,
                format!("{len} bytes among {width}-byte values"),
            ));
        }
        match (self.var.is_empty(), self.fixed.is_empty()) {
            (true, _) => self.write_fixed(name, column),
            (false, true) => self.write_var(name, column),
            (false, false) => Err(failure(
                name,
                "fixed-width and variable-length values mixed".into(),
            )),
        }
    }

    /// Null-free stretches in one copy each, nulls between them.
    fn write_fixed(&self, name: &str, column: &mut ColumnWriter<'_>) -> Result<(), Failure> {
        let width = self.width.unwrap_or(0);
        let (mut next_row, mut at) = (0, 0);
        for &null in self.nulls.iter().chain(std::iter::once(&self.rows)) {
            let end = at + null.saturating_sub(next_row) * width;
            let Some(run) = self.fixed.get(at..end) else {
                return Err(failure(name, format!("a value missing before row {null}")));
            };
            if !run.is_empty() {
                column.push_fixed_le_run(run).map_err(column_failure)?;
            }
            if null < self.rows {
                column.push_null().map_err(column_failure)?;
            }
            (next_row, at) = (null + 1, end);
        }
        if at != self.fixed.len() {
            return Err(failure(name, "more values than rows".into()));
        }
        Ok(())
    }

    /// Each value in row order, the nulls merged in.
    fn write_var(&self, name: &str, column: &mut ColumnWriter<'_>) -> Result<(), Failure> {
        let mut var = self.var.iter().peekable();
        let mut nulls = self.nulls.iter().peekable();
        for row in 0..self.rows {
            match (var.peek(), nulls.peek()) {
                (Some(&&(r, value)), _) if r == row => {
                    push_var(column, value).map_err(column_failure)?;
                    var.next();
                }
                (_, Some(&&r)) if r == row => {
                    column.push_null().map_err(column_failure)?;
                    nulls.next();
                }
                _ => return Err(failure(name, format!("no value for row {row}"))),
            }
        }
        Ok(())
    }
}

/// Stored values that do not fit their reply column: the rows and the
/// registry disagree, which is corruption, not a client mistake.
fn failure(column: &str, reason: String) -> Failure {
    fail(
        ErrorCode::Internal,
        format!("column `{column}`: a stored row does not match its schema: {reason}"),
    )
}

/// [`failure`], as the column writer found it.
fn column_failure(e: ColumnError) -> Failure {
    fail(
        ErrorCode::Internal,
        format!("a stored row does not match its schema: {e}"),
    )
}

/// Appends one stored variable-length value to a reply column.
fn push_var(column: &mut ColumnWriter<'_>, value: RawValue<'_>) -> Result<(), ColumnError> {
    match value {
        RawValue::Var(FeatureType::String | FeatureType::Bytes, bytes) => column.push_var(bytes),
        other => column.push(&other.to_value().unwrap_or(Value::Null)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{plan, Registry, Spec};
    use crate::row::RowSchema;
    use crate::serve::service::ReplyColumns;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tessera_protocol::{Body, SlateReply, SlateReplyWriter};

    const SPEC: &str = r#"
[[entity]]
name = "items"
keys = [{ name = "id", type = "int64" }]

[[group]]
name = "g"
entity = "items"
ttl = "1d"
retention = "1d"
owner = "tests"

[[group.feature]]
name = "count"
type = "int64"
[[group.feature]]
name = "score"
type = "float32"
[[group.feature]]
name = "title"
type = "string"
[[group.feature]]
name = "vec"
type = "embedding(2)"
[[group.feature]]
name = "tags"
type = "list<int64>"
"#;

    const FEATURES: [&str; 5] = ["count", "score", "title", "vec", "tags"];

    fn schema() -> RowSchema {
        let spec = Spec::parse([("spec.toml", SPEC)]).expect("parse");
        let empty = Registry::empty();
        let registry = empty
            .apply(&plan(&empty, &spec).expect("valid"))
            .expect("apply");
        RowSchema::new(&registry, "g").expect("group")
    }

    fn plan_of(schema: &RowSchema, features: &[&str]) -> PartPlan {
        let columns = features
            .iter()
            .map(|&name| {
                let ty = schema.group().feature(name).expect("feature").ty;
                let (tag, dim) = super::super::slate::wire_type(ty);
                (name.to_string(), tag, dim)
            })
            .collect();
        let projection = schema.projection(features).expect("projection");
        PartPlan {
            schema: schema.clone(),
            reply: Arc::new(ReplyColumns {
                projection,
                columns,
            }),
            keys: 0..0,
        }
    }

    /// A stored row's features (each maybe null), or a row not found.
    fn row() -> impl Strategy<Value = Option<[Value; 5]>> {
        let null_or = |s: BoxedStrategy<Value>| prop_oneof![1 => Just(Value::Null), 2 => s];
        let values = (
            null_or(any::<i64>().prop_map(Value::Int64).boxed()),
            null_or((-1e9f32..1e9).prop_map(Value::Float32).boxed()),
            null_or(".{0,8}".prop_map(Value::String).boxed()),
            null_or(
                prop::collection::vec(-1f32..1.0, 2)
                    .prop_map(Value::Embedding)
                    .boxed(),
            ),
            null_or(
                prop::collection::vec(any::<i64>(), 0..4)
                    .prop_map(Value::ListInt64)
                    .boxed(),
            ),
        );
        prop::option::weighted(0.8, values.prop_map(|(a, b, c, d, e)| [a, b, c, d, e]))
    }

    /// Encodes `rows` (keys 0..) and writes them as one reply part.
    fn reply(schema: &RowSchema, plan: &PartPlan, rows: &[Option<[Value; 5]>]) -> SlateReply {
        let mut names = vec!["id"];
        names.extend(FEATURES);
        let writer = schema.writer(&names).expect("writer");
        let full: Vec<Vec<Value>> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
            .map(|(i, r)| {
                std::iter::once(Value::Int64(i as i64))
                    .chain(r.iter().cloned())
                    .collect()
            })
            .collect();
        let encoded = writer.encode_batch(&full).expect("valid rows");
        let mut stored = encoded.iter().map(|(_, row)| row);
        let found: Vec<bool> = rows.iter().map(Option::is_some).collect();
        let bytes: Vec<Option<&[u8]>> = found
            .iter()
            .map(|&f| if f { stored.next() } else { None })
            .collect();
        let mut out = Vec::new();
        let mut slate = SlateReplyWriter::new(&mut out, 1);
        let mut part = slate.part(
            &found,
            &vec![0; rows.len()],
            plan.reply.columns.len() as u16,
        );
        write_columns(&mut part, plan, bytes.into_iter(), usize::MAX).expect("written");
        SlateReply::decode(Body::copy_from(&out)).expect("decodes")
    }

    proptest! {
        /// Every projected value reads back in its row, nulls and missing
        /// rows included, whatever the mix of null runs.
        #[test]
        fn columns_read_back_row_by_row(
            rows in prop::collection::vec(row(), 0..40),
            chosen in prop::sample::subsequence(FEATURES.to_vec(), 0..=5).prop_shuffle(),
        ) {
            let schema = schema();
            let plan = plan_of(&schema, &chosen);
            let reply = reply(&schema, &plan, &rows);
            let part = &reply.parts()[0];
            for name in &chosen {
                let f = FEATURES.iter().position(|n| n == name).expect("known");
                let column = part.column(name).expect("column");
                for (i, row) in rows.iter().enumerate() {
                    let want = row.as_ref().map_or(Value::Null, |r| r[f].clone());
                    prop_assert_eq!(column.value(i), want, "column {} row {}", name, i);
                }
            }
        }
    }

    /// Corrupt rows: a value of another width, or fixed and
    /// variable-length values in one column, fail the reply.
    #[test]
    fn stored_values_that_disagree_are_errors_not_misreads() {
        let mut out = Vec::new();
        let mut slate = SlateReplyWriter::new(&mut out, 1);
        let mut part = slate.part(&[true, true], &[0, 0], 1);
        let mut column = part.column("count", tessera_protocol::tag::INT64, 0);
        let mut widths = Gathered::with_rows(2);
        widths.push(0, RawValue::Fixed(FeatureType::Int64, &[0; 8]));
        widths.push(1, RawValue::Fixed(FeatureType::Int64, &[0; 4]));
        assert!(widths.write("count", &mut column).is_err());
        let mut kinds = Gathered::with_rows(2);
        kinds.push(0, RawValue::Fixed(FeatureType::Int64, &[0; 8]));
        kinds.push(1, RawValue::Var(FeatureType::String, b"x"));
        assert!(kinds.write("count", &mut column).is_err());
    }
}
