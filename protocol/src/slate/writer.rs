//! Building slate and history replies in place, in a frame buffer.
//!
//! The writers append to the caller's buffer as they go; a caller that
//! meets an error part-way discards the buffer from the frame's start, so a
//! half-built reply is never sent. Every section ends padded to 8 bytes
//! from the body start (`base`).

use super::{bitmap_len, Layout};
use crate::value::{tag, Value};
use crate::wire::{self, put_pad8};

/// A value that does not fit the column it is pushed to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` (type tag {tag}): {reason}")]
pub struct ColumnError {
    /// The column.
    pub column: String,
    /// Its type tag.
    pub tag: u8,
    /// What does not fit.
    pub reason: String,
}

/// Writes a `GET_SLATE` reply body: a part count, then the parts.
pub struct SlateReplyWriter<'o> {
    out: &'o mut Vec<u8>,
    base: usize,
}

impl<'o> SlateReplyWriter<'o> {
    /// Starts a body of `parts` parts at the end of `out` (right after the
    /// frame header).
    pub fn new(out: &'o mut Vec<u8>, parts: u16) -> SlateReplyWriter<'o> {
        let base = out.len();
        wire::put_u16(out, parts);
        put_pad8(out, base);
        SlateReplyWriter { out, base }
    }

    /// Starts the next part: `found[i]` and `event_ts[i]` for each key,
    /// then `columns` columns written through the returned writer.
    pub fn part(&mut self, found: &[bool], event_ts: &[i64], columns: u16) -> PartWriter<'_> {
        PartWriter::start(self.out, self.base, found, &[event_ts], columns)
    }
}

/// Writes one part: its header and row arrays, then its columns.
pub struct PartWriter<'o> {
    out: &'o mut Vec<u8>,
    base: usize,
    /// Rows of the part.
    rows: usize,
}

impl<'o> PartWriter<'o> {
    /// Starts a `HISTORY` reply body at the end of `out`: one part whose
    /// rows are versions, with their ingest times and sequences.
    pub fn history(
        out: &'o mut Vec<u8>,
        live: &[bool],
        event_ts: &[i64],
        ingest_ts: &[i64],
        seq: &[u64],
        columns: u16,
    ) -> PartWriter<'o> {
        let base = out.len();
        let seq: Vec<i64> = seq.iter().map(|&s| s as i64).collect();
        PartWriter::start(out, base, live, &[event_ts, ingest_ts, &seq], columns)
    }

    /// Starts a single part at the end of `out` (an `IMPORT_ROWS` batch),
    /// padded from `out`'s start.
    pub(crate) fn single(
        out: &'o mut Vec<u8>,
        found: &[bool],
        event_ts: &[i64],
        columns: u16,
    ) -> PartWriter<'o> {
        PartWriter::start(out, 0, found, &[event_ts], columns)
    }

    fn start(
        out: &'o mut Vec<u8>,
        base: usize,
        found: &[bool],
        arrays: &[&[i64]],
        columns: u16,
    ) -> PartWriter<'o> {
        let rows = found.len();
        wire::put_u32(out, u32::try_from(rows).unwrap_or(u32::MAX));
        wire::put_u16(out, columns);
        wire::put_u16(out, 0);
        put_pad8(out, base);
        put_bitmap(out, found.iter().copied());
        put_pad8(out, base);
        for array in arrays {
            debug_assert_eq!(array.len(), rows);
            for i in 0..rows {
                wire::put_i64(out, array.get(i).copied().unwrap_or(0));
            }
        }
        PartWriter { out, base, rows }
    }

    /// Bytes of the reply body written so far (this part and those before).
    pub fn body_len(&self) -> usize {
        self.out.len() - self.base
    }

    /// Starts the next column: `name`, type `tag` (embedding dimension
    /// `dim`, else 0). Push one value per row, then [`ColumnWriter::finish`].
    pub fn column(&mut self, name: &str, tag: u8, dim: u32) -> ColumnWriter<'_> {
        let (out, base, rows) = (&mut *self.out, self.base, self.rows);
        wire::put_str16_truncated(out, name);
        put_pad8(out, base);
        out.extend_from_slice(&[tag, 0, 0, 0]);
        wire::put_u32(out, dim);
        let valid_at = out.len();
        out.resize(valid_at + bitmap_len(rows), 0);
        put_pad8(out, base);
        // An unknown tag cannot come from a registry type; write it as
        // zero-width so the reply stays well-formed.
        let layout = Layout::of(tag, dim).unwrap_or(Layout::Fixed { width: 0 });
        let mut offsets_at = 0;
        if !matches!(layout, Layout::Fixed { .. } | Layout::ListString) {
            offsets_at = out.len();
            out.resize(offsets_at + 4 * (rows + 1), 0);
            put_pad8(out, base);
        }
        let data_at = out.len();
        ColumnWriter {
            out,
            base,
            name: name.to_owned(),
            tag,
            layout,
            rows,
            row: 0,
            valid_at,
            offsets_at,
            data_at,
            elements: 0,
            strings: Vec::new(),
        }
    }
}

