//! The row codec: round trips over every type with nulls and projections,
//! rows of every older schema version read under the newest, validation of
//! written values (each error naming its row and field), and corrupt row
//! bytes decoding to errors, never panics.

use proptest::prelude::*;
use tessera_server::registry::{
    plan, ElementType, FeatureType, Registry, Spec, MAX_LIST_LEN, MAX_STRING_BYTES,
};
use tessera_server::row::key::decode_key;
use tessera_server::row::{DecodeError, EncodeError, RowSchema, Value};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/news_feed/registry.toml"
);

/// A composite-keyed entity and a group with one feature of every type.
const ALL_TYPES: &str = r#"
[[entity]]
name = "users"
keys = [{ name = "user_id", type = "int64" }, { name = "category", type = "string" }]

[[group]]
name = "all_types"
entity = "users"
ttl = "1d"
retention = "1d"
owner = "tests"

[[group.feature]]
name = "f_bool"
type = "bool"
[[group.feature]]
name = "f_int32"
type = "int32"
[[group.feature]]
name = "f_int64"
type = "int64"
[[group.feature]]
name = "f_float32"
type = "float32"
[[group.feature]]
name = "f_float64"
type = "float64"
[[group.feature]]
name = "f_string"
type = "string"
[[group.feature]]
name = "f_bytes"
type = "bytes"
[[group.feature]]
name = "f_timestamp"
type = "timestamp"
[[group.feature]]
name = "f_embedding"
type = "embedding(3)"
[[group.feature]]
name = "f_list_int64"
type = "list<int64>"
[[group.feature]]
name = "f_list_float32"
type = "list<float32>"
[[group.feature]]
name = "f_list_string"
type = "list<string>"
"#;

/// Applies each spec text in turn to an empty registry; every version.
fn registries(texts: &[&str]) -> Vec<Registry> {
    let mut out = vec![Registry::empty()];
    for text in texts {
        let current = out.last().expect("non-empty");
        let spec = Spec::parse([("spec.toml", *text)]).expect("parse");
        let plan = plan(current, &spec).expect("valid");
        out.push(current.apply(&plan).expect("apply"));
    }
    out
}

fn schema(text: &str, group: &str) -> RowSchema {
    let registry = registries(&[text]).pop().expect("registry");
    RowSchema::new(&registry, group).expect("group")
}

fn names(schema: &RowSchema) -> Vec<String> {
    schema
        .group()
        .features
        .iter()
        .map(|f| f.name.clone())
        .collect()
}

fn non_null(ty: FeatureType) -> BoxedStrategy<Value> {
    let text = ".{0,12}";
    let small_vec = 0..6usize;
    match ty {
        FeatureType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        FeatureType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
        FeatureType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
        FeatureType::Float32 => (-1e30f32..1e30).prop_map(Value::Float32).boxed(),
        FeatureType::Float64 => (-1e300f64..1e300).prop_map(Value::Float64).boxed(),
        FeatureType::String => text.prop_map(Value::String).boxed(),
        FeatureType::Bytes => prop::collection::vec(any::<u8>(), small_vec)
            .prop_map(Value::Bytes)
            .boxed(),
        FeatureType::Timestamp => any::<i64>().prop_map(Value::Timestamp).boxed(),
        FeatureType::Embedding(dim) => prop::collection::vec(-1e3f32..1e3, dim as usize)
            .prop_map(Value::Embedding)
            .boxed(),
        FeatureType::List(ElementType::Int64) => prop::collection::vec(any::<i64>(), small_vec)
            .prop_map(Value::ListInt64)
            .boxed(),
        FeatureType::List(ElementType::Float32) => prop::collection::vec(-1e30f32..1e30, small_vec)
            .prop_map(Value::ListFloat32)
            .boxed(),
        FeatureType::List(ElementType::String) => prop::collection::vec(text, small_vec)
            .prop_map(Value::ListString)
            .boxed(),
    }
}

fn maybe_null(ty: FeatureType) -> BoxedStrategy<Value> {
    prop_oneof![1 => Just(Value::Null), 3 => non_null(ty)].boxed()
}

