//! QEMU's JSON rules, differentially: one corpus of byte sequences goes to
//! a real qemu-storage-daemon and through our `qemu_json` reader and
//! writer; the replies must be byte-identical (rules J1–J8, S1–S3, R1).
//!
//! Our side models only the replies this corpus can provoke: errors
//! without an id, "must be a JSON object", and, for objects holding just an
//! `id`, "lacks member 'execute'" with the id echoed. oob stays off: with
//! it on, QEMU 7.2 can abort when one byte completes two messages.

use qmp_proto::qemu_json::{to_line, Parsed, QDict, QObject, Streamer};
use qmp_testkit::{per_qemu, Lcg, Qemu, QemuVersion};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn error(desc: &str, id: Option<&QObject>) -> QObject {
    let mut e = QDict::new();
    e.insert("class", QObject::String("GenericError".into()));
    e.insert("desc", QObject::String(desc.into()));
    let mut reply = QDict::new();
    if let Some(id) = id {
        reply.insert("id", id.clone());
    }
    reply.insert("error", QObject::Dict(e));
    QObject::Dict(reply)
}

/// The negotiation that precedes the corpus (line 1 of the connection).
const NEGOTIATION: &[u8] = b"{\"execute\": \"qmp_capabilities\"}\n";

/// What QEMU answers to each thing our reader produces, for this corpus.
fn model(v: QemuVersion, input: &[u8], pretty: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut reader = Streamer::with_dialect(v.dialect());
    reader.feed_collect(NEGOTIATION);
    for parsed in reader.feed_collect(input) {
        let reply = match parsed {
            Parsed::Error(text) => error(&text, None),
            Parsed::Value(QObject::Dict(d)) => {
                assert!(
                    d.iter().all(|(k, _)| k == "id"),
                    "corpus entry outside what this test models: {d:?}"
                );
                error("QMP input lacks member 'execute'", d.get("id"))
            }
            Parsed::Value(_) => error("QMP input must be a JSON object", None),
        };
        out.extend(to_line(&reply, pretty));
    }
    out
}

