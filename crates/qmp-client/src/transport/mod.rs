//! Byte streams a QMP client can run over.
//!
//! [`Stream`] is a connected socket: unix or TCP, made by [`connect`], by a
//! [`Listener`] in accept mode (QEMU started with `server=off` connects to
//! us), or handed in ready-made (a socketpair, an inherited fd); or TLS
//! over TCP (`tls:`, the `tls` feature). It splits into a read half for the
//! router task and a write half for the writer task; only the unix write
//! half can carry file descriptors.

mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
mod unix;
mod unix_diag;

use crate::error::Error;
use nix::sys::socket::{self, MsgFlags};
use qmp_proto::Address;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::{io, sync::Arc};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

#[cfg(feature = "tls")]
pub use tls::TlsStream;
pub use unix::socketpair;
pub(crate) use unix_diag::serves_a_client;

/// A connected stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A unix socket (file descriptors can pass).
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s)
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl Stream {
    /// Whether this unix socket is connected but not yet accepted by the
    /// server (see `unix_diag`); `None` for TCP, or when the kernel cannot
    /// tell.
    pub(crate) fn waiting_to_be_accepted(&self) -> Option<bool> {
        match self {
            Stream::Unix(s) => unix_diag::waiting_to_be_accepted(s.as_raw_fd()),
            _ => None,
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Stream::Tls(_) = self {
            return true;
        }
        false
    }

    /// Whether file descriptors can be passed on this stream.
    pub fn can_pass_fds(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// Splits into the reader's half and the writer's half.
    ///
    /// tokio would register the socket for reading and writing at once, so
    /// every time the server read a request the kernel's "writable again"
    /// edge would wake the reader's `epoll_wait` for nothing: one spurious
    /// wake-up per command. Instead the read half is registered for
    /// readability only, and the write half shares the same descriptor,
    /// written with non-blocking sends; only while a write waits for room
    /// is a duplicate registered (writability only), as one epoll cannot
    /// hold one descriptor twice. So a connection holds one descriptor, not
    /// two (a process with 10,000 clients needs 10,000).
    ///
    /// TLS cannot write from two places at once: its halves are tokio's,
    /// and every write goes through the writer task.
    pub(crate) fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        let (fd, unix): (OwnedFd, bool) = match self {
            Stream::Unix(s) => (s.into_std()?.into(), true),
            Stream::Tcp(s) => (s.into_std()?.into(), false),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                return Ok((ReadHalf::Tls(r), WriteHalf::Tls(tokio::sync::Mutex::new(w))));
            }
        };
        let fd = Arc::new(fd);
        let write = WriteHalf::Fd {
            fd: fd.clone(),
            unix,
        };
        let read = ReadHalf::Fd(register(fd, Interest::READABLE)?);
        Ok((read, write))
    }
}

pub(crate) enum ReadHalf {
    Fd(AsyncFd<Arc<OwnedFd>>),
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<TlsStream>),
}

