//! One address syntax for every tool and API:
//!
//! | text | meaning |
//! |---|---|
//! | `/run/qmp.sock`, `./qmp.sock`, `qmp.sock` | unix socket path |
//! | `unix:/run/qmp.sock` | unix socket path |
//! | `localhost:4444`, `tcp:localhost:4444` | TCP host and port |
//! | `[::1]:4444`, `tcp:[::1]:4444` | TCP over IPv6 |
//! | `fd:3` | an already-connected socket inherited as file descriptor 3 |
//! | `tls:host:4444` | TLS over TCP, checked against the system's CAs |
//! | `tls:host:4444,ca=ca.pem,cert=c.pem,key=k.pem,server-name=qemu1` | TLS with its files |
//!
//! A text without a `tcp:` prefix is TCP only when it ends in `:PORT` with a
//! numeric port and has no `/`; everything else is a path. Only `tls:`
//! takes options, after commas; a path may hold commas.

use std::{fmt, path::PathBuf, str::FromStr};

/// A text that is none of the address forms.
/// An address that could not be read; it holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address '{0}': expected /path, unix:/path, host:port, tcp:host:port, [v6]:port, fd:N or tls:host:port[,ca=FILE][,cert=FILE][,key=FILE][,server-name=NAME]")]
pub struct AddressError(pub String);

/// The files and name a TLS connection uses (`tls:` options).
///
/// QEMU's `tls-creds-x509` with `verify-peer=on` (its default) wants a
/// client certificate: give `cert` and `key`. QEMU's certificates are
/// usually signed by a CA of one's own: give it as `ca`, or the system's
/// CAs are used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file of the CA(s) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM file of this client's certificate (chain).
    pub cert: Option<PathBuf>,
    /// PEM file of the private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// host connected to (an IP address, an alias).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Sets each option given in `other` (a command line's `--tls-*` over
    /// an address's own options).
    pub fn merge(&mut self, other: &TlsOptions) {
        let TlsOptions {
            ca,
            cert,
            key,
            server_name,
        } = other.clone();
        self.ca = ca.or(self.ca.take());
        self.cert = cert.or(self.cert.take());
        self.key = key.or(self.key.take());
        self.server_name = server_name.or(self.server_name.take());
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        *self == TlsOptions::default()
    }
}

/// Where a QMP server is: the one address syntax of every tool and crate
/// (`/path`, `unix:/path`, `host:port`, `tcp:host:port`, `[v6]:port`,
/// `fd:N`, `tls:host:port[,OPTIONS]`).
///
/// ```
/// use qmp_proto::Address;
/// let a: Address = "tls:qemu1:4444,ca=ca.pem,cert=me.pem,key=me.key".parse()?;
/// let Address::Tls { host, port, options } = &a else { unreachable!() };
/// assert_eq!((host.as_str(), *port), ("qemu1", 4444));
/// assert_eq!(options.cert.as_deref(), Some("me.pem".as_ref()));
/// assert_eq!(a.to_string(), "tls:qemu1:4444,ca=ca.pem,cert=me.pem,key=me.key");
/// # Ok::<(), qmp_proto::AddressError>(())
/// ```
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
    /// TLS over TCP: host (without IPv6 brackets), port, and the files.
    Tls {
        /// The host to connect to.
        host: String,
        /// Its port.
        port: u16,
        /// Certificates, key and server name.
        options: TlsOptions,
    },
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
        if let Some(rest) = s.strip_prefix("tls:") {
            let mut parts = rest.split(',');
            let Some(Address::Tcp(host, port)) = parts.next().and_then(parse_host_port) else {
                return Err(bad());
            };
            let mut options = TlsOptions::default();
            for option in parts {
                match option.split_once('=') {
                    Some(("ca", v)) if !v.is_empty() => options.ca = Some(v.into()),
                    Some(("cert", v)) if !v.is_empty() => options.cert = Some(v.into()),
                    Some(("key", v)) if !v.is_empty() => options.key = Some(v.into()),
                    Some(("server-name", v)) if !v.is_empty() => {
                        options.server_name = Some(v.into())
                    }
                    _ => return Err(bad()),
                }
            }
            return Ok(Address::Tls {
                host,
                port,
                options,
            });
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
            Address::Tls {
                host,
                port,
                options,
            } => {
                if host.contains(':') {
                    write!(f, "tls:[{host}]:{port}")?;
                } else {
                    write!(f, "tls:{host}:{port}")?;
                }
                let files = [
                    ("ca", &options.ca),
                    ("cert", &options.cert),
                    ("key", &options.key),
                ];
                for (name, path) in files {
                    if let Some(path) = path {
                        write!(f, ",{name}={}", path.display())?;
                    }
                }
                if let Some(name) = &options.server_name {
                    write!(f, ",server-name={name}")?;
                }
                Ok(())
            }
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
        assert_eq!(
            p("tls:[::1]:9,server-name=q,key=/k"),
            Address::Tls {
                host: "::1".into(),
                port: 9,
                options: TlsOptions {
                    key: Some("/k".into()),
                    server_name: Some("q".into()),
                    ..Default::default()
                }
            }
        );
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
            "tls:host",
            "tls:/path",
            "tls:h:1,ca=",
            "tls:h:1,colour=red",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "unix:/a b",
            "tcp:h:1",
            "tcp:[::1]:2",
            "fd:4",
            "tls:h:3",
            "tls:[::1]:5,ca=/c,cert=/d,key=/e,server-name=n",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }
}
