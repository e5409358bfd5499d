//! JSON exactly as QEMU reads and writes it, for the server side.
//!
//! A QMP server that wants to answer byte for byte like QEMU must read its
//! input with QEMU's rules, not a standard JSON parser's: single-quoted
//! strings, the same lexical and parse error texts, recovery after an
//! error, the 0x01/0xFF reset bytes, top-level scalars seen only on the next
//! byte, and three per-message limits (rules J1–J9). It must
//! also write like QEMU (S1–S3): `", "` and `": "`, ASCII-only output with
//! upper-case `\uXXXX`, floats as C's `%.17g`, and object members in the
//! iteration order of QEMU's hash table, which is where the "fixed member
//! order" of QEMU's replies comes from.
//!
//! * [`QObject`]: QEMU's value model (integers, unsigned integers and
//!   doubles kept apart, since QEMU's argument checks tell them apart).
//! * [`Streamer`]: bytes in, one [`Parsed`] per message or error out. It
//!   chains the lexer (`lexer.rs`), the message splitter with its limits
//!   (`streamer.rs`) and the parser (`parser.rs`).
//! * [`to_json`]: QEMU's output, compact or pretty (`writer.rs`).
//!
//! Everything here was checked against qemu-storage-daemon; see the
//! differential test in `tests/qemu_json_differential.rs`.

mod ghash;
mod lexer;
mod parser;
mod push;
mod qobject;
mod streamer;
mod utf8;
mod writer;

pub use lexer::MAX_TOKEN_SIZE;
pub use qobject::{QDict, QObject};
pub use streamer::{Dialect, Parsed, Streamer, MAX_NESTING, MAX_TOKEN_COUNT};
pub use writer::{format_double, to_json, to_line};

/// The keys of an object not yet visited, kept as QEMU's argument
/// visitor keeps them (a GLib hash table), so that [`first`](Self::first)
/// is the key QEMU reports as `Parameter '...' is unexpected`.
pub struct LeftoverKeys(ghash::GHashSet);

impl LeftoverKeys {
    /// All of `dict`'s keys, inserted in QEMU's order.
    pub fn new(dict: &QDict) -> Self {
        let mut set = ghash::GHashSet::new();
        for (key, _) in dict.qemu_order() {
            set.insert(key);
        }
        LeftoverKeys(set)
    }

    /// Marks a key as visited.
    pub fn take(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// The first key left, in the table's slot order.
    pub fn first(&self) -> Option<String> {
        self.0.first().map(utf8::lossy)
    }
}

/// The member QEMU reports as `Parameter '...' is unexpected` after a
/// command's declared members (`visited`, in the order they were visited)
/// have been taken out of `args`; `None` if nothing is left over.
pub fn first_unexpected(args: &QDict, visited: &[&str]) -> Option<String> {
    let mut left = LeftoverKeys::new(args);
    for key in visited {
        if args.contains_key(key) {
            left.take(key);
        }
    }
    left.first()
}

impl std::fmt::Debug for LeftoverKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeftoverKeys").finish_non_exhaustive()
    }
}
