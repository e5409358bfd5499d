//! The proxy's one connection to QEMU, and what it learns there: the
//! greeting every client will get, and the command table its sessions
//! check requests against.

use qmp_client::{Client, ClientBuilder};
use qmp_proto::schema::{Kind, Schema};
use qmp_proto::Address;
use qmp_server::session::{CommandSet, SessionConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// QEMU's commands, and whether each may run out of band.
#[derive(Clone, Debug, Default)]
pub struct Commands(Arc<HashMap<String, bool>>);

/// Every name passes the session's lookup, so that the downstream answers
/// a name QEMU lacks itself, with QEMU's CommandNotFound, where the audit
/// log and the transcript see it. Such a name claims oob support: QEMU
/// looks a command up before it checks oob, so `exec-oob` of an unknown
/// name is "not found" there too, not "does not support OOB".
impl CommandSet for Commands {
    fn allow_oob(&self, command: &str) -> Option<bool> {
        Some(self.0.get(command).copied().unwrap_or(true))
    }
}

impl Commands {
    /// From a schema: its commands.
    pub fn from_schema(schema: &Schema) -> Commands {
        let table = schema
            .commands()
            .map(|e| {
                let oob = matches!(
                    e.kind,
                    Kind::Command {
                        allow_oob: true,
                        ..
                    }
                );
                (e.name.clone(), oob)
            })
            .collect();
        Commands(Arc::new(table))
    }

    /// From a `query-commands` reply (no oob information there).
    pub fn from_list(list: &Value) -> Commands {
        let table = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["name"].as_str()?.to_owned(), false)))
            .collect();
        Commands(Arc::new(table))
    }

    /// Whether QEMU has this command.
    pub fn contains(&self, command: &str) -> bool {
        self.0.contains_key(command)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A negotiated connection to QEMU.
pub struct Upstream {
    pub client: Client,
    pub commands: Commands,
    /// The greeting's contents, for every client session.
    pub config: SessionConfig,
    /// Held by the one call that may pass file descriptors to QEMU, from
    /// sending it until its reply (see `downstream.rs`).
    pub(crate) fd_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Upstream {
    /// Connects, negotiates (oob when offered) and reads the command table.
    /// No timeout applies to the commands forwarded later: QEMU decides
    /// how long they take, as it would for a direct client.
    pub async fn connect(address: &Address) -> Result<Upstream, qmp_client::Error> {
        let client = ClientBuilder::new()
            .timeout(None)
            .oob(true)
            .connect_to(address)
            .await?;
        // Without a readable schema (a server that is not QEMU), the
        // command list still names the commands.
        let schema = match client.execute("query-qmp-schema", json!({})).await {
            Ok(schema) => Schema::from_json(&schema).map_err(|e| tracing::warn!("{e}")),
            Err(e) if e.qmp().is_some() => Err(()),
            Err(e) => return Err(e),
        };
        let commands = match schema {
            Ok(schema) => Commands::from_schema(&schema),
            Err(()) => Commands::from_list(&client.execute("query-commands", json!({})).await?),
        };
        let greeting = client
            .greeting()
            .cloned()
            .unwrap_or_else(|| qmp_proto::Greeting {
                version: Default::default(),
                capabilities: Vec::new(),
            });
        let config = SessionConfig {
            version: greeting.version.clone(),
            offer_oob: client.oob_enabled(),
            pretty: false,
        };
        tracing::info!(
            "upstream QEMU {} ({} commands, oob {})",
            greeting.version.qemu,
            commands.len(),
            if client.oob_enabled() { "on" } else { "off" }
        );
        Ok(Upstream {
            client,
            commands,
            config,
            fd_turn: Arc::default(),
        })
    }
}
