//! One client of the proxy, as a [`Backend`] of the server framework's
//! connection loop.
//!
//! The loop gives the client a session of its own, exactly as QEMU would:
//! the upstream's greeting, negotiation, request checks, its own in-band
//! queue, `exec-oob` at once. Only the calls that pass all of that come
//! here, and go to QEMU under the proxy's own ids; the loop answers them
//! with the client's id as it was sent. So ids never clash between clients,
//! and a request without an id still gets its reply.
//!
//! Events come from a subscription on the upstream client, filled by its
//! reader task in the order QEMU sent them, before the reply that follows
//! them is routed. The loop drains it before writing each reply, so an
//! event QEMU sent before a reply reaches the client before it (rule P4).
//!
//! File descriptors are where clients could reach into each other: QEMU
//! keeps a descriptor that came with a message until some command takes
//! one, whoever sent that command. So a client's descriptors go to QEMU
//! only with the commands that take one ([`TAKES_FD`], at most one each,
//! as QEMU takes one), and all others are closed here; and those commands
//! go one at a time, each holding the upstream's `fd_turn` from sending to
//! its reply, so no other client's descriptor can arrive in between. A
//! listener whose policy denies these commands never passes any.

use crate::audit::{AuditLog, ClientInfo, Outcome};
use crate::policy::{Access, Policy};
use crate::recorder::Recorder;
use crate::upstream::{Commands, Upstream};
use qmp_client::{EventFilter, EventStream};
use qmp_server::connection::{Backend, CallFuture, Ending, EventItem, EventSource};
use qmp_server::session::{Call, QmpError, Session};
use qmp_server::{Event, QObject};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The commands that take a descriptor passed with them (SCM_RIGHTS).
pub(crate) const TAKES_FD: &[&str] = &["getfd", "add-fd"];

/// Everything one client's connection needs.
pub(crate) struct Downstream {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) access: Access,
    pub(crate) audit: Option<Arc<AuditLog>>,
    pub(crate) who: ClientInfo,
    /// Events a client may leave unread before it is disconnected.
    pub(crate) buffer: usize,
    /// Memory a client's input may hold before it is disconnected.
    pub(crate) input_budget: usize,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) recorder: Option<Arc<Recorder>>,
}

/// The upstream's events for one client.
pub(crate) struct Events(EventStream);

fn convert(item: Result<Arc<qmp_proto::Event>, qmp_client::Lagged>) -> EventItem {
    match item {
        Ok(e) => Ok(Event {
            name: e.name.clone(),
            data: e.data.as_ref().map(QObject::from_qemu_output),
            seconds: e.timestamp.seconds,
            microseconds: e.timestamp.microseconds,
        }),
        Err(lagged) => Err(lagged.0),
    }
}

impl EventSource for Events {
    fn try_next(&mut self) -> Option<EventItem> {
        self.0.try_next().map(convert)
    }

    async fn next(&mut self) -> Option<EventItem> {
        self.0.next().await.map(convert)
    }
}

impl Downstream {
    /// The answer the proxy gives itself, if any: to a command QEMU lacks
    /// (the session lets every name through, see `Commands`), to one the
    /// policy refuses, and, when strict auditing cannot log it, to any.
    fn answer_here(&self, call: &Call, shown: &serde_json::Value) -> Option<(Outcome, QmpError)> {
        if !self.upstream.commands.contains(&call.command) {
            let failure =
                QmpError::not_found(format!("The command {} has not been found", call.command));
            return Some((Outcome::Error(failure.class.clone()), failure));
        }
        if let Some(refusal) = self.access.refusal(&call.command, &call.arguments) {
            let desc = refusal.describe(self.policy.name.as_deref().unwrap_or_default());
            return Some((Outcome::Denied, QmpError::not_found(desc)));
        }
        let log = self.audit.as_ref().filter(|log| log.is_strict())?;
        let e = log
            .sent(&self.who, &call.command, shown.clone(), call.oob)
            .err()?;
        tracing::error!("refused {}: cannot write the audit log: {e}", call.command);
        let desc = format!("The proxy cannot write its audit log, so it runs no command: {e}");
        Some((Outcome::Denied, QmpError::generic(desc)))
    }
}

impl Backend for Downstream {
    type Commands = Commands;
    type Events = Events;

    fn session(&self) -> Session<Commands> {
        Session::new(self.upstream.config.clone(), self.upstream.commands.clone())
    }

    fn events(&self) -> Events {
        let policy = self.policy.clone();
        let filter = if policy.events().is_everything() {
            EventFilter::all()
        } else {
            EventFilter::all().matching(move |e| policy.events().permits(&e.name))
        };
        Events(
            self.upstream
                .client
                .events_with_capacity(filter, self.buffer),
        )
    }

