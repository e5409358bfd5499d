//! Byte streams a QMP client can run over.
//!
//! [`Stream`] is a connected socket: unix or TCP, made by [`connect`], by a
//! [`Listener`] in accept mode (QEMU started with `server=off` connects to
//! us), or handed in ready-made (a socketpair, an inherited fd). It splits
//! into a read half for the router task and a write half for the writer
//! task; only the unix write half can carry file descriptors.

mod tcp;
mod unix;

use crate::{address::Address, error::Error};
use std::{io, os::fd::OwnedFd, sync::Arc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{tcp as tcp_half, unix as unix_half, TcpStream, UnixStream};

pub use unix::socketpair;

/// A connected stream.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
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
    /// Whether file descriptors can be passed on this stream.
    pub fn can_pass_fds(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
        }
    }
}

pub(crate) enum ReadHalf {
    Unix(unix_half::OwnedReadHalf),
    Tcp(tcp_half::OwnedReadHalf),
}

impl ReadHalf {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Unix(r) => r.read(buf).await,
            ReadHalf::Tcp(r) => r.read(buf).await,
        }
    }
}

pub(crate) enum WriteHalf {
    Unix(unix_half::OwnedWriteHalf),
    Tcp(tcp_half::OwnedWriteHalf),
}

impl WriteHalf {
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Unix(w) => w.write_all(bytes).await,
            WriteHalf::Tcp(w) => w.write_all(bytes).await,
        }
    }

    /// Writes `bytes` with `fds` attached to their first byte (SCM_RIGHTS).
    pub(crate) async fn write_with_fds(&mut self, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
        match self {
            WriteHalf::Unix(w) => unix::write_with_fds(w, bytes, fds).await,
            WriteHalf::Tcp(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file descriptors can only be passed over a unix socket",
            )),
        }
    }

    /// Half-closes: the server sees EOF after what was written (rule P6).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Unix(w) => w.shutdown().await,
            WriteHalf::Tcp(w) => w.shutdown().await,
        }
    }
}

fn connect_error(address: &Address, e: io::Error) -> Error {
    Error::Connect {
        address: address.to_string(),
        source: Arc::new(e),
    }
}

/// Connects to an address.
pub async fn connect(address: &Address) -> Result<Stream, Error> {
    let r = match address {
        Address::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
        Address::Tcp(host, port) => tcp::connect(host, *port).await,
        Address::Fd(fd) => unix::adopt_fd(*fd),
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
            Address::Fd(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot listen on an fd: address",
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
