//! io_uring batch reads. (Placeholder: being written.)

use super::ReadOp;
use std::io;

pub(crate) struct UringBatcher;

impl UringBatcher {
    pub(crate) fn new() -> io::Result<UringBatcher> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not yet"))
    }

    pub(crate) fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> io::Result<()> {
        for op in ops.iter_mut() {
            op.file.read_at(op.offset, op.buf)?;
        }
        Ok(())
    }
}
