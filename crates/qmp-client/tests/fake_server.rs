//! The client against a scripted fake server, only for what a real QEMU
//! cannot be made to do: send garbage, a reply over 64 MiB, half a message
//! then EOF, an id-less error on demand, event floods, odd orderings, and
//! report how many requests the client had on the wire at once.

use qmp_client::{Call, Client, ClientBuilder, Disconnect, Error, EventFilter, Lagged};
use qmp_proto::{DecodeError, Decoder, Message, Request};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 10}, \"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// The server end of a socketpair.
struct Fake {
    io: UnixStream,
    decoder: Decoder,
}

impl Fake {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn reply(&mut self, id: &Option<Value>, ret: Value) {
        let msg = json!({"return": ret, "id": id});
        self.send(format!("{msg}\r\n").as_bytes()).await;
    }

    /// The next request, or `None` at EOF.
    async fn recv(&mut self) -> Option<Request> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.decoder.next_message().unwrap() {
                match m {
                    Message::Request(r) => return Some(r),
                    other => panic!("client sent {other:?}"),
                }
            }
            let n = self.io.read(&mut buf).await.unwrap();
            if n == 0 {
                return None;
            }
            self.decoder.feed(&buf[..n]);
        }
    }

    async fn recv_timeout(&mut self, t: Duration) -> Option<Option<Request>> {
        tokio::time::timeout(t, self.recv()).await.ok()
    }
}

/// A client connected to a fake that greets and accepts negotiation,
/// sending `before_greeting` first and `before_reply` ahead of the
/// negotiation reply.
async fn connect_with(
    builder: ClientBuilder,
    before_greeting: &[u8],
    before_reply: &[u8],
) -> (Client, Fake) {
    let (a, b) = UnixStream::pair().unwrap();
    let client = tokio::spawn(builder.from_stream(a));
    let mut fake = Fake {
        io: b,
        decoder: Decoder::new(),
    };
    fake.send(before_greeting).await;
    fake.send(GREETING).await;
    let caps = fake.recv().await.unwrap();
    assert_eq!(caps.command, "qmp_capabilities");
    assert_eq!(
        caps.arguments,
        Some(json!({"enable": ["oob"]}).as_object().unwrap().clone())
    );
    fake.send(before_reply).await;
    fake.reply(&caps.id, json!({})).await;
    (client.await.unwrap().unwrap(), fake)
}

async fn connect() -> (Client, Fake) {
    connect_with(ClientBuilder::new(), b"", b"").await
}

const EVENT: &[u8] = b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"X\", \"data\": {\"n\": 1}}\r\n";

#[tokio::test]
async fn fake_events_before_and_during_the_handshake_do_not_shift_replies() {
    let mut storm = Vec::new();
    for _ in 0..5 {
        storm.extend_from_slice(EVENT);
    }
    let (client, mut fake) = connect_with(ClientBuilder::new(), &storm, &storm).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-name", Value::Null).await });
    let req = fake.recv().await.unwrap();
    fake.send(&storm).await;
    fake.send(b"{\"something\": \"unknown\"}\r\n").await;
    fake.reply(&req.id, json!({"name": "vm1"})).await;
    assert_eq!(call.await.unwrap().unwrap(), json!({"name": "vm1"}));
}

#[tokio::test]
async fn fake_garbage_bytes_fail_pending_calls_naming_the_bytes() {
    let (client, mut fake) = connect().await;
    let mut events = client.events(EventFilter::all());
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-status", Value::Null).await });
    fake.recv().await.unwrap();
    fake.send(b"Segmentation fault (core dumped)\r\n").await;
    let err = call.await.unwrap().unwrap_err();
    match &err {
        Error::Disconnected(Disconnect::Protocol(DecodeError::Garbage { preview, .. })) => {
            assert!(preview.contains("Segmentation fault"), "{preview}")
        }
        other => panic!("expected a protocol error naming the bytes, got {other:?}"),
    }
    assert!(err.to_string().contains("Segmentation fault"));
    assert!(events.next().await.is_none());
    // later calls fail at once with the same cause
    let err = client
        .execute("query-status", Value::Null)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Disconnected(Disconnect::Protocol(_))));
}

