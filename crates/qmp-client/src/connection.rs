//! Framed reading: a read half plus the sans-IO [`Decoder`].

use crate::error::Disconnect;
use crate::transport::ReadHalf;
use qmp_proto::{decoder, Decoder, Message};
use std::sync::Arc;

/// Sizes of one socket read: the buffer starts small (10,000 idle clients
/// in one process cost little) and grows while reads fill it. Large
/// replies simply take several reads.
const FIRST_READ: usize = 1024;
const LARGEST_READ: usize = 64 * 1024;

pub(crate) struct FramedReader {
    io: ReadHalf,
    decoder: Decoder,
    buf: Box<[u8]>,
}

impl FramedReader {
    pub(crate) fn new(io: ReadHalf, max_message_size: usize) -> Self {
        FramedReader {
            io,
            decoder: Decoder::with_max_message_size(max_message_size),
            buf: vec![0; FIRST_READ].into_boxed_slice(),
        }
    }

    /// For the guest agent: a 0xFF byte abandons a message half read.
    pub(crate) fn with_reset_byte(mut self) -> Self {
        self.decoder = std::mem::take(&mut self.decoder).with_reset_byte();
        self
    }

    /// The next message. A clean end of stream between messages is
    /// [`Disconnect::Eof`]; an end inside one is a protocol error that
    /// quotes what was received.
    pub(crate) async fn next(&mut self) -> Result<Message, Disconnect> {
        loop {
            let offset = self.decoder.offset();
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    tracing::debug!(target: "qmp::wire", "<- {}", String::from_utf8_lossy(frame));
                    return decoder::parse_frame(frame, offset).map_err(Disconnect::Protocol);
                }
                Ok(None) => {}
                Err(e) => return Err(Disconnect::Protocol(e)),
            }
            let n = match self.io.read(&mut self.buf).await {
                Ok(n) => n,
                Err(e) => return Err(Disconnect::Io(Arc::new(e))),
            };
            if n == 0 {
                return Err(match self.decoder.finish() {
                    Ok(()) => Disconnect::Eof,
                    Err(e) => Disconnect::Protocol(e),
                });
            }
            self.decoder.feed(&self.buf[..n]);
            if n == self.buf.len() && n < LARGEST_READ {
                self.buf = vec![0; (n * 8).min(LARGEST_READ)].into_boxed_slice();
            }
        }
    }
}
