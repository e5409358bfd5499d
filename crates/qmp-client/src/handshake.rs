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
                let got = match &other {
                    Message::Response(r) => match &r.result {
                        Ok(v) => format!("a reply: {}", preview(v)),
                        Err(e) => format!("an error reply: {e}"),
                    },
                    Message::Request(r) => format!("a request for '{}'", r.command),
                    Message::Other(v) => preview(v),
                    _ => "another message".into(),
                };
                return Err(Error::Handshake(format!(
                    "expected the server's greeting, got {got}"
                )));
            }
            Err(reason) => return Err(Error::Handshake(format!("no greeting: {reason}"))),
        }
    }
}

/// A value as JSON text, cut to a readable length.
fn preview(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(120) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
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
