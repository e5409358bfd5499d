//! How fast QMP input is read: QEMU's JSON reader as ours models it
//! (`qemu_json::Streamer`, both dialects), our server end to end, and
//! qemu-storage-daemon of each version, in one run.
//!
//! The input is one request whose argument is a long string, the case
//! where reading speed shows: `query-version` refuses the argument
//! (`Parameter 'x' is unexpected`) only after reading all of it. QEMU
//! reads its monitor one byte per syscall, so it gets a smaller string.

use crate::{median, Opts};
use qmp_proto::qemu_json::{Dialect, Parsed, Streamer};
use qmp_testkit::Qemu;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// `{"execute": "query-version", "arguments": {"x": "aaa..."}}` with
/// `size` bytes of string.
fn request(size: usize) -> Vec<u8> {
    let mut r = br#"{"execute": "query-version", "arguments": {"x": ""#.to_vec();
    r.extend(std::iter::repeat_n(b'a', size));
    r.extend_from_slice(b"\"}}\n");
    r
}

/// Many small typical requests, `size` bytes in all.
fn small_requests(size: usize) -> Vec<u8> {
    let one = br#"{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]", "property": "type"}, "id": 12345}"#;
    let mut r = Vec::with_capacity(size + one.len());
    while r.len() < size {
        r.extend_from_slice(one);
        r.push(b'\n');
    }
    r
}

/// MB/s of the reader alone over `input`, fed in 64 KiB reads.
fn streamer_rate(dialect: Dialect, input: &[u8]) -> f64 {
    let mut s = Streamer::with_dialect(dialect);
    let t0 = Instant::now();
    let mut values = 0;
    for chunk in input.chunks(64 * 1024) {
        s.feed(chunk, |p| {
            if let Parsed::Value(_) = p {
                values += 1;
            }
        });
    }
    let dt = t0.elapsed();
    assert!(values > 0);
    input.len() as f64 / dt.as_secs_f64() / 1e6
}

