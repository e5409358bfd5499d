//! One client connection: reads bytes into a [`Session`], runs the calls it
//! hands out, writes replies and events.
//!
//! The loop is the same whoever answers the calls: the [`Server`](crate::Server)'s own
//! handlers, or a proxy forwarding them to a real QEMU. What differs is a
//! [`Backend`], made once per connection.
//!
//! Input is read only while the session wants it (QEMU stops reading when
//! its in-band queue is full), so a client that floods is held back by the
//! socket, as with QEMU. In-band calls run one at a time, in order;
//! out-of-band calls run at once, concurrently. When the client half-closes,
//! everything already read is still answered (rule P6); a partial message
//! is dropped (J9).

use crate::session::{Call, CommandSet, QmpError, Session, Step};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use qmp_proto::qemu_json::QObject;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// What a handler returns: a result (`None` for commands without one,
/// answered `{}`), or an error with its class and text.
pub type HandlerResult = Result<Option<QObject>, QmpError>;

/// An event to send, with the wall-clock time it was raised (rule E2).
/// Its data is a [`QObject`], so it is written as QEMU writes it; the
/// same event as a client reads it is [`qmp_proto::Event`].
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its `data` (left out when `None`, rule E1).
    pub data: Option<QObject>,
    /// When it was raised: seconds since the Unix epoch…
    pub seconds: i64,
    /// …and microseconds within that second.
    pub microseconds: i64,
}

impl Event {
    /// An event stamped with the wall clock now.
    pub fn now(name: &str, data: Option<QObject>) -> Event {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Event {
            name: name.to_owned(),
            data,
            seconds: now.as_secs() as i64,
            microseconds: now.subsec_micros() as i64,
        }
    }
}

/// A connected client: the server's side of what a client holds as
/// `qmp_client::Stream`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A unix socket (file descriptors can pass).
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
    /// Any other byte stream: TLS (as the proxy's TLS listeners accept),
    /// a pipe, an in-memory duplex for a test.
    Other(Box<dyn ByteStream>),
}

/// What [`Stream::Other`] holds: any tokio byte stream.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> ByteStream for T {}

/// Who is at the other end of a unix socket (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's user id.
    pub uid: u32,
    /// The peer's group id.
    pub gid: u32,
    /// The peer's process id, when the system tells it.
    pub pid: Option<i32>,
}

impl Stream {
    /// The peer's credentials; `None` over TCP.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        match self {
            Stream::Unix(s) => s.peer_cred().ok().map(|c| PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            }),
            _ => None,
        }
    }
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

    /// Whether the peer has closed its end entirely, not just its writing
    /// half (which still wants the replies to what it sent). Unix sockets
    /// report that as a hang-up; over TCP it cannot be told without
    /// writing, so TCP says no.
    fn peer_gone(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ReadSide::Unix(r) = self else {
            return false;
        };
        let stream: &UnixStream = r.as_ref();
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
        poll(&mut fds, PollTimeout::ZERO).is_ok()
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP))
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
        Stream::Other(s) => {
            let (r, w) = tokio::io::split(s);
            (ReadSide::Other(Box::new(r)), Box::new(w))
        }
    }
}

/// A future a connection runs for one call.
pub type CallFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// What an event source yields: an event, or how many were lost.
pub type EventItem = Result<Event, u64>;

/// Where a connection's events come from.
pub trait EventSource: Send + 'static {
    /// The next event already waiting, if any, without blocking.
    fn try_next(&mut self) -> Option<EventItem>;
    /// The next event; `None` once there will be no more.
    fn next(&mut self) -> impl Future<Output = Option<EventItem>> + Send;
}

/// One session's share of a broadcast of events (the server's, a
/// replay's).
#[derive(Debug)]
pub struct BroadcastEvents(pub tokio::sync::broadcast::Receiver<Event>);

impl EventSource for BroadcastEvents {
    fn try_next(&mut self) -> Option<EventItem> {
        use tokio::sync::broadcast::error::TryRecvError;
        match self.0.try_recv() {
            Ok(e) => Some(Ok(e)),
            Err(TryRecvError::Lagged(n)) => Some(Err(n)),
            Err(_) => None,
        }
    }

