//! Event subscriptions.
//!
//! Each subscriber has its own filter and its own bounded buffer, which
//! grows only while events wait in it. Delivering never
//! waits: when a subscriber's buffer is full its oldest events are dropped
//! and its next read reports [`Lagged`] with the number lost. A slow
//! subscriber therefore never blocks replies or other subscribers, and
//! never loses events silently.

use qmp_proto::Event;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Default buffer of one subscription, in events.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

type Predicate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Which events a subscriber wants: a set of names (empty means all) and
/// any number of predicates, all of which must hold. Predicates run on the
/// router task, so keep them cheap.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qmp_client::{Client, EventFilter};
/// use serde_json::json;
///
/// let demo = qmp_server::demo::start().await?; // stands in for QEMU
/// let client = Client::connect(demo.address()).await?;
/// // Resets the host asked for, and any run-state change.
/// let mut resets = client.events(EventFilter::name("RESET").data_eq("/guest", false));
/// let mut run_state = client.events(
///     EventFilter::names(["STOP", "RESUME"]).matching(|e| e.data.is_none()),
/// );
/// client.execute("cont", json!({})).await?;
/// client.execute("system_reset", json!({})).await?;
/// assert_eq!(run_state.next().await.unwrap()?.name, "RESUME");
/// let reset = resets.next().await.unwrap()?;
/// assert_eq!(reset.data_at("/reason").unwrap(), "host-qmp-system-reset");
/// // Nothing else passed either filter.
/// assert!(run_state.try_next().is_none() && resets.try_next().is_none());
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct EventFilter {
    names: Vec<String>,
    predicates: Vec<Predicate>,
}

impl std::fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFilter")
            .field("names", &self.names)
            .field("predicates", &self.predicates.len())
            .finish()
    }
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events with this name.
    pub fn name(name: impl Into<String>) -> Self {
        Self::all().or_name(name)
    }

    /// Events with any of these names (all events when empty).
    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        EventFilter {
            names: names.into_iter().map(Into::into).collect(),
            predicates: Vec::new(),
        }
    }

    /// The same predicates, for events with this name only.
    pub fn only_name(mut self, name: impl Into<String>) -> Self {
        self.names = vec![name.into()];
        self
    }

    /// Also accept events with this name.
    pub fn or_name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Only events whose `data` has `value` at a JSON pointer, for example
    /// `.data_eq("/id", "j1").data_eq("/status", "concluded")`.
    pub fn data_eq(self, pointer: &str, value: impl Into<Value>) -> Self {
        let pointer = pointer.to_owned();
        let value = value.into();
        self.matching(move |e| e.data_at(&pointer) == Some(&value))
    }

    /// Only events for which `f` holds.
    pub fn matching(mut self, f: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.predicates.push(Arc::new(f));
        self
    }

    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        (self.names.is_empty() || self.names.contains(&event.name))
            && self.predicates.iter().all(|p| p(event))
    }
}

/// One subscription's buffer, shared by the router (which fills it) and
/// the stream (which drains it). It grows only as events wait in it, so an
/// idle subscription costs a few dozen bytes whatever its capacity (a
/// proxy keeps one per client).
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Woken when an event arrives or the connection ends.
    ready: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<Arc<Event>>,
    /// Events dropped since the stream last read, for lack of room.
    lost: u64,
    /// The connection is gone: no more events will come.
    ended: bool,
    /// The stream was dropped: the router may forget this subscriber.
    abandoned: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side, kept by the router.
pub(crate) struct Subscriber {
    filter: EventFilter,
    capacity: usize,
    queue: Arc<Queue>,
}

impl Subscriber {
    pub(crate) fn new(filter: EventFilter, capacity: usize) -> (Subscriber, EventStream) {
        let queue = Arc::new(Queue::default());
        let sub = Subscriber {
            filter,
            capacity: capacity.max(1),
            queue: queue.clone(),
        };
        (
            sub,
            EventStream {
                queue,
                waiting: None,
            },
        )
    }

    /// Whether its stream is still held and may get events.
    pub(crate) fn is_open(&self) -> bool {
        let st = self.queue.lock();
        !st.abandoned && !st.ended
    }

    /// What ends this subscription early (see [`StreamEnd`]).
    pub(crate) fn end_handle(&self) -> StreamEnd {
        StreamEnd(self.queue.clone())
    }

