//! One address syntax for every tool and API:
//!
//! | text | meaning |
//! |---|---|
//! | `/run/qmp.sock`, `./qmp.sock`, `qmp.sock` | unix socket path |
//! | `unix:/run/qmp.sock` | unix socket path |
//! | `localhost:4444`, `tcp:localhost:4444` | TCP host and port |
//! | `[::1]:4444`, `tcp:[::1]:4444` | TCP over IPv6 |
//! | `fd:3` | an already-connected socket inherited as file descriptor 3 |
//!
//! A text without a `tcp:` prefix is TCP only when it ends in `:PORT` with a
//! numeric port and has no `/`; everything else is a path.

use std::{fmt, path::PathBuf, str::FromStr};

/// A text that is none of the address forms.
/// An address that could not be read; it holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address '{0}': expected /path, unix:/path, host:port, tcp:host:port, [v6]:port or fd:N")]
pub struct AddressError(pub String);

/// Where a QMP server is: the one address syntax of every tool and crate
/// (`/path`, `unix:/path`, `host:port`, `tcp:host:port`, `[v6]:port`,
/// `fd:N`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Address {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// Host (without IPv6 brackets) and port.
    Tcp(String, u16),
    /// A connected socket inherited as this descriptor number (a program's
    /// `main` adopts it; the libraries refuse to).
    Fd(i32),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let bad = || AddressError(s.to_owned());
        if s.is_empty() {
            return Err(bad());
        }
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.is_empty() {
                Err(bad())
            } else {
                Ok(Address::Unix(path.into()))
            };
        }
        if let Some(fd) = s.strip_prefix("fd:") {
            return fd.parse().map(Address::Fd).map_err(|_| bad());
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            return parse_host_port(rest).ok_or_else(bad);
        }
        if !s.contains('/') {
            if let Some(tcp) = parse_host_port(s) {
                return Ok(tcp);
            }
        }
        Ok(Address::Unix(s.into()))
    }
}

fn parse_host_port(s: &str) -> Option<Address> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None, // bare IPv6 needs brackets
        None => host,
    };
    if host.is_empty() {
        return None;
    }
    Some(Address::Tcp(host.to_owned(), port))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(h, p) if h.contains(':') => write!(f, "tcp:[{h}]:{p}"),
            Address::Tcp(h, p) => write!(f, "tcp:{h}:{p}"),
            Address::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn every_form() {
        assert_eq!(p("/run/q.sock"), Address::Unix("/run/q.sock".into()));
        assert_eq!(p("unix:/run/q.sock"), Address::Unix("/run/q.sock".into()));
        assert_eq!(p("unix:rel.sock"), Address::Unix("rel.sock".into()));
        assert_eq!(p("q.sock"), Address::Unix("q.sock".into()));
        assert_eq!(p("./dir:1/q.sock"), Address::Unix("./dir:1/q.sock".into()));
        assert_eq!(p("localhost:4444"), Address::Tcp("localhost".into(), 4444));
        assert_eq!(p("tcp:127.0.0.1:1"), Address::Tcp("127.0.0.1".into(), 1));
        assert_eq!(p("[::1]:4444"), Address::Tcp("::1".into(), 4444));
        assert_eq!(p("tcp:[::1]:4444"), Address::Tcp("::1".into(), 4444));
        assert_eq!(p("fd:3"), Address::Fd(3));
        // not a port: a path
        assert_eq!(p("name:abc"), Address::Unix("name:abc".into()));
    }

    #[test]
    fn invalid_forms_are_errors() {
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp:host:99999",
            "tcp:::1:4",
            "fd:x",
            "tcp::4",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:/a b", "tcp:h:1", "tcp:[::1]:2", "fd:4"] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }
}
