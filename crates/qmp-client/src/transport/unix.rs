//! Unix-socket specifics: passing file descriptors (SCM_RIGHTS, rule F5)
//! and adopting an inherited, already-connected socket.

use super::Stream;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr,
};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use tokio::net::UnixStream;

/// Sends the start of `bytes` with `fds` as ancillary data on it, without
/// blocking; returns how many bytes went (the caller writes the rest).
pub(super) fn send_with_fds(fd: RawFd, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    socket::sendmsg::<UnixAddr>(
        fd,
        &[IoSlice::new(bytes)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)
}

/// A connected socket the caller owns (an inherited `fd:N`, say), as a
/// stream: unix or TCP, whichever it is.
pub(super) fn stream_from_fd(owned: OwnedFd) -> io::Result<Stream> {
    let fd = owned.as_raw_fd();
    let family = socket::getsockname::<SockaddrStorage>(fd)
        .map_err(io::Error::from)?
        .family();
    match family {
        Some(AddressFamily::Unix) => {
            let s = std::os::unix::net::UnixStream::from(owned);
            s.set_nonblocking(true)?;
            Ok(Stream::Unix(UnixStream::from_std(s)?))
        }
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let s = std::net::TcpStream::from(owned);
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(tokio::net::TcpStream::from_std(s)?))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {fd} is not a unix or TCP socket (address family {})",
                other.map_or_else(|| "unknown".to_string(), |f| format!("{}", f as i32))
            ),
        )),
    }
}

/// A connected pair of unix sockets, for running a client and an
/// in-process server (or a child QEMU given one end) over one socketpair.
pub fn socketpair() -> io::Result<(UnixStream, UnixStream)> {
    UnixStream::pair()
}