#[tokio::test]
async fn fake_malformed_json_object_fails_pending_calls() {
    let (client, mut fake) = connect().await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-status", Value::Null).await });
    fake.recv().await.unwrap();
    fake.send(b"{\"return\": {\"status\": running}, \"id\": 2}\r\n")
        .await;
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Disconnected(Disconnect::Protocol(DecodeError::Malformed { preview, .. })) if preview.contains("running")),
        "{err:?}"
    );
}

#[tokio::test]
async fn fake_reply_over_64_mib_arrives_intact() {
    let (client, mut fake) = connect().await;
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.execute("human-monitor-command", json!({"command-line": "info"}))
            .await
    });
    let req = fake.recv().await.unwrap();
    let size = (64 << 20) + 12345;
    let mut reply = b"{\"return\": \"".to_vec();
    reply.extend(std::iter::repeat_n(b'a', size - 1));
    reply.extend_from_slice(b"\\u00e9\", \"id\": ");
    reply.extend_from_slice(req.id.unwrap().to_string().as_bytes());
    reply.extend_from_slice(b"}\r\n");
    let writer = tokio::spawn(async move {
        fake.send(&reply).await;
        fake
    });
    let r = call.await.unwrap().unwrap();
    let s = r.as_str().unwrap();
    assert_eq!(s.chars().count(), size);
    assert!(s.ends_with("a\u{e9}"));
    let _fake = writer.await.unwrap();
}

#[tokio::test]
async fn fake_reply_over_the_configured_limit_is_a_clear_error() {
    let (client, mut fake) =
        connect_with(ClientBuilder::new().max_message_size(1 << 20), b"", b"").await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("x", Value::Null).await });
    fake.recv().await.unwrap();
    let mut reply = b"{\"return\": \"".to_vec();
    reply.extend(std::iter::repeat_n(b'a', 2 << 20));
    let writer = tokio::spawn(async move {
        let _ = fake.io.write_all(&reply).await;
        fake
    });
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Disconnected(Disconnect::Protocol(DecodeError::TooLarge {
                limit: 1048576,
                ..
            }))
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("exceeds the size limit of 1048576 bytes"));
    drop(writer);
}

