//! The client's framing and message model: any bytes, in any chunking,
//! give messages or errors, never a panic; after a non-fatal error the
//! decoder goes on.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp_proto::{DecodeError, Decoder};

fuzz_target!(|data: &[u8]| {
    // the first byte picks the chunk size
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let mut d = Decoder::with_max_message_size(1 << 16).with_max_nesting(64);
    for piece in data.chunks(chunk as usize + 1) {
        d.feed(piece);
        loop {
            match d.next_message() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(DecodeError::TooLarge { .. }) => return,
                Err(_) => {}
            }
        }
    }
    let _ = d.finish();
});
