//! Typed commands and events: [`Client::run`] and [`Client::events_of`],
//! for the types of `qmp-types` (or of `qmp codegen`), which implement
//! [`qmp_proto::typed::Command`] and [`qmp_proto::typed::Event`].
//!
//! Before a typed command is sent, it is checked against the connected
//! QEMU's own schema (read once, on the first typed call): a command that
//! QEMU lacks, or an argument member it does not know, fails at once,
//! naming both, and nothing is sent. The guest agent cannot describe
//! members, so for it only the command is checked, against the list its
//! `guest-info` gives (`qmp_types::guest_agent` has its typed commands).

use crate::events::{EventFilter, EventStream, Lagged};
use crate::{Client, Error, Greeting, Result};
use qmp_proto::schema::Schema;
use qmp_proto::typed::{Command, Event, Qmp, TypeError};
use serde_json::Value;
use std::marker::PhantomData;
use std::sync::Arc;

impl Client {
    /// Runs a typed command and decodes its reply.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qmp_proto::typed::{Command, Empty, Qmp, TypeError};
    /// use serde_json::{json, Value};
    ///
    /// // What qmp-types has, generated, for every command.
    /// struct QueryName;
    /// impl Qmp for QueryName {
    ///     fn from_qmp(_: Value) -> Result<Self, TypeError> { Ok(QueryName) }
    ///     fn to_qmp(&self) -> Value { json!({}) }
    /// }
    /// impl Command for QueryName {
    ///     const NAME: &'static str = "query-name";
    ///     const ALLOW_OOB: bool = false;
    ///     const SINCE: &'static [&'static str] = &[];
    ///     type Ok = Empty;
    /// }
    ///
    /// let demo = qmp_server::demo::start().await?;
    /// let client = qmp_client::Client::connect(demo.address()).await?;
    /// let name = client.run(QueryName).await?;
    /// assert_eq!(name.other["name"], "demo");
    /// # Ok(()) }
    /// ```
    pub async fn run<C: Command>(&self, command: C) -> Result<C::Ok> {
        // The generic part is kept to the conversions, so that each
        // command a program uses costs it little to compile.
        let reply = self.run_value(C::NAME, command.to_qmp()).await?;
        C::Ok::from_qmp(reply).map_err(|error| Error::Type {
            command: C::NAME.to_owned(),
            error,
        })
    }

    /// [`run`](Self::run) without the types: checks the command and its
    /// arguments against what the server has, then runs it.
    pub(crate) async fn run_value(
        &self,
        command: &'static str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value> {
        if let Some(known) = self.known().await {
            check(&known, command, &arguments)?;
        }
        self.execute(command, arguments).await
    }

    /// Events of type `E`, decoded.
    pub fn events_of<E: Event>(&self) -> TypedEvents<E> {
        self.events_of_filtered(EventFilter::all())
    }

    /// Events of type `E` that also pass `filter` (its names are replaced
    /// by `E`'s).
    pub fn events_of_filtered<E: Event>(&self, filter: EventFilter) -> TypedEvents<E> {
        TypedEvents {
            stream: self.events(filter.only_name(E::NAME)),
            kind: PhantomData,
        }
    }

    /// What the server has, read once; `None` where it cannot say (a
    /// server without introspection, an agent that refuses `guest-info`).
    async fn known(&self) -> Option<Arc<Known>> {
        self.inner
            .schema
            .get_or_init(|| async {
                let known = if self.is_guest_agent() {
                    Known::from_guest_info(&self.execute("guest-info", Value::Null).await.ok()?)
                } else {
                    let reply = self.execute("query-qmp-schema", Value::Null).await.ok()?;
                    Known::from_qmp_schema(&reply, self.greeting())
                }?;
                Some(Arc::new(known))
            })
            .await
            .clone()
    }
}

/// What the connected server has: its schema, or for the guest agent
/// (which cannot describe its commands' members), the commands its
/// `guest-info` lists.
#[derive(Debug)]
pub(crate) struct Known {
    schema: Schema,
    /// The server, for errors: `QEMU 10.0.2`, `qemu-ga 10.0.2`.
    server: String,
}

