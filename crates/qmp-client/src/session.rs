//! The client side of a QMP connection as a state machine, with no sockets
//! and no async in it (sans-IO).
//!
//! [`ClientSession`] decides everything about a connection that needs no
//! I/O:
//!
//! * which id a request gets (automatic numbers, or the caller's own JSON
//!   value of any type);
//! * which caller a reply goes to: by id, never by position, so events
//!   before or between replies cannot shift them, and object ids match
//!   whatever member order the server echoes them in;
//! * how many in-band requests are on the wire at once: with oob on, QEMU
//!   reads no further than a queue of [`QUEUE_SIZE`](qmp_proto::QUEUE_SIZE)
//!   in-band requests (rule O3), so a request past the window waits here
//!   while `exec-oob` requests overtake it;
//! * what becomes of a caller that gives up: a request not yet sent is
//!   forgotten, a sent one frees its place in the window and its late
//!   reply is recognised and dropped, never handed to another caller.
//!
//! The async [`Client`](crate::Client) drives one session behind a mutex
//! (and the [`blocking`](crate::blocking) client drives that). A program
//! with an event loop of its own can drive one too: write what
//! [`start`](ClientSession::start) and
//! [`poll_transmit`](ClientSession::poll_transmit) return, decode what
//! the server sends with [`qmp_proto::Decoder`] and give each message to
//! [`receive`](ClientSession::receive).
//!
//! ```
//! use qmp_client::session::{ClientSession, Outgoing, Routed};
//! use qmp_proto::Decoder;
//!
//! // The waiter type is the caller's: here a plain label.
//! let mut session = ClientSession::new(None);
//! let started = session.start(Outgoing::new("query-status"), "caller A")?;
//! let bytes = started.transmit.unwrap().frame;
//! assert_eq!(bytes, b"{\"execute\":\"query-status\",\"id\":1}\n");
//!
//! // An event and then the reply come back, read one byte at a time.
//! let mut decoder = Decoder::new();
//! let mut routed = Vec::new();
//! for byte in br#"{"event":"STOP","data":{},"timestamp":{"seconds":1,"microseconds":2}}
//! {"return":{"status":"paused","running":false},"id":1}
//! "# {
//!     decoder.feed(&[*byte]);
//!     while let Some(message) = decoder.next_message()? {
//!         routed.push(session.receive(message));
//!     }
//! }
//! assert!(matches!(&routed[0], Routed::Event(e) if e.name == "STOP"));
//! let Routed::Reply { waiter, result } = &routed[1] else { panic!() };
//! assert_eq!(*waiter, "caller A");
//! assert_eq!(result.as_ref().unwrap()["status"], "paused");
//! assert!(session.is_idle());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{Error, Result};
use qmp_proto::{encode_request, DecodeError, Event, Message, Response};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;

/// The key a call waits under. Unsigned integers (automatic ids, and
/// caller ids that happen to be such) are compared as numbers; any other
/// id by its compact JSON text with object members sorted, since QEMU
/// echoes an object id with its members in an order of its own (its hash
/// table's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IdKey {
    Num(u64),
    Json(String),
}

impl IdKey {
    fn of(id: &Value) -> IdKey {
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

/// One request to start: a command with its options.
#[derive(Debug)]
pub struct Outgoing<'a, A: ?Sized = Value> {
    pub(crate) command: &'a str,
    arguments: Option<&'a A>,
    id: Option<Value>,
    pub(crate) oob: bool,
    pub(crate) fds: Vec<OwnedFd>,
}

impl<'a> Outgoing<'a> {
    /// A request for `command`, without arguments, in band, with an
    /// automatic id.
    pub fn new(command: &'a str) -> Outgoing<'a> {
        Outgoing {
            command,
            arguments: None,
            id: None,
            oob: false,
            fds: Vec::new(),
        }
    }
}

impl<'a, A: Serialize + ?Sized> Outgoing<'a, A> {
    /// Arguments: anything that serializes to a JSON object (`null` and
    /// `{}` send none).
    pub fn arguments<B: Serialize + ?Sized>(self, arguments: &'a B) -> Outgoing<'a, B> {
        Outgoing {
            command: self.command,
            arguments: Some(arguments),
            id: self.id,
            oob: self.oob,
            fds: self.fds,
        }
    }

    /// Arguments or none.
    pub(crate) fn arguments_or_none<B: Serialize + ?Sized>(
        self,
        arguments: Option<&'a B>,
    ) -> Outgoing<'a, B> {
        Outgoing {
            command: self.command,
            arguments,
            id: self.id,
            oob: self.oob,
            fds: self.fds,
        }
    }

