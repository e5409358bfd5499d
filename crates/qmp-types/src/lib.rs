//! Typed QMP commands and events, generated from the `query-qmp-schema`
//! dumps of the QEMUs this project tests against: 7.2, 10.0 and 11.1, each
//! as `qemu-system-x86_64` and `qemu-storage-daemon` (the dumps are in
//! `schemas/`; `scripts/refresh-schemas.sh` takes them again from real
//! QEMUs, `scripts/generate-types.sh` regenerates this crate).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_types::{QueryStatus, QueryVersion};
//! # let demo = qmp_server::demo::start().await?;
//! # let address = demo.address();
//! let client = qmp_client::Client::connect(address).await?;
//! let version = client.run(QueryVersion::new()).await?;
//! if let Some(qemu) = &version.qemu {
//!     println!("QEMU {:?}.{:?}", qemu.major, qemu.minor);
//! }
//! let status = client.run(QueryStatus::new()).await?;
//! println!("{:?}", status.status.map(|s| s.as_str().to_owned()));
//! # Ok(()) }
//! ```
//!
//! # Names
//!
//! QEMU's introspection hides the names of its types (they come out as
//! numbers), so every name here comes from where a type is used, by one
//! rule:
//!
//! * a command's arguments: the command in CamelCase (`blockdev-add` →
//!   [`BlockdevAdd`], `query-status` → [`QueryStatus`]); the type
//!   implements [`Command`], with `NAME`, `ALLOW_OOB` and `Ok` as in
//!   `qapi-spec`;
//! * what it returns: that name plus `Return` ([`QueryStatusReturn`]); a
//!   list's elements take the list's name;
//! * an event's data: the event in CamelCase (`BLOCK_JOB_COMPLETED` →
//!   [`BlockJobCompleted`]), plus `Event` where a command has the same
//!   name (`STOP` → [`StopEvent`]);
//! * a type inside one of those: the parent's name plus the member's
//!   (`BlockdevAdd` + `cache` → `BlockdevAddCache`), or for a union's
//!   branch, the union's plus the case's (`BlockdevAdd` + `null-co` →
//!   [`BlockdevAddNullCo`], held in [`BlockdevAddBranch::NullCo`]);
//! * a member type used in several places, with one shape, is generated
//!   once, under the name of the first of them (commands before events,
//!   each in alphabetical order): `JOB_STATUS_CHANGE`'s `status` is
//!   [`QueryBlockJobsReturnStatus`];
//! * member names become snake_case fields (`node-name` → `node_name`,
//!   `type` → `r#type`), optional setters `with_` plus the field.
//!
//! # Any QEMU, older or newer
//!
//! * What QEMU sends (replies, events) has every member as an `Option`: a
//!   later QEMU may leave any of them out (7.2's `singlestep` is gone in
//!   10.0). Arguments keep their required members required, in `new`.
//! * Members the dumps lack are kept in each struct's `other` map, and
//!   written back. An enum value they lack is `Unrecognized(value)`; a
//!   union branch they lack (or one whose members do not decode) is the
//!   branch enum's `Other`, its members in `other`; an alternate's
//!   unexpected kind of value is `Other(value)`.
//! * Everything is `#[non_exhaustive]`, so members added by a later
//!   version of this crate break no code.
//! * Each command, event, member, enum value and branch says which dumps
//!   have it. [`qmp_client::Client::run`](https://docs.rs/qmp-client)
//!   checks a command and its members against the connected QEMU's own
//!   schema and refuses, naming both, before sending anything.
//!
//! # Build cost
//!
//! The conversions are plain functions (the [`Qmp`] trait), not serde
//! derives: the crate builds in release in under 30 s and 1 GB on two
//! cores, and using a command costs its caller almost nothing (see the
//! repository's BENCHMARKS.md).

pub use qmp_proto::typed::{self as rt, Command, Empty, Event, Qmp, TypeError};

// Written by the generator, as it writes it (see tests/generated_is_current.rs).
#[rustfmt::skip]
#[allow(clippy::all, missing_docs, unused_variables, unused_mut)]
mod generated;

pub use generated::*;

/// The guest agent's commands (`qemu-ga`), typed: for a client made with
/// `qmp_client::ClientBuilder::guest_agent`.
///
/// The agent cannot describe itself (it has no `query-qmp-schema`), so
/// these types come from this project's own description of its commands,
/// `schemas/guest-agent.json`, written in the form of a schema dump and
/// turned into Rust by the same generator, with the same naming rule and
/// the same tolerance, as the rest of this crate. "In every dumped QEMU"
/// below means that description. Every command here is in the agents of
/// QEMU 7.2, 10.0 and 11.1, and the crate's tests run them against those
/// real agents: each reply decodes, writes back as the same JSON, and has
/// no member the description lacks.
///
/// Left out: commands that send no reply (`guest-shutdown`,
/// `guest-suspend-*`: run them with `Client::execute`, which a closed
/// agent ends), and those a guest only sometimes has (disk statistics,
/// `guest-get-load`). `guest-exec`'s `capture-output` is `true` or
/// `false` before QEMU 8.1; later agents also take a mode.
///
/// ```
/// use qmp_types::guest_agent::{GuestExec, GuestExecCaptureOutput, GuestExecStatusReturn};
/// use qmp_types::Qmp;
/// use serde_json::json;
///
/// /// Runs a program in the guest and waits for its exit code.
/// async fn run_in_guest(agent: &qmp_client::Client, program: &str) -> qmp_client::Result<Option<i64>> {
///     let started = agent
///         .run(GuestExec::new(program.into()).with_capture_output(GuestExecCaptureOutput::Bool(true)))
///         .await?;
///     let pid = started.pid.unwrap_or_default();
///     loop {
///         let status = agent.run(qmp_types::guest_agent::GuestExecStatus::new(pid)).await?;
///         if status.exited == Some(true) {
///             return Ok(status.exitcode);
///         }
///         tokio::time::sleep(std::time::Duration::from_millis(50)).await;
///     }
/// }
///
/// // The arguments are written as the agent reads them,
/// let exec = GuestExec::new("/bin/uname".into()).with_arg(vec!["-a".into()]);
/// assert_eq!(exec.to_qmp(), json!({"path": "/bin/uname", "arg": ["-a"]}));
/// // and what it sends is read, members a later agent adds included.
/// let status = GuestExecStatusReturn::from_qmp(json!({"exited": true, "exitcode": 0, "new": 1}))?;
/// assert_eq!((status.exited, status.exitcode), (Some(true), Some(0)));
/// assert_eq!(status.other["new"], 1);
/// # Ok::<(), qmp_types::TypeError>(())
/// ```
#[rustfmt::skip]
#[allow(clippy::all, unused_variables, unused_mut)]
pub mod guest_agent;
