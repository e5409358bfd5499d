//! State shared by a client's callers and its one reader task, and that
//! task: it reads every message and routes it.
//!
//! * A reply goes to the caller waiting for its id. Routing is by id, never
//!   by position, so events before or between replies cannot shift them.
//! * A reply to a caller that gave up (timeout, cancellation) is dropped
//!   with a log line; it never reaches a later caller.
//! * A reply without an id (a parse error of the server) goes to
//!   [`Client::unsolicited`](crate::Client::unsolicited) subscribers.
//! * An event goes to every subscriber whose filter accepts it.
//!
//! When the connection ends, every pending call fails at once with the
//! cause and every event stream ends.

use crate::connection::FramedReader;
use crate::error::{Disconnect, Error, Result};
use crate::events::{EventStream, Subscriber};
use crate::session::{ClientSession, Routed};
use crate::writer::{Outgoing, Sink, SinkClosed};
use qmp_proto::{DecodeError, Event, Message, Response};
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, oneshot, watch, Notify};

/// How a waiting caller is completed.
pub(crate) struct Waiter {
    pub(crate) tx: oneshot::Sender<Result<Value>>,
    /// The end of the call's own event stream, if it has one: dropped
    /// with the waiter, which the router does as it routes the reply, so
    /// that stream ends right after the last event before the reply.
    pub(crate) events: Option<crate::events::StreamEnd>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").finish_non_exhaustive()
    }
}

pub(crate) struct State {
    /// Ids, pending calls and the in-band window: the sans-IO core.
    pub(crate) session: ClientSession<Waiter>,
    pub(crate) subscribers: Vec<Subscriber>,
    /// The length of `subscribers` at which the closed ones are next
    /// forgotten.
    pub(crate) prune_at: usize,
    /// Set by a graceful close: no new calls, pending ones still finish.
    pub(crate) closing: bool,
    pub(crate) closed: Option<Disconnect>,
    /// Guest agent only: the id of the `guest-sync-delimited` in flight.
    /// Until its reply comes, everything else received is stale.
    pub(crate) syncing: Option<serde_json::Value>,
    /// Guest agent only: the stream may hold stale bytes (a call timed out,
    /// garbage came); sync before the next call.
    pub(crate) needs_sync: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Made when first asked for: its 64 slots are allocated up front,
    /// and most clients never ask.
    unsolicited: std::sync::OnceLock<broadcast::Sender<Response>>,
    closed_tx: watch::Sender<Option<Disconnect>>,
    /// Signalled when a reply is routed or the connection ends, for a
    /// graceful close waiting for its callers.
    pub(crate) progress: Notify,
    /// Messages received so far (see `nudge`).
    received: std::sync::atomic::AtomicU64,
    /// Signalled when a call starts, where someone waits for that (the
    /// nudger of a TLS connection, see `nudge`).
    call_started: Option<Notify>,
}

impl Shared {
    pub(crate) fn new(window: Option<usize>) -> Shared {
        Shared {
            state: Mutex::new(State {
                session: ClientSession::new(window),
                subscribers: Vec::new(),
                prune_at: 16,
                closing: false,
                closed: None,
                syncing: None,
                needs_sync: false,
            }),
            unsolicited: std::sync::OnceLock::new(),
            closed_tx: watch::channel(None).0,
            progress: Notify::new(),
            received: std::sync::atomic::AtomicU64::new(0),
            call_started: None,
        }
    }

    /// Makes [`call_started`](Self::call_started) work (before sharing).
    pub(crate) fn watch_calls(&mut self) {
        self.call_started = Some(Notify::new());
    }

    /// Tells a watcher that a call started (or, from `close`, that the
    /// connection ended).
    pub(crate) fn started_call(&self) {
        if let Some(n) = &self.call_started {
            n.notify_one();
        }
    }

    /// Waits until a call starts (for ever, unless [`watch_calls`](Self::watch_calls) was called).
    pub(crate) async fn call_started(&self) {
        match &self.call_started {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }

    /// How many messages have been received.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The state lock. A panic while holding it (only a user's event
    /// predicate could panic there) does not make later calls panic too.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error for calls made after the connection is gone.
    pub(crate) fn disconnected(&self) -> Error {
        let st = self.lock();
        Error::Disconnected(st.closed.clone().unwrap_or(Disconnect::Closed))
    }

    pub(crate) fn subscribe(&self, filter: crate::EventFilter, capacity: usize) -> EventStream {
        let (sub, stream) = Subscriber::new(filter, capacity);
        self.add_subscriber(sub);
        stream
    }

    /// Starts delivering events to `sub` (which ends at once, with the
    /// connection gone).
    pub(crate) fn add_subscriber(&self, sub: Subscriber) {
        let mut st = self.lock();
        if st.closed.is_some() {
            return;
        }
        // Forget the subscribers whose streams were dropped: otherwise they
        // would wait for the next event to be freed (a proxy whose clients
        // come and go while QEMU is quiet would grow without end). Only
        // when the list has doubled since the last time, so that 10,000
        // subscriptions cost linear time, not quadratic.
        if st.subscribers.len() >= st.prune_at {
            st.subscribers.retain(Subscriber::is_open);
            st.prune_at = (st.subscribers.len() * 2).max(16);
        }
        st.subscribers.push(sub);
    }

    pub(crate) fn unsolicited(&self) -> broadcast::Receiver<Response> {
        self.unsolicited
            .get_or_init(|| broadcast::channel(64).0)
            .subscribe()
    }

    pub(crate) fn closed_watch(&self) -> watch::Receiver<Option<Disconnect>> {
        self.closed_tx.subscribe()
    }

    /// Ends the connection's state: fails every pending call with the
    /// cause, ends every event stream, closes the window. Idempotent; the
    /// first cause wins, except that a close we began ourselves is
    /// reported as [`Disconnect::Closed`].
    pub(crate) fn close(&self, reason: Disconnect) {
        let (pending, subscribers, reason) = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            if st.closing {
                tracing::debug!("connection ended while closing: {reason}");
            }
            let reason = if st.closing {
                Disconnect::Closed
            } else {
                reason
            };
            st.closed = Some(reason.clone());
            (
                st.session.close(),
                std::mem::take(&mut st.subscribers),
                reason,
            )
        };
        match &reason {
            Disconnect::Closed => tracing::debug!("QMP connection closed"),
            other => tracing::debug!("QMP connection lost: {other}"),
        }
        drop(subscribers);
        for waiter in pending {
            let _ = waiter.tx.send(Err(Error::Disconnected(reason.clone())));
        }
        self.closed_tx.send_replace(Some(reason));
        self.progress.notify_waiters();
        self.started_call();
    }