    async fn next(&mut self) -> Option<EventItem> {
        use tokio::sync::broadcast::error::RecvError;
        match self.0.recv().await {
            Ok(e) => Some(Ok(e)),
            Err(RecvError::Lagged(n)) => Some(Err(n)),
            Err(RecvError::Closed) => None,
        }
    }
}

/// What answers one connection's calls. Made once per connection, so it
/// can carry who the peer is.
pub trait Backend: Send + 'static {
    /// The command table its sessions check requests against.
    type Commands: CommandSet + Send + 'static;
    /// Where its events come from.
    type Events: EventSource;

    /// A fresh session: its configuration and command table.
    fn session(&self) -> Session<Self::Commands>;
    /// This connection's event subscription, taken before the greeting.
    fn events(&self) -> Self::Events;
    /// Starts a call; the future is spawned. The call is the backend's to
    /// keep (the loop keeps what the reply needs: command, id, oob).
    /// `fds` are the descriptors the client passed since its last command.
    /// Setting `close` ends the connection once the reply is sent (`quit`).
    fn start(&self, call: Call, fds: Vec<OwnedFd>, close: Arc<AtomicBool>) -> CallFuture;
    /// Resolves when the connection must end at once, unanswered: the
    /// server shuts down gently (what was read is still answered), or the
    /// proxy lost its QEMU (nothing more is answered).
    fn ended(&self) -> impl Future<Output = Ending> + Send + 'static;
    /// Outgoing messages a client may leave unread before it is cut off as
    /// not reading.
    fn max_unread(&self) -> usize {
        DEFAULT_MAX_UNREAD
    }
    /// Memory a client's input may hold (the message being read and the
    /// requests queued, see [`Session::input_held`]) before it is
    /// disconnected, with the reason logged. `None`: only QEMU's own
    /// limits apply, as QEMU's monitor has no other (a few hundred MiB at
    /// worst per client).
    fn input_budget(&self) -> Option<usize> {
        None
    }
    /// Whether calls still running when the client goes away are
    /// cancelled (a server's handlers) or left to finish (a proxy's
    /// commands, already in QEMU's hands).
    fn cancel_on_disconnect(&self) -> bool {
        true
    }
}

/// How a connection is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// Stop reading; answer what was read, then close.
    Drain,
    /// Close now, answering nothing more (QEMU went away).
    Now,
}

/// Outgoing messages a client may leave unread by default.
pub const DEFAULT_MAX_UNREAD: usize = 10_000;

/// A running call: what it was, its task, whether to close after it.
struct Running {
    call: Call,
    task: JoinHandle<HandlerResult>,
    close: Arc<AtomicBool>,
}

fn start<B: Backend>(backend: &B, call: Call, fds: &mut Vec<OwnedFd>) -> Running {
    let close = Arc::new(AtomicBool::new(false));
    // the arguments move to the backend (they can be 64 MiB); the reply
    // needs only the rest
    let kept = Call {
        arguments: Default::default(),
        command: call.command.clone(),
        id: call.id.clone(),
        oob: call.oob,
    };
    let task = tokio::spawn(backend.start(call, std::mem::take(fds), close.clone()));
    Running {
        call: kept,
        task,
        close,
    }
}

fn outcome(r: Result<HandlerResult, tokio::task::JoinError>) -> HandlerResult {
    r.unwrap_or_else(|e| {
        Err(QmpError::generic(format!(
            "internal error: the command failed: {e}"
        )))
    })
}

/// The write side: a task writing queued messages, and a count of those
/// not yet written, to notice a client that does not read.
struct Outbox {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    /// Bytes queued and not yet written.
    queued_bytes: Arc<AtomicUsize>,
    /// Signalled by the writer when the queue falls back under budget.
    drained: Arc<tokio::sync::Notify>,
    max_unread: usize,
}

/// Output a connection may have queued before it stops reading input:
/// a client that sends and never reads gets backpressure, not memory.
pub const OUTPUT_BUDGET: usize = 1 << 20;

/// The client stopped reading: its unread messages reached the limit.
struct NotReading;

impl Outbox {
    fn send(&self, bytes: Vec<u8>) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
        let _ = self.tx.send(bytes);
    }

    /// Whether output is over budget: then no more input is taken until
    /// the client reads.
    fn backed_up(&self) -> bool {
        self.queued_bytes.load(Ordering::Relaxed) > OUTPUT_BUDGET
    }

    /// Queues an event unless the client has left too many unread.
    fn send_event(&self, bytes: Vec<u8>) -> Result<(), NotReading> {
        if self.queued.load(Ordering::Relaxed) >= self.max_unread {
            return Err(NotReading);
        }
        self.send(bytes);
        Ok(())
    }
}