/// Rows of `schema`: the key values, then one value per feature.
fn rows(schema: &RowSchema, max: usize) -> BoxedStrategy<Vec<Vec<Value>>> {
    let features: Vec<BoxedStrategy<Value>> = schema
        .group()
        .features
        .iter()
        .map(|f| maybe_null(f.ty))
        .collect();
    let row = (any::<i64>(), ".{0,10}", features).prop_map(|(id, category, mut values)| {
        let mut row = vec![Value::Int64(id), Value::String(category)];
        row.append(&mut values);
        row
    });
    prop::collection::vec(row, 1..max).boxed()
}

fn columns(schema: &RowSchema) -> Vec<String> {
    let mut columns: Vec<String> = schema.keys().iter().map(|k| k.name.clone()).collect();
    columns.extend(names(schema));
    columns
}

fn refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

proptest! {
    #[test]
    fn every_type_round_trips_with_nulls_and_projections(
        (batch, chosen) in {
            let schema = schema(ALL_TYPES, "all_types");
            let names = names(&schema);
            (rows(&schema, 6), prop::sample::subsequence(names.clone(), 0..=names.len()).prop_shuffle())
        }
    ) {
        let schema = schema(ALL_TYPES, "all_types");
        let columns = columns(&schema);
        let writer = schema.writer(&refs(&columns)).expect("writer");
        let encoded = writer.encode_batch(&batch).expect("valid batch");
        prop_assert_eq!(encoded.len(), batch.len());
        let full = schema.projection(&refs(&names(&schema))).expect("projection");
        let part = schema.projection(&refs(&chosen)).expect("projection");
        for ((key, row), values) in encoded.iter().zip(&batch) {
            prop_assert_eq!(&decode_key(schema.keys(), key).expect("key"), &values[..2]);
            prop_assert_eq!(&full.decode(row).expect("decode"), &values[2..]);
            let expected: Vec<Value> = chosen
                .iter()
                .map(|name| columns.iter().position(|c| c == name).map(|i| values[i].clone()).expect("column"))
                .collect();
            prop_assert_eq!(part.decode(row).expect("decode"), expected);
        }
    }

    #[test]
    fn random_bytes_decode_to_errors_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), version in 0u32..4) {
        let schema = schema(ALL_TYPES, "all_types");
        let projection = schema.projection(&refs(&names(&schema))).expect("projection");
        let _ = projection.decode(&bytes);
        // The same garbage behind a valid header reaches the layout checks.
        let mut framed = vec![1u8];
        framed.extend_from_slice(&version.to_le_bytes());
        framed.extend_from_slice(&bytes);
        let _ = projection.decode(&framed);
    }

    #[test]
    fn damaged_rows_decode_to_errors_never_panics(
        batch in rows(&schema(ALL_TYPES, "all_types"), 2),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let schema = schema(ALL_TYPES, "all_types");
        let writer = schema.writer(&refs(&columns(&schema))).expect("writer");
        let encoded = writer.encode_batch(&batch).expect("valid batch");
        let (_, row) = encoded.iter().next().expect("one row");
        let projection = schema.projection(&refs(&names(&schema))).expect("projection");
        let mut damaged = row.to_vec();
        damaged[at.index(row.len())] ^= mask;
        let _ = projection.decode(&damaged);
        for len in 0..row.len() {
            prop_assert!(projection.decode(&row[..len]).is_err(), "prefix of {} bytes decoded", len);
        }
        let mut longer = row.to_vec();
        longer.push(0);
        prop_assert!(projection.decode(&longer).is_err());
    }
}

/// The evolution of one group, one spec per registry version.
fn evolution() -> Vec<String> {
    let header = r#"
[[entity]]
name = "users"
keys = [{ name = "user_id", type = "int64" }]

[[group]]
name = "g"
entity = "users"
ttl = "1d"
retention = "7d"
owner = "tests"
"#;
    let feature = |name: &str, ty: &str, extra: &str| {
        format!("[[group.feature]]\nname = \"{name}\"\ntype = \"{ty}\"\n{extra}\n")
    };
    let versions = [
        // 1: the first schema
        vec![feature("a", "int64", ""), feature("b", "string", "")],
        // 2: c added
        vec![
            feature("a", "int64", ""),
            feature("b", "string", ""),
            feature("c", "float64", ""),
        ],
        // 3: a deprecated
        vec![
            feature("a", "int64", "status = \"deprecated\""),
            feature("b", "string", ""),
            feature("c", "float64", ""),
        ],
        // 4: d added and b described (same layout as 3 plus d)
        vec![
            feature("a", "int64", "status = \"deprecated\""),
            feature("b", "string", "description = \"now described\""),
            feature("c", "float64", ""),
            feature("d", "list<int64>", ""),
        ],
        // 5: a removed
        vec![
            feature("b", "string", "description = \"now described\""),
            feature("c", "float64", ""),
            feature("d", "list<int64>", ""),
        ],
        // 6: e added
        vec![
            feature("b", "string", "description = \"now described\""),
            feature("c", "float64", ""),
            feature("d", "list<int64>", ""),
            feature("e", "embedding(2)", ""),
        ],
    ];
    versions
        .iter()
        .map(|fs| format!("{header}{}", fs.concat()))
        .collect()
}

