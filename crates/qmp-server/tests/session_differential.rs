//! The sans-IO session against qemu-storage-daemon: the same bytes to
//! both, byte-identical answers, greeting included (rules G, N, R, P3).
//!
//! The session gets the daemon's own command set (from its schema, on a
//! second monitor) and version (from its greeting). The corpus runs in
//! phases, each waiting for its replies before the next is sent, because
//! QEMU runs out-of-band requests on another thread and their order against
//! in-band replies is a race there.

use qmp_proto::qemu_json::{Parsed, QObject, Streamer};
use qmp_server::schema::Schema;
use qmp_server::{Call, QmpError, Session, SessionConfig, Step};
use qmp_testkit::{per_qemu, Lcg, Qemu, QemuVersion, RawPeer};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::Duration;

fn start(v: QemuVersion) -> (Qemu, Schema) {
    let qsd = Qemu::storage_daemon_with_second_monitor(v, "schema.sock");
    let schema_sock = qsd.dir().join("schema.sock");
    let client = qmp_client::blocking::Client::connect(&schema_sock.display().to_string()).unwrap();
    let schema = client
        .execute("query-qmp-schema", serde_json::Value::Null)
        .unwrap();
    (qsd, Schema::from_json(&schema).unwrap())
}

/// The next `n` messages from QEMU, as the bytes it sent.
fn read_messages(peer: &mut RawPeer, n: usize) -> Vec<u8> {
    peer.read_n(n)
        .into_iter()
        .flat_map(|f| (f + "\r\n").into_bytes())
        .collect()
}

/// Runs `input` through the session, answering the calls this corpus
/// makes; returns the output and how many messages it holds.
fn model(s: &mut Session<Schema>, version: &QObject, input: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut count = 0;
    let mut rest = input;
    loop {
        let mut ready = Vec::new();
        let n = s.feed(rest, &mut ready);
        rest = &rest[n..];
        let mut steps: VecDeque<Step> = ready.into();
        let mut progressed = n > 0;
        while let Some(step) = steps.pop_front().or_else(|| s.next_inband()) {
            progressed = true;
            count += 1;
            match step {
                Step::Reply(bytes) => out.extend(bytes),
                Step::Call(call) => {
                    let result = run(&call, version);
                    out.extend(s.reply(&call, result));
                }
            }
        }
        if rest.is_empty() || !progressed {
            break;
        }
    }
    (out, count)
}

/// The only command the corpus runs: query-version, which takes no
/// arguments (QEMU names the first extra one, in its member order).
fn run(call: &Call, version: &QObject) -> Result<Option<QObject>, QmpError> {
    assert_eq!(
        call.command, "query-version",
        "corpus runs a command this test does not model"
    );
    if let Some(extra) = qmp_proto::qemu_json::first_unexpected(&call.arguments, &[]) {
        return Err(QmpError::generic(format!(
            "Parameter '{extra}' is unexpected"
        )));
    }
    Ok(Some(version.clone()))
}

/// A daemon, a raw connection to it that has read the greeting, the
/// greeting, and a session modelled on that daemon (its commands, its
/// version object).
fn connect(v: QemuVersion) -> (Qemu, RawPeer, Vec<u8>, QObject, Session<Schema>) {
    let (qsd, schema) = start(v);
    let mut peer = RawPeer::connect(&qsd.socket, Duration::from_secs(10));
    let greeting = read_messages(&mut peer, 1);
    // the version object, as QEMU holds it
    let parsed = Streamer::new().feed_collect(&greeting);
    let Some(Parsed::Value(QObject::Dict(g))) = parsed.first() else {
        panic!("{parsed:?}")
    };
    let seen = g
        .get("QMP")
        .and_then(QObject::as_dict)
        .and_then(|q| q.get("version"))
        .unwrap()
        .clone();
    // Rebuilt as the core builds it: the greeting and query-version
    // replies below then show it is written as QEMU writes it.
    let version = qmp_proto::Version::from_qobject(&seen).unwrap();
    let session = Session::new(
        SessionConfig {
            version: version.clone(),
            offer_oob: true,
            pretty: false,
        },
        schema,
    );
    (qsd, peer, greeting, version.to_qobject(), session)
}

