#![warn(missing_docs, missing_debug_implementations)]
//! Transcripts of real QMP traffic, and a server that plays them back as
//! the QEMU that was recorded.
//!
//! The proxy of `qmp-proxy` records transcripts (`qmp proxy --record`);
//! this crate reads them, shows and normalizes them for people and review
//! diffs, checks their requests against a QEMU schema, and replays them,
//! so a test can run against recorded QEMU behaviour without a QEMU.
//!
//! * [`transcript`]: the format, [`Transcript`] and its review tools.
//! * [`replay`]: [`Replay`], the server that answers as the recording did.
//!
//! Comments and docs cite facts about QEMU's protocol by rule id ("rule
//! R3", "P4"): they are the sections of `docs/protocol-notes.md` in the
//! project's repository, each measured on real QEMU binaries.

pub mod replay;
pub mod transcript;

pub use replay::{MatchMode, Replay};
pub use transcript::Transcript;