fn sample(name: &str, version: usize) -> Value {
    let v = version as i64;
    match name {
        "a" => Value::Int64(100 + v),
        "b" => Value::String(format!("written at {v}")),
        "c" => Value::Float64(0.5 + v as f64),
        "d" => Value::ListInt64(vec![v, -v]),
        "e" => Value::Embedding(vec![v as f32, 1.5]),
        other => panic!("no feature {other}"),
    }
}

#[test]
fn rows_of_every_older_schema_version_read_under_the_newest() {
    let texts = evolution();
    let registries = registries(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let schemas: Vec<RowSchema> = registries[1..]
        .iter()
        .map(|r| RowSchema::new(r, "g").expect("g"))
        .collect();
    let versions: Vec<u32> = schemas.iter().map(RowSchema::newest_version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);

    // One row written under each version, with every feature it had.
    let written: Vec<(Vec<String>, Vec<u8>)> = schemas
        .iter()
        .enumerate()
        .map(|(i, schema)| {
            let features = names(schema);
            let mut row = vec![Value::Int64(i as i64)];
            row.extend(features.iter().map(|f| sample(f, i + 1)));
            let mut columns = vec!["user_id".to_owned()];
            columns.extend(features.iter().cloned());
            let batch = schema
                .writer(&refs(&columns))
                .expect("writer")
                .encode_batch(&[row])
                .expect("encode");
            let (_, bytes) = batch.iter().next().expect("row");
            (features, bytes.to_vec())
        })
        .collect();

    let newest = schemas.last().expect("newest");
    let all = ["b", "c", "d", "e"];
    let projection = newest.projection(&all).expect("projection");
    for (i, (features, bytes)) in written.iter().enumerate() {
        let expected: Vec<Value> = all
            .iter()
            .map(|f| {
                if features.iter().any(|x| x == f) {
                    sample(f, i + 1)
                } else {
                    Value::Null
                }
            })
            .collect();
        assert_eq!(
            projection.decode(bytes).expect("decode"),
            expected,
            "row of version {}",
            i + 1
        );
    }

    // A deprecated feature still decodes (version 4 reads a from a version 1 row);
    // a removed one can no longer be asked for.
    let v4 = &schemas[3];
    let a = v4.projection(&["a", "d"]).expect("projection");
    assert_eq!(
        a.decode(&written[0].1).expect("decode"),
        [sample("a", 1), Value::Null]
    );
    assert_eq!(
        newest.projection(&["a"]).expect_err("removed"),
        DecodeError::UnknownFeature("a".into())
    );

    // A projection made from an older registry refuses newer rows by name.
    let old = schemas[1].projection(&["b"]).expect("projection");
    assert_eq!(
        old.decode(&written[5].1).expect_err("newer row"),
        DecodeError::UnknownSchemaVersion {
            version: 6,
            newest: 2
        }
    );
}

/// A writer over the all-types group with every column.
fn all_types_batch(edit: impl FnOnce(&mut Vec<Value>, &[String])) -> Result<usize, EncodeError> {
    let schema = schema(ALL_TYPES, "all_types");
    let columns = columns(&schema);
    let valid = vec![
        Value::Int64(7),
        Value::String("sports".into()),
        Value::Bool(true),
        Value::Int32(-3),
        Value::Int64(1 << 40),
        Value::Float32(0.25),
        Value::Float64(-1.5),
        Value::String("hello".into()),
        Value::Bytes(vec![0, 1, 2]),
        Value::Timestamp(1_700_000_000_000_000),
        Value::Embedding(vec![1.0, 2.0, 3.0]),
        Value::ListInt64(vec![1, 2]),
        Value::ListFloat32(vec![0.5]),
        Value::ListString(vec!["a".into(), "".into()]),
    ];
    let mut last = valid.clone();
    edit(&mut last, &columns);
    let batch = [valid.clone(), valid, last];
    let writer = schema.writer(&refs(&columns)).expect("writer");
    writer.encode_batch(&batch).map(|b| b.len())
}

fn error_when(column: &str, value: Value) -> String {
    let result = all_types_batch(|row, columns| {
        let i = columns.iter().position(|c| c == column).expect("column");
        row[i] = value;
    });
    result.expect_err("the batch must be refused").to_string()
}

#[test]
fn invalid_values_refuse_the_whole_batch_naming_row_and_field() {
    assert_eq!(all_types_batch(|_, _| {}), Ok(3));
    let long = "x".repeat(MAX_STRING_BYTES + 1);
    let cases = [
        (
            "f_float64",
            Value::Int64(1),
            "row 2, field `f_float64`: expected float64, found int64",
        ),
        (
            "f_timestamp",
            Value::Int64(1),
            "row 2, field `f_timestamp`: expected timestamp, found int64",
        ),
        (
            "f_embedding",
            Value::Embedding(vec![1.0; 4]),
            "row 2, field `f_embedding`: embedding has 4 values; the feature is embedding(3)",
        ),
        (
            "f_string",
            Value::String(long.clone()),
            "row 2, field `f_string`: 65537 bytes; the limit is 65536",
        ),
        (
            "f_bytes",
            Value::Bytes(long.clone().into_bytes()),
            "row 2, field `f_bytes`: 65537 bytes; the limit is 65536",
        ),
        (
            "f_list_string",
            Value::ListString(vec![long]),
            "row 2, field `f_list_string`: 65537 bytes; the limit is 65536",
        ),
        (
            "f_list_int64",
            Value::ListInt64(vec![0; MAX_LIST_LEN + 1]),
            "row 2, field `f_list_int64`: list has 4097 elements; the limit is 4096",
        ),
        (
            "user_id",
            Value::Null,
            "row 2, field `user_id`: missing: every key column needs a value",
        ),
        (
            "category",
            Value::Int64(3),
            "row 2, field `category`: expected string, found int64",
        ),
    ];
    for (column, value, expected) in cases {
        assert_eq!(error_when(column, value), expected);
    }
}

#[test]
fn nan_and_infinities_are_refused_everywhere_floats_go() {
    let cases = [
        ("f_float64", Value::Float64(f64::NAN), "row 2, field `f_float64`: NaN is not allowed: floats must be finite (write null for a missing value)"),
        ("f_float64", Value::Float64(f64::INFINITY), "row 2, field `f_float64`: inf is not allowed: floats must be finite (write null for a missing value)"),
        ("f_float32", Value::Float32(f32::NEG_INFINITY), "row 2, field `f_float32`: -inf is not allowed: floats must be finite (write null for a missing value)"),
        ("f_embedding", Value::Embedding(vec![0.0, f32::NAN, 1.0]), "row 2, field `f_embedding`: NaN is not allowed: floats must be finite (write null for a missing value)"),
        ("f_list_float32", Value::ListFloat32(vec![f32::INFINITY]), "row 2, field `f_list_float32`: inf is not allowed: floats must be finite (write null for a missing value)"),
    ];
    for (column, value, expected) in cases {
        assert_eq!(error_when(column, value), expected);
    }
}

#[test]
fn a_row_over_the_engine_value_limit_is_refused() {
    let features: String = (0..70)
        .map(|i| format!("[[group.feature]]\nname = \"s{i}\"\ntype = \"string\"\n"))
        .collect();
    let text = format!(
        "[[entity]]\nname = \"users\"\nkeys = [{{ name = \"user_id\", type = \"int64\" }}]\n\
         [[group]]\nname = \"wide\"\nentity = \"users\"\nttl = \"1d\"\nretention = \"1d\"\nowner = \"t\"\n{features}"
    );
    let schema = schema(&text, "wide");
    let columns = columns(&schema);
    let mut row = vec![Value::Int64(1)];
    row.extend((0..70).map(|_| Value::String("x".repeat(MAX_STRING_BYTES))));
    let err = schema
        .writer(&refs(&columns))
        .expect("writer")
        .encode_batch(&[row])
        .expect_err("too large");
    // 5 header + 9 bitmap + 70 * 4 offsets + 70 * 64 KiB
    assert_eq!(
        err.to_string(),
        "row 0 encodes to 4587814 bytes; the engine's limit is 4194304"
    );
}

#[test]
fn columns_are_checked_once_per_writer() {
    let text = ALL_TYPES.replace(
        "name = \"f_int32\"\ntype = \"int32\"",
        "name = \"f_int32\"\ntype = \"int32\"\nnullable = false",
    );
    let schema = schema(&text, "all_types");
    let err = |columns: &[&str]| schema.writer(columns).expect_err("refused").to_string();
    assert_eq!(
        err(&["user_id", "f_int32"]),
        "key column `category` is missing from the columns; every row needs its key"
    );
    assert_eq!(
        err(&["user_id", "category"]),
        "feature `f_int32` is not nullable, so every batch must carry it"
    );
    assert_eq!(
        err(&["user_id", "category", "f_int32", "clicks"]),
        "unknown column `clicks`: not a key column or feature of the group"
    );
    assert_eq!(
        err(&["user_id", "category", "f_int32", "user_id"]),
        "column `user_id` is given twice"
    );

    let writer = schema
        .writer(&["category", "f_int32", "user_id"])
        .expect("any column order");
    let null = writer.encode_batch(&[vec![
        Value::String("c".into()),
        Value::Null,
        Value::Int64(1),
    ]]);
    assert_eq!(
        null.expect_err("null").to_string(),
        "row 0, field `f_int32`: null in a feature that is not nullable"
    );
    let short = writer.encode_batch(&[vec![Value::String("c".into())]]);
    assert_eq!(
        short.expect_err("arity").to_string(),
        "row 0: 1 values for 3 columns"
    );

    // Features the batch leaves out read as null.
    let batch = writer
        .encode_batch(&[vec![
            Value::String("c".into()),
            Value::Int32(5),
            Value::Int64(1),
        ]])
        .expect("encode");
    let (_, row) = batch.iter().next().expect("row");
    let projection = schema
        .projection(&["f_int32", "f_string", "f_embedding"])
        .expect("projection");
    assert_eq!(
        projection.decode(row).expect("decode"),
        [Value::Int32(5), Value::Null, Value::Null]
    );
}

#[test]
fn the_example_groups_encode_and_project() {
    let spec = Spec::read(&[EXAMPLE]).expect("example");
    let registry = Registry::empty()
        .apply(&plan(&Registry::empty(), &spec).expect("valid"))
        .expect("apply");
    for (group, key) in [
        ("user_features", "user_id"),
        ("article_features", "article_id"),
    ] {
        let schema = RowSchema::new(&registry, group).expect("group");
        let features = schema.group().features.clone();
        let mut columns = vec![key.to_owned()];
        columns.extend(features.iter().map(|f| f.name.clone()));
        let row: Vec<Value> = std::iter::once(Value::Int64(42))
            .chain(features.iter().map(|f| match f.ty {
                FeatureType::Int64 => Value::Int64(f.id as i64),
                FeatureType::Float64 => Value::Float64(f.id as f64 / 4.0),
                FeatureType::Embedding(dim) => Value::Embedding(vec![0.125; dim as usize]),
                FeatureType::String => Value::String("gb".into()),
                _ => Value::Null,
            }))
            .collect();
        let batch = schema
            .writer(&refs(&columns))
            .expect("writer")
            .encode_batch(std::slice::from_ref(&row))
            .expect("encode");
        let (key_bytes, bytes) = batch.iter().next().expect("row");
        assert_eq!(key_bytes, (42u64 ^ (1 << 63)).to_be_bytes());
        // 23 features: header 5, bitmap 3, fixed 10*8 + 10*8 + 64*4, two var offsets, 2 bytes of string.
        assert_eq!(bytes.len(), 5 + 3 + 416 + 8 + 2, "{group}");
        let wanted = [&columns[1], &columns[12], &columns[21], &columns[23]];
        let projection = schema
            .projection(&wanted.map(String::as_str))
            .expect("projection");
        assert_eq!(
            projection.decode(bytes).expect("decode"),
            [
                row[1].clone(),
                row[12].clone(),
                row[21].clone(),
                row[23].clone()
            ]
        );
    }
}
