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
use qmp_proto::{DecodeError, Event, Message, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

/// Key of the pending table. Unsigned integers (our automatic ids, and
/// caller ids that happen to be such) are compared as numbers; any other id
/// by its compact JSON text with object members sorted, since QEMU echoes
/// an object id with its members in an order of its own (its hash table's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IdKey {
    Num(u64),
    Json(String),
}

impl IdKey {
    pub(crate) fn of(id: &Value) -> IdKey {
        match id.as_u64() {
            Some(n) => IdKey::Num(n),
            None => {
                let mut sorted = id.clone();
                sorted.sort_all_objects();
                IdKey::Json(sorted.to_string())
            }
        }
    }
}

/// A call waiting for its reply.
pub(crate) struct Pending {
    pub(crate) tx: oneshot::Sender<Result<Value>>,
    pub(crate) command: String,
    /// A place in the in-band window, freed when the reply arrives or the
    /// caller gives up.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

pub(crate) struct State {
    pub(crate) pending: HashMap<IdKey, Pending>,
    pub(crate) subscribers: Vec<Subscriber>,
    /// The length of `subscribers` at which the closed ones are next
    /// forgotten.
    pub(crate) prune_at: usize,
    /// Set by a graceful close: no new calls, pending ones still finish.
    pub(crate) closing: bool,
    pub(crate) closed: Option<Disconnect>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// With oob negotiated, at most this many in-band requests are on the
    /// wire at once (QEMU's queue holds 8, rule O3).
    pub(crate) window: Option<Arc<Semaphore>>,
    /// Made when first asked for: its 64 slots are allocated up front,
    /// and most clients never ask.
    unsolicited: std::sync::OnceLock<broadcast::Sender<Response>>,
    closed_tx: watch::Sender<Option<Disconnect>>,
    /// Signalled when a reply is routed or the connection ends, for a
    /// graceful close waiting for its callers.
    pub(crate) progress: Notify,
}

/// How many in-band requests may be outstanding with oob on, by default.
pub const INBAND_WINDOW: usize = 8;

impl Shared {
    pub(crate) fn new(window: Option<usize>) -> Shared {
        Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                subscribers: Vec::new(),
                prune_at: 16,
                closing: false,
                closed: None,
            }),
            window: window.map(|n| Arc::new(Semaphore::new(n))),
            unsolicited: std::sync::OnceLock::new(),
            closed_tx: watch::channel(None).0,
            progress: Notify::new(),
        }
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
        let mut st = self.lock();
        if st.closed.is_some() {
            return EventStream::ended();
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
        let (sub, stream) = Subscriber::new(filter, capacity);
        st.subscribers.push(sub);
        stream
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
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.subscribers),
                reason,
            )
        };
        match &reason {
            Disconnect::Closed => tracing::debug!("QMP connection closed"),
            other => tracing::debug!("QMP connection lost: {other}"),
        }
        if let Some(w) = &self.window {
            w.close();
        }
        drop(subscribers);
        for (_, p) in pending {
            let _ = p.tx.send(Err(Error::Disconnected(reason.clone())));
        }
        self.closed_tx.send_replace(Some(reason));
        self.progress.notify_waiters();
    }

    /// Whether no caller is still waiting for a reply (entries of callers
    /// that gave up do not count), or the connection is gone.
    pub(crate) fn idle(&self) -> bool {
        let st = self.lock();
        st.closed.is_some() || st.pending.values().all(|p| p.tx.is_closed())
    }

    fn route_response(&self, response: Response) {
        let Some(id) = &response.id else {
            match &response.result {
                Err(e) => {
                    tracing::warn!("server error without an id (a request it could not read?): {e}")
                }
                Ok(v) => tracing::warn!("reply without an id: {v}"),
            }
            if let Some(tx) = self.unsolicited.get() {
                let _ = tx.send(response);
            }
            return;
        };
        let entry = self.lock().pending.remove(&IdKey::of(id));
        match entry {
            Some(p) => {
                if p.tx.send(response.result.map_err(Error::Qmp)).is_err() {
                    tracing::debug!(
                        "dropped the late reply to '{}' (id {id}): its caller gave up",
                        p.command
                    );
                }
            }
            None => tracing::warn!("dropped a reply with an id nobody is waiting for: {id}"),
        }
        self.progress.notify_waiters();
    }

    /// A reply that could not be read fails the call with its id, if any.
    fn fail_unreadable(&self, e: DecodeError) {
        let DecodeError::TooDeep { id: Some(id), .. } = &e else {
            tracing::warn!("skipped a message: {e}");
            return;
        };
        let entry = self.lock().pending.remove(&IdKey::of(id));
        match entry {
            Some(p) => {
                let _ = p.tx.send(Err(Error::Unreadable(e)));
            }
            None => tracing::warn!("skipped a message for an id nobody is waiting for: {e}"),
        }
        self.progress.notify_waiters();
    }

    fn dispatch_event(&self, event: Event) {
        let event = Arc::new(event);
        self.lock().subscribers.retain(|s| s.offer(&event));
    }
}

/// The reader task: routes messages until the connection ends.
pub(crate) async fn run(mut reader: FramedReader, shared: Arc<Shared>) {
    let reason = loop {
        match reader.next().await {
            Ok(Message::Response(r)) => shared.route_response(r),
            Ok(Message::Event(e)) => shared.dispatch_event(e),
            Ok(other) => tracing::warn!("ignored an unexpected message: {other:?}"),
            // A message too deep to read was skipped whole: the stream is
            // still in step, so only the call it answers fails.
            Err(Disconnect::Protocol(e @ DecodeError::TooDeep { .. })) => shared.fail_unreadable(e),
            Err(reason) => break reason,
        }
    };
    shared.close(reason);
}
