//! Writing to the socket.
//!
//! A lone caller (no other call waiting for a reply) writes its request
//! straight to the socket with one non-blocking send: no task hop, no
//! wake-up of another thread, the lowest latency for one-at-a-time use.
//! When other calls are in flight, or the socket is full, or something is
//! already queued, or the request carries file descriptors, the bytes go to
//! a queue that the writer task drains, writing everything queued at that
//! moment with one syscall, so many concurrent callers share few writes.
//! Order is kept: once anything is queued, every later request queues
//! behind it.

use crate::transport::WriteHalf;
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

/// Stop batching past this many bytes and write.
const MAX_BATCH: usize = 1 << 20;

pub(crate) enum Outgoing {
    Frame(Vec<u8>),
    FrameWithFds(Vec<u8>, Vec<OwnedFd>),
    /// Write what is queued, then half-close the socket.
    Shutdown(Option<oneshot::Sender<()>>),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    /// The writer task has work (the queue is not empty or being written).
    busy: bool,
    /// No more writes: shut down or failed.
    done: bool,
}

impl Outgoing {
    /// A request the session let go, logged as it is queued for the wire.
    pub(crate) fn request(t: crate::session::Transmit) -> Outgoing {
        let crate::session::Transmit { frame, fds } = t;
        tracing::debug!(target: "qmp::wire", "-> {}", String::from_utf8_lossy(frame.trim_ascii_end()));
        if fds.is_empty() {
            Outgoing::Frame(frame)
        } else {
            Outgoing::FrameWithFds(frame, fds)
        }
    }
}

/// The write side shared by callers and the writer task.
pub(crate) struct Sink {
    io: WriteHalf,
    queue: Mutex<Queue>,
    wake: Notify,
}

/// The socket is gone; the caller closes the session with this cause.
pub(crate) struct SinkClosed(pub(crate) Option<io::Error>);

impl Sink {
    pub(crate) fn new(io: WriteHalf) -> Arc<Sink> {
        Arc::new(Sink {
            io,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes (when `direct` and nothing is queued) or queues one request.
    pub(crate) fn send(&self, item: Outgoing, direct: bool) -> Result<(), SinkClosed> {
        let mut q = self.lock();
        if q.done {
            return Err(SinkClosed(None));
        }
        let item = match item {
            Outgoing::Frame(frame) if direct && !q.busy => match self.io.try_write(&frame) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => Outgoing::Frame(frame[n..].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Outgoing::Frame(frame),
                Err(e) => {
                    q.done = true;
                    return Err(SinkClosed(Some(e)));
                }
            },
            other => other,
        };
        q.items.push_back(item);
        if !q.busy {
            q.busy = true;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the writer task to finish what is queued and half-close.
    pub(crate) fn shutdown(&self, done: Option<oneshot::Sender<()>>) {
        let mut q = self.lock();
        if q.done {
            return;
        }
        q.items.push_back(Outgoing::Shutdown(done));
        q.busy = true;
        self.wake.notify_one();
    }
}

/// The writer task: drains the queue whenever callers leave work in it,
/// until a shutdown is written (`Ok`) or a write fails (the error, which
/// ends the connection).
pub(crate) async fn run(sink: Arc<Sink>) -> io::Result<()> {
    let mut batch = Vec::new();
    loop {
        sink.wake.notified().await;
        loop {
            // Take frames up to the first item that must be written alone.
            let special = {
                let mut q = sink.lock();
                let mut special = None;
                while let Some(item) = q.items.pop_front() {
                    match item {
                        Outgoing::Frame(f) => {
                            batch.extend_from_slice(&f);
                            if batch.len() >= MAX_BATCH {
                                break;
                            }
                        }
                        other => {
                            special = Some(other);
                            break;
                        }
                    }
                }
                if batch.is_empty() && special.is_none() {
                    q.busy = false;
                    break;
                }
                special
            };
            let mut result = sink.io.write_all(&batch).await;
            batch.clear();
            let mut finished = None;
            match special {
                Some(Outgoing::FrameWithFds(frame, fds)) if result.is_ok() => {
                    result = sink.io.write_with_fds(&frame, &fds).await;
                }
                Some(Outgoing::Shutdown(done)) => {
                    if result.is_ok() {
                        result = sink.io.shutdown().await;
                    }
                    finished = Some(done);
                }
                _ => {}
            }
            if let Err(e) = result {
                sink.lock().done = true;
                return Err(e);
            }
            if let Some(done) = finished {
                sink.lock().done = true;
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return Ok(());
            }
        }
    }
}