fn session_answers_byte_identically_to_qemu(v: QemuVersion) {
    let (_qsd, mut peer, greeting, version, mut session) = connect(v);
    assert_eq!(
        String::from_utf8_lossy(&session.greeting()),
        String::from_utf8_lossy(&greeting),
        "greeting (G1)"
    );
    for (n, phase) in qmp_testkit::SESSION_PHASES.iter().enumerate() {
        let (expected, count) = model(&mut session, &version, phase);
        peer.stream.write_all(phase).unwrap();
        let got = read_messages(&mut peer, count);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "phase {n}: {} (QEMU left, ours right)",
            String::from_utf8_lossy(phase)
        );
    }
    assert!(session.negotiated() && session.oob_enabled());
    // nothing more from QEMU than the model said
    peer.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut extra = [0u8; 1024];
    match peer.stream.read(&mut extra) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("QEMU sent more: {}", String::from_utf8_lossy(&extra[..n])),
    }
}
per_qemu!(
    #[test]
    session_answers_byte_identically_to_qemu
);

/// Well-formed requests with one to three bytes deleted, doubled, or
/// replaced (by structural bytes, quotes, digits, letters, whitespace,
/// newlines, or bytes QEMU never accepts). Each mutant ends with a 0x01,
/// which resets both readers, so one mutant cannot swallow the next.
fn mutants(seed: u64, count: usize) -> Vec<u8> {
    const SOURCES: &[&[u8]] = &[
        b"{\"execute\": \"query-version\", \"id\": {\"a\": [1, \"x\", {\"b\": null}], \"c\": 'q'}}",
        b"{\"execute\": \"query-version\", \"arguments\": {\"k\": [true, false, -1.5e3]}, \"id\": 7}",
        b"{'execute': 'query-version', 'id': [\"\\u00e9\\n\", 0, 12345678901234567890]}",
        b"{\"id\": {\"deep\": [[[{\"x\": [[]]}]]]}, \"execute\": \"qmp_capabilities\"}",
        b"{\"exec-oob\": \"query-version\", \"id\": \"o\"}",
    ];
    const BYTES: &[u8] = b"{}[]:,\"'\\0123456789-+.eEtrufalsn \t\r\n\x01\x7f\xc3\xff";
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for _ in 0..count {
        let mut m = SOURCES[rng.below(SOURCES.len())].to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(m.len());
            match rng.below(3) {
                0 => {
                    m.remove(at);
                }
                1 => m.insert(at, m[at]),
                _ => m[at] = BYTES[rng.below(BYTES.len())],
            }
        }
        out.extend(m);
        out.extend_from_slice(b"\n\x01\n");
    }
    out
}

/// Thousands of malformed and odd requests, after negotiation without oob:
/// every error text (and location, on QEMU 11), every reply and its id,
/// byte for byte.
fn mutated_requests_are_answered_byte_identically(v: QemuVersion) {
    let (_qsd, mut peer, _, version, mut session) = connect(v);
    let seed = 0x6d75_7461;
    let mut input = b"{\"execute\": \"qmp_capabilities\"}\n".to_vec();
    input.extend(mutants(seed, 3000));
    input.extend_from_slice(b"{\"execute\": \"query-version\", \"id\": \"end\"}\n");
    let (expected, count) = model(&mut session, &version, &input);
    let mut writer = peer.stream.try_clone().unwrap();
    let feeder = std::thread::spawn(move || writer.write_all(&input).unwrap());
    let got = read_messages(&mut peer, count);
    feeder.join().unwrap();
    let (got, expected) = (
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
    );
    for (n, (a, b)) in got.split("\r\n").zip(expected.split("\r\n")).enumerate() {
        assert_eq!(a, b, "seed {seed:#x}, reply {n} (QEMU left, ours right)");
    }
    assert!(
        count > 3000,
        "every mutant gets at least one reply: {count}"
    );
    assert!(expected.ends_with("\"id\": \"end\"}\r\n"), "{expected}");
}
per_qemu!(
    #[test]
    mutated_requests_are_answered_byte_identically
);
