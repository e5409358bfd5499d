//! How JSON is printed: pretty on a terminal, compact otherwise, unless
//! `--pretty` or `--compact` says which.

use serde_json::Value;
use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub pretty: bool,
    /// Stdout is a terminal and neither `--pretty` nor `--compact` was
    /// given: output for people where a tool has such a form.
    pub human: bool,
    /// Colour is wanted: stdout is a terminal and `NO_COLOR` is not set.
    pub colour: bool,
}

impl Style {
    pub fn choose(pretty: bool, compact: bool) -> Style {
        let terminal = std::io::stdout().is_terminal();
        Style {
            pretty: pretty || (!compact && terminal),
            human: terminal && !pretty && !compact,
            colour: terminal && colour_allowed(),
        }
    }

    /// `text` in bold cyan when colour is wanted.
    pub fn highlight(&self, text: &str) -> String {
        if self.colour {
            format!("\x1b[1;36m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn render(&self, value: &Value) -> String {
        if self.pretty {
            serde_json::to_string_pretty(value).unwrap_or_default()
        } else {
            value.to_string()
        }
    }

    /// Prints one value and a newline; false if stdout is gone (a closed
    /// pipe), so the caller can stop quietly.
    pub fn print(&self, value: &Value) -> bool {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", self.render(value))
            .and_then(|_| out.flush())
            .is_ok()
    }
}

/// Whether colour may be used at all: `NO_COLOR` (any non-empty value)
/// turns it off, as <https://no-color.org> asks.
pub fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `seconds.micros` since the epoch as local `HH:MM:SS.mmm`.
pub fn clock(seconds: i64, microseconds: i64) -> String {
    let t: nix::libc::time_t = seconds;
    // SAFETY: localtime_r fills the tm it is given from the time it is
    // given; both live on this stack frame.
    let tm = unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&t, &mut tm).is_null() {
            return format!("{seconds}.{:03}", microseconds / 1000);
        }
        tm
    };
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        microseconds / 1000
    )
}
