//! The proxy: its listeners, its one upstream connection, and the life of
//! both.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_proxy::{ListenSpec, Proxy};
//! use serde_json::json;
//!
//! let qemu = qmp_server::demo::start().await?; // stands in for QEMU's monitor
//! let dir = tempfile::tempdir()?;
//! let shared = dir.path().join("shared.sock").display().to_string();
//! let ro = dir.path().join("ro.sock").display().to_string();
//! let proxy = Proxy::builder(qemu.address().parse()?)
//!     .listen(shared.parse::<ListenSpec>()?)
//!     .listen(format!("{ro},policy=read-only").parse()?)
//!     .bind()
//!     .await?;
//! let handle = proxy.handle();
//! let running = tokio::spawn(proxy.run());
//!
//! // Both clients at once, each as if it had QEMU to itself.
//! let operator = qmp_client::Client::connect(&shared).await?;
//! let monitor = qmp_client::Client::connect(&ro).await?;
//! operator.execute("stop", json!({})).await?;
//! let status = monitor.execute("query-status", json!({})).await?;
//! assert_eq!(status["status"], "paused");
//! let refused = monitor.execute("cont", json!({})).await.unwrap_err();
//! assert_eq!(refused.qmp().unwrap().class, "CommandNotFound");
//!
//! handle.shutdown();
//! running.await??;
//! # Ok(()) }
//! ```
//!
//! The listeners are bound once. Clients are accepted only while QEMU is
//! connected: when it goes away every client's connection ends at once (as
//! if QEMU had exited), and then either the proxy stops or, with
//! `reconnect`, waits for QEMU to come back while new clients wait in the
//! listen backlog, as they would for a busy QEMU monitor.

use crate::audit::{AuditLog, ClientInfo};
use crate::downstream::Downstream;
use crate::policy::{ClientRule, Policy, PolicyError, PolicyFile};
use crate::recorder::Recorder;
use crate::tls::TlsListen;
use crate::upstream::Upstream;
use qmp_proto::Address;
use qmp_server::Listener;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Events (and other messages) a client may leave unread before it is
/// disconnected, by default.
pub const DEFAULT_CLIENT_BUFFER: usize = 1000;

/// Memory a client's input may hold before it is disconnected, by
/// default: far above any real request, far below what QEMU's own limits
/// would let one client hold (a few hundred MiB).
pub const DEFAULT_CLIENT_INPUT_BUDGET: usize = 16 << 20;

/// Why the proxy could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A listener's policy could not be used.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The listener, as written.
        address: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The transcript could not be created.
    #[error("cannot create the transcript {path}: {source}")]
    Record {
        /// The transcript's path.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The audit log could not be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The audit log's path.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// QEMU could not be reached at start-up.
    #[error("cannot reach QEMU at {address}: {source}")]
    Upstream {
        /// QEMU's address.
        address: String,
        /// Why it could not be reached.
        source: qmp_client::Error,
    },
    /// QEMU went away (and the proxy was not reconnecting).
    #[error("QEMU went away: {0} (with --reconnect the proxy would wait for it)")]
    UpstreamLost(String),
}

/// One `--listen ADDR[,policy=NAME][,mode=OCTAL]`, or
/// `--listen tls:HOST:PORT,cert=FILE,key=FILE[,client-ca=FILE][,policy=NAME]`.
#[derive(Debug, Clone)]
pub struct ListenSpec {
    /// Where clients connect.
    pub address: Address,
    /// As written (up to the first comma), for logs and the audit log.
    pub label: String,
    /// The policy its clients get, unless a `[[client]]` entry of the
    /// policy file chooses another (`None`: everything allowed).
    pub policy: Option<String>,
    /// Permissions of a unix socket file.
    pub mode: u32,
    /// The files of a `tls:` listener.
    pub tls: Option<TlsListen>,
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let label = parts.next().unwrap_or_default().to_owned();
        let address = label.parse::<Address>().map_err(|e| e.to_string())?;
        let mut spec = ListenSpec {
            address,
            label,
            policy: None,
            mode: 0o600,
            tls: None,
        };
        let is_tls = matches!(spec.address, Address::Tls { .. });
        let mut tls = TlsListen::default();
        for option in parts {
            match option.split_once('=') {
                Some(("policy", name)) if !name.is_empty() => spec.policy = Some(name.into()),
                Some(("cert", path)) if is_tls && !path.is_empty() => tls.cert = path.into(),
                Some(("key", path)) if is_tls && !path.is_empty() => tls.key = path.into(),
                Some(("client-ca", path)) if is_tls && !path.is_empty() => {
                    tls.client_ca = Some(path.into())
                }
                Some(("mode", m)) => {
                    spec.mode = u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| format!("mode must be octal, such as 0660, not '{m}'"))?
                }
                _ if is_tls => {
                    return Err(format!(
                        "unknown TLS listener option '{option}' (known: cert=FILE, key=FILE, client-ca=FILE, policy=NAME)"
                    ))
                }
                _ => {
                    return Err(format!(
                        "unknown listener option '{option}' (known: policy=NAME, mode=OCTAL; tls: listeners also take cert=, key=, client-ca=)"
                    ))
                }
            }
        }
        if is_tls {
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(format!(
                    "the TLS listener {} needs cert=FILE and key=FILE",
                    spec.label
                ));
            }
            spec.tls = Some(tls);
        }
        Ok(spec)
    }
}