    /// The caller's own id, of any JSON type.
    pub fn id(mut self, id: Value) -> Self {
        self.id = Some(id);
        self
    }

    /// Sent as `exec-oob`: outside the in-band window.
    pub fn out_of_band(mut self, oob: bool) -> Self {
        self.oob = oob;
        self
    }

    /// File descriptors to pass with the request.
    pub fn fds(mut self, fds: Vec<OwnedFd>) -> Self {
        self.fds = fds;
        self
    }
}

/// Bytes to write, with the descriptors to pass alongside them (in the
/// same `sendmsg`).
#[derive(Debug)]
pub struct Transmit {
    /// One request, newline included.
    pub frame: Vec<u8>,
    /// Descriptors for SCM_RIGHTS; empty for most requests.
    pub fds: Vec<OwnedFd>,
}

/// A call the session knows, for [`ClientSession::abandon`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket(IdKey);

/// What [`ClientSession::start`] made of a request.
#[derive(Debug)]
pub struct Started {
    /// Names the call, to abandon it.
    pub ticket: Ticket,
    /// The request to write now, or `None` when it waits for a place in
    /// the in-band window (it comes out of
    /// [`poll_transmit`](ClientSession::poll_transmit) later).
    pub transmit: Option<Transmit>,
}

/// Where a message from the server goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum Routed<W> {
    /// The reply of a waiting caller: its value, or the server's error,
    /// or [`Error::Unreadable`] for a reply too deep to read.
    Reply {
        /// The caller's waiter, as given to `start`.
        waiter: W,
        /// What the caller gets.
        result: Result<Value>,
    },
    /// The reply of a caller that gave up: dropped.
    Late {
        /// The command it answers.
        command: String,
        /// Its id.
        id: Value,
    },
    /// A reply whose id no call has: dropped.
    Unknown {
        /// The id it carries.
        id: Value,
    },
    /// A reply without an id, such as QEMU's answer to a request it could
    /// not parse.
    Unsolicited(Response),
    /// An event.
    Event(Event),
    /// A message too deep to read, without an id to name a caller:
    /// skipped.
    Skipped(DecodeError),
    /// Anything else (a second greeting, a request): nothing to route.
    Ignored(Message),
}

#[derive(Debug)]
enum Slot {
    /// Waiting in `queue` for a place in the window; not yet sent.
    Queued,
    /// Sent, holding a place in the window.
    Held,
    /// Sent, holding none (oob, no window, or its caller gave up).
    None,
}

#[derive(Debug)]
struct Pending<W> {
    /// `None` once the caller gave up.
    waiter: Option<W>,
    command: String,
    slot: Slot,
}

/// The routing state of one client connection; `W` is whatever the
/// driver needs to complete a caller (a channel sender, a label).
#[derive(Debug)]
pub struct ClientSession<W> {
    pending: HashMap<IdKey, Pending<W>>,
    /// Calls whose caller still waits.
    waiting: usize,
    next_id: u64,
    /// The in-band window: `None` without oob, when QEMU reads requests
    /// as they come.
    window: Option<usize>,
    /// Places of the window taken.
    held: usize,
    /// In-band requests waiting for a place, in order.
    queue: VecDeque<(IdKey, Transmit)>,
}

impl<W> ClientSession<W> {
    /// A session whose in-band window is `window` requests (`None`: no
    /// limit, as when oob is off; `Some(0)` counts as 1).
    pub fn new(window: Option<usize>) -> Self {
        ClientSession {
            pending: HashMap::new(),
            waiting: 0,
            next_id: 1,
            window: window.map(|n| n.max(1)),
            held: 0,
            queue: VecDeque::new(),
        }
    }