#[tokio::test]
async fn fake_half_a_message_then_eof() {
    let (client, mut fake) = connect().await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-status", Value::Null).await });
    fake.recv().await.unwrap();
    fake.send(b"{\"return\": {\"status\": \"run").await;
    drop(fake);
    let err = call.await.unwrap().unwrap_err();
    match &err {
        Error::Disconnected(Disconnect::Protocol(DecodeError::Truncated { buffered, preview })) => {
            assert_eq!(*buffered, 26);
            assert!(preview.contains("status"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("in the middle of a message"));
}

#[tokio::test]
async fn fake_clean_eof_is_reported_as_eof() {
    let (client, mut fake) = connect().await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("quit", Value::Null).await });
    let req = fake.recv().await.unwrap();
    fake.reply(&req.id, json!({})).await;
    drop(fake);
    call.await.unwrap().unwrap();
    assert!(matches!(client.disconnected().await, Disconnect::Eof));
}

#[tokio::test]
async fn fake_counts_at_most_8_inband_requests_on_the_wire_and_oob_bypasses() {
    let (client, mut fake) = connect().await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.execute("query-status", json!({"n": i})).await
        }));
    }
    for _ in 0..2 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call(Call::new("query-yank").out_of_band()).await
        }));
    }
    // Read everything the client sends until it goes quiet.
    let mut held = Vec::new();
    while let Some(Some(r)) = fake.recv_timeout(Duration::from_millis(300)).await {
        held.push(r);
    }
    let inband = held.iter().filter(|r| !r.oob).count();
    let oob = held.iter().filter(|r| r.oob).count();
    assert_eq!(
        (inband, oob),
        (8, 2),
        "the client must keep at most 8 in-band requests outstanding"
    );
    // Each reply lets exactly one more in-band request out.
    let mut total = held.len();
    while let Some(r) = held.pop() {
        fake.reply(&r.id, json!({})).await;
        if !r.oob && total < 22 {
            let next = fake
                .recv_timeout(Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap();
            assert!(!next.oob);
            held.insert(0, next);
            total += 1;
            // still nothing beyond the window
            assert!(fake.recv_timeout(Duration::from_millis(20)).await.is_none());
        }
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn fake_id_less_error_is_surfaced_without_tearing_down_the_session() {
    let (client, mut fake) = connect().await;
    let mut unsolicited = client.unsolicited();
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.call(Call::new("query-status").timeout(Some(Duration::from_millis(300))))
            .await
    });
    fake.recv().await.unwrap();
    fake.send(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, expecting value\"}}\r\n").await;
    let stray = unsolicited.recv().await.unwrap();
    assert_eq!(stray.id, None);
    assert_eq!(
        stray.result.unwrap_err().desc,
        "JSON parse error, expecting value"
    );
    // the caller whose request got lost times out; the session lives on
    assert!(matches!(
        call.await.unwrap().unwrap_err(),
        Error::Timeout { .. }
    ));
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-status", Value::Null).await });
    let req = fake.recv().await.unwrap();
    fake.reply(&req.id, json!({"status": "running"})).await;
    assert_eq!(call.await.unwrap().unwrap()["status"], "running");
}

#[tokio::test]
async fn fake_calls_that_never_get_a_reply_do_not_shrink_the_window() {
    let (client, mut fake) = connect().await;
    // 8 calls whose replies never come, each given up on
    for _ in 0..8 {
        let c = client.clone();
        let call = tokio::spawn(async move {
            c.call(Call::new("lost").timeout(Some(Duration::from_millis(50))))
                .await
        });
        fake.recv().await.unwrap();
        assert!(matches!(
            call.await.unwrap().unwrap_err(),
            Error::Timeout { .. }
        ));
    }
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-status", Value::Null).await });
    let req = fake
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("window still open")
        .unwrap();
    fake.reply(&req.id, json!({})).await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn fake_slow_subscriber_lags_but_never_blocks_replies_or_others() {
    let (client, mut fake) = connect().await;
    let mut stalled = client.events_with_capacity(EventFilter::all(), 16);
    let mut reader = client.events_with_capacity(EventFilter::name("X"), 20_000);
    let mut filtered = client.events(EventFilter::name("OTHER"));
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("query-status", Value::Null).await });
    let req = fake.recv().await.unwrap();
    let mut flood = Vec::new();
    for _ in 0..10_000 {
        flood.extend_from_slice(EVENT);
    }
    fake.send(&flood).await;
    fake.reply(&req.id, json!({"status": "running"})).await;
    assert_eq!(call.await.unwrap().unwrap()["status"], "running");
    let mut got = 0;
    while let Some(Ok(_)) = reader.try_next() {
        got += 1;
    }
    assert_eq!(got, 10_000);
    assert_eq!(
        stalled.try_next().unwrap().unwrap_err(),
        Lagged(10_000 - 16)
    );
    let mut rest = 0;
    while let Some(Ok(_)) = stalled.try_next() {
        rest += 1;
    }
    assert_eq!(rest, 16);
    assert!(filtered.try_next().is_none());
}

