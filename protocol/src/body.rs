//! [`Body`]: a frame body held 8-byte aligned, so that a slate reply's
//! columns (padded to multiples of 8 from the body start) can be viewed in
//! place as `&[i64]`, `&[f64]` or `&[f32]`.

use std::sync::Arc;

/// An immutable, 8-byte-aligned frame body, cheap to share.
#[derive(Clone)]
pub struct Body {
    /// A `Vec` behind the `Arc`, not an `Arc<[u64]>`: a vector becomes
    /// the latter only by a copy, and a slate reply is some 20 KB.
    words: Arc<Vec<u64>>,
    len: usize,
}

impl Body {
    /// A body of `len` bytes filled by `fill`, which gets the bytes to
    /// write (for a socket read straight into the aligned buffer).
    pub fn filled_by<E>(
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Body, E> {
        let mut words = vec![0u64; len.div_ceil(8)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words[..]);
        fill(&mut bytes[..len])?;
        Ok(Body {
            words: Arc::new(words),
            len,
        })
    }

    /// A body holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Body {
        let filled: Result<Body, std::convert::Infallible> = Body::filled_by(bytes.len(), |b| {
            b.copy_from_slice(bytes);
            Ok(())
        });
        match filled {
            Ok(body) => body,
            Err(never) => match never {},
        }
    }

    /// The body's bytes; their start is 8-byte aligned.
    pub fn bytes(&self) -> &[u8] {
        let all: &[u8] = bytemuck::cast_slice(&self.words[..]);
        &all[..self.len]
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_aligned_and_exact() {
        for n in [0, 1, 7, 8, 9, 100] {
            let src: Vec<u8> = (0..n as u8).collect();
            let b = Body::copy_from(&src);
            assert_eq!(b.bytes(), &src[..]);
            assert_eq!(b.bytes().as_ptr() as usize % 8, 0);
        }
    }
}
