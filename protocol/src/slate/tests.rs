//! Slate replies built by the writer read back the same through the views,
//! for every type, nulls and missing rows included; damaged bodies are
//! refused, never misread.

use super::*;
use crate::body::Body;
use crate::value::{tag, Value};
use proptest::prelude::*;

/// A column: type tag, embedding dimension, one value per row.
type TestColumn = (u8, u32, Vec<Value>);
/// A part: found flags and columns.
type TestPart = (Vec<bool>, Vec<TestColumn>);

/// A column type and a strategy for its values.
fn typed_values(rows: usize) -> impl Strategy<Value = TestColumn> {
    let of = |t: u8, dim: u32, s: BoxedStrategy<Value>| {
        proptest::collection::vec(prop_oneof![1 => Just(Value::Null), 3 => s], rows)
            .prop_map(move |v| (t, dim, v))
    };
    prop_oneof![
        of(tag::BOOL, 0, any::<bool>().prop_map(Value::Bool).boxed()),
        of(tag::INT32, 0, any::<i32>().prop_map(Value::Int32).boxed()),
        of(tag::INT64, 0, any::<i64>().prop_map(Value::Int64).boxed()),
        of(
            tag::TIMESTAMP,
            0,
            any::<i64>().prop_map(Value::Timestamp).boxed()
        ),
        of(
            tag::FLOAT32,
            0,
            (-1e9f32..1e9).prop_map(Value::Float32).boxed()
        ),
        of(
            tag::FLOAT64,
            0,
            (-1e9f64..1e9).prop_map(Value::Float64).boxed()
        ),
        of(tag::STRING, 0, ".{0,12}".prop_map(Value::String).boxed()),
        of(
            tag::BYTES,
            0,
            proptest::collection::vec(any::<u8>(), 0..12)
                .prop_map(Value::Bytes)
                .boxed()
        ),
        of(
            tag::EMBEDDING,
            3,
            proptest::collection::vec(-1f32..1.0, 3)
                .prop_map(Value::Embedding)
                .boxed()
        ),
        of(
            tag::LIST_INT64,
            0,
            proptest::collection::vec(any::<i64>(), 0..5)
                .prop_map(Value::ListInt64)
                .boxed()
        ),
        of(
            tag::LIST_FLOAT32,
            0,
            proptest::collection::vec(-1f32..1.0, 0..5)
                .prop_map(Value::ListFloat32)
                .boxed()
        ),
        of(
            tag::LIST_STRING,
            0,
            proptest::collection::vec(".{0,4}", 0..4)
                .prop_map(Value::ListString)
                .boxed()
        ),
    ]
}

/// A part: found flags and some columns over `rows` rows.
fn part() -> impl Strategy<Value = TestPart> {
    (0usize..20).prop_flat_map(|rows| {
        (
            proptest::collection::vec(any::<bool>(), rows),
            proptest::collection::vec(typed_values(rows), 0..4),
        )
    })
}

fn build(parts: &[TestPart]) -> Vec<u8> {
    let mut out = vec![0xAA; 24]; // stands in for a frame header
    let mut w = SlateReplyWriter::new(&mut out, parts.len() as u16);
    for (found, columns) in parts {
        let ts: Vec<i64> = (0..found.len() as i64).map(|i| i * 10).collect();
        let mut p = w.part(found, &ts, columns.len() as u16);
        for (c, (t, dim, values)) in columns.iter().enumerate() {
            let mut col = p.column(&format!("f{c}"), *t, *dim);
            for (v, &f) in values.iter().zip(found) {
                col.push(if f { v } else { &Value::Null }).expect("push");
            }
            col.finish().expect("finish");
        }
    }
    out.split_off(24)
}

