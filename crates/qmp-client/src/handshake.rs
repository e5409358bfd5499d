//! The opening of a session, apart from message routing: read the greeting
//! (rule G1), then negotiate capabilities (N1–N8).

use crate::connection::FramedReader;
use crate::error::{Error, Result};
use crate::Client;
use qmp_proto::{Greeting, Message};
use serde_json::json;

/// Reads messages until the greeting. QEMU sends it first; events before it
/// (only an odd server would send them) are logged and dropped, since no
/// one can have subscribed yet.
pub(crate) async fn read_greeting(reader: &mut FramedReader) -> Result<Greeting> {
    loop {
        match reader.next().await {
            Ok(Message::Greeting(g)) => return Ok(g),
            Ok(Message::Event(e)) => {
                tracing::debug!("event before the greeting dropped: {}", e.name)
            }
            Ok(other) => {
                return Err(Error::Handshake(format!(
                    "expected the server's greeting, got {other:?}"
                )))
            }
            Err(reason) => return Err(Error::Handshake(format!("no greeting: {reason}"))),
        }
    }
}

/// Sends `qmp_capabilities`, asking for oob when wanted and offered.
/// Returns whether oob is now on.
pub(crate) async fn negotiate(
    client: &Client,
    greeting: &Greeting,
    want_oob: bool,
) -> Result<bool> {
    let oob = want_oob && greeting.offers("oob");
    let arguments = if oob {
        json!({"enable": ["oob"]})
    } else {
        json!({})
    };
    client
        .execute("qmp_capabilities", arguments)
        .await
        .map_err(|e| Error::Handshake(format!("qmp_capabilities failed: {e}")))?;
    Ok(oob)
}
