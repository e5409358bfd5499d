//! The proxy's figures: latency it adds per command, and throughput with
//! ten clients through it, each beside a direct connection to the same
//! qemu-storage-daemon in the same run.
//!
//! The proxy is the `qmp proxy` binary in its own process, as users run
//! it; it holds the daemon's first monitor, and the direct figures use a
//! second monitor of the same daemon. Clients are raw sockets, so the
//! figures are the proxy's and QEMU's, not a client library's.
//!
//! The floor beside them: a byte relay ([`relay`], this binary in a
//! process of its own, on a third monitor) that copies bytes both ways
//! with one blocking thread per direction and understands nothing. What
//! it adds is what any proxy in its own process pays on this machine for
//! the extra hop: two more process wake-ups and four more syscalls.

use crate::raw::Raw;
use crate::{median, percentile, Opts};
use qmp_testkit::{Qemu, QemuVersion};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Serves one client at `listen`, copying bytes to and from `upstream`
/// until either side closes.
pub fn relay(upstream: &Path, listen: &Path) {
    let listener = UnixListener::bind(listen).expect("relay: bind");
    let (client, _) = listener.accept().expect("relay: accept");
    let qemu = UnixStream::connect(upstream).expect("relay: connect");
    let copy = |mut from: UnixStream, mut to: UnixStream| {
        move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        }
    };
    let up = std::thread::spawn(copy(client.try_clone().unwrap(), qemu.try_clone().unwrap()));
    copy(qemu, client)();
    let _ = up.join();
}

/// Commands per second of `clients` connections, each one at a time,
/// for `n` commands each.
fn throughput(path: &Path, clients: usize, n: usize) -> f64 {
    let mut conns: Vec<Raw> = (0..clients).map(|_| Raw::connect(path)).collect();
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for c in conns.iter_mut() {
            scope.spawn(move || {
                for _ in 0..n {
                    c.roundtrip();
                }
            });
        }
    });
    (clients * n) as f64 / t0.elapsed().as_secs_f64()
}

pub fn proxy_figures(o: &Opts, v: QemuVersion) {
    if !Path::new(&o.qmp_binary).exists() {
        println!("\n(proxy figures skipped: {} not built)", o.qmp_binary);
        return;
    }
    let qsd = Qemu::storage_daemon_with_monitors(v, &["direct.sock", "upstream-of-relay.sock"]);
    let direct = qsd.dir().join("direct.sock");
    let via = qsd.dir().join("proxy.sock");
    let relayed = qsd.dir().join("relay.sock");
    let mut relay = Command::new(std::env::current_exe().unwrap())
        .arg("--relay")
        .args([qsd.dir().join("upstream-of-relay.sock"), relayed.clone()])
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&relayed);
    let mut proxy = Command::new(&o.qmp_binary)
        .args(["proxy", "--upstream", &qsd.address()])
        .args(["--listen", &via.display().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&via);
    let n = o.commands;
    let (mut lat_direct, mut lat_proxy, mut lat_relay) = (Vec::new(), Vec::new(), Vec::new());
    let (mut added_p50, mut floor_p50, mut over_floor_p50) = (Vec::new(), Vec::new(), Vec::new());
    // the relay serves one connection, for every round
    let mut r = Raw::connect(&relayed);
    let mut ratios = Vec::new();
    let mut rates = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        let mut d = Raw::connect(&direct);
        let mut p = Raw::connect(&via);
        let (mut rd, mut rp, mut rr) = (Vec::new(), Vec::new(), Vec::new());
        // alternate, so all see the same moment of the machine
        for _ in 0..n {
            rd.push(d.roundtrip().as_secs_f64() * 1e6);
            rp.push(p.roundtrip().as_secs_f64() * 1e6);
            rr.push(r.roundtrip().as_secs_f64() * 1e6);
        }
        rd.sort_by(f64::total_cmp);
        rp.sort_by(f64::total_cmp);
        rr.sort_by(f64::total_cmp);
        added_p50.push(percentile(&rp, 0.5) - percentile(&rd, 0.5));
        floor_p50.push(percentile(&rr, 0.5) - percentile(&rd, 0.5));
        over_floor_p50.push(percentile(&rp, 0.5) - percentile(&rr, 0.5));
        lat_direct.extend(rd);
        lat_proxy.extend(rp);
        lat_relay.extend(rr);
        drop((d, p));
        let one = throughput(&direct, 1, n);
        let ten = throughput(&via, 10, n / 10);
        ratios.push(ten / one);
        rates.0.push(one);
        rates.1.push(ten);
    }
    lat_direct.sort_by(f64::total_cmp);
    lat_proxy.sort_by(f64::total_cmp);
    lat_relay.sort_by(f64::total_cmp);
    drop(r);
    let _ = relay.wait();
    let _ = proxy.kill();
    let _ = proxy.wait();
    println!(
        "\nThe proxy (`qmp proxy`, its own process) against a direct monitor of the same qemu-storage-daemon, query-version, {} rounds:",
        o.rounds
    );
    println!("| latency per command | p50 µs | p99 µs |");
    println!("|---|---:|---:|");
    for (name, l) in [
        ("direct", &lat_direct),
        ("through the proxy", &lat_proxy),
        ("through a byte relay (the floor)", &lat_relay),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} |",
            percentile(l, 0.5),
            percentile(l, 0.99)
        );
    }
    println!(
        "| added by the proxy | {:.1} (median of per-round p50 differences) | {:.1} |",
        median(added_p50),
        percentile(&lat_proxy, 0.99) - percentile(&lat_direct, 0.99)
    );
    println!(
        "| added by a byte relay | {:.1} (median of per-round p50 differences) | {:.1} |",
        median(floor_p50),
        percentile(&lat_relay, 0.99) - percentile(&lat_direct, 0.99)
    );
    println!(
        "| the proxy over the byte relay | {:.1} (median of per-round p50 differences) | {:.1} |",
        median(over_floor_p50),
        percentile(&lat_proxy, 0.99) - percentile(&lat_relay, 0.99)
    );
    println!("\n| throughput, one command at a time per client | commands/s |");
    println!("|---|---:|");
    println!("| 1 client, direct | {:.0} |", median(rates.0));
    println!("| 10 clients through the proxy | {:.0} |", median(rates.1));
    println!(
        "| ratio (median of per-round ratios) | {:.2}× |",
        median(ratios)
    );
}