fn put_bitmap(out: &mut Vec<u8>, bits: impl Iterator<Item = bool>) {
    let mut byte = 0u8;
    let mut n = 0;
    for bit in bits {
        byte |= u8::from(bit) << (n % 8);
        n += 1;
        if n % 8 == 0 {
            out.push(byte);
            byte = 0;
        }
    }
    if n % 8 != 0 {
        out.push(byte);
    }
}

/// Writes one column's values, row by row.
pub struct ColumnWriter<'o> {
    out: &'o mut Vec<u8>,
    base: usize,
    name: String,
    tag: u8,
    layout: Layout,
    rows: usize,
    /// Rows pushed so far.
    row: usize,
    valid_at: usize,
    offsets_at: usize,
    data_at: usize,
    /// Elements (or bytes) pushed so far, for the offset array.
    elements: usize,
    /// `list<string>` values, laid out at `finish` (their string offsets
    /// come after all the row offsets).
    strings: Vec<Vec<String>>,
}

impl ColumnWriter<'_> {
    fn error(&self, reason: impl Into<String>) -> ColumnError {
        ColumnError {
            column: self.name.clone(),
            tag: self.tag,
            reason: reason.into(),
        }
    }

    fn next_row(&mut self) -> Result<usize, ColumnError> {
        if self.row >= self.rows {
            return Err(self.error(format!("more than {} values pushed", self.rows)));
        }
        self.row += 1;
        Ok(self.row - 1)
    }

    fn set_valid(&mut self, row: usize) {
        if let Some(b) = self.out.get_mut(self.valid_at + row / 8) {
            *b |= 1 << (row % 8);
        }
    }

    /// Ends row `row` of a variable-length column at `self.elements`.
    fn set_offset(&mut self, row: usize) -> Result<(), ColumnError> {
        let end = u32::try_from(self.elements).map_err(|_| self.error("over 4 GiB of values"))?;
        let at = self.offsets_at + 4 * (row + 1);
        if let Some(slot) = self.out.get_mut(at..at + 4) {
            slot.copy_from_slice(&end.to_le_bytes());
        }
        Ok(())
    }

    /// A null (or not-found) row.
    pub fn push_null(&mut self) -> Result<(), ColumnError> {
        let row = self.next_row()?;
        match self.layout {
            Layout::Fixed { width } => self.out.resize(self.out.len() + width, 0),
            Layout::Bytes | Layout::List { .. } => self.set_offset(row)?,
            Layout::ListString => self.strings.push(Vec::new()),
        }
        Ok(())
    }

    /// A fixed-width value (number, bool, timestamp, embedding) given as
    /// its little-endian bytes.
    pub fn push_fixed_le(&mut self, bytes: &[u8]) -> Result<(), ColumnError> {
        let Layout::Fixed { width } = self.layout else {
            return Err(self.error("a fixed-width value in a variable-length column"));
        };
        if bytes.len() != width {
            return Err(self.error(format!("{} bytes for a {width}-byte value", bytes.len())));
        }
        let row = self.next_row()?;
        self.out.extend_from_slice(bytes);
        self.set_valid(row);
        Ok(())
    }

    /// Consecutive non-null fixed-width values, given as their
    /// little-endian bytes back to back: one copy instead of one per value.
    pub fn push_fixed_le_run(&mut self, bytes: &[u8]) -> Result<(), ColumnError> {
        let Layout::Fixed { width } = self.layout else {
            return Err(self.error("fixed-width values in a variable-length column"));
        };
        if width == 0 || bytes.len() % width != 0 {
            return Err(self.error(format!("{} bytes of {width}-byte values", bytes.len())));
        }
        let n = bytes.len() / width;
        if n > self.rows - self.row {
            return Err(self.error(format!("more than {} values pushed", self.rows)));
        }
        self.out.extend_from_slice(bytes);
        let (mut row, end) = (self.row, self.row + n);
        while row < end && row % 8 != 0 {
            self.set_valid(row);
            row += 1;
        }
        let whole = (end - row) / 8;
        let at = self.valid_at + row / 8;
        if let Some(bits) = self.out.get_mut(at..at + whole) {
            bits.fill(0xFF);
        }
        for row in row + 8 * whole..end {
            self.set_valid(row);
        }
        self.row = end;
        Ok(())
    }

    /// A `string` or `bytes` value; a string must be UTF-8 (readers refuse a
    /// reply that is not).
    pub fn push_var(&mut self, bytes: &[u8]) -> Result<(), ColumnError> {
        if self.layout != Layout::Bytes {
            return Err(self.error("bytes in a column that is not string or bytes"));
        }
        if self.tag == tag::STRING && std::str::from_utf8(bytes).is_err() {
            return Err(self.error("a string value is not UTF-8"));
        }
        self.append_var(bytes)
    }

    /// A `string` value.
    pub fn push_str(&mut self, s: &str) -> Result<(), ColumnError> {
        if self.tag != tag::STRING {
            return Err(self.error("a string in a column that is not string"));
        }
        self.append_var(s.as_bytes())
    }

    /// [`ColumnWriter::push_var`] of bytes known to fit the column.
    fn append_var(&mut self, bytes: &[u8]) -> Result<(), ColumnError> {
        let row = self.next_row()?;
        self.out.extend_from_slice(bytes);
        self.elements += bytes.len();
        self.set_offset(row)?;
        self.set_valid(row);
        Ok(())
    }

    fn push_elements(
        &mut self,
        count: usize,
        width: usize,
        bytes: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ColumnError> {
        if self.layout != (Layout::List { width }) {
            return Err(self.error("a list of the wrong element type"));
        }
        let row = self.next_row()?;
        bytes(self.out);
        self.elements += count;
        self.set_offset(row)?;
        self.set_valid(row);
        Ok(())
    }

    /// Any value of the column's type.
    pub fn push(&mut self, value: &Value) -> Result<(), ColumnError> {
        let mismatch = |w: &Self| w.error(format!("a {} value", value.type_name()));
        if value.tag() != self.tag && *value != Value::Null {
            return Err(mismatch(self));
        }
        match value {
            Value::Null => self.push_null(),
            Value::Bool(b) => self.push_fixed_le(&[u8::from(*b)]),
            Value::Int32(v) => self.push_fixed_le(&v.to_le_bytes()),
            Value::Int64(v) | Value::Timestamp(v) => self.push_fixed_le(&v.to_le_bytes()),
            Value::Float32(v) => self.push_fixed_le(&v.to_le_bytes()),
            Value::Float64(v) => self.push_fixed_le(&v.to_le_bytes()),
            Value::Embedding(v) => self.push_fixed_le(bytemuck::cast_slice(&v[..])),
            Value::String(s) => self.append_var(s.as_bytes()),
            Value::Bytes(b) => self.push_var(b),
            Value::ListInt64(v) => self.push_elements(v.len(), 8, |out| {
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
            }),
            Value::ListFloat32(v) => self.push_elements(v.len(), 4, |out| {
                out.extend_from_slice(bytemuck::cast_slice(&v[..]))
            }),
            Value::ListString(v) => {
                let row = self.next_row()?;
                self.strings.push(v.clone());
                self.set_valid(row);
                Ok(())
            }
        }
    }

    /// Ends the column: rows not pushed are written as null.
    pub fn finish(mut self) -> Result<(), ColumnError> {
        while self.row < self.rows {
            self.push_null()?;
        }
        if self.layout == Layout::ListString {
            self.write_list_strings()?;
        }
        put_pad8(self.out, self.base);
        debug_assert!(self.data_at <= self.out.len());
        Ok(())
    }

    fn write_list_strings(&mut self) -> Result<(), ColumnError> {
        let too_big = |w: &Self| w.error("over 4 GiB of values");
        let mut count = 0u32;
        wire::put_u32(self.out, 0);
        for list in &self.strings {
            count = u32::try_from(list.len())
                .ok()
                .and_then(|n| count.checked_add(n))
                .ok_or_else(|| too_big(self))?;
            wire::put_u32(self.out, count);
        }
        put_pad8(self.out, self.base);
        let mut end = 0u32;
        wire::put_u32(self.out, 0);
        for s in self.strings.iter().flatten() {
            end = u32::try_from(s.len())
                .ok()
                .and_then(|n| end.checked_add(n))
                .ok_or_else(|| too_big(self))?;
            wire::put_u32(self.out, end);
        }
        put_pad8(self.out, self.base);
        for s in self.strings.iter().flatten() {
            self.out.extend_from_slice(s.as_bytes());
        }
        Ok(())
    }
}
