//! One client connection: reads bytes into a [`Session`], runs the calls it
//! hands out, writes replies and events.
//!
//! Input is read only while the session wants it (QEMU stops reading when
//! its in-band queue is full), so a client that floods is held back by the
//! socket, as with QEMU. In-band calls run one at a time, in order;
//! out-of-band calls run at once, concurrently. When the client half-closes,
//! everything already read is still answered (rule P6); a partial message
//! is dropped (J9).

use crate::server::{HandlerResult, Inner, Registry, Request};
use crate::session::{Call, QmpFailure, Session, Step};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};

/// A connected client.
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

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The read side: unix sockets also receive file descriptors.
enum ReadSide {
    Unix(tokio::net::unix::OwnedReadHalf),
    Other(Reader),
}

impl ReadSide {
    async fn read(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        match self {
            ReadSide::Other(r) => r.read(buf).await,
            ReadSide::Unix(r) => {
                let stream: &UnixStream = r.as_ref();
                loop {
                    stream.readable().await?;
                    match stream.try_io(Interest::READABLE, || {
                        recv_with_fds(stream.as_raw_fd(), buf, fds)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            }
        }
    }
}

/// One `recvmsg`, keeping any SCM_RIGHTS file descriptors that came along.
fn recv_with_fds(fd: i32, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 16]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just gave us these descriptors; we own them.
            fds.extend(
                received
                    .into_iter()
                    .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    Ok(msg.bytes)
}

fn split(stream: Stream) -> (ReadSide, Writer) {
    match stream {
        Stream::Unix(s) => {
            let (r, w) = s.into_split();
            (ReadSide::Unix(r), Box::new(w))
        }
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            (ReadSide::Other(Box::new(r)), Box::new(w))
        }
    }
}

/// A running call: what it was, its task, whether to close after it.
struct Running {
    call: Call,
    task: JoinHandle<HandlerResult>,
    close: Arc<AtomicBool>,
}

fn start(inner: &Inner, call: Call, fds: &mut Vec<OwnedFd>) -> Running {
    let close = Arc::new(AtomicBool::new(false));
    let request = Request {
        command: call.command.clone(),
        arguments: call.arguments.clone(),
        fds: std::mem::take(fds),
        close_after_reply: close.clone(),
    };
    let task = match (
        inner.check(&call.command, &call.arguments),
        inner.handler(&call.command),
    ) {
        (Err(e), _) => tokio::spawn(async move { Err(e) }),
        (Ok(()), Some(handler)) => tokio::spawn(handler(request)),
        // The session only hands out registered commands.
        (Ok(()), None) => {
            tokio::spawn(async { Err(QmpFailure::generic("internal error: no handler")) })
        }
    };
    Running { call, task, close }
}

fn outcome(r: Result<HandlerResult, tokio::task::JoinError>) -> HandlerResult {
    r.unwrap_or_else(|e| {
        Err(QmpFailure::generic(format!(
            "internal error: the command failed: {e}"
        )))
    })
}

/// Sends the events already raised before a reply: an event a command
/// causes must reach the client before the command's reply (rule P4).
fn send_pending_events(
    events: &mut broadcast::Receiver<crate::server::EventMsg>,
    session: &Session<Registry>,
    out: &mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Ok(e) = events.try_recv() {
        if let Some(bytes) = session.event(&e.name, e.data, e.seconds, e.microseconds) {
            let _ = out.send(bytes);
        }
    }
}

pub(crate) async fn run(inner: Arc<Inner>, stream: Stream) {
    let mut session = Session::new(inner.config.clone(), Registry(inner.clone()));
    let (mut reader, mut writer) = split(stream);
    let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let _ = out.send(session.greeting());
    let mut events = inner.events.subscribe();
    let mut stop = inner.shutdown.subscribe();
    let mut input: Vec<u8> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut input_ended = false;
    let mut inband: Option<Running> = None;
    let mut oob: JoinSet<(Call, HandlerResult, Arc<AtomicBool>)> = JoinSet::new();
    let mut events_open = true;
    'session: loop {
        // Settle: offer buffered input (dispatching oob requests as they
        // are read) and take in-band work, until neither moves; taking
        // work can make the session want input again.
        loop {
            let mut ready = Vec::new();
            let used = session.feed(&input, &mut ready);
            input.drain(..used);
            let mut progressed = used > 0 || !ready.is_empty();
            for step in ready {
                match step {
                    Step::Reply(bytes) => {
                        let _ = out.send(bytes);
                    }
                    Step::Call(call) => {
                        let r = start(&inner, call, &mut fds);
                        oob.spawn(async move {
                            let result = outcome(r.task.await);
                            (r.call, result, r.close)
                        });
                    }
                }
            }
            // In-band work strictly in order, one call at a time.
            while inband.is_none() {
                match session.next_inband() {
                    Some(Step::Reply(bytes)) => {
                        let _ = out.send(bytes);
                    }
                    Some(Step::Call(call)) => inband = Some(start(&inner, call, &mut fds)),
                    None => break,
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if input_ended
            && session.is_idle()
            && inband.is_none()
            && oob.is_empty()
            && (input.is_empty() || !session.wants_input())
        {
            break;
        }
        let can_read = !input_ended && input.is_empty() && session.wants_input();
        tokio::select! {
            r = reader.read(&mut buf, &mut fds), if can_read => match r {
                Ok(0) | Err(_) => input_ended = true,
                Ok(n) => input.extend_from_slice(&buf[..n]),
            },
            r = async { (&mut inband.as_mut().expect("guarded").task).await }, if inband.is_some() => {
                let running = inband.take().expect("guarded");
                send_pending_events(&mut events, &session, &out);
                let _ = out.send(session.reply(&running.call, outcome(r)));
                if running.close.load(Ordering::SeqCst) {
                    break 'session;
                }
            }
            Some(r) = oob.join_next(), if !oob.is_empty() => {
                if let Ok((call, result, close)) = r {
                    send_pending_events(&mut events, &session, &out);
                    let _ = out.send(session.reply(&call, result));
                    if close.load(Ordering::SeqCst) {
                        break 'session;
                    }
                }
            }
            e = events.recv(), if events_open => match e {
                Ok(e) => {
                    if let Some(bytes) = session.event(&e.name, e.data, e.seconds, e.microseconds) {
                        let _ = out.send(bytes);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("a QMP session missed {n} events"),
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            _ = stop.wait_for(|s| *s), if !input_ended => input_ended = true,
        }
    }
    drop(out);
    let _ = write_task.await;
    oob.abort_all();
    if let Some(r) = inband {
        r.task.abort();
    }
}