impl Known {
    /// From QEMU's `query-qmp-schema` reply.
    fn from_qmp_schema(reply: &Value, greeting: Option<&Greeting>) -> Option<Known> {
        Some(Known {
            schema: Schema::from_json(reply).ok()?,
            server: match greeting {
                Some(g) => format!("QEMU {}", g.version.qemu),
                None => "the server".to_owned(),
            },
        })
    }

    /// From the agent's `guest-info`: a schema of its commands alone,
    /// without argument types, so `check` finds no members to check.
    fn from_guest_info(info: &Value) -> Option<Known> {
        let commands: Vec<Value> = info["supported_commands"]
            .as_array()?
            .iter()
            .filter_map(|c| c["name"].as_str())
            .map(|name| serde_json::json!({"name": name, "meta-type": "command"}))
            .collect();
        Some(Known {
            schema: Schema::from_json(&Value::Array(commands)).ok()?,
            server: format!(
                "qemu-ga {}",
                info["version"].as_str().unwrap_or("(unknown version)")
            ),
        })
    }
}

/// Fails a command that the server lacks, or arguments with a member its
/// schema does not know.
fn check(known: &Known, command: &str, arguments: &Value) -> Result<()> {
    let server = &known.server;
    if known.schema.allow_oob(command).is_none() {
        return Err(Error::NotInSchema(format!(
            "{server} has no command '{command}'"
        )));
    }
    // device_add takes the device's own properties beyond what the schema
    // declares (QEMU checks them against the driver).
    const OPEN_ARGUMENTS: &[&str] = &["device_add"];
    if OPEN_ARGUMENTS.contains(&command) {
        return Ok(());
    }
    // (None for the agent's commands, whose members are not described.)
    let Some(entry) = known.schema.arguments_of(command) else {
        return Ok(());
    };
    match known.schema.unknown_member(&entry.name, arguments) {
        Some(path) => Err(Error::NotInSchema(format!(
            "{server} does not know the member '{path}' of '{command}'"
        ))),
        None => Ok(()),
    }
}

/// A typed subscription: events of type `E`, decoded. It ends (`None`)
/// when the connection goes away.
#[derive(Debug)]
pub struct TypedEvents<E> {
    stream: EventStream,
    kind: PhantomData<fn() -> E>,
}

/// Why a typed subscription could not give the next event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedEventError {
    /// Events were dropped for lack of room, as [`Lagged`] reports.
    #[error("{0} events were dropped: the subscription fell behind")]
    Lagged(u64),
    /// An event's data did not decode.
    #[error("event {name}: {error}")]
    Undecodable {
        /// The event's name.
        name: String,
        /// Why.
        error: TypeError,
    },
}

impl<E: Event> TypedEvents<E> {
    /// The next event.
    pub async fn next(&mut self) -> Option<std::result::Result<E, TypedEventError>> {
        Some(decode(self.stream.next().await?))
    }

    /// The next event already received, without waiting.
    pub fn try_next(&mut self) -> Option<std::result::Result<E, TypedEventError>> {
        Some(decode(self.stream.try_next()?))
    }

    /// The untyped stream underneath.
    pub fn into_inner(self) -> EventStream {
        self.stream
    }
}

fn decode<E: Event>(
    item: std::result::Result<Arc<qmp_proto::Event>, Lagged>,
) -> std::result::Result<E, TypedEventError> {
    match item {
        Err(Lagged(n)) => Err(TypedEventError::Lagged(n)),
        Ok(event) => E::from_qmp(
            event
                .data
                .clone()
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        )
        .map_err(|error| TypedEventError::Undecodable {
            name: event.name.clone(),
            error,
        }),
    }
}

impl<E: Event> futures_core::Stream for TypedEvents<E> {
    type Item = std::result::Result<E, TypedEventError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.stream)
            .poll_next(cx)
            .map(|item| item.map(decode))
    }
}
