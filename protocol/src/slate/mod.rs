//! Columnar slate and history replies (`docs/protocol.md`, "Slate and
//! history replies").
//!
//! A reply part is a header, a found bitmap, per-row event times and then
//! one column per projected feature: a validity bitmap and the values,
//! fixed-width values packed, variable-length ones as an offset array and
//! their bytes. Every section is followed by zero padding to a multiple of
//! 8 bytes from the start of the body, so a client holding the body 8-byte
//! aligned ([`crate::Body`]) views numeric columns in place.
//!
//! [`writer`] builds replies straight into a frame buffer (the server);
//! [`view`] validates a received body once and then reads it without
//! copying (the client).

mod view;
mod writer;

pub use view::{Column, HistoryReply, PartView, SlateReply};
pub use writer::{ColumnError, ColumnWriter, PartWriter, SlateReplyWriter};

/// Bytes of a bitmap of `rows` bits.
fn bitmap_len(rows: usize) -> usize {
    rows.div_ceil(8)
}

/// How a column's values are laid out, by type tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `width` bytes per row.
    Fixed { width: usize },
    /// Offsets into a byte area (`string`, `bytes`).
    Bytes,
    /// Offsets counting elements of `width` bytes (`list<int64>`,
    /// `list<float32>`).
    List { width: usize },
    /// Offsets counting strings, then string offsets into bytes.
    ListString,
}

impl Layout {
    /// The layout of a column of type `tag` (embedding dimension `dim`).
    fn of(tag: u8, dim: u32) -> Option<Layout> {
        use crate::value::tag as t;
        Some(match tag {
            t::EMBEDDING => Layout::Fixed {
                width: (dim as usize).checked_mul(4)?,
            },
            t::STRING | t::BYTES => Layout::Bytes,
            t::LIST_INT64 => Layout::List { width: 8 },
            t::LIST_FLOAT32 => Layout::List { width: 4 },
            t::LIST_STRING => Layout::ListString,
            other => Layout::Fixed {
                width: t::fixed_width(other)?,
            },
        })
    }
}

#[cfg(test)]
mod tests;
