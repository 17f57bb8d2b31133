//! Reading slate and history replies without copying.
//!
//! [`SlateReply::decode`] walks the whole body once, checking every length,
//! offset, bitmap and padding byte and the UTF-8 of every string; after
//! that the views only index into the shared [`Body`]. Numeric columns are
//! also available as slices of the body itself ([`Column::i64s`] and
//! friends).

use super::{bitmap_len, Layout};
use crate::body::Body;
use crate::error::DecodeError;
use crate::value::{tag, Value};
use crate::wire::{utf8, Reader};

/// A decoded `GET_SLATE` reply: one part per request part, in order.
#[derive(Clone, Debug)]
pub struct SlateReply {
    body: Body,
    parts: Vec<PartView>,
}

/// A decoded `HISTORY` reply: one row per version, newest first.
#[derive(Clone, Debug)]
pub struct HistoryReply {
    body: Body,
    part: PartView,
}

/// One part of a reply: a row per key (or version).
#[derive(Clone, Debug)]
pub struct PartView {
    body: Body,
    rows: usize,
    found_at: usize,
    event_ts_at: usize,
    /// `HISTORY` only: ingest times, then sequences.
    ingest_ts_at: usize,
    seq_at: usize,
    columns: Vec<Column>,
}

/// One projected feature of a part: validity and values, by row.
#[derive(Clone, Debug)]
pub struct Column {
    body: Body,
    name: String,
    tag: u8,
    dim: u32,
    rows: usize,
    layout: Layout,
    valid_at: usize,
    /// Row offsets (variable-length layouts).
    offsets_at: usize,
    /// `list<string>`: string offsets.
    string_offsets_at: usize,
    /// Values, or elements, or string bytes.
    data_at: usize,
}

impl SlateReply {
    /// Validates and indexes a `GET_SLATE` reply body.
    pub fn decode(body: Body) -> Result<SlateReply, DecodeError> {
        let bytes = body.bytes();
        let mut r = Reader::new(bytes);
        let n = r.count16("slate parts")?;
        r.pad8()?;
        let mut parts = Vec::with_capacity(r.capacity_for(n, 8));
        for _ in 0..n {
            parts.push(PartView::decode(&body, &mut r, false)?);
        }
        r.finish()?;
        Ok(SlateReply { body, parts })
    }

    /// The parts, in request order.
    pub fn parts(&self) -> &[PartView] {
        &self.parts
    }

    /// The body the views read.
    pub fn body(&self) -> &Body {
        &self.body
    }
}

impl HistoryReply {
    /// Validates and indexes a `HISTORY` reply body.
    pub fn decode(body: Body) -> Result<HistoryReply, DecodeError> {
        let mut r = Reader::new(body.bytes());
        let part = PartView::decode(&body, &mut r, true)?;
        r.finish()?;
        Ok(HistoryReply { body, part })
    }

    /// The body the views read.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// Versions in the reply.
    pub fn rows(&self) -> usize {
        self.part.rows
    }

    /// The projected columns.
    pub fn columns(&self) -> &[Column] {
        &self.part.columns
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.part.column(name)
    }

    /// Event time of version `i`.
    pub fn event_ts(&self, i: usize) -> i64 {
        self.part.event_ts(i)
    }

    /// Ingest (commit) time of version `i`.
    pub fn ingest_ts(&self, i: usize) -> i64 {
        i64_at(&self.part.body, self.part.ingest_ts_at, i, self.part.rows).unwrap_or(0)
    }

    /// Commit sequence of version `i`.
    pub fn seq(&self, i: usize) -> u64 {
        i64_at(&self.part.body, self.part.seq_at, i, self.part.rows).map_or(0, |s| s as u64)
    }

    /// Whether version `i` is a tombstone.
    pub fn tombstone(&self, i: usize) -> bool {
        i < self.part.rows && !self.part.found(i)
    }
}

impl PartView {
    /// Validates and indexes one part (not a history part) at the reader's
    /// position in `body`: an `IMPORT_ROWS` batch.
    pub(crate) fn decode_one(body: &Body, r: &mut Reader<'_>) -> Result<PartView, DecodeError> {
        PartView::decode(body, r, false)
    }

    fn decode(body: &Body, r: &mut Reader<'_>, history: bool) -> Result<PartView, DecodeError> {
        let rows = r.count32("part rows")?;
        let columns = r.count16("part columns")?;
        if r.u16("part reserved")? != 0 {
            return Err(DecodeError::Reserved {
                what: "part reserved",
            });
        }
        r.pad8()?;
        let found_at = r.position();
        r.bytes(bitmap_len(rows), "found bitmap")?;
        check_bitmap_tail(body, found_at, rows)?;
        r.pad8()?;
        let arrays = if history { 3 } else { 1 };
        let event_ts_at = r.position();
        r.bytes(rows.saturating_mul(8).saturating_mul(arrays), "row times")?;
        let mut part = PartView {
            body: body.clone(),
            rows,
            found_at,
            event_ts_at,
            ingest_ts_at: event_ts_at + 8 * rows,
            seq_at: event_ts_at + 16 * rows,
            columns: Vec::with_capacity(r.capacity_for(columns, 16)),
        };
        for _ in 0..columns {
            let column = Column::decode(body, r, rows)?;
            part.check_validity(&column)?;
            part.columns.push(column);
        }
        Ok(part)
    }

