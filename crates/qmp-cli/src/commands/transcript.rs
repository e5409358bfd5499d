//! `qmp transcript show|normalize|check`: for people who read transcripts.
//!
//! * `show FILE [--full]`: one readable line per message.
//! * `normalize FILE [-o OUT]`: the canonical form (see
//!   [`qmp_replay::transcript::normalize`]), so two recordings of the same
//!   conversation diff clean.
//! * `check FILE --schema SCHEMA`: every recorded request a QEMU with that
//!   schema would refuse, with its error; exit status 1 if there is any.

use crate::cli::TranscriptCommand;
use crate::Failure;
use qmp_replay::transcript::{self, Transcript};
use std::io::Write;

/// JSON values longer than this are cut in `show` unless `--full`.
const SHOW_WIDTH: usize = 200;

fn load(file: &str) -> Result<Transcript, Failure> {
    Transcript::load(file.as_ref()).map_err(|e| Failure::Usage(format!("{file}: {e}")))
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // a reader that stopped early (`| head`) is not an error
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Usage(format!("cannot write: {e}")))
        }
        _ => Ok(()),
    }
}

pub fn run(command: &TranscriptCommand) -> Result<(), Failure> {
    match command {
        TranscriptCommand::Show { file, full, .. } => {
            let width = (!full).then_some(SHOW_WIDTH);
            print(&transcript::show(&load(file)?, width))
        }
        TranscriptCommand::Normalize { file, output, .. } => {
            let text = transcript::normalize(&load(file)?).to_lines();
            match output {
                None => print(&text),
                Some(out) => std::fs::write(out, text)
                    .map_err(|e| Failure::Usage(format!("cannot write {out}: {e}"))),
            }
        }
        TranscriptCommand::Check { file, schema, .. } => {
            let t = load(file)?;
            let schema = super::mock::read_schema(schema)?;
            let problems = transcript::check(&t, &schema);
            let requests = t
                .entries
                .iter()
                .filter(|e| e.dir == transcript::Dir::Request)
                .count();
            for p in &problems {
                println!("{file}: {p}");
            }
            eprintln!(
                "{file}: {} of {requests} requests would be refused",
                problems.len()
            );
            if problems.is_empty() {
                Ok(())
            } else {
                Err(Failure::Quiet(1))
            }
        }
    }
}
