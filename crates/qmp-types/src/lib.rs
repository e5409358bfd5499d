//! Typed QMP commands and events, generated from the `query-qmp-schema`
//! dumps of QEMU 7.2, 10.0 and 11.1 (qemu-system-x86_64 and
//! qemu-storage-daemon) by `qmp-codegen`.

pub use qmp_proto::typed::{self as rt, Command, Empty, Event, Qmp, TypeError};

#[allow(clippy::all, missing_docs, unused_variables, unused_mut)]
mod generated;

pub use generated::*;
