//! Client-side framing: bytes in any chunking in, complete messages out.
//!
//! QEMU ends each message with `\r\n`, but with `pretty=on` one message spans
//! many lines (rule F2), so lines are not frames. A frame is a top-level JSON
//! object: it ends when its braces and brackets balance, counting only those
//! outside strings. The scanner below keeps its position between calls, so a
//! 64 MiB reply arriving in 64 KiB reads is scanned once, not once per read.
//!
//! Bytes between frames may only be JSON whitespace. Anything else is
//! reported as [`DecodeError::Garbage`] with the offending bytes, so a caller
//! can say exactly what the peer sent.

use crate::message::Message;

/// Default per-message limit: 256 MiB. QEMU can legitimately send replies of
/// 64 MiB and more (it echoes strings up to its 64 MiB token limit, and
/// escaping can make them several times longer).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;

/// Default nesting limit of one message: 1024 levels of objects and
/// arrays, as QEMU's own reader allows. QEMU writes deeper replies only for
/// very long chains (a backing chain of a thousand images); such a reply
/// fails its own call ([`DecodeError::TooDeep`]) and the connection goes on.
pub const DEFAULT_MAX_NESTING: usize = 1024;

/// How many bytes of a bad input an error quotes.
const PREVIEW_LEN: usize = 64;

/// Why the decoder could not give the next message. Offsets count bytes
/// from the start of the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Bytes outside any JSON object that are not whitespace.
    #[error("unexpected bytes at offset {offset} outside a JSON object: {preview}")]
    Garbage {
        /// Where the bytes began.
        offset: u64,
        /// The first of them, escaped.
        preview: String,
    },
    /// A balanced `{...}` that is not valid JSON or not a valid message.
    #[error("malformed message at offset {offset}: {reason}; bytes: {preview}")]
    Malformed {
        /// Where the message began.
        offset: u64,
        /// What is wrong with it.
        reason: String,
        /// Its first bytes, escaped.
        preview: String,
    },
    /// A message grew past the configured limit.
    #[error("message at offset {offset} exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// Where the message began.
        offset: u64,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A message nests deeper than the configured limit. It was skipped
    /// whole, so the stream is still in step: `id` is the message's
    /// top-level id, if it has one, so the call it answers can be failed.
    #[error("message at offset {offset} nests deeper than the limit of {limit} levels")]
    TooDeep {
        /// Where the message began.
        offset: u64,
        /// The limit, in levels.
        limit: usize,
        /// The message's top-level id, if it has one.
        id: Option<serde_json::Value>,
    },
    /// The stream ended inside a message.
    #[error("connection closed in the middle of a message ({buffered} bytes received: {preview})")]
    Truncated {
        /// How many bytes of it had come.
        buffered: usize,
        /// Its first bytes, escaped.
        preview: String,
    },
}

/// Renders up to `PREVIEW_LEN` bytes for an error message, escaping what
/// is not printable ASCII so the text stays on one line.
pub fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(PREVIEW_LEN)];
    let mut out: String = shown.escape_ascii().to_string();
    if bytes.len() > PREVIEW_LEN {
        out.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    format!("\"{out}\"")
}

/// Scanner state inside a frame.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Index in `buf` where the current frame's `{` is, if one has started.
    start: Option<usize>,
    /// Next index to look at.
    cursor: usize,
    depth: usize,
    /// The frame went deeper than the limit somewhere.
    too_deep: bool,
    in_string: bool,
    escaped: bool,
}

/// Buffer capacity a decoder keeps once empty; more is given back.
const RETAINED_CAPACITY: usize = 256 * 1024;

