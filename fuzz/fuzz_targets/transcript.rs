//! Transcripts from files: any text is read, shown, normalized and turned
//! into a replay, or refused with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp_replay::replay::Replay;
use qmp_replay::transcript::{normalize, show, Transcript};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = text.parse::<Transcript>() {
        let _ = show(&t, Some(80));
        let n = normalize(&t);
        let _ = n.to_lines();
        let _ = Replay::from_transcript(&t);
    }
});
