//! `qmp mock` against the qemu-storage-daemon it was dumped from (`qmp
//! dump`, as a user would): the same byte sequences to both must get
//! byte-identical answers, greeting and `query-commands` included. Rule
//! groups F, G, N, R, P, J, S, and argument errors on real commands.
//!
//! Each phase ends with a marker request; both sides are read up to the
//! marker's reply. Out-of-band requests go alone, since QEMU runs them on
//! another thread and their order against in-band replies races there.
//! The 64 MiB token-size limit is left to unit tests: QEMU reads one byte
//! per syscall, so feeding it 64 MiB takes minutes.

use qmp_testkit::{per_qemu, Qemu, QemuVersion, RawPeer};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Mock(Child);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn phases() -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = vec![
        // N: before negotiation
        b"{\"execute\": \"query-version\", \"id\": 1}\n{\"execute\": \"nope\", \"id\": 2}{\"id\": 1,}\n[]\n{\"execute\": 1}".to_vec(),
        b"{\"exec-oob\": \"query-version\", \"id\": 3}".to_vec(),
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"foo\"]}, \"id\": 4}{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": null}}{\"execute\": \"qmp_capabilities\", \"arguments\": {\"x\": 1, \"y\": 2}}".to_vec(),
        b"{'execute': 'qmp_capabilities', 'arguments': {'enable': ['oob']}, 'id': 'neg'}".to_vec(),
        // N7, R
        b"{\"execute\": \"qmp_capabilities\", \"id\": 5}{\"execute\": \"query-version\", \"exec-oob\": \"x\"}{\"execute\": \"query-version\", \"foo\": 1}{\"arguments\": {}}{\"execute\": \"query-version\", \"arguments\": []}".to_vec(),
        // ids of every JSON type
        b"{\"execute\": \"query-version\", \"id\": null}{\"execute\": \"query-version\", \"id\": [1, \"2\", {\"z\": 0, \"a\": -0}]}{\"execute\": \"query-version\", \"id\": 1e400}{\"execute\": \"query-version\", \"id\": \"\\u00e9\\ud83d\\ude00\"}{\"execute\": \"query-version\", \"id\": 0.1}".to_vec(),
        // J: parse errors, recovery, reset bytes, scalars
        b"{\"id\": \"\\q\"}\n{\"execute\": nul}\n@\n\xff\n{\"execute\": \"x\", \"arguments\": {\"a\": [1, \x01{\"execute\": \"query-version\", \"id\": \"after reset\"}\n42\n\"s\"\n{\"a\": ]}\n".to_vec(),
        // argument errors on real commands: missing, unexpected, nested, union, enum
        b"{\"execute\": \"blockdev-del\", \"id\": 6}{\"execute\": \"blockdev-del\", \"arguments\": {\"node-name\": \"x\", \"foo\": 1, \"bar\": 2}}".to_vec(),
        b"{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"nope\"}}{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"raw\", \"file\": {\"driver\": \"null-co\", \"bar\": 1}}}".to_vec(),
        b"{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"raw\", \"file\": {\"driver\": \"null-co\"}, \"cache\": {\"direct\": 1}}}{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"file\"}}{\"execute\": \"blockdev-create\", \"arguments\": {\"job-id\": \"j\", \"options\": {\"driver\": \"nope\"}}}".to_vec(),
        b"{\"execute\": \"query-version\", \"arguments\": {\"zz\": 1, \"b\": 2, \"a\": 3}}{\"execute\": \"qom-get\", \"arguments\": {\"path\": \"/\"}}".to_vec(),
        // the command list, in QEMU's own order
        b"{\"execute\": \"query-commands\", \"id\": \"commands\"}".to_vec(),
        // oob, one at a time
        b"{\"exec-oob\": \"query-version\", \"id\": \"o1\"}".to_vec(),
        b"{\"exec-oob\": \"nope\", \"id\": \"o2\"}".to_vec(),
    ];
    // J7: nesting at and over the limit
    let mut deep = b"{\"execute\": \"query-version\", \"id\": ".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 1023));
    deep.extend(std::iter::repeat_n(b']', 1023));
    deep.extend_from_slice(b"}{\"id\": ");
    deep.extend(std::iter::repeat_n(b'[', 1100));
    deep.extend(std::iter::repeat_n(b']', 1100));
    deep.extend_from_slice(b"}\n");
    p.push(deep);
    p
}