/// The framing state machine. Feed it bytes, then pull frames or messages.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    scan: Scan,
    /// Stream offset of `buf[0]`, for error messages.
    base_offset: u64,
    max_message_size: usize,
    max_nesting: usize,
    /// Set after [`DecodeError::TooLarge`]: the frame boundary is lost.
    poisoned: Option<DecodeError>,
    /// A 0xFF byte abandons the message being read (the guest agent's
    /// resynchronization marker).
    reset_byte: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default size limit ([`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn new() -> Self {
        Self::with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A decoder that refuses messages larger than `max_message_size` bytes.
    pub fn with_max_message_size(max_message_size: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            scan: Scan::default(),
            base_offset: 0,
            max_message_size,
            max_nesting: DEFAULT_MAX_NESTING,
            poisoned: None,
            reset_byte: false,
        }
    }

    /// Makes a 0xFF byte, wherever it comes, end whatever was being read
    /// and be skipped, as the guest agent's `guest-sync-delimited` needs:
    /// the agent sends 0xFF before that reply, and valid UTF-8 never holds
    /// the byte, so everything before it is left behind. Off by default
    /// (QEMU never sends it; a 0xFF is then garbage).
    ///
    /// ```
    /// use qmp_proto::{Decoder, Message};
    /// let mut d = Decoder::new().with_reset_byte();
    /// d.feed(b"{\"return\": {\"stale\xff{\"return\": 7, \"id\": 1}");
    /// let Some(Message::Response(r)) = d.next_message()? else { panic!() };
    /// assert_eq!(r.result.unwrap(), 7);
    /// # Ok::<(), qmp_proto::DecodeError>(())
    /// ```
    pub fn with_reset_byte(mut self) -> Self {
        self.reset_byte = true;
        self
    }

    /// Sets the nesting limit ([`DEFAULT_MAX_NESTING`] unless changed).
    pub fn with_max_nesting(mut self, levels: usize) -> Self {
        self.max_nesting = levels;
        self
    }

    /// The size limit, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Appends received bytes. (When everything fed before has been
    /// consumed, the buffer keeps at most 256 KiB of its capacity.)
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a complete message (whitespace
    /// between messages aside).
    pub fn pending_bytes(&self) -> usize {
        match self.scan.start {
            Some(start) => self.buf.len() - start,
            None => self.buf[self.scan.cursor..]
                .iter()
                .filter(|b| !is_space(**b))
                .count(),
        }
    }

    /// Call at end of stream: an error if a message was cut short.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let rest = match self.scan.start {
            Some(start) => &self.buf[start..],
            None => trim_space(&self.buf[self.scan.cursor..]),
        };
        if rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated {
                buffered: rest.len(),
                preview: preview(rest),
            })
        }
    }

    /// The next complete frame (one JSON object's bytes), if one is
    /// buffered. The slice is valid until the next call on the decoder.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        match self.scan_frame()? {
            Some((start, end)) => Ok(Some(&self.buf[start..end])),
            None => Ok(None),
        }
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        let offset = self.base_offset + self.scan.start.unwrap_or(self.scan.cursor) as u64;
        let Some(frame) = self.next_frame()? else {
            return Ok(None);
        };
        parse_frame(frame, offset).map(Some)
    }

    /// Stream offset of the frame most recently returned or being scanned.
    pub fn offset(&self) -> u64 {
        self.base_offset + self.scan.start.unwrap_or(self.scan.cursor) as u64
    }

    /// Drops consumed bytes from the front of the buffer. Cheap when all is
    /// consumed (the common case); otherwise moves the partial tail down
    /// only when it is small next to what it frees.
    fn compact(&mut self) {
        let consumed = self.scan.start.unwrap_or(self.scan.cursor);
        if consumed == 0 {
            return;
        }
        if consumed == self.buf.len() {
            // After a large message, give its memory back.
            if self.buf.capacity() > RETAINED_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        } else if consumed >= self.buf.len() - consumed {
            self.buf.drain(..consumed);
        } else {
            return;
        }
        self.base_offset += consumed as u64;
        self.scan.cursor -= consumed;
        if let Some(start) = &mut self.scan.start {
            *start -= consumed;
        }
    }

    /// Advances the scanner; returns the bounds of a complete frame.
    fn scan_frame(&mut self) -> Result<Option<(usize, usize)>, DecodeError> {
        let buf = &self.buf;
        let s = &mut self.scan;
        let mut i = s.cursor;
        while i < buf.len() {
            let b = buf[i];
            if b == 0xFF && self.reset_byte {
                *s = Scan::default();
                i += 1;
                continue;
            }
            match s.start {
                None => {
                    if b == b'{' {
                        s.start = Some(i);
                        s.depth = 1;
                    } else if !is_space(b) {
                        // Skip the rest of the line so a caller that chooses
                        // to continue resumes at the next message.
                        let end = memchr_newline(&buf[i..]).map_or(buf.len(), |n| i + n + 1);
                        let err = DecodeError::Garbage {
                            offset: self.base_offset + i as u64,
                            preview: preview(&buf[i..end]),
                        };
                        s.cursor = end;
                        return Err(err);
                    }
                }
                Some(start) => {
                    if s.in_string {
                        if s.escaped {
                            s.escaped = false;
                        } else if b == b'\\' {
                            s.escaped = true;
                        } else if b == b'"' {
                            s.in_string = false;
                        } else {
                            // Skip ahead to the next byte that matters.
                            let reset = if self.reset_byte { 0xFF } else { b'"' };
                            if let Some(n) = buf[i..]
                                .iter()
                                .position(|&c| c == b'"' || c == b'\\' || c == reset)
                            {
                                i += n;
                                continue;
                            }
                            i = buf.len();
                            continue;
                        }
                    } else {
                        match b {
                            b'"' => s.in_string = true,
                            b'{' | b'[' => {
                                s.depth += 1;
                                s.too_deep |= s.depth > self.max_nesting;
                            }
                            b'}' | b']' => {
                                s.depth -= 1;
                                if s.depth == 0 {
                                    let end = i + 1;
                                    s.start = None;
                                    s.cursor = end;
                                    if end - start > self.max_message_size {
                                        return Err(self.too_large(start));
                                    }
                                    if std::mem::take(&mut s.too_deep) {
                                        return Err(DecodeError::TooDeep {
                                            offset: self.base_offset + start as u64,
                                            limit: self.max_nesting,
                                            id: top_level_id(&buf[start..end]),
                                        });
                                    }
                                    return Ok(Some((start, end)));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            i += 1;
        }
        s.cursor = i;
        if let Some(start) = s.start {
            if i - start > self.max_message_size {
                return Err(self.too_large(start));
            }
        }
        Ok(None)
    }

    fn too_large(&mut self, start: usize) -> DecodeError {
        let err = DecodeError::TooLarge {
            offset: self.base_offset + start as u64,
            limit: self.max_message_size,
        };
        self.poisoned = Some(err.clone());
        self.buf = Vec::new();
        self.scan = Scan::default();
        err
    }
}

/// Parses one frame into a [`Message`].
pub fn parse_frame(frame: &[u8], offset: u64) -> Result<Message, DecodeError> {
    Message::from_slice(frame).map_err(|e| DecodeError::Malformed {
        offset,
        reason: e.to_string(),
        preview: preview(frame),
    })
}

/// The value of a frame's top-level `"id"` member, found by scanning (the
/// frame as a whole is too deep to parse); `None` if it has none.
fn top_level_id(frame: &[u8]) -> Option<serde_json::Value> {
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut string_start = 0;
    // the last string closed at depth 1: a member name if a ':' follows
    let mut name: Option<(usize, usize)> = None;
    // where the id's value starts, once its ':' was seen
    let mut id_value: Option<usize> = None;
    for (i, &b) in frame.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 1 {
                    name = Some((string_start, i + 1));
                }
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if let Some(start) = id_value {
            if depth == 0 || (depth == 1 && b == b',') {
                return serde_json::from_slice(&frame[start..i]).ok();
            }
        } else if depth == 1 && b == b':' && name.is_some_and(|(a, z)| &frame[a..z] == b"\"id\"") {
            id_value = Some(i + 1);
        }
    }
    None
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !is_space(*b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    /// A real qemu-storage-daemon 10.0 conversation as the client reads it
    /// (greeting, negotiation reply, an error, a reply with nested strings
    /// holding braces, and events), with the server's `\r\n` endings.
    const TRANSCRIPT: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"Debian 1:10.0.2+ds-2+deb13u1~bpo12+1\"}, \"capabilities\": [\"oob\"]}}\r\n\
{\"return\": {}, \"id\": 1}\r\n\
{\"id\": 2, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command x}{ has not been found\"}}\r\n\
{\"return\": [{\"name\": \"type\", \"type\": \"string\"}, {\"name\": \"a\\\"}b\\\\\", \"type\": \"child<x>\"}], \"id\": \"q\"}\r\n\
{\"timestamp\": {\"seconds\": 1763745000, \"microseconds\": 12345}, \"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"created\", \"id\": \"j1\"}}\r\n\
{\"return\": {}, \"id\": [1, {\"k\": null}]}\r\n";

    /// The same shape of output from a monitor started with `pretty=on`.
    const PRETTY: &[u8] = b"{\r\n    \"QMP\": {\r\n        \"version\": {\r\n            \"qemu\": {\r\n                \"micro\": 2,\r\n                \"minor\": 0,\r\n                \"major\": 10\r\n            },\r\n            \"package\": \"\"\r\n        },\r\n        \"capabilities\": [\r\n            \"oob\"\r\n        ]\r\n    }\r\n}\r\n{\r\n    \"return\": {\r\n    },\r\n    \"id\": 1\r\n}\r\n{\r\n    \"timestamp\": {\r\n        \"seconds\": 1,\r\n        \"microseconds\": 2\r\n    },\r\n    \"event\": \"STOP\"\r\n}\r\n";

    fn decode_all(chunks: &[&[u8]]) -> Vec<Message> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c);
            while let Some(m) = d.next_message().unwrap() {
                out.push(m);
            }
        }
        d.finish().unwrap();
        out
    }

    fn whole(input: &[u8]) -> Vec<Message> {
        decode_all(&[input])
    }

    #[test]
    fn transcript_split_at_every_byte_gives_the_same_messages() {
        for input in [TRANSCRIPT, PRETTY] {
            let expected = whole(input);
            assert!(expected.len() >= 3);
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(decode_all(&[a, b]), expected, "cut at {cut}");
            }
            // and one byte at a time
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_all(&bytes), expected);
        }
    }

    #[test]
    fn transcript_contents() {
        let msgs = whole(TRANSCRIPT);
        assert_eq!(msgs.len(), 6);
        assert!(matches!(&msgs[0], Message::Greeting(g) if g.offers("oob")));
        let Message::Response(r) = &msgs[3] else {
            panic!()
        };
        assert_eq!(r.result.as_ref().unwrap()[1]["name"], "a\"}b\\");
        assert!(matches!(&msgs[4], Message::Event(e) if e.name == "JOB_STATUS_CHANGE"));
    }

    #[test]
    fn lf_only_and_no_separator_and_pretty() {
        let msgs = whole(b"{\"return\": 1}\n{\"return\": 2}{\"return\": 3}");
        assert_eq!(msgs.len(), 3);
        let msgs = whole(PRETTY);
        assert_eq!(msgs.len(), 3);
        assert!(matches!(&msgs[2], Message::Event(e) if e.name == "STOP"));
    }

    #[test]
    fn garbage_is_reported_with_its_bytes_and_skipped_to_the_line_end() {
        let mut d = Decoder::new();
        d.feed(b"{\"return\": {}}\r\nHello \x01 world\r\n{\"return\": 5}\r\n");
        assert!(d.next_message().unwrap().is_some());
        let err = d.next_message().unwrap_err();
        assert_eq!(
            err,
            DecodeError::Garbage {
                offset: 16,
                preview: "\"Hello \\x01 world\\r\\n\"".into()
            }
        );
        assert!(err.to_string().contains("Hello"));
        assert!(matches!(
            d.next_message().unwrap(),
            Some(Message::Response(_))
        ));
    }

    #[test]
    fn balanced_but_invalid_json_is_malformed() {
        let mut d = Decoder::new();
        d.feed(b"{\"return\": nope}\r\n{\"return\": 1}");
        let err = d.next_message().unwrap_err();
        assert!(
            matches!(err, DecodeError::Malformed { offset: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("nope"));
        assert!(d.next_message().unwrap().is_some());
    }

    #[test]
    fn size_limit_is_enforced_while_the_message_is_still_arriving() {
        let mut d = Decoder::with_max_message_size(100);
        d.feed(b"{\"return\": \"");
        assert_eq!(d.next_message().unwrap(), None);
        d.feed(&[b'a'; 200]);
        let err = d.next_message().unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                offset: 0,
                limit: 100
            }
        );
        // poisoned: the boundary is lost
        d.feed(b"\"}");
        assert!(d.next_message().is_err());
        // exactly at the limit is fine
        let mut d = Decoder::with_max_message_size(16);
        d.feed(b"{\"return\": 1234}");
        assert!(d.next_message().unwrap().is_some());
    }

    #[test]
    fn truncated_message_at_end_of_stream() {
        let mut d = Decoder::new();
        d.feed(b"{\"return\": {}}\r\n{\"return\": {\"a\"");
        assert!(d.next_message().unwrap().is_some());
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.pending_bytes(), 15);
        let err = d.finish().unwrap_err();
        assert!(
            matches!(err, DecodeError::Truncated { buffered: 15, .. }),
            "{err}"
        );
        let mut d = Decoder::new();
        d.feed(b"{}\r\n  \r\n");
        d.next_message().unwrap();
        assert_eq!(d.pending_bytes(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn large_message_in_small_chunks_is_scanned_linearly() {
        // 8 MiB string, fed 4 KiB at a time; quadratic rescanning would take
        // minutes here, linear scanning milliseconds.
        let mut msg = b"{\"return\": \"".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 8 << 20));
        msg.extend_from_slice(b"\"}\r\n");
        let mut d = Decoder::new();
        let mut got = None;
        for c in msg.chunks(4096) {
            d.feed(c);
            if let Some(m) = d.next_message().unwrap() {
                got = Some(m);
            }
        }
        let Some(Message::Response(r)) = got else {
            panic!()
        };
        assert_eq!(r.result.unwrap().as_str().unwrap().len(), 8 << 20);
    }

    #[test]
    fn offsets_count_from_stream_start_across_compaction() {
        let mut d = Decoder::new();
        for _ in 0..10 {
            d.feed(b"{\"return\": {}}\r\n");
            d.next_message().unwrap().unwrap();
        }
        d.feed(b"]");
        match d.next_message().unwrap_err() {
            DecodeError::Garbage { offset, .. } => assert_eq!(offset, 160),
            e => panic!("{e}"),
        }
    }
}