    fn start(&self, call: Call, mut fds: Vec<OwnedFd>, _close: Arc<AtomicBool>) -> CallFuture {
        let started = Instant::now();
        // Descriptors go only with a command that takes one; the rest are
        // closed (dropped) here. See the module's notes.
        let fd_turn = TAKES_FD
            .contains(&call.command.as_str())
            .then(|| self.upstream.fd_turn.clone());
        fds.truncate(if fd_turn.is_some() { 1 } else { 0 });
        let arguments = QObject::Dict(call.arguments.clone()).to_value();
        // What the audit log and the transcript show: the arguments with
        // what the policy redacts replaced.
        let mut shown = arguments.clone();
        self.policy.redact(&call.command, &mut shown);
        let audit = self.audit.clone().map(|log| {
            (
                log,
                self.who.clone(),
                call.command.clone(),
                shown.clone(),
                call.oob,
            )
        });
        let id = call.id.as_ref().map(QObject::to_value);
        let recorder = self.recorder.clone().map(|r| {
            let verb = if call.oob { "exec-oob" } else { "execute" };
            let mut msg = serde_json::json!({ verb: call.command });
            if !call.arguments.is_empty() {
                msg["arguments"] = shown.clone();
            }
            if let Some(id) = &id {
                msg["id"] = id.clone();
            }
            r.request(self.who.client, msg, fds.len());
            (r, self.who.client)
        });
        // Both logs get every exchange this client saw, including those
        // the proxy answered itself: a replay must answer them the same.
        // `reply` is `None` when none came (QEMU went away); the reply's
        // JSON is made only when there is a transcript to write it to.
        let record =
            move |outcome: &Outcome, reply: Option<Result<&serde_json::Value, &QmpError>>| {
                if let Some((log, who, command, shown, oob)) = &audit {
                    log.record(
                        who,
                        command,
                        shown.clone(),
                        *oob,
                        outcome,
                        started.elapsed(),
                    );
                }
                if let (Some((r, client)), Some(reply)) = (&recorder, reply) {
                    let mut msg = match reply {
                        Ok(value) => serde_json::json!({ "return": value }),
                        Err(e) => serde_json::json!({ "error": e }),
                    };
                    if let Some(id) = id {
                        msg["id"] = id;
                    }
                    r.reply(*client, msg);
                }
            };
        if let Some((outcome, failure)) = self.answer_here(&call, &shown) {
            record(&outcome, Some(Err(&failure)));
            return Box::pin(async move { Err(failure) });
        }
        let mut forward = qmp_client::Call::new(call.command.clone())
            .arguments(arguments)
            .timeout(None);
        if call.oob {
            forward = forward.out_of_band();
        }
        for fd in fds {
            forward = forward.fd(fd);
        }
        // query-commands and query-qmp-schema list only what this client
        // may run (and, in the schema, the events it gets).
        let restricted = !self.access.is_everything() || !self.policy.events().is_everything();
        let listing = (restricted
            && matches!(call.command.as_str(), "query-commands" | "query-qmp-schema"))
        .then(|| (self.access.clone(), self.policy.events().clone()));
        let client = self.upstream.client.clone();
        Box::pin(async move {
            let _turn = match &fd_turn {
                Some(turn) => Some(turn.lock().await),
                None => None,
            };
            match client.call(forward).await {
                Ok(value) => {
                    record(&Outcome::Return, Some(Ok(&value)));
                    let mut value = QObject::from_qemu_output(&value);
                    if let (Some((access, events)), QObject::List(entries)) = (&listing, &mut value)
                    {
                        // query-commands: {"name"}; query-qmp-schema: also
                        // "meta-type", and types, which stay
                        entries.retain(|e| {
                            let Some(d) = e.as_dict() else { return true };
                            let Some(name) = d.get("name").and_then(QObject::as_str) else {
                                return true;
                            };
                            match d.get("meta-type").and_then(QObject::as_str) {
                                None | Some("command") => access.permits(name),
                                Some("event") => events.permits(name),
                                Some(_) => true,
                            }
                        });
                    }
                    Ok(Some(value))
                }
                Err(qmp_client::Error::Qmp(e)) => {
                    record(&Outcome::Error(e.class.clone()), Some(Err(&e)));
                    Err(e)
                }
                Err(e) if e.is_disconnect() => {
                    // QEMU is gone: the connection ends unanswered, as a
                    // direct client would have seen it.
                    record(&Outcome::Lost, None);
                    std::future::pending().await
                }
                Err(e) => {
                    let failure = QmpError::generic(format!("proxy: {e}"));
                    record(&Outcome::Error(failure.class.clone()), Some(Err(&failure)));
                    Err(failure)
                }
            }
        })
    }

    fn ended(&self) -> impl Future<Output = Ending> + Send + 'static {
        let client = self.upstream.client.clone();
        let mut stop = self.stop.clone();
        async move {
            tokio::select! {
                _ = client.disconnected() => Ending::Now,
                _ = stop.wait_for(|s| *s) => Ending::Drain,
            }
        }
    }

    fn max_unread(&self) -> usize {
        self.buffer
    }

    fn input_budget(&self) -> Option<usize> {
        Some(self.input_budget)
    }

    fn cancel_on_disconnect(&self) -> bool {
        false
    }
}