fn corpus() -> Vec<u8> {
    let mut c: Vec<u8> = Vec::new();
    let mut add = |s: &[u8]| c.extend_from_slice(s);
    // ids of every JSON type, objects echoed in QEMU's member order
    add(b"{\"id\": \"text\"}\n{\"id\": 7}\n{\"id\": null}\n{\"id\": true}\n{\"id\": false}\n");
    add(b"{\"id\": {\"b\": 1, \"a\": 2, \"c\": 3, \"return\": 4, \"id\": 5, \"error\": 6, \"zz\": [7, {\"y\": {}, \"x\": []}]}}\n");
    add(b"{\"id\": [1, [2, [3]], {}, \"s\"]}\r\n");
    // J1: single quotes and \'
    add(b"{'id': 'it\\'s \"quoted\"'}\n{\"id\": \"\\'\"}\n");
    // whitespace: tab, CR, several messages in one line, none between
    add(b"\t{ \"id\" :\r\n 1 }{\"id\":2}  {\"id\":3}\n");
    // J3 keywords
    add(b"nul\n{\"id\": tru}\nnull\ntrue\n");
    // J4 numbers
    add(b"{\"id\": [1.0, 0.1, -0, 1e400, -1e400, 1e300, 123456789012345678901234567890, 18446744073709551615, 9223372036854775808, -9223372036854775809, 1E5, 2.5e-7, -0.0, 0.5e1, 0.0001, 0.00001, 1e16, 1e17, 5e-324]}\n");
    add(b"01\n-\n{\"id\": 1}\n1.\n{\"id\": 2}\n.5\n+1\n{\"id\": 1e}\n{\"id\": 1e+}\n0e5\n");
    // strings: escapes, \u forms, surrogates, invalid code points
    add(b"{\"id\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\ud83d\\ude00\\u0000\\u007f/\"}\n");
    add(b"{\"id\": \"\\q\"}\n{\"id\": \"\\uFFFF\"}\n{\"id\": \"\\uD800x\"}\n{\"id\": \"\\uD83D\\u0041\"}\n{\"id\": \"\\u12\"}\n{\"id\": \"\\uFDD0\"}\n");
    add(b"{\"id\": \"\\ud83f\\udfff\"}\n{\"id\": \"\\udbff\\udffd\"}\n{\"id\": \"\\udbff\\udfff\"}\n");
    add(b"{\"id\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}\n{\"id\": \"\xef\xbf\xbf\"}\n{\"id\": \"\xc0\x80\"}\n{\"id\": \"\xc1\x81\"}\n{\"id\": \"\xed\xa0\x80\"}\n");
    // J2/J5: control bytes and impossible bytes, in and out of strings
    add(b"{\"id\": \"a\x01b\"}\n@\n\xff\n{\"id\": 1\x80}\n{\"id\": \"\x7f\"}\n\"\x7f\"\n{\"id\": \"x\xfey\"}\n");
    // J5 parse errors
    add(b"{\"id\": 1,}\n{\"id\" 1}\n{1: 2}\n{\"id\": 1, \"id\": 2}\n[1 2]\n{\"a\": ]}\n]\n}\n[}\n{]\n{\"id\": 1}}\n[\"a\" \"b\"]\n{\"a\" , 1}\n");
    // J6: recovery skips to a structural byte; 0x01 and 0xFF reset a
    // half-read message at the cost of one error, then a good one works
    add(b"{\"id\": @bad stuff here, \"more\": 1}\n");
    add(b"{\"id\": [1, 2\x01{\"id\": \"after 0x01\"}\n");
    add(b"{\"id\": {\"x\": \xff{\"id\": \"after 0xFF\"}\n");
    add(b"{\"id\": \"unterminated\x01{\"id\": \"after string reset\"}\n");
    // in recovery a tab is skipped, other control bytes and 0xFE resume
    add(b"{\"id\": @x\ty, \"z\": 1}\n{\"id\": @x\x02y}\n{\"id\": @x\xfey}\n");
    // a control byte right after a backslash, in both kinds of string
    add(b"{\"id\": \"a\\\x03\"}\n{'id': 'a\\\x03'}\n{\"id\": 'a\"b'}\n");
    // QEMU 11 (J9): where an error is found, and its LINE:COLUMN (a token
    // right after a number or keyword is placed one column on); what is
    // skipped after it, until brackets balance
    add(b"{\"id\" \"x\"}\n{\"id\":[1}]\n{\"id\":[true}]}\n{\"id\":[1.5 2]}\n{\"a\":\r\n\n   x}\n\t\t{\"id\" 1}\n");
    add(b"]]}}\n{\"id\": [1, {\"b\": 2,}]}\n{\"id\": @}\n{\"id\": 01}\n{\"a\": {\"b\": [1 }]}\n{\"id\": [[[[}]]]]\n");
    add(b"{\"a\": 1, \"a\": {}}\n{\"a\": [], \"a\": 2}\n{\"id\":1}{\"id\" 2}{\"id\":3}\n{'id': 'x' 'y'}\n[1,,2]\n{\"id\": [1\x01]}\n");
    // J8: top-level scalars need the next byte
    add(b"42 \"str\"\n[1]\n{}\n[]\n");
    // J7 nesting: at the limit is fine, one past it is an error, and
    // the closing brackets after it each cost an error
    let mut deep = b"{\"id\": ".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 1023));
    deep.push(b'1');
    deep.extend(std::iter::repeat_n(b']', 1023));
    deep.extend_from_slice(b"}\n{\"id\": ");
    deep.extend(std::iter::repeat_n(b'[', 1024));
    deep.extend(std::iter::repeat_n(b']', 1024));
    deep.extend_from_slice(b"}\n");
    add(&deep);
    // the end marker
    add(b"\n{\"id\": \"end of corpus\"}\n");
    c
}

