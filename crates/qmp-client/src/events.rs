//! Event subscriptions.
//!
//! Each subscriber has its own filter and its own bounded buffer (a
//! single-receiver `tokio::sync::broadcast` channel). Delivering never
//! waits: when a subscriber's buffer is full its oldest events are dropped
//! and its next read reports [`Lagged`] with the number lost. A slow
//! subscriber therefore never blocks replies or other subscribers, and
//! never loses events silently.

use qmp_proto::Event;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Default buffer of one subscription, in events.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

type Predicate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Which events a subscriber wants: a set of names (empty means all) and
/// any number of predicates, all of which must hold. Predicates run on the
/// router task, so keep them cheap.
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

    pub fn matches(&self, event: &Event) -> bool {
        (self.names.is_empty() || self.names.contains(&event.name))
            && self.predicates.iter().all(|p| p(event))
    }
}

/// The sending side, kept by the router.
pub(crate) struct Subscriber {
    filter: EventFilter,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Subscriber {
    pub(crate) fn new(filter: EventFilter, capacity: usize) -> (Subscriber, EventStream) {
        let (tx, rx) = broadcast::channel(capacity.max(1));
        (Subscriber { filter, tx }, EventStream { rx })
    }

    /// Whether its stream is still held.
    pub(crate) fn is_open(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Offers an event; false once the stream has been dropped, so the
    /// router can forget this subscriber.
    pub(crate) fn offer(&self, event: &Arc<Event>) -> bool {
        if self.tx.receiver_count() == 0 {
            return false;
        }
        if self.filter.matches(event) {
            let _ = self.tx.send(event.clone());
        }
        true
    }
}

/// This subscriber fell behind and lost events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} events were lost: this subscriber did not keep up")]
pub struct Lagged(pub u64);

/// A subscription. It ends (yields `None`) when the connection goes away,
/// after the events buffered before that.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl EventStream {
    /// A stream that has already ended.
    pub(crate) fn ended() -> EventStream {
        let (_, rx) = broadcast::channel(1);
        EventStream { rx }
    }

    /// The next event, `Some(Err(Lagged(n)))` after `n` were dropped for
    /// lack of room, or `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        match self.rx.recv().await {
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Like [`next`](Self::next) without waiting: `None` when nothing is
    /// buffered right now.
    pub fn try_next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        match self.rx.try_recv() {
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(_) => None,
        }
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
