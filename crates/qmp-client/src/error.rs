//! Errors of the client, and why a connection ended.

use qmp_proto::{DecodeError, QmpError};
use std::{fmt, io, sync::Arc, time::Duration};

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a connection is gone. Every call pending when it went away fails
/// with this, so callers learn the real cause rather than "disconnected".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Disconnect {
    /// The server closed the connection between messages.
    Eof,
    /// Reading or writing the socket failed.
    Io(Arc<io::Error>),
    /// The server sent bytes that are not QMP, or a message cut short.
    Protocol(DecodeError),
    /// This client closed the connection (`close()`, or the last handle
    /// was dropped).
    Closed,
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::Eof => f.write_str("the server closed the connection"),
            Disconnect::Io(e) => write!(f, "connection I/O error: {e}"),
            Disconnect::Protocol(e) => write!(f, "protocol error: {e}"),
            Disconnect::Closed => f.write_str("the connection was closed by the client"),
        }
    }
}

/// What went wrong with a call or a connection.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with `{"error": {"class", "desc"}}`.
    #[error("{0}")]
    Qmp(QmpError),
    /// No reply within the timeout. The request may still run on the
    /// server; its late reply is dropped.
    #[error("no reply to '{command}' within {timeout:?}")]
    Timeout {
        /// The command that got no reply.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The connection is gone (see [`Disconnect`] for why).
    #[error("disconnected: {0}")]
    Disconnected(Disconnect),
    /// Could not connect, bind or accept.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// Where to.
        address: String,
        /// What the system said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The monitor is serving another client and did not take this one
    /// (see [`ClientBuilder::fail_if_busy`](crate::ClientBuilder::fail_if_busy)).
    #[error("the monitor at {address} is busy: it serves another client, and did not take this connection within a second (a QEMU monitor serves one client at a time)")]
    Busy {
        /// Where.
        address: String,
    },
    /// The greeting or the capabilities negotiation failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// File descriptors can only travel over unix sockets (rule F5).
    #[error("file descriptors can only be passed over a unix socket")]
    FdPassingUnsupported,
    /// A caller-chosen id is already waiting for its reply.
    #[error("id {0} is already in use by a pending command")]
    DuplicateId(String),
    /// `exec-oob` needs oob negotiated.
    #[error("out-of-band execution needs the 'oob' capability, which was not negotiated")]
    OobNotNegotiated,
    /// Arguments could not be serialized, or a reply did not fit the
    /// requested type.
    #[error("JSON conversion failed: {0}")]
    Json(Arc<serde_json::Error>),
    /// The reply came but could not be read: it nests deeper than the
    /// client's limit ([`DecodeError::TooDeep`]). The connection is fine.
    #[error("the reply could not be read: {0}")]
    Unreadable(DecodeError),
    /// An invalid address string.
    #[error("{0}")]
    Address(#[from] qmp_proto::AddressError),
    /// A typed command's reply did not decode to its type.
    #[error("the reply to '{command}' did not decode: {error}")]
    Type {
        /// The command.
        command: String,
        /// Where and why.
        error: qmp_proto::typed::TypeError,
    },
    /// A typed command, or an argument member of it, that the connected
    /// QEMU's schema lacks: nothing was sent.
    #[error("{0}; nothing was sent")]
    NotInSchema(String),
}

impl Error {
    /// The server's error class and text, when the server refused.
    pub fn qmp(&self) -> Option<&QmpError> {
        match self {
            Error::Qmp(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the connection is gone (the call may or may not have run).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Error::Disconnected(_))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(Arc::new(e))
    }
}