    /// A valid value where the row was not found is a malformed reply.
    fn check_validity(&self, column: &Column) -> Result<(), DecodeError> {
        let bytes = self.body.bytes();
        for b in 0..bitmap_len(self.rows) {
            let found = bytes.get(self.found_at + b).copied().unwrap_or(0);
            let valid = bytes.get(column.valid_at + b).copied().unwrap_or(0);
            if valid & !found != 0 {
                return Err(DecodeError::Malformed {
                    what: "validity bitmap",
                    reason: "a value is set where the row was not found",
                });
            }
        }
        Ok(())
    }

    /// Rows (keys asked, or versions).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether key `i` has a visible row.
    pub fn found(&self, i: usize) -> bool {
        bit(&self.body, self.found_at, i, self.rows)
    }

    /// Event time of row `i` (0 where not found).
    pub fn event_ts(&self, i: usize) -> i64 {
        i64_at(&self.body, self.event_ts_at, i, self.rows).unwrap_or(0)
    }

    /// The projected columns, in request order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Bits past `rows` in a bitmap's last byte must be zero.
fn check_bitmap_tail(body: &Body, at: usize, rows: usize) -> Result<(), DecodeError> {
    if rows % 8 == 0 {
        return Ok(());
    }
    let last = body.bytes().get(at + rows / 8).copied().unwrap_or(0);
    if last >> (rows % 8) != 0 {
        return Err(DecodeError::Reserved {
            what: "bitmap bits past the last row",
        });
    }
    Ok(())
}

fn bit(body: &Body, at: usize, i: usize, rows: usize) -> bool {
    i < rows
        && body
            .bytes()
            .get(at + i / 8)
            .is_some_and(|b| b >> (i % 8) & 1 == 1)
}

fn u32_at(body: &Body, at: usize, i: usize) -> Option<usize> {
    let start = at.checked_add(i.checked_mul(4)?)?;
    let b = body.bytes().get(start..start + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn i64_at(body: &Body, at: usize, i: usize, rows: usize) -> Option<i64> {
    if i >= rows {
        return None;
    }
    let start = at + 8 * i;
    let b = body.bytes().get(start..start + 8)?;
    Some(i64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

/// Reads an offset array of `n + 1` entries at the reader's position and
/// checks it starts at 0 and never decreases; returns where it starts and
/// its last entry.
fn offsets(
    body: &Body,
    r: &mut Reader<'_>,
    n: usize,
    what: &'static str,
) -> Result<(usize, usize), DecodeError> {
    let at = r.position();
    r.bytes(n.saturating_add(1).saturating_mul(4), what)?;
    let mut prev = 0;
    for i in 0..=n {
        let o = u32_at(body, at, i).ok_or(DecodeError::Truncated { what })?;
        if (i == 0 && o != 0) || o < prev {
            return Err(DecodeError::Malformed {
                what,
                reason: "offsets must start at 0 and never decrease",
            });
        }
        prev = o;
    }
    r.pad8()?;
    Ok((at, prev))
}

impl Column {
    fn decode(body: &Body, r: &mut Reader<'_>, rows: usize) -> Result<Column, DecodeError> {
        let name = r.str16("column name")?.to_owned();
        r.pad8()?;
        let tag = r.u8("column tag")?;
        if r.bytes(3, "column reserved")? != [0, 0, 0] {
            return Err(DecodeError::Reserved {
                what: "column reserved",
            });
        }
        let dim = r.u32("column dim")?;
        let layout = Layout::of(tag, dim).ok_or(DecodeError::UnknownValue {
            what: "column tag",
            value: u64::from(tag),
        })?;
        if (tag == tag::EMBEDDING) != (dim != 0) {
            return Err(DecodeError::Malformed {
                what: "column dim",
                reason: "set for embeddings only, and nonzero for them",
            });
        }
        let valid_at = r.position();
        r.bytes(bitmap_len(rows), "validity bitmap")?;
        check_bitmap_tail(body, valid_at, rows)?;
        r.pad8()?;
        let mut c = Column {
            body: body.clone(),
            name,
            tag,
            dim,
            rows,
            layout,
            valid_at,
            offsets_at: 0,
            string_offsets_at: 0,
            data_at: 0,
        };
        c.decode_data(r)?;
        Ok(c)
    }

    fn decode_data(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let rows = self.rows;
        match self.layout {
            Layout::Fixed { width } => {
                self.data_at = r.position();
                let data = r.bytes(rows.saturating_mul(width), "column values")?;
                if self.tag == tag::BOOL && data.iter().any(|&b| b > 1) {
                    return Err(DecodeError::Malformed {
                        what: "bool column",
                        reason: "values must be 0 or 1",
                    });
                }
            }
            Layout::Bytes => {
                let (at, len) = offsets(&self.body, r, rows, "column offsets")?;
                self.offsets_at = at;
                self.data_at = r.position();
                let data = r.bytes(len, "column bytes")?;
                if self.tag == tag::STRING {
                    for i in 0..rows {
                        let (s, e) = self
                            .range(i)
                            .ok_or(DecodeError::Truncated { what: "string" })?;
                        utf8(&data[s..e], "string value")?;
                    }
                }
            }
            Layout::List { width } => {
                let (at, len) = offsets(&self.body, r, rows, "list offsets")?;
                self.offsets_at = at;
                self.data_at = r.position();
                r.bytes(len.saturating_mul(width), "list elements")?;
            }
            Layout::ListString => {
                let (at, total) = offsets(&self.body, r, rows, "list offsets")?;
                self.offsets_at = at;
                let (sat, len) = offsets(&self.body, r, total, "string offsets")?;
                self.string_offsets_at = sat;
                self.data_at = r.position();
                let data = r.bytes(len, "list strings")?;
                for i in 0..total {
                    let s = u32_at(&self.body, sat, i).unwrap_or(0);
                    let e = u32_at(&self.body, sat, i + 1).unwrap_or(0);
                    utf8(&data[s..e], "list string")?;
                }
            }
        }
        r.pad8()
    }

    /// The feature's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value type tag (see [`crate::tag`]).
    pub fn tag(&self) -> u8 {
        self.tag
    }

    /// The embedding dimension; 0 for other types.
    pub fn dim(&self) -> u32 {
        self.dim
    }

    /// Rows in the column.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether row `i` has a value (is found and not null).
    pub fn is_valid(&self, i: usize) -> bool {
        bit(&self.body, self.valid_at, i, self.rows)
    }

    /// Row `i`'s offset range (variable-length layouts).
    fn range(&self, i: usize) -> Option<(usize, usize)> {
        let s = u32_at(&self.body, self.offsets_at, i)?;
        let e = u32_at(&self.body, self.offsets_at, i + 1)?;
        Some((s, e))
    }

    /// The fixed-width bytes of valid row `i` of a column of type `want`.
    fn fixed(&self, i: usize, want: &[u8]) -> Option<&[u8]> {
        want.contains(&self.tag).then(|| self.fixed_le(i))?
    }

    /// An `int64` or `timestamp` value.
    pub fn i64_at(&self, i: usize) -> Option<i64> {
        let b = self.fixed(i, &[tag::INT64, tag::TIMESTAMP])?;
        Some(i64::from_le_bytes(b.try_into().ok()?))
    }

    /// An `int32` value.
    pub fn i32_at(&self, i: usize) -> Option<i32> {
        let b = self.fixed(i, &[tag::INT32])?;
        Some(i32::from_le_bytes(b.try_into().ok()?))
    }

    /// A `float64` value.
    pub fn f64_at(&self, i: usize) -> Option<f64> {
        let b = self.fixed(i, &[tag::FLOAT64])?;
        Some(f64::from_le_bytes(b.try_into().ok()?))
    }

    /// A `float32` value.
    pub fn f32_at(&self, i: usize) -> Option<f32> {
        let b = self.fixed(i, &[tag::FLOAT32])?;
        Some(f32::from_le_bytes(b.try_into().ok()?))
    }

    /// A `bool` value.
    pub fn bool_at(&self, i: usize) -> Option<bool> {
        self.fixed(i, &[tag::BOOL]).map(|b| b == [1])
    }

    /// An embedding, as a slice of the body.
    pub fn embedding_at(&self, i: usize) -> Option<&[f32]> {
        let b = self.fixed(i, &[tag::EMBEDDING])?;
        cast(b)
    }

    /// A `string` value, borrowed from the body.
    pub fn str_at(&self, i: usize) -> Option<&str> {
        if self.tag != tag::STRING {
            return None;
        }
        std::str::from_utf8(self.var_at(i)?).ok()
    }

    /// A `bytes` (or `string`) value, borrowed from the body.
    pub fn bytes_at(&self, i: usize) -> Option<&[u8]> {
        self.var_at(i)
    }

    fn var_at(&self, i: usize) -> Option<&[u8]> {
        if self.layout != Layout::Bytes || !self.is_valid(i) {
            return None;
        }
        let (s, e) = self.range(i)?;
        self.body.bytes().get(self.data_at + s..self.data_at + e)
    }

    /// A `list<int64>` or `list<float32>` value's element bytes.
    fn list_at(&self, i: usize, width: usize) -> Option<&[u8]> {
        if self.layout != (Layout::List { width }) || !self.is_valid(i) {
            return None;
        }
        let (s, e) = self.range(i)?;
        self.body
            .bytes()
            .get(self.data_at + s * width..self.data_at + e * width)
    }

    /// The whole column of an `int64` or `timestamp` feature as one slice
    /// of the body (invalid rows hold 0). `None` for other types, and on
    /// big-endian hosts, where the wire's bytes are not native integers.
    pub fn i64s(&self) -> Option<&[i64]> {
        matches!(self.tag, tag::INT64 | tag::TIMESTAMP).then(|| self.all(8))?
    }

    /// The whole column of a `float64` feature as one slice of the body.
    pub fn f64s(&self) -> Option<&[f64]> {
        (self.tag == tag::FLOAT64).then(|| self.all(8))?
    }

    /// The whole column of a `float32` feature, or of an embedding
    /// (row-major, `dim` values per row), as one slice of the body.
    pub fn f32s(&self) -> Option<&[f32]> {
        matches!(self.tag, tag::FLOAT32 | tag::EMBEDDING).then(|| self.all(4))?
    }

    fn all<T: bytemuck::Pod>(&self, elem: usize) -> Option<&[T]> {
        let Layout::Fixed { width } = self.layout else {
            return None;
        };
        let len = self.rows.checked_mul(width)?;
        debug_assert_eq!(width % elem, 0);
        cast(self.body.bytes().get(self.data_at..self.data_at + len)?)
    }

    /// Row `i` as an owned [`Value`] (`Null` when not valid).
    pub fn value(&self, i: usize) -> Value {
        self.try_value(i).unwrap_or(Value::Null)
    }

    fn try_value(&self, i: usize) -> Option<Value> {
        if !self.is_valid(i) {
            return None;
        }
        Some(match self.tag {
            tag::BOOL => Value::Bool(self.bool_at(i)?),
            tag::INT32 => Value::Int32(self.i32_at(i)?),
            tag::INT64 => Value::Int64(self.i64_at(i)?),
            tag::TIMESTAMP => Value::Timestamp(self.i64_at(i)?),
            tag::FLOAT32 => Value::Float32(self.f32_at(i)?),
            tag::FLOAT64 => Value::Float64(self.f64_at(i)?),
            tag::STRING => Value::String(self.str_at(i)?.to_owned()),
            tag::BYTES => Value::Bytes(self.bytes_at(i)?.to_vec()),
            tag::EMBEDDING => Value::Embedding(floats(self.fixed(i, &[tag::EMBEDDING])?)),
            tag::LIST_FLOAT32 => Value::ListFloat32(floats(self.list_at(i, 4)?)),
            tag::LIST_INT64 => Value::ListInt64(
                self.list_at(i, 8)?
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            tag::LIST_STRING => Value::ListString(self.list_strings(i)?),
            _ => return None,
        })
    }

    fn list_strings(&self, i: usize) -> Option<Vec<String>> {
        Some(self.strings_at(i)?.into_iter().map(str::to_owned).collect())
    }

    /// The little-endian bytes of valid row `i` of a fixed-width column
    /// (a number, bool, timestamp or embedding), borrowed from the body.
    pub fn fixed_le(&self, i: usize) -> Option<&[u8]> {
        let Layout::Fixed { width } = self.layout else {
            return None;
        };
        if !self.is_valid(i) {
            return None;
        }
        let start = self.data_at + i * width;
        self.body.bytes().get(start..start + width)
    }

    /// The elements of valid row `i` of a `list<int64>` or `list<float32>`
    /// column, as little-endian bytes borrowed from the body.
    pub fn list_le(&self, i: usize) -> Option<&[u8]> {
        match self.layout {
            Layout::List { width } => self.list_at(i, width),
            _ => None,
        }
    }

    /// The strings of valid row `i` of a `list<string>` column.
    pub fn strings_at(&self, i: usize) -> Option<Vec<&str>> {
        if self.layout != Layout::ListString || !self.is_valid(i) {
            return None;
        }
        let (s, e) = self.range(i)?;
        (s..e)
            .map(|k| {
                let a = u32_at(&self.body, self.string_offsets_at, k)?;
                let b = u32_at(&self.body, self.string_offsets_at, k + 1)?;
                let bytes = self.body.bytes().get(self.data_at + a..self.data_at + b)?;
                std::str::from_utf8(bytes).ok()
            })
            .collect()
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `bytes` as a slice of `T`, when the host is little-endian and the bytes
/// are aligned (always, for a [`Body`]'s padded sections).
fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> Option<&[T]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    bytemuck::try_cast_slice(bytes).ok()
}
