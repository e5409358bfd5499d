//! Client-side encoding: compact JSON plus `\n`.
//!
//! QEMU needs no framing on input (rule F3), but a newline after each
//! request makes a top-level scalar visible at once (J8) and keeps logs and
//! transcripts one message per line.

use crate::message::Request;
use serde::Serialize;
use serde_json::Value;

/// Appends one request, `{"execute":"NAME","arguments":{...},"id":ID}\n`,
/// to `out`. `arguments` of `None` leaves the member out; so does an id of
/// `None`. The arguments are serialized straight from the caller's type, so
/// a typed call never builds an intermediate `Value`.
pub fn encode_request<A: Serialize + ?Sized, I: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    command: &str,
    arguments: Option<&A>,
    id: Option<&I>,
    oob: bool,
) -> serde_json::Result<()> {
    out.extend_from_slice(if oob {
        b"{\"exec-oob\":"
    } else {
        b"{\"execute\":"
    });
    serde_json::to_writer(&mut *out, command)?;
    if let Some(arguments) = arguments {
        out.extend_from_slice(b",\"arguments\":");
        let mark = out.len();
        serde_json::to_writer(&mut *out, arguments)?;
        // `null` or `{}` arguments mean no arguments (R6): leave them out.
        if matches!(&out[mark..], b"null" | b"{}") {
            out.truncate(mark - b",\"arguments\":".len());
        }
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        serde_json::to_writer(&mut *out, id)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

impl Request {
    /// Appends the request's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Serializing `String`s, `Map`s and `Value`s cannot fail.
        let _ = encode_request(
            out,
            &self.command,
            self.arguments.as_ref(),
            self.id.as_ref(),
            self.oob,
        );
    }

    /// The request as a JSON value, members in wire order.
    pub fn to_value(&self) -> Value {
        let mut out = Vec::new();
        self.encode(&mut out);
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Request};
    use serde_json::json;

    #[test]
    fn compact_with_newline() {
        let mut out = Vec::new();
        let r = Request::new("blockdev-del")
            .with_arguments(json!({"node-name": "n\u{e9}"}).as_object().unwrap().clone())
            .with_id(json!(7));
        r.encode(&mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"n\u{e9}\"},\"id\":7}\n"
        );
        // and it reads back as the same request
        assert_eq!(Message::from_slice(&out).unwrap(), Message::Request(r));
    }

    #[test]
    fn oob_no_args_and_any_id() {
        let mut out = Vec::new();
        encode_request(
            &mut out,
            "query-yank",
            None::<&Value>,
            Some(&json!({"a": [null]})),
            true,
        )
        .unwrap();
        assert_eq!(
            out,
            b"{\"exec-oob\":\"query-yank\",\"id\":{\"a\":[null]}}\n"
        );
        out.clear();
        encode_request(&mut out, "stop", Some(&json!({})), None::<&Value>, false).unwrap();
        assert_eq!(out, b"{\"execute\":\"stop\"}\n");
        out.clear();
        encode_request(
            &mut out,
            "stop",
            Some(&Value::Null),
            Some(&Value::Null),
            false,
        )
        .unwrap();
        assert_eq!(out, b"{\"execute\":\"stop\",\"id\":null}\n");
    }

    #[test]
    fn typed_arguments() {
        #[derive(Serialize)]
        struct Args<'a> {
            path: &'a str,
        }
        let mut out = Vec::new();
        encode_request(
            &mut out,
            "qom-list",
            Some(&Args { path: "/" }),
            Some(&1u64),
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            b"{\"execute\":\"qom-list\",\"arguments\":{\"path\":\"/\"},\"id\":1}\n"
        );
    }
}