fn spawn_writer(mut writer: Writer, max_unread: usize) -> (Outbox, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(tokio::sync::Notify::new());
    let (count, bytes_count, signal) = (queued.clone(), queued_bytes.clone(), drained.clone());
    let task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
            count.fetch_sub(1, Ordering::Relaxed);
            let left = bytes_count.fetch_sub(bytes.len(), Ordering::Relaxed) - bytes.len();
            if left <= OUTPUT_BUDGET {
                signal.notify_one();
            }
        }
        let _ = writer.shutdown().await;
    });
    let outbox = Outbox {
        tx,
        queued,
        queued_bytes,
        drained,
        max_unread,
    };
    (outbox, task)
}

/// Passes an event to the session (which drops it before negotiation).
fn deliver<C: CommandSet>(
    item: EventItem,
    session: &Session<C>,
    out: &Outbox,
) -> Result<(), NotReading> {
    match item {
        Ok(e) => match session.event(&e.name, e.data, e.seconds, e.microseconds) {
            Some(bytes) => out.send_event(bytes),
            None => Ok(()),
        },
        Err(lost) => {
            tracing::warn!("a QMP session fell behind and missed {lost} events");
            Err(NotReading)
        }
    }
}

/// Sends a call's reply, after the events already raised: an event a
/// command causes must reach the client before the command's reply (rule
/// P4). The reply goes out even when the events show the client is not
/// reading (the caller then ends the connection).
fn answer<C: CommandSet>(
    events: &mut impl EventSource,
    session: &mut Session<C>,
    out: &Outbox,
    call: &Call,
    result: HandlerResult,
) -> Result<(), NotReading> {
    let mut sent = Ok(());
    while let Some(item) = events.try_next() {
        sent = deliver(item, session, out);
        if sent.is_err() {
            break;
        }
    }
    out.send(session.reply(call, result));
    sent
}

/// How often a connection checks, while calls run, whether the client is
/// still there to read their replies.
const PEER_PROBE: Duration = Duration::from_millis(100);

/// Input is offered to the session this much at a time, and the input
/// budget checked after each.
const FEED_SLICE: usize = 16 * 1024;

/// The read buffer's first and largest sizes.
const MIN_READ: usize = 1024;
const MAX_READ: usize = 256 * 1024;