/// Builds a [`Proxy`].
pub struct ProxyBuilder {
    upstream: Address,
    listeners: Vec<ListenSpec>,
    policies: PolicyFile,
    audit: Option<PathBuf>,
    audit_strict: bool,
    reconnect: bool,
    client_buffer: usize,
    client_input_budget: usize,
    record: Option<PathBuf>,
}

impl ProxyBuilder {
    /// Memory a client's input may hold (the request being read and those
    /// queued, about) before the client is disconnected, with the reason
    /// logged. Default [`DEFAULT_CLIENT_INPUT_BUDGET`].
    pub fn client_input_budget(mut self, bytes: usize) -> Self {
        self.client_input_budget = bytes;
        self
    }

    /// Writes a transcript of the traffic to this file (see
    /// [`qmp_replay::transcript`], which also replays it).
    pub fn record(mut self, path: impl Into<PathBuf>) -> Self {
        self.record = Some(path.into());
        self
    }

    /// Adds a listener.
    pub fn listen(mut self, spec: ListenSpec) -> Self {
        self.listeners.push(spec);
        self
    }

    /// The policies listeners may name (besides the built-in `read-only`).
    pub fn policies(mut self, policies: PolicyFile) -> Self {
        self.policies = policies;
        self
    }

    /// Fail closed: log each command before sending it, and refuse the
    /// commands that cannot be logged.
    pub fn audit_strict(mut self, strict: bool) -> Self {
        self.audit_strict = strict;
        self
    }

    /// Appends an audit line per command to this file.
    pub fn audit(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit = Some(path.into());
        self
    }

    /// When QEMU goes away, wait for it to come back instead of stopping.
    pub fn reconnect(mut self, yes: bool) -> Self {
        self.reconnect = yes;
        self
    }

    /// Messages a client may leave unread before it is disconnected.
    pub fn client_buffer(mut self, messages: usize) -> Self {
        self.client_buffer = messages.max(1);
        self
    }

    /// Checks the policies, opens the audit log and binds every listener.
    pub async fn bind(self) -> Result<Proxy, ProxyError> {
        let audit = match &self.audit {
            Some(path) => Some(Arc::new(AuditLog::open(path, self.audit_strict).map_err(
                |source| ProxyError::Audit {
                    path: path.display().to_string(),
                    source,
                },
            )?)),
            None => None,
        };
        let recorder = match &self.record {
            Some(path) => Some(Recorder::create(path).map_err(|source| ProxyError::Record {
                path: path.display().to_string(),
                source,
            })?),
            None => None,
        };
        let mut listeners = Vec::new();
        for spec in &self.listeners {
            let policy = self.policies.policy(spec.policy.as_deref())?;
            let bind_error = |source| ProxyError::Bind {
                address: spec.label.clone(),
                source,
            };
            let (address, tls) = match (&spec.address, &spec.tls) {
                (Address::Tls { host, port, .. }, Some(files)) => (
                    Address::Tcp(host.clone(), *port),
                    Some(files.acceptor().map_err(bind_error)?),
                ),
                (address, _) => (address.clone(), None),
            };
            let listener = Listener::bind(&address, spec.mode)
                .await
                .map_err(bind_error)?;
            listeners.push(Arc::new(Bound {
                listener,
                label: spec.label.clone(),
                policy,
                tls,
            }));
        }
        let client_policies = Arc::new(self.policies.client_policies()?);
        Ok(Proxy {
            upstream: self.upstream,
            listeners,
            client_policies,
            audit,
            reconnect: self.reconnect,
            client_buffer: self.client_buffer,
            client_input_budget: self.client_input_budget,
            clients: Arc::new(AtomicU64::new(0)),
            stop: watch::channel(false).0,
            recorder,
            held: Held::default(),
        })
    }
}