/// A daemon, and `qmp mock` loaded with that daemon's dump (`qmp dump`).
struct Pair {
    qsd: Qemu,
    _mock: Mock,
    mock_sock: std::path::PathBuf,
}

fn start_pair(v: QemuVersion) -> Pair {
    let qsd = Qemu::storage_daemon_with_second_monitor(v, "dump.sock");
    let dump_sock = qsd.dir().join("dump.sock");
    let qmp = env!("CARGO_BIN_EXE_qmp");
    let dump_file = qsd.dir().join("dump.json");
    let out = Command::new(qmp)
        .args(["-s", &dump_sock.display().to_string(), "dump"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&dump_file, &out.stdout).unwrap();
    let mock_sock = qsd.dir().join("mock.sock");
    let mock = Mock(
        Command::new(qmp)
            .args([
                "mock",
                "--schema",
                &dump_file.display().to_string(),
                "--listen",
                &mock_sock.display().to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    qmp_testkit::wait_listening(&mock_sock);
    Pair {
        qsd,
        _mock: mock,
        mock_sock,
    }
}

/// Writes `input` (from another thread, so a peer that answers while
/// reading never blocks us) and reads up to the `marker` reply.
fn exchange(peer: &mut RawPeer, input: &[u8], marker: &str) -> Vec<String> {
    let mut writer = peer.stream.try_clone().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || writer.write_all(&input).unwrap());
    let frames = peer.read_until(marker);
    feeder.join().unwrap();
    frames
}

/// Sends each phase to both, plus a marker request, and compares all
/// frames up to the marker's reply. The two sides run at once.
fn compare(pair: &Pair, phases: Vec<Vec<u8>>, quiet: Duration) {
    let mut real = RawPeer::connect(&pair.qsd.socket, quiet);
    let mut ours = RawPeer::connect(&pair.mock_sock, quiet);
    let greeting_real = real.read_until("\"QMP\"");
    let greeting_ours = ours.read_until("\"QMP\"");
    assert_eq!(greeting_real, greeting_ours, "greeting");
    for (n, phase) in phases.iter().enumerate() {
        let marker = format!("phase-{n}-done");
        let mut bytes = phase.clone();
        bytes.extend_from_slice(
            format!("\n{{\"execute\": \"query-version\", \"id\": \"{marker}\"}}\n").as_bytes(),
        );
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| exchange(&mut real, &bytes, &marker));
            let b = exchange(&mut ours, &bytes, &marker);
            (a.join().unwrap(), b)
        });
        assert_eq!(
            a,
            b,
            "phase {n}: {} (QEMU left, mock right)",
            String::from_utf8_lossy(&phase[..phase.len().min(200)])
        );
    }
}

fn mock_answers_byte_identically_to_the_daemon_it_was_dumped_from(v: QemuVersion) {
    let pair = start_pair(v);
    compare(&pair, phases(), Duration::from_secs(30));
}
per_qemu!(
    #[test]
    mock_answers_byte_identically_to_the_daemon_it_was_dumped_from
);

/// J7's other two limits. QEMU reads one byte per syscall (about 4 s per
/// MiB here), so this takes about five minutes, and runs on one version
/// only: the limits are the same constants in 7.2, 10.0 and 11.1 (the
/// smaller differential corpus checks each version's texts around them).
#[test]
fn token_count_and_token_size_limits_match_qemu_on_10_0_only_for_time() {
    let pair = start_pair(QemuVersion::V10_0);
    let mut count = b"{'execute': 'qmp_capabilities'}[".to_vec();
    for _ in 0..(1 << 20) {
        count.extend_from_slice(b"1,");
    }
    // one string token one byte over 64 MiB: cut off exactly at the limit,
    // after which the input resumes cleanly at the next line
    let mut size = b"\"".to_vec();
    size.extend(std::iter::repeat_n(b'a', 64 << 20));
    // QEMU answers only once it has read a whole phase
    compare(&pair, vec![count, size], Duration::from_secs(1200));
}