    /// Whether no caller is still waiting for a reply (entries of callers
    /// that gave up do not count), or the connection is gone.
    pub(crate) fn idle(&self) -> bool {
        let st = self.lock();
        st.closed.is_some() || st.session.is_idle()
    }

    /// Writes what the session released, in order. Called with the state
    /// locked, so nothing a caller starts meanwhile can overtake it.
    pub(crate) fn transmit(&self, st: &mut State, sink: &Sink) -> Result<(), Disconnect> {
        while let Some(t) = st.session.poll_transmit() {
            if let Err(SinkClosed(cause)) = sink.send(Outgoing::request(t), false) {
                return Err(cause.map_or(Disconnect::Closed, |e| Disconnect::Io(Arc::new(e))));
            }
        }
        Ok(())
    }

    /// Routes one message (or an unreadable one) and delivers it, outside
    /// the lock.
    fn route(&self, sink: &Sink, message: Result<Message, DecodeError>) -> Result<(), Disconnect> {
        self.received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let routed = {
            let mut st = self.lock();
            if let Some(sync) = &st.syncing {
                match &message {
                    Ok(Message::Response(r)) if r.id.as_ref() == Some(sync) => st.syncing = None,
                    other => {
                        tracing::debug!("discarded while resynchronizing: {other:?}");
                        return Ok(());
                    }
                }
            }
            let routed = match message {
                Ok(m) => st.session.receive(m),
                Err(e) => st
                    .session
                    .receive_unreadable(e)
                    .map_err(Disconnect::Protocol)?,
            };
            self.transmit(&mut st, sink)?;
            routed
        };
        match routed {
            Routed::Reply { waiter, result } => {
                let Waiter { tx, events } = waiter;
                drop(events);
                if tx.send(result).is_err() {
                    tracing::debug!("dropped a reply: its caller gave up as it came");
                }
            }
            Routed::Late { command, id } => {
                tracing::debug!(
                    "dropped the late reply to '{command}' (id {id}): its caller gave up"
                )
            }
            Routed::Unknown { id } => {
                tracing::warn!("dropped a reply with an id nobody is waiting for: {id}")
            }
            Routed::Unsolicited(response) => {
                match &response.result {
                    Err(e) => tracing::warn!(
                        "server error without an id (a request it could not read?): {e}"
                    ),
                    Ok(v) => tracing::warn!("reply without an id: {v}"),
                }
                if let Some(tx) = self.unsolicited.get() {
                    let _ = tx.send(response);
                }
                return Ok(());
            }
            Routed::Event(e) => {
                self.dispatch_event(e);
                return Ok(());
            }
            Routed::Skipped(e) => {
                tracing::warn!("skipped a message: {e}");
                return Ok(());
            }
            other => {
                tracing::warn!("ignored an unexpected message: {other:?}");
                return Ok(());
            }
        }
        self.progress.notify_waiters();
        Ok(())
    }

    fn dispatch_event(&self, event: Event) {
        let event = Arc::new(event);
        self.lock().subscribers.retain(|s| s.offer(&event));
    }
}

/// The reader task: routes messages until the connection ends. For the
/// guest agent (`agent`), bytes that are not a message are skipped, and
/// the next call syncs first.
pub(crate) async fn run(
    mut reader: FramedReader,
    shared: Arc<Shared>,
    sink: Arc<Sink>,
    agent: bool,
) {
    let reason = loop {
        let message = match reader.next().await {
            Ok(m) => Ok(m),
            // A message too deep to read was skipped whole: the stream is
            // still in step, so only the call it answers fails.
            Err(Disconnect::Protocol(e @ DecodeError::TooDeep { .. })) => Err(e),
            Err(Disconnect::Protocol(
                e @ (DecodeError::Garbage { .. } | DecodeError::Malformed { .. }),
            )) if agent => {
                let mut st = shared.lock();
                if st.syncing.is_none() {
                    tracing::warn!("skipped bytes from the guest agent: {e}");
                    st.needs_sync = true;
                }
                continue;
            }
            Err(reason) => break reason,
        };
        if let Err(reason) = shared.route(&sink, message) {
            break reason;
        }
    };
    shared.close(reason);
}
