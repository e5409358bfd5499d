//! The guest agent mode against the real qemu-ga (run on the host, with
//! everything that would touch the host blocked; see qmp-testkit's
//! `agent`).
//!
//! A guest's agent talks over a virtio-serial channel that outlives it:
//! when the agent restarts, QEMU's end of the channel stays connected and
//! may hold stale bytes. On the host, qemu-ga's own socket closes with it,
//! so one test puts a relay of ours between client and agent that plays
//! the channel: it stays connected across the restart and can hold back
//! the agent's replies (the only fake here).

use qmp_client::{Client, ClientBuilder, Error};
use qmp_testkit::agent::GuestAgent;
use qmp_testkit::{per_qemu, QemuVersion};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

async fn agent_client(address: &str) -> Client {
    ClientBuilder::new()
        .guest_agent()
        .timeout(Some(Duration::from_secs(5)))
        .connect(address)
        .await
        .unwrap()
}

async fn the_guest_agent_client_syncs_runs_commands_and_gets_the_refusals(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let client = agent_client(&agent.address()).await;
    assert!(client.greeting().is_none());
    assert_eq!(
        client.execute("guest-ping", json!({})).await.unwrap(),
        json!({})
    );
    let info = client.execute("guest-info", json!({})).await.unwrap();
    assert!(
        info["version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}.", v.label())),
        "{info}"
    );

    // What would touch the host is refused by the agent itself.
    for blocked in qmp_testkit::agent::BLOCKED {
        let e = client.execute(blocked, json!({})).await.unwrap_err();
        assert_eq!(
            e.qmp().map(|q| q.class.as_str()),
            Some("CommandNotFound"),
            "{blocked}: {e}"
        );
        assert!(
            e.to_string().contains("has been disabled"),
            "{blocked}: {e}"
        );
    }
    // A file outside the test's directory cannot be written.
    let e = client
        .execute(
            "guest-file-open",
            json!({"path": "/qmp-rs-must-not-exist", "mode": "w"}),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Read-only"), "{e}");

    // An explicit resync in the middle changes nothing for the caller.
    client.resync().await.unwrap();
    assert_eq!(
        client.execute("guest-ping", json!({})).await.unwrap(),
        json!({})
    );
}
per_qemu!(#[tokio::test] async the_guest_agent_client_syncs_runs_commands_and_gets_the_refusals);

/// The relay that plays a virtio-serial channel.
struct Channel {
    /// Bytes from the agent not yet passed to the client, while holding.
    held: Arc<Mutex<Option<Vec<u8>>>>,
    /// The current connection to the agent (write side).
    to_agent: Arc<Mutex<Option<tokio::net::unix::OwnedWriteHalf>>>,
    to_client: Arc<Mutex<tokio::net::unix::OwnedWriteHalf>>,
    path: PathBuf,
}

impl Channel {
    /// Listens at `path`, accepts one client, and connects it to the agent.
    async fn open(path: PathBuf, agent: &GuestAgent) -> (Channel, Client) {
        let listener = UnixListener::bind(&path).unwrap();
        let address = path.display().to_string();
        let connecting = tokio::spawn(async move { agent_client(&address).await });
        let (client_side, _) = listener.accept().await.unwrap();
        let (mut from_client, to_client) = client_side.into_split();
        let channel = Channel {
            held: Arc::new(Mutex::new(None)),
            to_agent: Arc::new(Mutex::new(None)),
            to_client: Arc::new(Mutex::new(to_client)),
            path,
        };
        channel.attach(agent).await;
        let to_agent = channel.to_agent.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            loop {
                let n = from_client.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                if let Some(w) = to_agent.lock().await.as_mut() {
                    let _ = w.write_all(&buf[..n]).await;
                }
            }
        });
        (channel, connecting.await.unwrap())
    }

    /// Connects the channel's far end to the (new) agent.
    async fn attach(&self, agent: &GuestAgent) {
        let (mut from_agent, to_agent) = UnixStream::connect(&agent.socket)
            .await
            .unwrap()
            .into_split();
        *self.to_agent.lock().await = Some(to_agent);
        let (held, to_client) = (self.held.clone(), self.to_client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            loop {
                let n = from_agent.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                if let Some(h) = held.lock().await.as_mut() {
                    h.extend_from_slice(&buf[..n]);
                    continue;
                }
                let _ = to_client.lock().await.write_all(&buf[..n]).await;
            }
        });
    }

    async fn hold(&self) {
        *self.held.lock().await = Some(Vec::new());
    }

    /// Passes on what was held, then `extra`, and stops holding.
    async fn release(&self, extra: &[u8]) -> usize {
        let held = self.held.lock().await.take().unwrap_or_default();
        let mut w = self.to_client.lock().await;
        w.write_all(&held).await.unwrap();
        w.write_all(extra).await.unwrap();
        held.len()
    }
}

async fn after_an_agent_restart_with_stale_bytes_in_the_channel_the_client_resynchronizes(
    v: QemuVersion,
) {
    let mut agent = GuestAgent::start(v);
    let (channel, client) = Channel::open(agent.dir().join("channel.sock"), &agent).await;
    assert_eq!(
        client.execute("guest-ping", json!({})).await.unwrap(),
        json!({})
    );

    // A call whose reply is stuck in the channel: the caller gives up.
    channel.hold().await;
    let call = qmp_client::Call::new("guest-info").timeout(Some(Duration::from_millis(300)));
    assert!(matches!(
        client.call(call).await,
        Err(Error::Timeout { .. })
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The agent dies and a new one starts; the channel delivers the old
    // reply and half of another, as a virtio-serial buffer would.
    agent.restart();
    channel.attach(&agent).await;
    let stale = channel
        .release(b"{\"return\": {\"version\": \"7.2\", \"supported_comm")
        .await;
    assert!(stale > 0, "the agent's reply was not held back");

    // The next call syncs first: stale bytes are dropped, and the reply
    // is this call's own.
    let info = client.execute("guest-info", json!({})).await.unwrap();
    assert!(info["supported_commands"].is_array(), "{info}");
    assert_eq!(
        client.execute("guest-ping", json!({})).await.unwrap(),
        json!({})
    );
    drop(channel.path);
}
per_qemu!(#[tokio::test] async after_an_agent_restart_with_stale_bytes_in_the_channel_the_client_resynchronizes);

async fn a_guest_agent_that_dies_mid_call_fails_the_call_at_once(v: QemuVersion) {
    let mut agent = GuestAgent::start(v);
    let client = agent_client(&agent.address()).await;
    // guest-exec returns at once; the command runs on. Kill the agent
    // while the client waits for a status, and the call fails, not hangs.
    let pid = client
        .execute(
            "guest-exec",
            json!({"path": "sleep", "arg": ["5"], "capture-output": true}),
        )
        .await
        .unwrap()["pid"]
        .clone();
    let started = std::time::Instant::now();
    let status = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                let s = client
                    .execute("guest-exec-status", json!({"pid": pid}))
                    .await?;
                if s["exited"] == true {
                    return Ok::<_, Error>(s);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    agent.kill();
    let e = status.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Disconnected(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the call waited for its timeout"
    );
}
per_qemu!(#[tokio::test] async a_guest_agent_that_dies_mid_call_fails_the_call_at_once);
