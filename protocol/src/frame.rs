//! Frames: the 24-byte header every message starts with.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `TSRP` |
//! | 4 | 1 | version |
//! | 5 | 1 | opcode |
//! | 6 | 2 | flags |
//! | 8 | 8 | request id |
//! | 16 | 4 | body length |
//! | 20 | 4 | reserved, zero |
//!
//! A header that fails [`FrameHeader::decode`] cannot be resynchronised
//! from: the server answers it and closes the connection.

use crate::error::ErrorCode;
use crate::limits::HEADER_LEN;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"TSRP";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Frame flag bits.
pub mod flags {
    /// Set on every server frame.
    pub const REPLY: u16 = 1 << 0;
    /// The body is an error body.
    pub const ERROR: u16 = 1 << 1;
    /// A streamed reply continues in further frames with the same id.
    pub const MORE: u16 = 1 << 2;
    /// Every defined bit; the others are reserved.
    pub const ALL: u16 = REPLY | ERROR | MORE;
}

/// A decoded, checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The operation (not checked here: an unknown opcode does not
    /// desynchronise the stream).
    pub opcode: u8,
    /// [`flags`] bits.
    pub flags: u16,
    /// Chosen by the client, echoed by the reply.
    pub request_id: u64,
    /// Bytes of body after the header.
    pub body_len: u32,
}

/// Why a header cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a Tessera frame.
    #[error("bad magic {0:02x?}: not a Tessera frame")]
    BadMagic([u8; 4]),
    /// A version this crate does not speak.
    #[error("frame version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// Reserved bits or bytes set.
    #[error("reserved header bits are set")]
    Reserved,
    /// The frame is larger than the connection allows.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Header plus body.
        len: u64,
        /// The limit.
        max: usize,
    },
}

impl FrameError {
    /// The error code the server answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadMagic(_) | FrameError::Reserved => ErrorCode::BadFrame,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        }
    }
}

impl FrameHeader {
    /// Decodes and checks a header against a frame limit of `max_frame`
    /// bytes (header included).
    pub fn decode(h: &[u8; HEADER_LEN], max_frame: usize) -> Result<FrameHeader, FrameError> {
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if h[4] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(h[4]));
        }
        let flags = u16::from_le_bytes([h[6], h[7]]);
        let reserved = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
        if flags & !flags::ALL != 0 || reserved != 0 {
            return Err(FrameError::Reserved);
        }
        let body_len = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        let len = u64::from(body_len) + HEADER_LEN as u64;
        if len > max_frame as u64 {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame,
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[8..16]);
        Ok(FrameHeader {
            opcode: h[5],
            flags,
            request_id: u64::from_le_bytes(id),
            body_len,
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = PROTOCOL_VERSION;
        h[5] = self.opcode;
        h[6..8].copy_from_slice(&self.flags.to_le_bytes());
        h[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        h[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        h
    }
}

/// Where a frame being written starts in its buffer; see [`begin_frame`].
#[derive(Clone, Copy, Debug)]
#[must_use = "finish the frame with `finish_frame`"]
pub struct FrameStart(usize);

/// Appends a header with an unknown body length; the body follows, then
/// [`finish_frame`] fills the length in.
pub fn begin_frame(request_id: u64, opcode: u8, flags: u16, out: &mut Vec<u8>) -> FrameStart {
    let at = out.len();
    let header = FrameHeader {
        opcode,
        flags,
        request_id,
        body_len: 0,
    };
    out.extend_from_slice(&header.encode());
    FrameStart(at)
}

/// [`begin_frame`] for a successful reply to `opcode`.
pub fn begin_reply_frame(request_id: u64, opcode: crate::Opcode, out: &mut Vec<u8>) -> FrameStart {
    begin_frame(request_id, opcode as u8, flags::REPLY, out)
}

/// Fills in the body length of the frame begun at `start`. A body over
/// `u32::MAX` bytes saturates the field; the server refuses any reply over
/// its frame limit (far below) before sending it.
pub fn finish_frame(out: &mut [u8], start: FrameStart) {
    let body = out.len().saturating_sub(start.0 + HEADER_LEN);
    let len = u32::try_from(body).unwrap_or(u32::MAX);
    if let Some(field) = out.get_mut(start.0 + 16..start.0 + 20) {
        field.copy_from_slice(&len.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; HEADER_LEN] {
        FrameHeader {
            opcode: 0x30,
            flags: flags::REPLY,
            request_id: 42,
            body_len: 100,
        }
        .encode()
    }

    #[test]
    fn a_header_round_trips() {
        let h = FrameHeader::decode(&header(), 1 << 20).expect("valid");
        assert_eq!(
            (h.opcode, h.flags, h.request_id, h.body_len),
            (0x30, 1, 42, 100)
        );
    }

    #[test]
    fn every_broken_field_is_refused() {
        let mut h = header();
        h[1] = b'x';
        assert_eq!(
            FrameHeader::decode(&h, 1 << 20).map_err(|e| e.code()),
            Err(ErrorCode::BadFrame)
        );
        let mut h = header();
        h[4] = 2;
        assert_eq!(
            FrameHeader::decode(&h, 1 << 20).map_err(|e| e.code()),
            Err(ErrorCode::UnsupportedVersion)
        );
        let mut h = header();
        h[7] = 0x80;
        assert_eq!(FrameHeader::decode(&h, 1 << 20), Err(FrameError::Reserved));
        let mut h = header();
        h[23] = 1;
        assert_eq!(FrameHeader::decode(&h, 1 << 20), Err(FrameError::Reserved));
        assert_eq!(
            FrameHeader::decode(&header(), 123).map_err(|e| e.code()),
            Err(ErrorCode::FrameTooLarge)
        );
        assert!(FrameHeader::decode(&header(), 124).is_ok());
    }

    #[test]
    fn finish_frame_fills_the_length() {
        let mut out = vec![9u8; 3];
        let f = begin_frame(7, 2, 0, &mut out);
        out.extend_from_slice(&[1, 2, 3, 4, 5]);
        finish_frame(&mut out, f);
        let h: [u8; HEADER_LEN] = out[3..27].try_into().expect("header");
        assert_eq!(FrameHeader::decode(&h, 1 << 20).map(|h| h.body_len), Ok(5));
    }
}
