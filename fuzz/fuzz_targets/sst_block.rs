//! Fuzzes the SST data-block decoder: any bytes must decode to an error or
//! to entries that can all be read back, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tessera_storage::sstable::Block;

fuzz_target!(|data: &[u8]| {
    let Ok(block) = Block::decode(bytes::Bytes::copy_from_slice(data), Path::new("fuzz"), 0) else {
        return;
    };
    for i in 0..block.len() {
        let _ = block.entry(i);
        let _ = block.value(i);
    }
    let _ = block.seek(1, b"key", 0, 0);
});
