//! Feature values between JSON (what users type and read) and the wire's
//! typed [`Value`]s, per the registry's types; and timestamps as RFC 3339.

use serde_json::Value as Json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tessera_protocol::Value;
use tessera_server::registry::{ElementType, FeatureType, KeyType};

/// A timestamp given as integer microseconds or RFC 3339 text.
pub fn parse_ts(json: &Json) -> Result<i64, String> {
    match json {
        Json::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("timestamp {n} is not an integer number of microseconds")),
        Json::String(s) => parse_ts_text(s),
        other => Err(format!(
            "timestamp {other} is neither microseconds nor RFC 3339 text"
        )),
    }
}

/// A timestamp typed on the command line: integer µs or RFC 3339.
pub fn parse_ts_text(s: &str) -> Result<i64, String> {
    if let Ok(us) = s.parse::<i64>() {
        return Ok(us);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("timestamp `{s}`: {e} (expected RFC 3339 or microseconds)"))?;
    let us = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()),
        Err(e) => i64::try_from(e.duration().as_micros()).map(|v| -v),
    };
    us.map_err(|_| format!("timestamp `{s}` is out of range"))
}

/// Microseconds since the epoch as RFC 3339 (UTC).
pub fn format_ts(us: i64) -> String {
    let t = if us >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_micros(us.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_micros(us.unsigned_abs()))
    };
    t.filter(|t| *t >= SystemTime::UNIX_EPOCH)
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .unwrap_or_else(|| us.to_string())
}

/// A key column value from JSON.
pub fn key_value(ty: KeyType, json: &Json) -> Result<Value, String> {
    match (ty, json) {
        (KeyType::Int64, Json::Number(n)) => n
            .as_i64()
            .map(Value::Int64)
            .ok_or_else(|| format!("{n} is not an int64")),
        (KeyType::String, Json::String(s)) => Ok(Value::String(s.clone())),
        (ty, other) => Err(format!("{other} is not a {ty}")),
    }
}

/// A key column value typed on the command line.
pub fn key_value_text(ty: KeyType, s: &str) -> Result<Value, String> {
    match ty {
        KeyType::Int64 => s
            .parse()
            .map(Value::Int64)
            .map_err(|_| format!("`{s}` is not an int64")),
        KeyType::String => Ok(Value::String(s.to_string())),
    }
}

/// A feature value of type `ty` from JSON (`null` is null).
pub fn feature_value(ty: FeatureType, json: &Json) -> Result<Value, String> {
    let wrong = || format!("{json} is not a {ty}");
    let num = |j: &Json| j.as_f64().ok_or_else(wrong);
    let value = match (ty, json) {
        (_, Json::Null) => Value::Null,
        (FeatureType::Bool, Json::Bool(b)) => Value::Bool(*b),
        (FeatureType::Int32, Json::Number(n)) => Value::Int32(
            n.as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(wrong)?,
        ),
        (FeatureType::Int64, Json::Number(n)) => Value::Int64(n.as_i64().ok_or_else(wrong)?),
        (FeatureType::Float32, Json::Number(_)) => Value::Float32(num(json)? as f32),
        (FeatureType::Float64, Json::Number(_)) => Value::Float64(num(json)?),
        (FeatureType::String, Json::String(s)) => Value::String(s.clone()),
        (FeatureType::Bytes, Json::String(s)) => Value::Bytes(s.as_bytes().to_vec()),
        (FeatureType::Bytes, Json::Array(items)) => Value::Bytes(
            items
                .iter()
                .map(|i| {
                    i.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or_else(wrong)
                })
                .collect::<Result<_, _>>()?,
        ),
        (FeatureType::Timestamp, _) => Value::Timestamp(parse_ts(json)?),
        (FeatureType::Embedding(_), Json::Array(items)) => Value::Embedding(floats(items, wrong)?),
        (FeatureType::List(ElementType::Float32), Json::Array(items)) => {
            Value::ListFloat32(floats(items, wrong)?)
        }
        (FeatureType::List(ElementType::Int64), Json::Array(items)) => Value::ListInt64(
            items
                .iter()
                .map(|i| i.as_i64().ok_or_else(wrong))
                .collect::<Result<_, _>>()?,
        ),
        (FeatureType::List(ElementType::String), Json::Array(items)) => Value::ListString(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(wrong))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(wrong()),
    };
    Ok(value)
}