/// Runs one connection to its end.
pub async fn run<B: Backend>(backend: B, stream: Stream) {
    let mut session = backend.session();
    let mut events = backend.events();
    let (mut reader, writer) = split(stream);
    let (out, write_task) = spawn_writer(writer, backend.max_unread());
    out.send(session.greeting());
    let ended = backend.ended();
    tokio::pin!(ended);
    let mut ending = None;
    let mut input: Vec<u8> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    // The read buffer starts small (an idle connection costs little) and
    // grows while reads fill it (a large message arrives in few reads).
    let mut buf = vec![0u8; MIN_READ];
    let mut input_ended = false;
    let mut inband: Option<Running> = None;
    let mut oob: JoinSet<(Call, HandlerResult, Arc<AtomicBool>)> = JoinSet::new();
    let mut events_open = true;
    let mut not_reading = false;
    let mut over_budget = false;
    let input_budget = backend.input_budget();
    let mut probe = tokio::time::interval(PEER_PROBE);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'session: loop {
        // Settle: offer buffered input (dispatching oob requests as they
        // are read) and take in-band work, until neither moves; taking
        // work can make the session want input again.
        while !out.backed_up() {
            let mut ready = Vec::new();
            // in slices, so that the budget is checked as a message grows
            let used = session.feed(&input[..input.len().min(FEED_SLICE)], &mut ready);
            input.drain(..used);
            if input.is_empty() && input.capacity() > MIN_READ {
                input = Vec::new();
            }
            let mut progressed = used > 0 || !ready.is_empty();
            if let Some(budget) = input_budget.filter(|b| session.input_held() > *b) {
                tracing::warn!(
                    "disconnected a QMP client: its input holds about {} bytes, over its budget of {budget}",
                    session.input_held()
                );
                over_budget = true;
                break 'session;
            }
            for step in ready {
                match step {
                    Step::Reply(bytes) => out.send(bytes),
                    Step::Call(call) => {
                        let r = start(&backend, call, &mut fds);
                        oob.spawn(async move {
                            let result = outcome(r.task.await);
                            (r.call, result, r.close)
                        });
                    }
                }
            }
            // In-band work strictly in order, one call at a time.
            while inband.is_none() && !out.backed_up() {
                match session.next_inband() {
                    Some(Step::Reply(bytes)) => out.send(bytes),
                    Some(Step::Call(call)) => inband = Some(start(&backend, call, &mut fds)),
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
        let can_read =
            !input_ended && input.is_empty() && session.wants_input() && !out.backed_up();
        let delivered = tokio::select! {
            r = reader.read(&mut buf, &mut fds), if can_read => {
                match r {
                    Ok(0) | Err(_) => input_ended = true,
                    Ok(n) => {
                        input.extend_from_slice(&buf[..n]);
                        if n == buf.len() && buf.len() < MAX_READ {
                            buf = vec![0u8; (buf.len() * 8).min(MAX_READ)];
                        }
                    }
                }
                Ok(())
            }
            r = async { (&mut inband.as_mut().expect("guarded").task).await }, if inband.is_some() => {
                let running = inband.take().expect("guarded");
                let sent = answer(&mut events, &mut session, &out, &running.call, outcome(r));
                if running.close.load(Ordering::SeqCst) {
                    break 'session;
                }
                sent
            }
            Some(r) = oob.join_next(), if !oob.is_empty() => {
                let mut sent = Ok(());
                if let Ok((call, result, close)) = r {
                    sent = answer(&mut events, &mut session, &out, &call, result);
                    if close.load(Ordering::SeqCst) {
                        break 'session;
                    }
                }
                sent
            }
            e = events.next(), if events_open => match e {
                Some(item) => deliver(item, &session, &out),
                None => {
                    events_open = false;
                    Ok(())
                }
            },
            // A client that closed while calls run (a replay waiting out a
            // recorded minute, a slow handler) is not waited for. (Input is
            // not read meanwhile, as QEMU reads none, so EOF would not show.)
            _ = probe.tick(),
                if ending.is_none() && (inband.is_some() || !oob.is_empty()) =>
            {
                if reader.peer_gone() {
                    tracing::debug!("the client closed its connection while calls ran");
                    break 'session;
                }
                Ok(())
            }
            // backpressure: resume once the client has read enough
            _ = out.drained.notified(), if out.backed_up() => Ok(()),
            e = &mut ended, if ending.is_none() => {
                ending = Some(e);
                match e {
                    Ending::Drain => input_ended = true,
                    Ending::Now => {
                        // A reply that came just before the end (QEMU's
                        // answer to `quit`, then its EOF) still goes out:
                        // the call gets a moment to finish.
                        if let Some(running) = inband.take() {
                            let abort = running.task.abort_handle();
                            match tokio::time::timeout(Duration::from_millis(200), running.task).await {
                                Ok(r) => {
                                    let _ = answer(&mut events, &mut session, &out, &running.call, outcome(r));
                                }
                                Err(_) if backend.cancel_on_disconnect() => abort.abort(),
                                Err(_) => {}
                            }
                        }
                        break 'session;
                    }
                }
                Ok(())
            }
        };
        if delivered.is_err() {
            tracing::warn!(
                "disconnected a QMP client that stopped reading: {} messages unread",
                out.queued.load(Ordering::Relaxed)
            );
            not_reading = true;
            break;
        }
    }
    let queued = out.queued.clone();
    drop(out);
    if not_reading || over_budget {
        write_task.abort();
    } else if ending == Some(Ending::Now) && queued.load(Ordering::Relaxed) > 0 {
        // Flush what is queued, as QEMU would before exiting, but do not
        // wait long on a slow reader.
        let abort = write_task.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), write_task)
            .await
            .is_err()
        {
            abort.abort();
        }
    } else {
        let _ = write_task.await;
    }
    if backend.cancel_on_disconnect() {
        oob.abort_all();
        if let Some(r) = inband {
            r.task.abort();
        }
    } else {
        oob.detach_all();
    }
}