/// A bound listener, its policy, and for `tls:` its acceptor.
struct Bound {
    listener: Listener,
    label: String,
    policy: Arc<Policy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A proxy with its listeners bound; [`run`](Proxy::run) serves.
pub struct Proxy {
    upstream: Address,
    listeners: Vec<Arc<Bound>>,
    /// The policy file's `[[client]]` entries, in order.
    client_policies: Arc<Vec<(ClientRule, Arc<Policy>)>>,
    audit: Option<Arc<AuditLog>>,
    reconnect: bool,
    client_buffer: usize,
    client_input_budget: usize,
    clients: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    recorder: Option<Arc<Recorder>>,
    /// Clients accepted just as QEMU went away: they are served by the
    /// next QEMU (with `reconnect`), as if they had waited in the backlog.
    held: Held,
}

type Held = Arc<std::sync::Mutex<Vec<(Arc<Bound>, qmp_server::connection::Stream)>>>;

/// Stops a running proxy from elsewhere.
#[derive(Clone, Debug)]
pub struct ProxyHandle(watch::Sender<bool>);

impl ProxyHandle {
    /// Stops accepting; clients get answers to what they sent, then the
    /// proxy closes their connections and its own and `run` returns.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl Proxy {
    /// A builder for a proxy of the QEMU monitor at `upstream`.
    pub fn builder(upstream: Address) -> ProxyBuilder {
        ProxyBuilder {
            upstream,
            listeners: Vec::new(),
            policies: PolicyFile::default(),
            audit: None,
            audit_strict: false,
            reconnect: false,
            client_buffer: DEFAULT_CLIENT_BUFFER,
            client_input_budget: DEFAULT_CLIENT_INPUT_BUDGET,
            record: None,
        }
    }

    /// A handle that stops it from elsewhere.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle(self.stop.clone())
    }

    /// The TCP ports bound, in listener order (`None` for unix listeners),
    /// for listeners given port 0.
    pub fn ports(&self) -> Vec<Option<u16>> {
        self.listeners.iter().map(|b| b.listener.port()).collect()
    }

    /// Serves until shut down, or until QEMU goes away (unless
    /// reconnecting). Fails at once if QEMU cannot be reached at the start
    /// and the proxy is not reconnecting.
    pub async fn run(self) -> Result<(), ProxyError> {
        let pump = self.recorder.clone().map(|r| tokio::spawn(r.pump()));
        let result = self.serve().await;
        if let Some(pump) = pump {
            pump.abort();
        }
        result
    }

    async fn serve(&self) -> Result<(), ProxyError> {
        let mut stop = self.stop.subscribe();
        loop {
            let Some(upstream) = self.connect(&mut stop).await? else {
                return Ok(());
            };
            if let Some(r) = &self.recorder {
                r.attach(&upstream.client);
            }
            let upstream = Arc::new(upstream);
            let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
            let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
            let serving = self.serving();
            for (bound, stream) in held {
                serving.start(&bound, &upstream, stream, &done_tx);
            }
            let mut accepting = JoinSet::new();
            for bound in &self.listeners {
                accepting.spawn(self.accept_loop(bound.clone(), upstream.clone(), done_tx.clone()));
            }
            drop(done_tx);
            let lost = tokio::select! {
                reason = upstream.client.disconnected() => Some(reason.to_string()),
                _ = stop.wait_for(|s| *s) => None,
            };
            accepting.abort_all();
            while accepting.join_next().await.is_some() {}
            // Every client's connection holds a sender; all gone = all ended.
            let _ = done_rx.recv().await;
            match lost {
                None => {
                    upstream.client.close().await;
                    return Ok(());
                }
                Some(reason) if self.reconnect => {
                    tracing::warn!("QEMU went away ({reason}); waiting for it to come back")
                }
                Some(reason) => return Err(ProxyError::UpstreamLost(reason)),
            }
        }
    }

