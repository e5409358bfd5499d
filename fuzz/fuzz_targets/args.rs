//! The `key=value` argument syntax of the tools: any words give arguments
//! or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text.split(' ').collect();
    let _ = qmp_proto::args::parse_assignments(words);
    let _ = qmp_proto::args::parse_value(&text);
    let _ = text.parse::<qmp_proto::Address>();
});
