//! Waking a QEMU that sits on a request it has already received (TLS only).
//!
//! QEMU 7.2 reads a TLS connection a little at a time and waits for the
//! socket to become readable before reading more. But gnutls has already
//! taken the whole TLS record off the socket, so a request that came in one
//! record is left inside gnutls, unread, until the next record arrives:
//! every reply comes one request late, and the last request is never
//! answered (rule T1 in `docs/protocol-notes.md`; QEMU 10.0 and 11.1 do not
//! do this). The cure costs a byte: while a call waits and nothing has come
//! back for a moment, send a newline, which QEMU's JSON reader skips as
//! whitespace, in a record of its own. Its arrival makes QEMU read on.

use crate::router::Shared;
use crate::writer::{Outgoing, Sink};
use std::sync::Arc;
use std::time::Duration;

/// How long a call waits, with nothing received, before the first nudge;
/// it doubles up to [`LONGEST_WAIT`] while nothing comes.
const FIRST_WAIT: Duration = Duration::from_millis(20);
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// Runs until the connection ends. While no call waits it sleeps until
/// one starts, so an idle connection costs no wake-ups.
pub(crate) async fn run(shared: Arc<Shared>, sink: Arc<Sink>) {
    loop {
        // (the end of the connection wakes this too)
        while shared.idle() {
            if shared.lock().closed.is_some() {
                return;
            }
            shared.call_started().await;
        }
        let mut wait = FIRST_WAIT;
        let mut seen = shared.received();
        loop {
            tokio::time::sleep(wait).await;
            if shared.idle() {
                break;
            }
            let now = shared.received();
            if now != seen {
                seen = now;
                wait = FIRST_WAIT;
                continue;
            }
            if sink.send(Outgoing::Frame(b"\n".to_vec()), false).is_err() {
                return;
            }
            wait = (wait * 2).min(LONGEST_WAIT);
        }
    }
}