impl ReadHalf {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = match self {
            ReadHalf::Fd(fd) => fd,
            #[cfg(feature = "tls")]
            ReadHalf::Tls(r) => return tokio::io::AsyncReadExt::read(r, buf).await,
        };
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|fd| recv(fd.as_raw_fd(), buf)) {
                Ok(Ok(n)) => {
                    // A short read drained the socket: wait for the next
                    // edge rather than spend a syscall learning EAGAIN.
                    // (tokio keeps the readiness if an edge came since.)
                    if n > 0 && n < buf.len() {
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers an fd we own, alone or shared, with the reactor for one kind
/// of readiness.
fn register<F: AsFd + AsRawFd>(fd: F, interest: Interest) -> io::Result<AsyncFd<F>> {
    // SAFETY: `F` is an `OwnedFd` or an `Arc` of one; either keeps the same
    // descriptor open for as long as the `AsyncFd` holds it, and the
    // `AsyncFd` deregisters before dropping it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    socket::recv(fd, buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

pub(crate) enum WriteHalf {
    Fd {
        fd: Arc<OwnedFd>,
        unix: bool,
    },
    #[cfg(feature = "tls")]
    Tls(tokio::sync::Mutex<tokio::io::WriteHalf<TlsStream>>),
}

impl WriteHalf {
    /// One non-blocking write; `WouldBlock` when the socket is full (and
    /// always over TLS, whose writes the writer task makes).
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Fd { fd, .. } => socket::send(
                fd.as_raw_fd(),
                bytes,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            )
            .map_err(io::Error::from),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Waits until the socket has room, registering it just for this.
    async fn writable(fd: &OwnedFd) -> io::Result<()> {
        let fd = register(fd.try_clone()?, Interest::WRITABLE)?;
        let mut guard = fd.writable().await?;
        guard.retain_ready();
        Ok(())
    }

    /// Writes all of `bytes`, waiting for room as needed.
    pub(crate) async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let fd = match self {
            WriteHalf::Fd { fd, .. } => fd,
            #[cfg(feature = "tls")]
            WriteHalf::Tls(w) => {
                use tokio::io::AsyncWriteExt;
                let mut w = w.lock().await;
                w.write_all(bytes).await?;
                return w.flush().await;
            }
        };
        while !bytes.is_empty() {
            match self.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Self::writable(fd).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `bytes` with `fds` attached to their first byte (SCM_RIGHTS).
    pub(crate) async fn write_with_fds(&self, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
        let fd = match self {
            WriteHalf::Fd { fd, unix: true } => fd,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "file descriptors can only be passed over a unix socket",
                ))
            }
        };
        let sent = loop {
            match unix::send_with_fds(fd.as_raw_fd(), bytes, fds) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Self::writable(fd).await?,
                Err(e) => return Err(e),
            }
        };
        self.write_all(&bytes[sent..]).await
    }

    /// Half-closes: the server sees EOF after what was written (over TLS,
    /// after a close_notify).
    pub(crate) async fn shutdown(&self) -> io::Result<()> {
        match self {
            WriteHalf::Fd { fd, .. } => {
                socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Write).map_err(io::Error::from)
            }
            #[cfg(feature = "tls")]
            WriteHalf::Tls(w) => tokio::io::AsyncWriteExt::shutdown(&mut *w.lock().await).await,
        }
    }
}

fn connect_error(address: &Address, e: io::Error) -> Error {
    Error::Connect {
        address: address.to_string(),
        source: Arc::new(e),
    }
}

/// A connected socket the caller owns, as a stream.
pub fn stream_from_fd(fd: OwnedFd) -> io::Result<Stream> {
    unix::stream_from_fd(fd)
}

/// Connects to an address.
pub async fn connect(address: &Address) -> Result<Stream, Error> {
    let r = match address {
        Address::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
        Address::Tcp(host, port) => tcp::connect(host, *port).await,
        #[cfg(feature = "tls")]
        Address::Tls {
            host,
            port,
            options,
        } => tls::connect(host, *port, options).await,
        // Only a program's main can know that it owns an inherited
        // descriptor: it hands one over as an OwnedFd (from_fd).
        Address::Fd(fd) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd:{fd} names a descriptor this library cannot know is the caller's: \
                 pass it as an OwnedFd to ClientBuilder::from_fd"
            ),
        )),
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this client cannot connect to {other}"),
        )),
    };
    r.map_err(|e| connect_error(address, e))
}

/// A bound socket for accept mode: we listen, QEMU connects to us.
#[derive(Debug)]
pub struct Listener {
    inner: ListenerInner,
    address: Address,
}

#[derive(Debug)]
enum ListenerInner {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    /// Binds to a unix path or TCP address. A TCP port of 0 picks a free
    /// port; [`Listener::address`] tells which.
    pub async fn bind(address: &Address) -> Result<Listener, Error> {
        let r = match address {
            Address::Unix(path) => tokio::net::UnixListener::bind(path).map(|l| Listener {
                inner: ListenerInner::Unix(l),
                address: address.clone(),
            }),
            Address::Tcp(host, port) => tcp::bind(host, *port).await.map(|(l, port)| Listener {
                inner: ListenerInner::Tcp(l),
                address: Address::Tcp(host.clone(), port),
            }),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot listen on {other}"),
            )),
        };
        r.map_err(|e| connect_error(address, e))
    }

    /// The bound address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for one peer to connect.
    pub async fn accept(&self) -> Result<Stream, Error> {
        let r = match &self.inner {
            ListenerInner::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
            ListenerInner::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        };
        r.map_err(|e| connect_error(&self.address, e))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (ListenerInner::Unix(_), Address::Unix(path)) = (&self.inner, &self.address) {
            let _ = std::fs::remove_file(path);
        }
    }
}
