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