fn floats(items: &[Json], wrong: impl Fn() -> String) -> Result<Vec<f32>, String> {
    items
        .iter()
        .map(|i| i.as_f64().map(|f| f as f32).ok_or_else(&wrong))
        .collect()
}

/// A value as JSON, for `--format json`.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int32(v) => Json::from(*v),
        Value::Int64(v) | Value::Timestamp(v) => Json::from(*v),
        Value::Float32(v) => Json::from(f64::from(*v)),
        Value::Float64(v) => Json::from(*v),
        Value::String(s) => Json::from(s.as_str()),
        Value::Bytes(b) => Json::from(b.clone()),
        Value::Embedding(v) | Value::ListFloat32(v) => {
            Json::from(v.iter().map(|f| f64::from(*f)).collect::<Vec<_>>())
        }
        Value::ListInt64(v) => Json::from(v.clone()),
        Value::ListString(v) => Json::from(v.clone()),
    }
}

/// A value as a short table cell.
pub fn to_cell(value: &Value) -> String {
    /// Elements of a long list shown before eliding the rest.
    const SHOWN: usize = 3;
    fn list<T: std::fmt::Display>(items: &[T]) -> String {
        let head: Vec<String> = items.iter().take(SHOWN).map(T::to_string).collect();
        match items.len() > SHOWN {
            true => format!("[{}, … {} values]", head.join(", "), items.len()),
            false => format!("[{}]", head.join(", ")),
        }
    }
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int32(v) => v.to_string(),
        Value::Int64(v) => v.to_string(),
        Value::Timestamp(v) => format_ts(*v),
        Value::Float32(v) => v.to_string(),
        Value::Float64(v) => v.to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        Value::Embedding(v) | Value::ListFloat32(v) => list(v),
        Value::ListInt64(v) => list(v),
        Value::ListString(v) => list(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_ts(&json!(1_700_000_000_000_000i64)),
            Ok(1_700_000_000_000_000)
        );
        assert_eq!(parse_ts(&json!("1970-01-01T00:00:01Z")), Ok(1_000_000));
        assert_eq!(
            parse_ts_text("2026-11-01T00:00:00.5Z").map(|t| t % 1_000_000),
            Ok(500_000)
        );
        assert!(parse_ts(&json!("yesterday")).is_err());
        assert!(parse_ts(&json!(1.5)).is_err());
        assert_eq!(format_ts(1_000_000), "1970-01-01T00:00:01.000000Z");
    }

    #[test]
    fn features_follow_their_types() {
        let e = feature_value("embedding(2)".parse().unwrap(), &json!([0.5, 1])).unwrap();
        assert_eq!(e, Value::Embedding(vec![0.5, 1.0]));
        assert_eq!(
            feature_value(FeatureType::Int64, &json!(7)),
            Ok(Value::Int64(7))
        );
        assert_eq!(
            feature_value(FeatureType::Int64, &json!(null)),
            Ok(Value::Null)
        );
        assert!(feature_value(FeatureType::Int64, &json!("7")).is_err());
        assert!(feature_value(FeatureType::Int32, &json!(1u64 << 40)).is_err());
        assert!(feature_value(FeatureType::Bool, &json!(1)).is_err());
        let l = feature_value("list<string>".parse().unwrap(), &json!(["a", "b"])).unwrap();
        assert_eq!(l, Value::ListString(vec!["a".into(), "b".into()]));
        assert_eq!(to_json(&l), json!(["a", "b"]));
        assert_eq!(
            to_cell(&Value::Embedding(vec![1.0; 64])),
            "[1, 1, 1, … 64 values]"
        );
    }
}