    /// Offers an event; false once the stream has been dropped or ended,
    /// so the router can forget this subscriber.
    pub(crate) fn offer(&self, event: &Arc<Event>) -> bool {
        let mut st = self.queue.lock();
        if st.abandoned || st.ended {
            return false;
        }
        if self.filter.matches(event) {
            if st.events.len() == self.capacity {
                st.events.pop_front();
                st.lost += 1;
            }
            st.events.push_back(event.clone());
            drop(st);
            self.queue.ready.notify_one();
        }
        true
    }
}

impl Drop for Subscriber {
    /// The router lets go at the end of the connection: the stream ends
    /// after what it has buffered.
    fn drop(&mut self) {
        self.queue.lock().ended = true;
        self.queue.ready.notify_one();
    }
}

/// Ends a subscription when dropped: the stream yields what it has
/// buffered, then `None`. A call made with
/// [`Client::call_with_events`](crate::Client::call_with_events) holds one,
/// which the router drops as it routes the call's reply, so the stream
/// holds exactly the events that came before the reply.
pub(crate) struct StreamEnd(Arc<Queue>);

impl Drop for StreamEnd {
    fn drop(&mut self) {
        self.0.lock().ended = true;
        self.0.ready.notify_one();
    }
}

/// This subscriber fell behind and lost events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} events were lost: this subscriber did not keep up")]
pub struct Lagged(pub u64);

/// A subscription. It ends (yields `None`) when the connection goes away,
/// after the events buffered before that.
pub struct EventStream {
    queue: Arc<Queue>,
    /// While polled as a `Stream`: the wait for the next event.
    waiting: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Arc<Event>, Lagged>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            if let Some(item) = self.try_next() {
                self.waiting = None;
                return Poll::Ready(Some(item));
            }
            if self.queue.lock().ended {
                return Poll::Ready(None);
            }
            let queue = self.queue.clone();
            let wait = self
                .waiting
                .get_or_insert_with(|| Box::pin(async move { queue.ready.notified().await }));
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => self.waiting = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        st.abandoned = true;
        // what waits is nobody's now
        st.events = VecDeque::new();
    }
}

impl EventStream {
    /// The next event, `Some(Err(Lagged(n)))` after `n` were dropped for
    /// lack of room, or `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        loop {
            // A wake-up that comes between this check and the wait is kept
            // by `Notify` as a permit, so none is missed.
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            if self.queue.lock().ended {
                return None;
            }
            self.queue.ready.notified().await;
        }
    }

    /// Like [`next`](Self::next) without waiting: `None` when nothing is
    /// buffered right now.
    pub fn try_next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        let mut st = self.queue.lock();
        if st.lost > 0 {
            return Some(Err(Lagged(std::mem::take(&mut st.lost))));
        }
        let event = st.events.pop_front()?;
        if st.events.is_empty() && st.events.capacity() > 64 {
            // a burst is over: give its memory back
            st.events = VecDeque::new();
        }
        Some(Ok(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_proto::Timestamp;
    use serde_json::json;

    fn ev(name: &str, data: Value) -> Arc<Event> {
        Arc::new(Event {
            name: name.into(),
            data: Some(data),
            timestamp: Timestamp::default(),
        })
    }

    #[test]
    fn filters_by_name_and_data() {
        let f = EventFilter::name("JOB_STATUS_CHANGE")
            .data_eq("/id", "j1")
            .data_eq("/status", "concluded");
        assert!(f.matches(&ev(
            "JOB_STATUS_CHANGE",
            json!({"id": "j1", "status": "concluded"})
        )));
        assert!(!f.matches(&ev(
            "JOB_STATUS_CHANGE",
            json!({"id": "j2", "status": "concluded"})
        )));
        assert!(!f.matches(&ev("STOP", json!({"id": "j1", "status": "concluded"}))));
        assert!(EventFilter::all().matches(&ev("ANY", json!(null))));
        assert!(EventFilter::names(["A", "B"]).matches(&ev("B", json!({}))));
    }

    #[test]
    fn overflow_is_reported_with_the_count_lost() {
        let (sub, mut stream) = Subscriber::new(EventFilter::all(), 4);
        for i in 0..10 {
            assert!(sub.offer(&ev("E", json!(i))));
        }
        assert_eq!(stream.try_next().unwrap().unwrap_err(), Lagged(6));
        // then the 4 newest
        for i in 6..10 {
            assert_eq!(stream.try_next().unwrap().unwrap().data, Some(json!(i)));
        }
        assert!(stream.try_next().is_none());
        drop(stream);
        assert!(!sub.offer(&ev("E", json!(0))));
    }
}
