//! The server's sans-IO session, as QEMU 10 and as QEMU 11: any client
//! bytes give replies and calls, never a panic, and every call it hands
//! out can be answered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp_server::{CommandSet, Session, SessionConfig, Step};

struct Commands;

impl CommandSet for Commands {
    fn allow_oob(&self, command: &str) -> Option<bool> {
        match command {
            "query-version" | "quit" => Some(false),
            "query-yank" => Some(true),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for major in [10, 11] {
        let mut s = Session::new(
            SessionConfig {
                version: qmp_proto::Version::new(major, 0, 0, ""),
                offer_oob: true,
                pretty: data.len() % 2 == 0,
            },
            Commands,
        );
        let _ = s.greeting();
        let mut rest = data;
        loop {
            let mut ready = Vec::new();
            let used = s.feed(rest, &mut ready);
            rest = &rest[used..];
            let mut progressed = used > 0;
            for step in ready {
                if let Step::Call(call) = step {
                    let _ = s.reply(&call, Ok(None));
                }
            }
            while let Some(step) = s.next_inband() {
                progressed = true;
                if let Step::Call(call) = step {
                    let _ = s.reply(&call, Ok(None));
                }
            }
            if rest.is_empty() || !progressed {
                break;
            }
        }
    }
});
