//! What the kernel knows of a unix connection to a busy monitor.
//!
//! A QEMU monitor serves one client at a time and leaves the next one
//! connected but unaccepted in its listener's queue (rule M1). To say
//! "busy" rather than wait out a timeout, the client asks the kernel's
//! socket diagnostics (netlink `NETLINK_SOCK_DIAG`, `unix_diag`):
//!
//! - whether its own connection has been accepted yet: the server's end of
//!   a connection has no inode until it is accepted;
//! - whether the listener is serving somebody else: an accepted connection
//!   bound to the same socket file whose client is still there. Without
//!   one, a monitor slow to accept (a loaded machine, a client that just
//!   left and is not yet reaped) is slow, not busy.
//!
//! Every answer is an `Option`: `None` when the kernel cannot tell (no
//! `unix_diag`, not Linux, an abstract socket), and the caller falls back.

use nix::libc;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_VFS: u32 = 0x2;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const TCP_ESTABLISHED: u8 = 1;

/// Whether the unix socket `fd` is connected but still waits in its
/// listener's queue, not yet accepted. A connection the other side has
/// already ended (the listener closed with it in the queue: QEMU went
/// away) or written to is not waiting: reading it tells what happened.
pub(super) fn waiting_to_be_accepted(fd: RawFd) -> Option<bool> {
    if has_news(fd) {
        return Some(false);
    }
    // SAFETY: fstat writes one `stat` into the struct it is given.
    let ino = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        u32::try_from(st.st_ino).ok()?
    };
    let sockets = ask(Some(ino), UDIAG_SHOW_PEER)?;
    let ours = sockets.iter().find(|s| s.ino == ino)?;
    Some(ours.peer? == 0)
}

/// Whether the unix listener bound at `path` is serving a client: some
/// connection it accepted is open, and that client has not gone away.
pub(crate) fn serves_a_client(path: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::metadata(path).ok()?;
    let ino = u32::try_from(file.ino()).ok()?;
    // The kernel reports the device in its own layout (major above bit 20)
    let dev = (libc::major(file.dev()) << 20) | libc::minor(file.dev());
    let sockets = ask(None, UDIAG_SHOW_VFS | UDIAG_SHOW_PEER)?;
    Some(sockets.iter().any(|s| {
        s.state == TCP_ESTABLISHED
            && s.ino != 0
            && s.vfs == Some((ino, dev))
            && s.peer.is_some_and(|peer| peer != 0)
    }))
}

/// Whether `fd` is readable or hung up right now.
fn has_news(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd it is given; a zero
    // timeout returns at once.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents != 0
}

/// One unix socket as the kernel describes it.
struct Socket {
    state: u8,
    /// Its inode; 0 for the server's end of a connection not yet accepted.
    ino: u32,
    /// Inode and device of the socket file it is bound to (listeners and
    /// the connections they accepted).
    vfs: Option<(u32, u32)>,
    /// The inode of its peer; 0 when the peer is gone or unaccepted.
    peer: Option<u32>,
}

/// Asks for one socket (`ino`) or, with `None`, every connected one.
fn ask(ino: Option<u32>, show: u32) -> Option<Vec<Socket>> {
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
    let (flags, states) = match ino {
        Some(_) => (libc::NLM_F_REQUEST, u32::MAX),
        None => (libc::NLM_F_REQUEST | libc::NLM_F_DUMP, 1 << TCP_ESTABLISHED),
    };
    // nlmsghdr (length, type, flags, sequence, port), then unix_diag_req
    // (family, protocol, pad, states, inode, what to show, no cookie).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(flags as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&ino.unwrap_or(0).to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: send reads `req`.
    if unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return None;
    }
    // The kernel writes each batch of answers while the request is sent
    // or the previous batch received, so a non-blocking read always finds
    // the next one; an empty read means something went wrong.
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::recv(
                nl.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let mut batch = buf.get(..usize::try_from(n).ok()?)?;
        if batch.is_empty() {
            return None;
        }
        while batch.len() >= 16 {
            let len = usize::try_from(u32_at(batch, 0)?).ok()?;
            let kind = u16_at(batch, 4)?;
            let message = batch.get(16..len)?;
            match kind {
                NLMSG_DONE => return Some(sockets),
                NLMSG_ERROR => return None,
                SOCK_DIAG_BY_FAMILY => sockets.push(parse(message)?),
                _ => return None,
            }
            // a single answer is not followed by NLMSG_DONE
            if ino.is_some() {
                return Some(sockets);
            }
            batch = batch.get((len + 3) & !3..).unwrap_or_default();
        }
    }
}

/// unix_diag_msg (family, type, state, pad, inode, cookie), then
/// attributes (length, type, value, padded to 4).
fn parse(message: &[u8]) -> Option<Socket> {
    let mut socket = Socket {
        state: *message.get(2)?,
        ino: u32_at(message, 4)?,
        vfs: None,
        peer: None,
    };
    let mut at = 16;
    while at + 4 <= message.len() {
        let (len, kind) = (usize::from(u16_at(message, at)?), u16_at(message, at + 2)?);
        if len < 4 {
            return None;
        }
        match kind {
            UNIX_DIAG_VFS => {
                socket.vfs = Some((u32_at(message, at + 4)?, u32_at(message, at + 8)?))
            }
            UNIX_DIAG_PEER => socket.peer = Some(u32_at(message, at + 4)?),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Some(socket)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
