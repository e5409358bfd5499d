//! Connection settings, and the three ways to get a connection: connect,
//! accept (QEMU connects to us), or adopt a connected stream.

use crate::connection::FramedReader;
use crate::error::{Disconnect, Error, Result};
use crate::handshake;
use crate::router::{self, Shared};
use crate::transport::{self, Listener, Stream};
use crate::{writer, Client};
use qmp_proto::Address;
use qmp_proto::DEFAULT_MAX_MESSAGE_SIZE;
use std::sync::Arc;
use std::time::Duration;

/// What happens when a connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Handshake {
    /// Read the greeting, then negotiate with `qmp_capabilities` (default).
    #[default]
    Negotiate,
    /// Read the greeting but leave negotiation to the caller.
    GreetingOnly,
    /// Expect no greeting and do nothing: a raw session.
    None,
    /// The guest agent: no greeting; sync with `guest-sync-delimited`
    /// when connecting and whenever stale bytes may be in the stream (see
    /// [`Client::resync`]).
    GuestAgent,
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    timeout: Option<Duration>,
    connect_timeout: Duration,
    oob: bool,
    handshake: Handshake,
    max_message_size: usize,
    inband_window: Option<usize>,
    fail_if_busy: bool,
}

/// How long a unix socket may wait in the listener's queue before the
/// monitor is taken to be busy, if it is serving another client: a QEMU
/// that is free accepts within milliseconds; a proxy that is still
/// connecting to its QEMU within a fraction of a second.
const BUSY_AFTER: Duration = Duration::from_secs(1);

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Default per-command timeout. Generous (QEMU answers in microseconds to
/// milliseconds; long work runs as jobs), but it means no call can hang
/// forever on a stopped or wedged QEMU.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound on connecting plus the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// Here rather than in client.rs, so that the client does not depend on
// how it is built.
impl Client {
    /// Connects with default settings; see [`ClientBuilder`].
    pub async fn connect(address: &str) -> Result<Client> {
        ClientBuilder::new().connect(address).await
    }
}

impl ClientBuilder {
    /// The defaults: a 30 s timeout per command, oob when offered, the full
    /// handshake.
    pub fn new() -> Self {
        ClientBuilder {
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            oob: true,
            handshake: Handshake::Negotiate,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            inband_window: Some(qmp_proto::QUEUE_SIZE),
            fail_if_busy: false,
        }
    }

    /// Fail soon with [`Error::Busy`] when the monitor is serving another
    /// client, instead of waiting (up to the connect timeout) for it to
    /// finish: a QEMU monitor serves one client at a time and leaves the
    /// next one connected but unanswered (rule M1). Told apart on unix
    /// sockets: the connection was not accepted within a second while the
    /// listener serves another client (a monitor that serves nobody is
    /// slow, and is waited for); elsewhere this changes nothing. Off by
    /// default; the command-line tools turn it on.
    pub fn fail_if_busy(mut self, yes: bool) -> Self {
        self.fail_if_busy = yes;
        self
    }

    /// Default timeout of every call (`None`: wait forever).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bound on connecting, reading the greeting and negotiating.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether to enable oob when the server offers it (default true).
    pub fn oob(mut self, oob: bool) -> Self {
        self.oob = oob;
        self
    }

    /// How much of the handshake the client does itself (see [`Handshake`]).
    pub fn handshake(mut self, handshake: Handshake) -> Self {
        self.handshake = handshake;
        self
    }

    /// Talk to a guest agent (qemu-ga) rather than a QEMU monitor: the
    /// same as `.handshake(Handshake::GuestAgent)`.
    ///
    /// ```no_run
    /// # async fn f() -> qmp_client::Result<()> {
    /// use qmp_client::ClientBuilder;
    /// use serde_json::json;
    /// // QEMU's end of the guest's virtio-serial channel (or qemu-ga's own
    /// // socket)
    /// let agent = ClientBuilder::new().guest_agent().connect("/run/vm1-ga.sock").await?;
    /// let info = agent.execute("guest-info", json!({})).await?;
    /// println!("agent {}", info["version"]);
    /// # Ok(()) }
    /// ```
    pub fn guest_agent(self) -> Self {
        self.handshake(Handshake::GuestAgent)
    }

    /// Largest message accepted from the server (default 256 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How many in-band requests may be on the wire at once when oob is
    /// negotiated (default 8, QEMU's queue, rule O3). Keeping to it is what
    /// lets an `exec-oob` request overtake: past it QEMU stops reading, and
    /// an oob request would wait behind the unread bytes. `None` lifts the
    /// limit, for servers known to read everything at once.
    pub fn inband_window(mut self, window: Option<usize>) -> Self {
        self.inband_window = window.map(|n| n.max(1));
        self
    }

    /// Connects to an address in the common syntax (see [`Address`]).
    pub async fn connect(self, address: &str) -> Result<Client> {
        let address: Address = address.parse()?;
        self.connect_to(&address).await
    }

    /// Connects to an address already parsed.
    pub async fn connect_to(self, address: &Address) -> Result<Client> {
        let limit = self.connect_timeout;
        let what = address.to_string();
        let opening = async {
            let stream = match transport::connect(address).await {
                // A unix listener whose queue is full of clients waiting
                // for a busy monitor refuses more with EAGAIN.
                Err(Error::Connect { source, .. })
                    if self.fail_if_busy
                        && matches!(address, Address::Unix(_))
                        && source.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    return Err(Error::Busy {
                        address: what.clone(),
                    });
                }
                other => other?,
            };
            if self.fail_if_busy {
                let started = tokio::time::Instant::now();
                while stream.waiting_to_be_accepted() == Some(true) {
                    if started.elapsed() < BUSY_AFTER {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    // Busy if the listener serves somebody else; if it
                    // serves nobody it is only slow, so wait on (up to the
                    // connect timeout); if the kernel cannot tell, busy.
                    let serving = match address {
                        Address::Unix(path) => transport::serves_a_client(path),
                        _ => None,
                    };
                    if serving != Some(false) {
                        return Err(Error::Busy {
                            address: what.clone(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            self.open(stream).await
        };
        let tls = matches!(address, Address::Tls { .. });
        let result = tokio::time::timeout(limit, opening)
            .await
            .unwrap_or_else(|_| Err(handshake_timeout(&what, limit)));
        match result {
            // QEMU checks a client's certificate after the TLS handshake
            // (TLS 1.3): then it closes, or (qemu-storage-daemon 10.0)
            // neither greets nor closes.
            Err(Error::Handshake(message)) if tls => Err(Error::Handshake(format!(
                "{message}; over TLS this is what QEMU does when it refuses this client's certificate, or the lack of one: check --tls-cert and --tls-key (cert=, key=), and that QEMU's tls-creds trusts their CA"
            ))),
            other => other,
        }
    }

    /// Waits for a peer (QEMU started with `server=off`) to connect to
    /// `listener`, then runs the handshake. Only the handshake is bounded
    /// by the connect timeout, not the wait for the peer.
    pub async fn accept(self, listener: &Listener) -> Result<Client> {
        let stream = listener.accept().await?;
        self.from_stream(stream).await
    }

    /// Runs the handshake on a connected socket (unix or TCP) given as a
    /// descriptor the caller owns, such as one a program inherited (its
    /// `main` makes the `OwnedFd`, since only it knows the fd is its own).
    pub async fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Client> {
        let stream = transport::stream_from_fd(fd).map_err(|e| Error::Connect {
            address: "an inherited descriptor".into(),
            source: std::sync::Arc::new(e),
        })?;
        self.from_stream(stream).await
    }

    /// Runs the handshake on an already-connected stream.
    pub async fn from_stream(self, stream: impl Into<Stream>) -> Result<Client> {
        let limit = self.connect_timeout;
        tokio::time::timeout(limit, self.open(stream.into()))
            .await
            .unwrap_or_else(|_| Err(handshake_timeout("the stream", limit)))
    }

    async fn open(self, stream: Stream) -> Result<Client> {
        let fd_passing = stream.can_pass_fds();
        let tls = stream.is_tls();
        let (read, write) = stream.split().map_err(|e| Error::Connect {
            address: "(stream)".into(),
            source: Arc::new(e),
        })?;
        let agent = self.handshake == Handshake::GuestAgent;
        let mut reader = FramedReader::new(read, self.max_message_size);
        if agent {
            reader = reader.with_reset_byte();
        }
        let greeting = match self.handshake {
            Handshake::None | Handshake::GuestAgent => None,
            _ => Some(handshake::read_greeting(&mut reader).await?),
        };
        let will_negotiate_oob = self.handshake == Handshake::Negotiate
            && self.oob
            && greeting.as_ref().is_some_and(|g| g.offers("oob"));
        let window = if will_negotiate_oob {
            self.inband_window
        } else {
            None
        };
        let mut shared = Shared::new(window);
        if tls {
            shared.watch_calls();
        }
        let shared = Arc::new(shared);
        let sink = writer::Sink::new(write);
        tokio::spawn({
            let (sink, shared) = (sink.clone(), shared.clone());
            async move {
                if let Err(e) = writer::run(sink).await {
                    shared.close(Disconnect::Io(Arc::new(e)));
                }
            }
        });
        if tls {
            tokio::spawn(crate::nudge::run(shared.clone(), sink.clone()));
        }
        let router =
            tokio::spawn(router::run(reader, shared.clone(), sink.clone(), agent)).abort_handle();
        let mut client = Client::start(
            shared,
            sink,
            router,
            greeting.clone(),
            fd_passing,
            self.timeout,
        );
        if agent {
            client.set_agent();
            client
                .resync()
                .await
                .map_err(|e| Error::Handshake(format!("the guest agent did not sync: {e}")))?;
        }
        if let (Handshake::Negotiate, Some(g)) = (self.handshake, &greeting) {
            let oob = handshake::negotiate(&client, g, self.oob).await?;
            client.set_oob(oob);
        }
        Ok(client)
    }
}

fn handshake_timeout(what: &str, limit: Duration) -> Error {
    Error::Handshake(format!(
        "no greeting from {what} within {limit:?} (a QEMU monitor serves one client at a time: is another connected?)"
    ))
}
