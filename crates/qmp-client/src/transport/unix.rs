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

/// Whether the unix socket `fd` is connected but still waits in its
/// listener's queue, not yet accepted: a QEMU monitor serving another
/// client leaves a second one there (rule M1). `None` when the kernel
/// cannot tell (no `unix_diag`, not Linux).
///
/// Asked of the kernel's socket diagnostics (netlink `NETLINK_SOCK_DIAG`):
/// the server's end of a connection has no inode until it is accepted, so
/// a peer inode of 0 means "not accepted yet".
pub(super) fn waiting_to_be_accepted(fd: RawFd) -> Option<bool> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 0x4;
    const UNIX_DIAG_PEER: u16 = 2;
    // SAFETY: fstat writes one `stat` into the struct it is given.
    let ino = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        u32::try_from(st.st_ino).ok()?
    };
    // SAFETY: a new socket, owned here from the start.
    let nl = unsafe {
        let s = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        );
        if s < 0 {
            return None;
        }
        OwnedFd::from_raw_fd(s)
    };
    // nlmsghdr, then unix_diag_req: family, protocol, pad, states, inode,
    // what to show, cookie (none).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    let mut reply = [0u8; 512];
    // SAFETY: send reads `req`, recv writes at most `reply.len()` bytes
    // into `reply`; the kernel answers a diag request at once.
    let n = unsafe {
        if libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) < 0 {
            return None;
        }
        libc::recv(
            nl.as_raw_fd(),
            reply.as_mut_ptr().cast(),
            reply.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let reply = &reply[..usize::try_from(n).ok()?];
    let u16_at = |at: usize| Some(u16::from_ne_bytes(reply.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(reply.get(at..at + 4)?.try_into().ok()?));
    // An error message (type 2), or not the answer.
    if u16_at(4)? != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let len = usize::try_from(u32_at(0)?).ok()?.min(reply.len());
    // nlmsghdr (16) and unix_diag_msg (16), then attributes.
    let mut at = 32;
    while at + 4 <= len {
        let (attr_len, kind) = (usize::from(u16_at(at)?), u16_at(at + 2)?);
        if attr_len < 4 {
            return None;
        }
        if kind == UNIX_DIAG_PEER {
            return Some(u32_at(at + 4)? == 0);
        }
        at += (attr_len + 3) & !3;
    }
    None
}