/// Sends `input` after negotiating (without oob) and returns every byte
/// QEMU answers to it, up to and including its reply to the end marker.
fn qemu_answers(qsd: &Qemu, input: &[u8]) -> Vec<u8> {
    use qmp_proto::Decoder;
    let mut s = UnixStream::connect(&qsd.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut decoder = Decoder::new();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 65536];
    // Reads until a frame containing `marker`; returns where it ended.
    // Frames only: QEMU's output is not always JSON (it writes `inf`).
    let mut read_until = |s: &mut UnixStream, raw: &mut Vec<u8>, marker: &[u8]| loop {
        while let Some(frame) = decoder.next_frame().unwrap() {
            if frame.windows(marker.len()).any(|w| w == marker) {
                return decoder.offset() as usize;
            }
        }
        let n = s.read(&mut buf).expect("QEMU answered in time");
        assert!(n > 0, "QEMU closed the connection");
        raw.extend_from_slice(&buf[..n]);
        decoder.feed(&buf[..n]);
    };
    read_until(&mut s, &mut raw, b"\"QMP\"");
    s.write_all(NEGOTIATION).unwrap();
    let start = read_until(&mut s, &mut raw, b"\"return\"");
    s.write_all(input).unwrap();
    let end = read_until(&mut s, &mut raw, b"\"end of corpus\"");
    // from after the negotiation reply's line ending to after the marker's
    let start = start + raw[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut answer = raw[start..end].to_vec();
    answer.extend_from_slice(b"\r\n");
    answer
}

fn compare(v: QemuVersion, pretty: bool) {
    let qsd = Qemu::storage_daemon_with_monitor(v, if pretty { ",pretty=on" } else { "" });
    let input = corpus();
    let expected = model(v, &input, pretty);
    let got = qemu_answers(&qsd, &input);
    if got != expected {
        let g = String::from_utf8_lossy(&got);
        let e = String::from_utf8_lossy(&expected);
        for (n, (a, b)) in g.split("\r\n").zip(e.split("\r\n")).enumerate() {
            assert_eq!(a, b, "line {n} differs (QEMU left, ours right)");
        }
        assert_eq!(
            g.split("\r\n").count(),
            e.split("\r\n").count(),
            "number of lines"
        );
    }
}

fn compact_replies_are_byte_identical_to_qemu(v: QemuVersion) {
    compare(v, false);
}
per_qemu!(
    #[test]
    compact_replies_are_byte_identical_to_qemu
);

fn pretty_replies_are_byte_identical_to_qemu(v: QemuVersion) {
    compare(v, true);
}
per_qemu!(
    #[test]
    pretty_replies_are_byte_identical_to_qemu
);

/// Which leftover argument QEMU names "unexpected" depends on a GLib hash
/// table's slot order; our model must name the same one, also for tables
/// that grew, and for ones where visited keys left tombstones.
fn unexpected_argument_is_the_one_qemu_names(v: QemuVersion) {
    use qmp_proto::qemu_json::first_unexpected;
    let qsd = Qemu::storage_daemon(v);
    let mut rng = Lcg(0x5eed);
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    let mut counts = Vec::new();
    for n in 0..400 {
        let count = 1 + rng.below(40);
        let mut args = QDict::new();
        for _ in 0..count {
            let len = 1 + rng.below(12);
            let key: String = (0..len)
                .map(|_| b"abcdefghijklmnopqrstuvwxyz-_0123456789"[rng.below(38)] as char)
                .collect();
            args.insert(key, QObject::Int(1));
        }
        // half the time a command with a declared member that gets visited
        let (command, visited): (&str, &[&str]) = if n % 2 == 0 {
            ("query-version", &[])
        } else {
            args.insert("node-name", QObject::String("none".into()));
            ("blockdev-del", &["node-name"])
        };
        let mut request = QDict::new();
        request.insert("execute", QObject::String(command.into()));
        request.insert("arguments", QObject::Dict(args));
        request.insert("id", QObject::Int(n));
        let text = qmp_proto::qemu_json::to_json(&QObject::Dict(request), false);
        // Judge the arguments as QEMU holds them: parsed from the text, so
        // keys sharing a bucket are inserted in the order they were written.
        let parsed = Streamer::new().feed_collect(text.as_bytes());
        let Some(Parsed::Value(QObject::Dict(seen))) = parsed.first() else {
            panic!()
        };
        let seen_args = seen.get("arguments").and_then(QObject::as_dict).unwrap();
        let Some(extra) = first_unexpected(seen_args, visited) else {
            continue;
        };
        counts.push(seen_args.len());
        requests.extend(text.into_bytes());
        requests.push(b'\n');
        expected.push(format!("{{\"id\": {n}, \"error\": {{\"class\": \"GenericError\", \"desc\": \"Parameter '{extra}' is unexpected\"}}}}"));
    }
    let mut s = UnixStream::connect(&qsd.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .unwrap();
    s.write_all(&requests).unwrap();
    let mut text = String::new();
    let mut buf = vec![0u8; 65536];
    // greeting + negotiation reply + one line per request
    while text.matches("\r\n").count() < expected.len() + 2 {
        let n = s.read(&mut buf).expect("QEMU answered in time");
        assert!(n > 0);
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let got: Vec<&str> = text.split("\r\n").skip(2).take(expected.len()).collect();
    assert!(expected.len() > 300);
    let bad: Vec<String> = got
        .iter()
        .zip(&expected)
        .zip(&counts)
        .filter(|((g, e), _)| g != e)
        .map(|((g, e), c)| format!("{c} keys: QEMU {g} / ours {e}"))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        expected.len(),
        bad.join("\n")
    );
}
per_qemu!(
    #[test]
    unexpected_argument_is_the_one_qemu_names
);
