#![warn(missing_docs, missing_debug_implementations)]
//! A QMP proxy: many clients share one QEMU monitor, each as if it had
//! QEMU to itself, under an access policy and with an audit log.
//!
//! Comments and docs cite facts about QEMU's protocol by rule id ("rule
//! R3", "P4"): they are the sections of `docs/protocol-notes.md` in the
//! project's repository, each measured on real QEMU binaries.
//!
//! * [`proxy`]: listeners, the upstream connection, reconnecting.
//! * `upstream`: the connection to QEMU and what it tells the proxy
//!   (greeting, command table).
//! * `downstream`: one client, served by the server framework's connection
//!   loop with QEMU answering its calls.
//! * [`policy`]: the policy file and the built-in `read-only` policy.
//! * `audit`: the audit log.
//! * `recorder`: writes what the proxy carries as a transcript, whose
//!   format and replay are the `qmp-replay` crate's.

mod audit;
mod downstream;
pub mod policy;
pub mod proxy;
mod recorder;
pub mod tls;
mod upstream;

pub use policy::PolicyFile;
pub use proxy::{ListenSpec, Proxy, ProxyBuilder, ProxyError, ProxyHandle};