proptest! {
    #[test]
    fn replies_round_trip(parts in proptest::collection::vec(part(), 0..4)) {
        let body = build(&parts);
        prop_assert_eq!(body.len() % 8, 0);
        let reply = SlateReply::decode(Body::copy_from(&body)).expect("decodes");
        prop_assert_eq!(reply.parts().len(), parts.len());
        for (view, (found, columns)) in reply.parts().iter().zip(&parts) {
            prop_assert_eq!(view.rows(), found.len());
            for (i, &f) in found.iter().enumerate() {
                prop_assert_eq!(view.found(i), f);
                prop_assert_eq!(view.event_ts(i), i as i64 * 10);
            }
            for (c, (t, dim, values)) in columns.iter().enumerate() {
                let col = view.column(&format!("f{c}")).expect("column");
                prop_assert_eq!((col.tag(), col.dim()), (*t, *dim));
                for (i, (v, &f)) in values.iter().zip(found).enumerate() {
                    let want = if f { v.clone() } else { Value::Null };
                    prop_assert_eq!(col.is_valid(i), want != Value::Null);
                    prop_assert_eq!(col.value(i), want);
                }
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_refused_or_reads_a_well_formed_reply(
        parts in proptest::collection::vec(part(), 1..3),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut body = build(&parts);
        let i = at.index(body.len());
        body[i] ^= flip;
        // Either an error or a reply whose every accessor stays in bounds.
        if let Ok(reply) = SlateReply::decode(Body::copy_from(&body)) {
            for p in reply.parts() {
                for c in p.columns() {
                    for r in 0..p.rows() + 1 {
                        let _ = c.value(r);
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_bodies_are_refused(parts in proptest::collection::vec(part(), 1..3), cut in any::<prop::sample::Index>()) {
        let body = build(&parts);
        let n = cut.index(body.len());
        prop_assert!(SlateReply::decode(Body::copy_from(&body[..n])).is_err());
    }
}

#[test]
fn numeric_columns_are_viewed_in_place() {
    let parts = vec![(
        vec![true, false, true],
        vec![
            (
                tag::INT64,
                0,
                vec![Value::Int64(5), Value::Null, Value::Int64(-7)],
            ),
            (
                tag::EMBEDDING,
                2,
                vec![
                    Value::Embedding(vec![1.0, 2.0]),
                    Value::Null,
                    Value::Embedding(vec![3.0, 4.0]),
                ],
            ),
        ],
    )];
    let body = Body::copy_from(&build(&parts));
    let reply = SlateReply::decode(body.clone()).expect("decodes");
    let part = &reply.parts()[0];
    let ints = part.column("f0").and_then(Column::i64s).expect("i64 slice");
    assert_eq!(ints, &[5, 0, -7]);
    let range = body.bytes().as_ptr_range();
    assert!(
        range.contains(&(ints.as_ptr() as *const u8)),
        "the slice is the body's own memory"
    );
    assert_eq!(
        part.column("f1").and_then(Column::f32s),
        Some(&[1.0, 2.0, 0.0, 0.0, 3.0, 4.0][..])
    );
    assert_eq!(
        part.column("f1").and_then(|c| c.embedding_at(2)),
        Some(&[3.0, 4.0][..])
    );
    assert_eq!(part.column("f0").and_then(|c| c.i64_at(1)), None);
}

#[test]
fn a_value_that_does_not_fit_its_column_is_an_error() {
    let mut out = Vec::new();
    let mut w = SlateReplyWriter::new(&mut out, 1);
    let mut p = w.part(&[true], &[1], 2);
    let mut c = p.column("e", tag::EMBEDDING, 4);
    assert!(c.push(&Value::Embedding(vec![1.0; 3])).is_err());
    assert!(c.push(&Value::Int64(1)).is_err());
    assert!(c.push_var(b"x").is_err());
    c.push(&Value::Embedding(vec![1.0; 4])).expect("fits");
    assert!(
        c.push(&Value::Embedding(vec![1.0; 4])).is_err(),
        "one value per row"
    );
}

#[test]
fn history_parts_carry_ingest_times_and_sequences() {
    let mut out = Vec::new();
    let mut p = PartWriter::history(&mut out, &[true, false], &[20, 10], &[200, 100], &[7, 3], 1);
    let mut c = p.column("x", tag::INT64, 0);
    c.push(&Value::Int64(1)).expect("push");
    c.push_null().expect("null");
    c.finish().expect("finish");
    let h = HistoryReply::decode(Body::copy_from(&out)).expect("decodes");
    assert_eq!(h.rows(), 2);
    assert_eq!(
        (h.event_ts(0), h.ingest_ts(0), h.seq(0), h.tombstone(0)),
        (20, 200, 7, false)
    );
    assert_eq!(
        (h.event_ts(1), h.ingest_ts(1), h.seq(1), h.tombstone(1)),
        (10, 100, 3, true)
    );
    assert_eq!(h.column("x").and_then(|c| c.i64_at(0)), Some(1));
}

/// The worked example of `docs/protocol.md`, byte for byte.
#[test]
fn the_documented_example_is_what_the_writer_writes() {
    let mut out = Vec::new();
    let mut w = SlateReplyWriter::new(&mut out, 1);
    let mut p = w.part(&[true, false], &[77, 0], 1);
    let mut c = p.column("c", tag::INT64, 0);
    c.push(&Value::Int64(5)).expect("push");
    c.push_null().expect("null");
    c.finish().expect("finish");
    let mut want = vec![1, 0, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0]);
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&77i64.to_le_bytes());
    want.extend_from_slice(&0i64.to_le_bytes());
    want.extend_from_slice(&[1, 0, b'c', 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&5i64.to_le_bytes());
    want.extend_from_slice(&0i64.to_le_bytes());
    assert_eq!(out, want);
    assert_eq!(out.len(), 80);
}