    /// Encodes and registers one request. Fails for an id already
    /// waiting for its reply, or arguments that do not serialize; nothing
    /// is registered then.
    pub fn start<A: Serialize + ?Sized>(
        &mut self,
        request: Outgoing<'_, A>,
        waiter: W,
    ) -> Result<Started> {
        let Outgoing {
            command,
            arguments,
            id,
            oob,
            fds,
        } = request;
        let mut frame = Vec::with_capacity(64 + command.len());
        let key = match &id {
            Some(id) => {
                let key = IdKey::of(id);
                if self.pending.contains_key(&key) {
                    return Err(Error::DuplicateId(id.to_string()));
                }
                encode_request(&mut frame, command, arguments, Some(id), oob)?;
                key
            }
            None => loop {
                // Skip numbers a caller chose for itself.
                let n = self.next_id;
                self.next_id += 1;
                if !self.pending.contains_key(&IdKey::Num(n)) {
                    encode_request(&mut frame, command, arguments, Some(&n), oob)?;
                    break IdKey::Num(n);
                }
            },
        };
        let transmit = Transmit { frame, fds };
        let (slot, transmit) = match self.window {
            Some(limit) if !oob => {
                if self.held < limit && self.queue.is_empty() {
                    self.held += 1;
                    (Slot::Held, Some(transmit))
                } else {
                    self.queue.push_back((key.clone(), transmit));
                    (Slot::Queued, None)
                }
            }
            _ => (Slot::None, Some(transmit)),
        };
        self.pending.insert(
            key.clone(),
            Pending {
                waiter: Some(waiter),
                command: command.to_owned(),
                slot,
            },
        );
        self.waiting += 1;
        Ok(Started {
            ticket: Ticket(key),
            transmit,
        })
    }

    /// The next request that a place in the window has been freed for.
    /// Call it after every [`receive`](Self::receive) and
    /// [`abandon`](Self::abandon), and write what it returns.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let limit = self.window?;
        if self.held >= limit {
            return None;
        }
        let (key, transmit) = self.queue.pop_front()?;
        if let Some(p) = self.pending.get_mut(&key) {
            p.slot = Slot::Held;
        }
        self.held += 1;
        Some(transmit)
    }

    /// The caller of `ticket` stopped waiting (a timeout, a cancellation).
    /// A request still queued is forgotten and never sent. A sent one
    /// frees its place in the window at once (a reply that never comes
    /// must not shrink the window for good; this is safe because QEMU
    /// stops reading when its queue is full and drops nothing, rule O3)
    /// and stays known, so its late reply is dropped. Returns the waiter.
    pub fn abandon(&mut self, ticket: &Ticket) -> Option<W> {
        let key = &ticket.0;
        let p = self.pending.get_mut(key)?;
        let waiter = p.waiter.take();
        if waiter.is_some() {
            self.waiting -= 1;
        }
        match p.slot {
            Slot::Queued => {
                self.pending.remove(key);
                self.queue.retain(|(k, _)| k != key);
            }
            Slot::Held => {
                p.slot = Slot::None;
                self.held -= 1;
            }
            Slot::None => {}
        }
        waiter
    }

    /// Whether no caller waits for a reply.
    pub fn is_idle(&self) -> bool {
        self.waiting == 0
    }

    /// Routes one message from the server.
    pub fn receive(&mut self, message: Message) -> Routed<W> {
        match message {
            Message::Event(e) => Routed::Event(e),
            Message::Response(response) => match response.id {
                None => Routed::Unsolicited(response),
                Some(id) => match self.finish(&id) {
                    Some((Some(waiter), _)) => Routed::Reply {
                        waiter,
                        result: response.result.map_err(Error::Qmp),
                    },
                    Some((None, command)) => Routed::Late { command, id },
                    None => Routed::Unknown { id },
                },
            },
            other => Routed::Ignored(other),
        }
    }

    /// Routes a message the decoder skipped as unreadable
    /// ([`DecodeError::TooDeep`]): the call it answers, if its id could be
    /// read, fails with [`Error::Unreadable`]; the stream itself is still
    /// in step. Any other error is returned: the stream is out of step and
    /// the connection must end.
    pub fn receive_unreadable(&mut self, error: DecodeError) -> Result<Routed<W>, DecodeError> {
        let DecodeError::TooDeep { id, .. } = &error else {
            return Err(error);
        };
        let Some(id) = id else {
            return Ok(Routed::Skipped(error));
        };
        let id = id.clone();
        Ok(match self.finish(&id) {
            Some((Some(waiter), _)) => Routed::Reply {
                waiter,
                result: Err(Error::Unreadable(error)),
            },
            Some((None, command)) => Routed::Late { command, id },
            None => Routed::Unknown { id },
        })
    }

    /// Removes the call with this id, freeing its place in the window.
    fn finish(&mut self, id: &Value) -> Option<(Option<W>, String)> {
        let key = IdKey::of(id);
        // A queued request was never sent: a reply naming it is not its.
        if matches!(self.pending.get(&key)?.slot, Slot::Queued) {
            return None;
        }
        let p = self.pending.remove(&key)?;
        if matches!(p.slot, Slot::Held) {
            self.held -= 1;
        }
        if p.waiter.is_some() {
            self.waiting -= 1;
        }
        Some((p.waiter, p.command))
    }