#[tokio::test]
async fn fake_late_reply_after_timeout_goes_to_nobody() {
    let (client, mut fake) = connect().await;
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.call(Call::new("slow").timeout(Some(Duration::from_millis(50))))
            .await
    });
    let slow = fake.recv().await.unwrap();
    assert!(matches!(
        call.await.unwrap().unwrap_err(),
        Error::Timeout { .. }
    ));
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("fast", Value::Null).await });
    let fast = fake.recv().await.unwrap();
    fake.reply(&slow.id, json!("slow answer")).await;
    fake.reply(&fast.id, json!("fast answer")).await;
    assert_eq!(call.await.unwrap().unwrap(), json!("fast answer"));
}

#[tokio::test]
async fn fake_guest_agent_without_greeting_or_negotiation() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut fake = Fake {
        io: b,
        decoder: Decoder::new(),
    };
    let client = ClientBuilder::new()
        .handshake(qmp_client::Handshake::None)
        .from_stream(a)
        .await
        .unwrap();
    assert!(client.greeting().is_none());
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute("guest-ping", Value::Null).await });
    let req = fake.recv().await.unwrap();
    assert_eq!(req.command, "guest-ping");
    fake.reply(&req.id, json!({})).await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn fake_dropping_the_last_handle_closes_the_connection() {
    let (client, mut fake) = connect().await;
    let mut events = client.events(EventFilter::all());
    drop(client);
    assert!(
        fake.recv_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "server sees EOF"
    );
    assert!(events.next().await.is_none());
}

/// `depth` nested arrays around a number.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// A reply nesting 1020 levels (QEMU's writer has no limit; a long backing
/// chain nests one level per image) is read; one past the client's limit
/// fails only its own call, and the connection goes on.
#[tokio::test]
async fn fake_deep_replies_are_read_or_fail_only_their_call() {
    let (client, mut fake) = connect().await;
    let c = client.clone();
    let deep = tokio::spawn(async move { c.execute("deep", Value::Null).await });
    let r = fake.recv().await.unwrap();
    let reply = format!(
        "{{\"return\": {}, \"id\": {}}}\r\n",
        nested(1020),
        serde_json::to_string(&r.id).unwrap()
    );
    fake.send(reply.as_bytes()).await;
    let value = deep.await.unwrap().unwrap();
    let mut depth = 0;
    let mut v = &value;
    while let Some(inner) = v.as_array().and_then(|a| a.first()) {
        depth += 1;
        v = inner;
    }
    assert_eq!(depth, 1020);

    let c = client.clone();
    let too_deep = tokio::spawn(async move { c.execute("deeper", Value::Null).await });
    let r = fake.recv().await.unwrap();
    // the id after the deep part, as QEMU writes it
    let reply = format!(
        "{{\"return\": {{\"a\": {}}}, \"id\": {}}}\r\n",
        nested(3000),
        serde_json::to_string(&r.id).unwrap()
    );
    fake.send(reply.as_bytes()).await;
    let err = too_deep.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unreadable(DecodeError::TooDeep { limit: 1024, .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("deeper than the limit of 1024"),
        "{err}"
    );

    // still in step: the next call gets its own reply
    let c = client.clone();
    let next = tokio::spawn(async move { c.execute("next", Value::Null).await });
    let r = fake.recv().await.unwrap();
    fake.reply(&r.id, json!("fine")).await;
    assert_eq!(next.await.unwrap().unwrap(), json!("fine"));
}

/// Something else where the greeting should be: the error quotes it as
/// JSON, not as Rust's debug text.
#[tokio::test]
async fn fake_not_a_greeting_is_quoted_as_json() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let client = tokio::spawn(ClientBuilder::new().from_stream(a));
    b.write_all(b"{\"hello\": 1}\r\n").await.unwrap();
    let err = client.await.unwrap().expect_err("no client");
    assert_eq!(
        err.to_string(),
        "handshake failed: expected the server's greeting, got {\"hello\":1}"
    );
}

