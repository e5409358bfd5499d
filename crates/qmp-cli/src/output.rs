//! How JSON is printed: pretty on a terminal, compact otherwise, unless
//! `--pretty` or `--compact` says which.

use serde_json::Value;
use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub pretty: bool,
}

impl Style {
    pub fn choose(pretty: bool, compact: bool) -> Style {
        Style {
            pretty: pretty || (!compact && std::io::stdout().is_terminal()),
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
