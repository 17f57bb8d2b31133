//! Primitive encodings: little-endian integers, length-prefixed strings and
//! lists (`docs/protocol.md`, "Conventions").
//!
//! [`Reader`] is a bounds-checked cursor over a body; every read either
//! returns a value that lies wholly inside the body or a [`DecodeError`].
//! Counts read from the body never size an allocation on their own: callers
//! cap capacities with [`Reader::capacity_for`].

use crate::error::{DecodeError, EncodeError};

/// A cursor over a body being decoded.
pub(crate) struct Reader<'b> {
    body: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(body: &'b [u8]) -> Reader<'b> {
        Reader { body, at: 0 }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.body.len() - self.at
    }

    /// The offset of the next byte.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    /// A capacity for `count` items of at least `min_size` bytes each that
    /// the rest of the body could really hold.
    pub(crate) fn capacity_for(&self, count: usize, min_size: usize) -> usize {
        count.min(self.remaining() / min_size.max(1))
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'b [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or(DecodeError::Truncated { what })?;
        let out = &self.body[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_le_bytes)
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.array(what).map(i32::from_le_bytes)
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.array(what).map(i64::from_le_bytes)
    }

    pub(crate) fn f32(&mut self, what: &'static str) -> Result<f32, DecodeError> {
        self.array(what).map(f32::from_le_bytes)
    }

    pub(crate) fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// A `u16` count.
    pub(crate) fn count16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        self.u16(what).map(usize::from)
    }

    /// A `u32` count.
    pub(crate) fn count32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        self.u32(what).map(|n| n as usize)
    }

    pub(crate) fn str16(&mut self, what: &'static str) -> Result<&'b str, DecodeError> {
        let n = self.count16(what)?;
        utf8(self.bytes(n, what)?, what)
    }

    pub(crate) fn str32(&mut self, what: &'static str) -> Result<&'b str, DecodeError> {
        let n = self.count32(what)?;
        utf8(self.bytes(n, what)?, what)
    }

    pub(crate) fn bytes32(&mut self, what: &'static str) -> Result<&'b [u8], DecodeError> {
        let n = self.count32(what)?;
        self.bytes(n, what)
    }

    /// Skips zero padding up to the next multiple of 8 from the body start.
    pub(crate) fn pad8(&mut self) -> Result<(), DecodeError> {
        let n = padding(self.at);
        if self.bytes(n, "padding")?.iter().any(|&b| b != 0) {
            return Err(DecodeError::Reserved { what: "padding" });
        }
        Ok(())
    }

    /// Fails unless the whole body was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

pub(crate) fn utf8<'b>(bytes: &'b [u8], what: &'static str) -> Result<&'b str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what })
}

/// Zero bytes needed after `at` to reach a multiple of 8.
pub(crate) fn padding(at: usize) -> usize {
    (8 - at % 8) % 8
}

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A `u16` count, or an error naming `what`.
pub(crate) fn put_count16(
    out: &mut Vec<u8>,
    n: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    let v = u16::try_from(n).map_err(|_| EncodeError {
        what,
        len: n,
        max: u16::MAX as usize,
    })?;
    put_u16(out, v);
    Ok(())
}

/// A `u32` count, or an error naming `what`.
pub(crate) fn put_count32(
    out: &mut Vec<u8>,
    n: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    let v = u32::try_from(n).map_err(|_| EncodeError {
        what,
        len: n,
        max: u32::MAX as usize,
    })?;
    put_u32(out, v);
    Ok(())
}

pub(crate) fn put_str16(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), EncodeError> {
    put_count16(out, s.len(), what)?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_bytes32(
    out: &mut Vec<u8>,
    b: &[u8],
    what: &'static str,
) -> Result<(), EncodeError> {
    put_count32(out, b.len(), what)?;
    out.extend_from_slice(b);
    Ok(())
}

pub(crate) fn put_str32(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), EncodeError> {
    put_bytes32(out, s.as_bytes(), what)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn char_prefix(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// A `str16` cut at a character boundary to fit, for server texts (error
/// messages, names the server itself chose) where a shortened text is
/// better than none.
pub(crate) fn put_str16_truncated(out: &mut Vec<u8>, s: &str) {
    let b = char_prefix(s, u16::MAX as usize);
    put_u16(out, b.len() as u16);
    out.extend_from_slice(b);
}

/// A `str32` for server texts; saturates like [`put_str16_truncated`].
pub(crate) fn put_str32_truncated(out: &mut Vec<u8>, s: &str) {
    put_bytes32_truncated(out, char_prefix(s, u32::MAX as usize));
}

/// A `bytes32` for server data; saturates like [`put_str16_truncated`].
pub(crate) fn put_bytes32_truncated(out: &mut Vec<u8>, b: &[u8]) {
    let end = b.len().min(u32::MAX as usize);
    put_u32(out, end as u32);
    out.extend_from_slice(&b[..end]);
}

/// Appends zero bytes up to the next multiple of 8 from `base`.
pub(crate) fn put_pad8(out: &mut Vec<u8>, base: usize) {
    let n = padding(out.len() - base);
    out.resize(out.len() + n, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new(&[1, 0, 2]);
        assert_eq!(r.u16("a"), Ok(1));
        assert_eq!(r.u16("b"), Err(DecodeError::Truncated { what: "b" }));
        assert_eq!(r.u8("c"), Ok(2));
        assert!(r.finish().is_ok());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(matches!(r.str32("s"), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn capacity_is_capped_by_what_is_left() {
        let r = Reader::new(&[0; 100]);
        assert_eq!(r.capacity_for(usize::MAX, 10), 10);
        assert_eq!(r.capacity_for(3, 10), 3);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let s = "é".repeat(40_000);
        let mut out = Vec::new();
        put_str16_truncated(&mut out, &s);
        let mut r = Reader::new(&out);
        let back = r.str16("s").expect("valid utf-8");
        assert!(back.len() <= u16::MAX as usize && back.chars().all(|c| c == 'é'));
    }
}
