//! The offline tools' requests: `EXPORT` (a streamed snapshot or history
//! of one group) and `PIT_LOOKUP` (many keys, each read as of its own
//! time, for point-in-time training sets). Their replies are columnar: an
//! `EXPORT` chunk is laid out as a `HISTORY` reply whose first columns are
//! the entity's key columns, and a `PIT_LOOKUP` reply as a one-part slate.

use crate::error::{DecodeError, EncodeError};
use crate::message::{check_limit, decode_names, encode_names, name16};
use crate::value::{decode_key, encode_key, Key};
use crate::wire::{self, Reader};

/// Which versions an `EXPORT` streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportRange {
    /// Each entity's row as of a time, as a slate with the same `as_of`
    /// and `known_at` would read it: tombstoned and expired entities are
    /// left out.
    Snapshot {
        /// Event time to read as of (default: the snapshot's now).
        as_of: Option<i64>,
        /// Only versions ingested at or before this time.
        known_at: Option<i64>,
    },
    /// Every version with `from <= event_ts <= to`, tombstones included.
    History {
        /// Earliest event time, inclusive.
        from: i64,
        /// Latest event time, inclusive.
        to: i64,
    },
}

/// `EXPORT`: one group's rows from one consistent snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRequest {
    /// The feature group.
    pub group: String,
    /// Features to return; empty means every active feature.
    pub features: Vec<String>,
    /// Which versions.
    pub range: ExportRange,
}

/// `PIT_LOOKUP`: keys of one group, each with the event time to read it
/// as of.
#[derive(Clone, Debug, PartialEq)]
pub struct PitLookup {
    /// The feature group.
    pub group: String,
    /// Features to return; empty means every active feature.
    pub features: Vec<String>,
    /// If set, each key reads only versions ingested by its time minus
    /// this many µs (the bitemporal read).
    pub known_at_lag: Option<i64>,
    /// `(as_of, key)` per lookup, answered in order.
    pub keys: Vec<(i64, Key)>,
}

const RANGE_SNAPSHOT: u8 = 0;
const RANGE_HISTORY: u8 = 1;
const HAS_AS_OF: u8 = 1 << 0;
const HAS_KNOWN_AT: u8 = 1 << 1;

pub(crate) fn encode_export(e: &ExportRequest, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_str16(out, &e.group, "group")?;
    encode_names(&e.features, out)?;
    match e.range {
        ExportRange::Snapshot { as_of, known_at } => {
            wire::put_u8(out, RANGE_SNAPSHOT);
            let mut flags = 0;
            if as_of.is_some() {
                flags |= HAS_AS_OF;
            }
            if known_at.is_some() {
                flags |= HAS_KNOWN_AT;
            }
            wire::put_u8(out, flags);
            as_of
                .into_iter()
                .chain(known_at)
                .for_each(|t| wire::put_i64(out, t));
        }
        ExportRange::History { from, to } => {
            wire::put_u8(out, RANGE_HISTORY);
            wire::put_i64(out, from);
            wire::put_i64(out, to);
        }
    }
    Ok(())
}

pub(crate) fn decode_export(r: &mut Reader<'_>) -> Result<ExportRequest, DecodeError> {
    let group = name16(r, "group")?;
    let features = decode_names(r, "features")?;
    let range = match r.u8("export range")? {
        RANGE_SNAPSHOT => {
            let flags = r.u8("export flags")?;
            if flags & !(HAS_AS_OF | HAS_KNOWN_AT) != 0 {
                return Err(DecodeError::Reserved {
                    what: "export flags",
                });
            }
            let as_of = (flags & HAS_AS_OF != 0)
                .then(|| r.i64("as_of"))
                .transpose()?;
            let known_at = (flags & HAS_KNOWN_AT != 0)
                .then(|| r.i64("known_at"))
                .transpose()?;
            ExportRange::Snapshot { as_of, known_at }
        }
        RANGE_HISTORY => ExportRange::History {
            from: r.i64("from")?,
            to: r.i64("to")?,
        },
        other => {
            return Err(DecodeError::UnknownValue {
                what: "export range",
                value: u64::from(other),
            })
        }
    };
    Ok(ExportRequest {
        group,
        features,
        range,
    })
}

pub(crate) fn encode_pit(p: &PitLookup, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    wire::put_str16(out, &p.group, "group")?;
    encode_names(&p.features, out)?;
    wire::put_u8(out, u8::from(p.known_at_lag.is_some()));
    if let Some(lag) = p.known_at_lag {
        wire::put_i64(out, lag);
    }
    wire::put_count32(out, p.keys.len(), "lookups")?;
    for (as_of, key) in &p.keys {
        wire::put_i64(out, *as_of);
        encode_key(key, out)?;
    }
    Ok(())
}

pub(crate) fn decode_pit(r: &mut Reader<'_>) -> Result<PitLookup, DecodeError> {
    let group = name16(r, "group")?;
    let features = decode_names(r, "features")?;
    let known_at_lag = match r.u8("known_at_lag flag")? {
        0 => None,
        1 => Some(r.i64("known_at_lag")?),
        _ => {
            return Err(DecodeError::Reserved {
                what: "known_at_lag flag",
            })
        }
    };
    let n = r.count32("lookups")?;
    check_limit("lookups", n, crate::MAX_PIT_KEYS)?;
    let mut keys = Vec::with_capacity(r.capacity_for(n, 10));
    for _ in 0..n {
        let as_of = r.i64("lookup as_of")?;
        keys.push((as_of, decode_key(r)?));
    }
    Ok(PitLookup {
        group,
        features,
        known_at_lag,
        keys,
    })
}
