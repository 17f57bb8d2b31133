//! A bounds-checked little-endian reader for the engine's file formats (WAL
//! records and batches, the manifest): every short read becomes a
//! [`Error::Corruption`] naming the file and the absolute byte offset.

use crate::{Error, Result};
use std::path::Path;

/// Bounds-checked little-endian reader over bytes read from a file. Every
/// failure is an [`Error::Corruption`] naming the file and the absolute byte
/// offset (`base` + position in `buf`).
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
    path: &'a Path,
}

impl<'a> Decoder<'a> {
    /// A reader over `buf`, which starts at byte `base` of the file `path`.
    pub(crate) fn new(buf: &'a [u8], path: &'a Path, base: u64) -> Self {
        Decoder {
            buf,
            pos: 0,
            base,
            path,
        }
    }

    /// Position in `buf` of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Absolute file offset of the next byte to read.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        // `pos` only advances past bytes `take` found in `buf`.
        self.buf.len() - self.pos
    }

    /// A corruption error at position `pos` of `buf`.
    pub(crate) fn error_at(&self, pos: usize, reason: impl Into<String>) -> Error {
        Error::corruption(self.path, self.base + pos as u64, reason)
    }

    /// A corruption error at the current position.
    pub(crate) fn error_here(&self, reason: impl Into<String>) -> Error {
        self.error_at(self.pos, reason)
    }

    /// The next `n` bytes, or an error naming `what` if fewer remain.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let buf = self.buf;
        match buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(out) => {
                self.pos += n;
                Ok(out)
            }
            None => Err(self.error_here(format!(
                "truncated {what}: needs {n} bytes, {} remain",
                self.remaining()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// Reads a u8.
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian u16.
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }

    /// Reads a little-endian u32.
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// Reads a little-endian u64.
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a little-endian i64.
    pub(crate) fn i64(&mut self, what: &str) -> Result<i64> {
        self.array(what).map(i64::from_le_bytes)
    }
}