/// An event before a reply and one after it, written in one piece (as a
/// real QEMU's would be, read in one batch): the call's own stream has
/// the first only, while a plain subscription has both.
#[tokio::test]
async fn fake_call_with_events_ends_at_the_reply_however_the_bytes_were_batched() {
    let (client, mut fake) = connect().await;
    let mut all = client.events(EventFilter::all());
    let (mut scoped, reply) = client.call_with_events(Call::new("go"), EventFilter::all());
    let serve = async {
        let r = fake.recv().await.unwrap();
        let id = r.id.unwrap();
        let batch = format!(
            "{{\"event\": \"BEFORE\", \"timestamp\": {{\"seconds\": 1, \"microseconds\": 0}}}}\r\n\
             {{\"return\": {{}}, \"id\": {id}}}\r\n\
             {{\"event\": \"AFTER\", \"timestamp\": {{\"seconds\": 1, \"microseconds\": 1}}}}\r\n"
        );
        fake.send(batch.as_bytes()).await;
    };
    let (result, ()) = tokio::join!(reply, serve);
    result.unwrap();
    // Whatever the timing, the AFTER event is on its way in the same read.
    assert_eq!(all.next().await.unwrap().unwrap().name, "BEFORE");
    assert_eq!(all.next().await.unwrap().unwrap().name, "AFTER");
    assert_eq!(scoped.next().await.unwrap().unwrap().name, "BEFORE");
    assert!(
        scoped.next().await.is_none(),
        "the stream ends at the reply"
    );
}

/// Accepts the next connection on `listener`, greets it and accepts its
/// negotiation.
async fn serve_next(listener: &tokio::net::UnixListener) -> Fake {
    let (io, _) = listener.accept().await.unwrap();
    let mut fake = Fake {
        io,
        decoder: Decoder::new(),
    };
    fake.send(GREETING).await;
    let caps = fake.recv().await.unwrap();
    fake.reply(&caps.id, json!({})).await;
    fake
}

/// `fail_if_busy` says "busy" only when the monitor serves somebody else.
/// A listener of ours that is slow to accept, and serves nobody (a loaded
/// machine, a QEMU not yet done with its last client), is waited for.
#[tokio::test]
async fn a_slow_listener_serving_nobody_is_waited_for_fake_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        serve_next(&listener).await
    });
    let client = ClientBuilder::new()
        .fail_if_busy(true)
        .connect(path.to_str().unwrap())
        .await
        .expect("waited for, not busy");
    let _fake = server.await.unwrap();
    assert!(!client.is_closed());
}

/// The same listener, busy with a first client, makes the second one
/// busy; once the first has gone (not yet reaped), the second waits again.
#[tokio::test]
async fn a_listener_serving_another_client_is_busy_fake_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let first = UnixStream::connect(&path).await.unwrap();
    let (served, _) = listener.accept().await.unwrap();
    let e = ClientBuilder::new()
        .fail_if_busy(true)
        .connect(path.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    // its client gone, the served connection still open: waited for
    drop(first);
    let address = path.to_str().unwrap().to_string();
    let waiter = tokio::spawn(async move {
        ClientBuilder::new()
            .fail_if_busy(true)
            .connect_timeout(Duration::from_secs(10))
            .connect(&address)
            .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiter.is_finished(), "gave up: {:?}", waiter.await);
    drop(served);
    // the queue: the connection that was told "busy" (closed), the waiter
    drop(listener.accept().await.unwrap());
    let _fake = serve_next(&listener).await;
    waiter.await.unwrap().expect("served once the other left");
}

/// A listener that closes while the client waits in its queue (QEMU going
/// away) ends the connection: said as such, not as "busy".
#[tokio::test]
async fn a_listener_closing_with_the_client_queued_is_not_busy_fake_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(listener);
    });
    let e = ClientBuilder::new()
        .fail_if_busy(true)
        .connect(path.to_str().unwrap())
        .await
        .unwrap_err();
    closer.await.unwrap();
    assert!(!matches!(e, Error::Busy { .. }), "{e}");
    assert!(matches!(e, Error::Handshake(_)), "{e:?}");
}