    /// Connects to QEMU, retrying while reconnecting. `None` if stopped
    /// meanwhile.
    async fn connect(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Upstream>, ProxyError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = tokio::select! {
                a = Upstream::connect(&self.upstream) => a,
                _ = stop.wait_for(|s| *s) => return Ok(None),
            };
            match attempt {
                Ok(upstream) => return Ok(Some(upstream)),
                Err(source) if !self.reconnect => {
                    return Err(ProxyError::Upstream {
                        address: self.upstream.to_string(),
                        source,
                    })
                }
                Err(e) => tracing::debug!("QEMU not back yet: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return Ok(None),
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    fn accept_loop(
        &self,
        bound: Arc<Bound>,
        upstream: Arc<Upstream>,
        done: mpsc::Sender<()>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let serving = self.serving();
        let held = self.held.clone();
        async move {
            loop {
                let stream = bound.listener.next_client().await;
                if upstream.client.is_closed() {
                    // QEMU went away and this loop is about to be stopped:
                    // the client waits for the next QEMU instead of being
                    // greeted by the last one and dropped.
                    held.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((bound.clone(), stream));
                    continue;
                }
                serving.start(&bound, &upstream, stream, &done);
            }
        }
    }

    fn serving(&self) -> Serving {
        Serving {
            clients: self.clients.clone(),
            audit: self.audit.clone(),
            buffer: self.client_buffer,
            input_budget: self.client_input_budget,
            stop: self.stop.subscribe(),
            recorder: self.recorder.clone(),
            client_policies: self.client_policies.clone(),
        }
    }
}

/// What every client's connection shares.
struct Serving {
    clients: Arc<AtomicU64>,
    audit: Option<Arc<AuditLog>>,
    buffer: usize,
    input_budget: usize,
    stop: watch::Receiver<bool>,
    recorder: Option<Arc<Recorder>>,
    client_policies: Arc<Vec<(ClientRule, Arc<Policy>)>>,
}

impl Serving {
    /// Starts serving a client accepted on `bound`, on its own task
    /// (which first runs the TLS handshake of a `tls:` listener's client).
    fn start(
        &self,
        bound: &Arc<Bound>,
        upstream: &Arc<Upstream>,
        stream: qmp_server::connection::Stream,
        done: &mpsc::Sender<()>,
    ) {
        let cred = stream.peer_cred();
        let number = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        let (bound, upstream, done) = (bound.clone(), upstream.clone(), done.clone());
        let (audit, recorder, stop) =
            (self.audit.clone(), self.recorder.clone(), self.stop.clone());
        let (buffer, input_budget) = (self.buffer, self.input_budget);
        let client_policies = self.client_policies.clone();
        tokio::spawn(async move {
            let (stream, identity) = match (&bound.tls, stream) {
                (Some(acceptor), qmp_server::connection::Stream::Tcp(tcp)) => {
                    match crate::tls::accept(acceptor, tcp).await {
                        Ok((tls, identity)) => (
                            qmp_server::connection::Stream::Other(Box::new(tls)),
                            identity,
                        ),
                        Err(e) => {
                            tracing::info!(
                                "client {number} on {} refused: TLS handshake failed: {e}",
                                bound.label
                            );
                            return;
                        }
                    }
                }
                (_, stream) => (stream, None),
            };
            let who = ClientInfo {
                listener: bound.label.clone(),
                client: number,
                uid: cred.map(|c| c.uid),
                pid: cred.and_then(|c| c.pid),
                identity,
            };
            let peer = match (&who.identity, who.uid, who.pid) {
                (Some(identity), ..) => format!("identity {identity}"),
                (None, Some(uid), Some(pid)) => format!("uid {uid}, pid {pid}"),
                (None, Some(uid), None) => format!("uid {uid}"),
                _ if bound.tls.is_some() => "tls, no certificate".to_owned(),
                _ => "tcp".to_owned(),
            };
            let policy = client_policies
                .iter()
                .find(|(rule, _)| rule.matches(who.uid, who.identity.as_deref()))
                .map_or_else(|| bound.policy.clone(), |(_, p)| p.clone());
            tracing::info!(
                "client {number} connected on {} ({peer}), policy {}",
                who.listener,
                policy.name.as_deref().unwrap_or("(none)")
            );
            let downstream = Downstream {
                upstream,
                access: policy.commands_for(who.uid).clone(),
                policy,
                audit,
                who,
                buffer,
                input_budget,
                stop,
                recorder,
            };
            qmp_server::connection::run(downstream, stream).await;
            tracing::info!("client {number} left");
            drop(done);
        });
    }
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("upstream", &self.upstream)
            .field("listeners", &self.listeners)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.listeners.iter().map(|b| b.label.as_str()).collect();
        f.debug_struct("Proxy")
            .field("upstream", &self.upstream)
            .field("listeners", &labels)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}