/// Negotiates on `stream`, sends `input`, and returns how long the reply
/// took from the first byte sent.
fn server_time(mut stream: UnixStream, input: &[u8]) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut read_line = |s: &mut UnixStream| {
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the server closed the connection");
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    read_line(&mut stream);
    stream
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .unwrap();
    read_line(&mut stream);
    let mut writer = stream.try_clone().unwrap();
    let t0 = Instant::now();
    let (reply, dt) = std::thread::scope(|s| {
        s.spawn(|| writer.write_all(input).unwrap());
        let reply = read_line(&mut stream);
        (reply, t0.elapsed())
    });
    assert!(
        String::from_utf8_lossy(&reply).contains("Parameter 'x' is unexpected"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    dt
}

/// The server's sans-IO session alone, fed 64 KiB at a time as the
/// connection loop feeds it.
fn session_rate(input: &[u8]) -> f64 {
    struct OneCommand;
    impl qmp_server::session::CommandSet for OneCommand {
        fn allow_oob(&self, command: &str) -> Option<bool> {
            (command == "query-version").then_some(false)
        }
    }
    let config = qmp_server::SessionConfig {
        version: qmp_proto::Version::new(10, 0, 0, ""),
        offer_oob: true,
        pretty: false,
    };
    let mut session = qmp_server::Session::new(config, OneCommand);
    let mut ready = Vec::new();
    session.feed(b"{\"execute\": \"qmp_capabilities\"}\n", &mut ready);
    while let Some(qmp_server::Step::Reply(_)) = session.next_inband() {}
    let t0 = Instant::now();
    let mut calls = 0;
    for chunk in input.chunks(64 * 1024) {
        // (it stops before the final newline: the call is in progress)
        session.feed(chunk, &mut ready);
        while let Some(step) = session.next_inband() {
            if let qmp_server::Step::Call(_) = step {
                calls += 1;
            }
        }
    }
    let dt = t0.elapsed();
    assert_eq!(calls, 1);
    input.len() as f64 / dt.as_secs_f64() / 1e6
}

/// Our server (the framework, in this process) on a unix socket.
fn our_server_rate(input: &[u8], rounds: usize) -> f64 {
    let dir = qmp_testkit::test_dir();
    let path = dir.path().join("ours.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = qmp_server::Server::builder().version(10, 0, 0, "").build();
    let address: qmp_proto::Address = path.display().to_string().parse().unwrap();
    let listener = rt.block_on(server.bind(&address)).unwrap();
    let serving = server.clone();
    rt.spawn(async move { serving.serve(listener).await });
    let times: Vec<f64> = (0..rounds)
        .map(|_| {
            let d = server_time(UnixStream::connect(&path).unwrap(), input);
            if std::env::var_os("QMP_BENCH_EACH").is_some() {
                eprintln!("our server: {:?}", d);
            }
            input.len() as f64 / d.as_secs_f64() / 1e6
        })
        .collect();
    server.shutdown();
    median(times)
}

/// The floor: a thread that only reads the same bytes from a unix socket
/// (64 KiB at a time) and answers one line at the end; no parsing.
fn socket_floor_rate(input: &[u8], rounds: usize) -> f64 {
    let times: Vec<f64> = (0..rounds)
        .map(|_| {
            let (mut client, mut server) = UnixStream::pair().unwrap();
            let len = input.len();
            let sink = std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                while got < len {
                    got += server.read(&mut buf).unwrap();
                }
                server.write_all(b"done\r\n").unwrap();
            });
            let mut writer = client.try_clone().unwrap();
            let t0 = Instant::now();
            let dt = std::thread::scope(|s| {
                s.spawn(|| writer.write_all(input).unwrap());
                let mut reply = [0u8; 16];
                let _ = client.read(&mut reply).unwrap();
                t0.elapsed()
            });
            sink.join().unwrap();
            len as f64 / dt.as_secs_f64() / 1e6
        })
        .collect();
    median(times)
}

pub fn reader_figures(o: &Opts) {
    const BIG: usize = 50 << 20;
    let big = request(BIG);
    let small = small_requests(BIG);
    let rounds = o.rounds.min(7);
    println!("\nReading input, {rounds} rounds, medians (MB/s, higher is better):");
    println!("| reader | 50 MiB string argument | 50 MiB of small requests |");
    println!("|---|---:|---:|");
    for (name, dialect) in [
        ("qemu_json::Streamer, QEMU 10 dialect", Dialect::Collecting),
        ("qemu_json::Streamer, QEMU 11 dialect", Dialect::Pushing),
    ] {
        let a = median((0..rounds).map(|_| streamer_rate(dialect, &big)).collect());
        let b = median(
            (0..rounds)
                .map(|_| streamer_rate(dialect, &small))
                .collect(),
        );
        println!("| {name} | {a:.0} | {b:.0} |");
    }
    let session = median((0..rounds).map(|_| session_rate(&big)).collect());
    println!("| qmp_server::Session (sans-IO, 64 KiB reads) | {session:.0} | |");
    let ours = our_server_rate(&big, rounds);
    println!("| our server (qmp-server, unix socket, reply included) | {ours:.0} | |");
    let floor = socket_floor_rate(&big, rounds);
    println!("| floor: a thread that only reads the socket | {floor:.0} | |");
    // QEMU: 1 MiB, since it reads a byte per syscall
    let one = request(1 << 20);
    for v in o.versions() {
        let qsd = Qemu::storage_daemon(v);
        let rate = median(
            (0..3)
                .map(|_| {
                    let d = server_time(UnixStream::connect(&qsd.socket).unwrap(), &one);
                    one.len() as f64 / d.as_secs_f64() / 1e6
                })
                .collect(),
        );
        println!(
            "| qemu-storage-daemon {} (1 MiB string) | {rate:.2} | |",
            v.label()
        );
    }
}