    /// The connection ended: every waiting caller's waiter, to fail them,
    /// sent or queued, in no particular order. The session is empty
    /// afterwards.
    pub fn close(&mut self) -> Vec<W> {
        self.queue.clear();
        self.held = 0;
        self.waiting = 0;
        self.pending.drain().filter_map(|(_, p)| p.waiter).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_proto::Decoder;
    use serde_json::json;

    /// Feeds `text` to a decoder one byte at a time and routes every
    /// message, as a driver would.
    fn feed<W>(session: &mut ClientSession<W>, text: &str) -> Vec<Routed<W>> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for b in text.as_bytes() {
            decoder.feed(&[*b]);
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => out.push(session.receive(m)),
                    Ok(None) => break,
                    Err(e) => out.push(session.receive_unreadable(e).unwrap()),
                }
            }
        }
        out
    }

    fn frame(t: Option<Transmit>) -> String {
        String::from_utf8(t.expect("a request to write").frame).unwrap()
    }

    fn waiter_of<W: Copy + std::fmt::Debug>(r: &Routed<W>) -> W {
        match r {
            Routed::Reply { waiter, .. } => *waiter,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn object_ids_match_in_any_member_order_and_nested() {
        let mut s = ClientSession::new(None);
        let id = json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": null}});
        s.start(Outgoing::new("query-name").id(id.clone()), 7)
            .unwrap();
        // The server echoes the members in an order of its own.
        let routed = feed(
            &mut s,
            r#"{"return": {}, "id": {"a": {"x": null, "y": [1, {"p": 3, "q": 2}]}, "b": 1}}"#,
        );
        assert_eq!(waiter_of(&routed[0]), 7);
        assert!(s.is_idle());
        // The same id may be used again once answered, but not twice at once.
        s.start(Outgoing::new("a").id(id.clone()), 1).unwrap();
        let e = s.start(Outgoing::new("b").id(id), 2).unwrap_err();
        assert!(matches!(e, Error::DuplicateId(_)), "{e}");
    }

    #[test]
    fn replies_route_by_id_whatever_their_order_and_events_between() {
        let mut s = ClientSession::new(None);
        let a = s.start(Outgoing::new("a"), 'a').unwrap();
        let b = s.start(Outgoing::new("b").id(json!("mine")), 'b').unwrap();
        assert_eq!(frame(a.transmit), "{\"execute\":\"a\",\"id\":1}\n");
        assert_eq!(frame(b.transmit), "{\"execute\":\"b\",\"id\":\"mine\"}\n");
        let routed = feed(
            &mut s,
            concat!(
                r#"{"return": 2, "id": "mine"}"#,
                r#"{"event": "X", "timestamp": {"seconds": 1, "microseconds": 0}}"#,
                r#"{"error": {"class": "GenericError", "desc": "no"}, "id": 1}"#,
            ),
        );
        assert_eq!(waiter_of(&routed[0]), 'b');
        assert!(matches!(&routed[1], Routed::Event(e) if e.name == "X"));
        let Routed::Reply {
            waiter: 'a',
            result: Err(Error::Qmp(e)),
        } = &routed[2]
        else {
            panic!("{:?}", routed[2]);
        };
        assert_eq!(e.desc, "no");
    }

    #[test]
    fn automatic_ids_skip_numbers_callers_chose() {
        let mut s = ClientSession::new(None);
        s.start(Outgoing::new("mine").id(json!(1)), ()).unwrap();
        let t = s.start(Outgoing::new("auto"), ()).unwrap();
        assert_eq!(frame(t.transmit), "{\"execute\":\"auto\",\"id\":2}\n");
    }

    #[test]
    fn the_window_holds_back_inband_requests_but_not_oob_ones() {
        let mut s = ClientSession::new(Some(2));
        let a = s.start(Outgoing::new("a"), 'a').unwrap();
        let b = s.start(Outgoing::new("b"), 'b').unwrap();
        let c = s.start(Outgoing::new("c"), 'c').unwrap();
        assert!(a.transmit.is_some() && b.transmit.is_some());
        assert!(c.transmit.is_none(), "the third waits for a place");
        let oob = s.start(Outgoing::new("x").out_of_band(true), 'x').unwrap();
        assert_eq!(
            frame(oob.transmit),
            "{\"exec-oob\":\"x\",\"id\":4}\n",
            "oob overtakes"
        );
        assert!(s.poll_transmit().is_none());
        // A reply frees a place; the queued request goes out then.
        feed(&mut s, r#"{"return": {}, "id": 1}"#);
        assert_eq!(frame(s.poll_transmit()), "{\"execute\":\"c\",\"id\":3}\n");
        assert!(s.poll_transmit().is_none());
    }

    #[test]
    fn a_reply_naming_a_queued_request_is_not_its_reply() {
        let mut s = ClientSession::new(Some(1));
        s.start(Outgoing::new("a"), 'a').unwrap();
        s.start(Outgoing::new("b"), 'b').unwrap();
        let routed = feed(&mut s, r#"{"return": {}, "id": 2}"#);
        assert!(matches!(&routed[0], Routed::Unknown { .. }), "{routed:?}");
        assert!(s.poll_transmit().is_none(), "b still waits for a");
    }

    #[test]
    fn giving_up_frees_the_window_and_drops_the_late_reply() {
        let mut s = ClientSession::new(Some(1));
        let a = s.start(Outgoing::new("a"), 'a').unwrap();
        let b = s.start(Outgoing::new("b"), 'b').unwrap();
        let c = s.start(Outgoing::new("c"), 'c').unwrap();
        // b is forgotten before it was ever sent.
        assert_eq!(s.abandon(&b.ticket), Some('b'));
        // a gives up: its place goes to c at once, before a's reply.
        assert_eq!(s.abandon(&a.ticket), Some('a'));
        assert_eq!(frame(s.poll_transmit()), "{\"execute\":\"c\",\"id\":3}\n");
        assert!(s.poll_transmit().is_none(), "b is never sent");
        assert!(!s.is_idle());
        let routed = feed(&mut s, r#"{"return": 1, "id": 1}{"return": 3, "id": 3}"#);
        assert!(matches!(&routed[0], Routed::Late { command, .. } if command == "a"));
        assert_eq!(waiter_of(&routed[1]), 'c');
        assert!(s.is_idle());
        // After a reply that never came, a lone caller is idle again.
        let d = s.start(Outgoing::new("d"), 'd').unwrap();
        s.abandon(&d.ticket);
        assert!(s.is_idle());
        assert_eq!(s.abandon(&c.ticket), None, "c is done");
    }

    #[test]
    fn replies_without_ids_unknown_ids_and_other_messages() {
        let mut s: ClientSession<()> = ClientSession::new(None);
        let routed = feed(
            &mut s,
            concat!(
                r#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#,
                r#"{"return": {}, "id": 99}"#,
                r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}, "package": ""}, "capabilities": []}}"#,
            ),
        );
        assert!(matches!(&routed[0], Routed::Unsolicited(r) if r.result.is_err()));
        assert!(matches!(&routed[1], Routed::Unknown { id } if id == &json!(99)));
        assert!(matches!(&routed[2], Routed::Ignored(Message::Greeting(_))));
    }

    #[test]
    fn a_reply_too_deep_to_read_fails_only_its_call() {
        let mut s = ClientSession::new(None);
        s.start(Outgoing::new("deep"), 'd').unwrap();
        s.start(Outgoing::new("other"), 'o').unwrap();
        let deep = format!(
            "{{\"return\": {}1{}, \"id\": 1}}{{\"return\": 2, \"id\": 2}}",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        let routed = feed(&mut s, &deep);
        assert!(matches!(
            &routed[0],
            Routed::Reply {
                waiter: 'd',
                result: Err(Error::Unreadable(_))
            }
        ));
        assert_eq!(waiter_of(&routed[1]), 'o');
    }

    #[test]
    fn closing_hands_back_every_waiting_caller() {
        let mut s = ClientSession::new(Some(1));
        s.start(Outgoing::new("a"), 'a').unwrap();
        s.start(Outgoing::new("b"), 'b').unwrap();
        let gone = s.start(Outgoing::new("c"), 'c').unwrap();
        s.abandon(&gone.ticket);
        let mut waiters = s.close();
        waiters.sort();
        assert_eq!(waiters, ['a', 'b']);
        assert!(s.is_idle() && s.poll_transmit().is_none());
    }

    #[test]
    fn arguments_of_any_serializable_type() {
        #[derive(Serialize)]
        struct Args {
            path: &'static str,
        }
        let mut s = ClientSession::new(None);
        let t = s
            .start(Outgoing::new("qom-list").arguments(&Args { path: "/" }), ())
            .unwrap();
        assert_eq!(
            frame(t.transmit),
            "{\"execute\":\"qom-list\",\"arguments\":{\"path\":\"/\"},\"id\":1}\n"
        );
    }
}
