//! TLS through the proxy: the latency a TLS listener adds per command
//! beside a unix listener of the same proxy, and 1,000 clients at once on
//! each, in one run.
//!
//! The proxy is the `qmp proxy` binary in its own process, with both
//! listeners, in front of one qemu-storage-daemon 10.0. Clients are
//! qmp-client in this process (raw sockets cannot speak TLS), so both
//! columns pay the same client costs and the difference is TLS's.

use crate::{median, percentile, Opts};
use qmp_client::ClientBuilder;
use qmp_testkit::pki::Pki;
use qmp_testkit::{Qemu, QemuVersion};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn tls_figures(o: &Opts) {
    if !Path::new(&o.qmp_binary).exists() {
        println!("\n(TLS figures skipped: {} not built)", o.qmp_binary);
        return;
    }
    qmp_testkit::scale::raise_fd_limit(8192);
    let pki = Pki::new(&["operator"]);
    let qsd = Qemu::storage_daemon(QemuVersion::V10_0);
    let unix = qsd.dir().join("proxy.sock");
    let port = qmp_testkit::free_port();
    let mut proxy = Command::new(&o.qmp_binary)
        .args(["proxy", "--upstream", &qsd.address()])
        .args(["--listen", &unix.display().to_string()])
        .arg("--listen")
        .arg(format!(
            "tls:127.0.0.1:{port},cert={},key={},client-ca={}",
            pki.file("server-cert.pem").display(),
            pki.file("server-key.pem").display(),
            pki.ca_cert().display()
        ))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !(qmp_testkit::unix_listening(&unix) && qmp_testkit::tcp_listening(port)) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let tls = format!("tls:localhost:{port},{}", pki.client_options("operator"));
    let unix = unix.display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\nTLS and unix listeners of one `qmp proxy`, qemu-storage-daemon 10.0, {} rounds, medians",
        o.rounds
    );
    // One client at a time: per-command latency, rounds interleaved.
    let (mut on_unix, mut on_tls) = (Vec::new(), Vec::new());
    let (mut p99_unix, mut p99_tls) = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        for (address, med, p99) in [
            (&unix, &mut on_unix, &mut p99_unix),
            (&tls, &mut on_tls, &mut p99_tls),
        ] {
            let mut samples = rt.block_on(async {
                let c = ClientBuilder::new().connect(address).await.unwrap();
                let mut samples = Vec::with_capacity(o.commands);
                for _ in 0..o.commands {
                    let t = Instant::now();
                    c.execute("query-version", json!({})).await.unwrap();
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
                c.close().await;
                samples
            });
            samples.sort_by(|a, b| a.total_cmp(b));
            med.push(percentile(&samples, 0.5));
            p99.push(percentile(&samples, 0.99));
        }
    }
    let (mu, mt) = (median(on_unix), median(on_tls));
    let (pu, pt) = (median(p99_unix), median(p99_tls));
    println!(
        "| one client, {} commands in a row | unix | TLS | TLS added |",
        o.commands
    );
    println!("|---|---|---|---|");
    println!(
        "| median per command | {mu:.1} µs | {mt:.1} µs | {:.1} µs ({:.2}x) |",
        mt - mu,
        mt / mu
    );
    println!(
        "| p99 per command | {pu:.1} µs | {pt:.1} µs | {:.1} µs |",
        pt - pu
    );

    // 1,000 clients at once: connect all, then each runs 10 commands.
    const CLIENTS: usize = 1000;
    let mut lines = Vec::new();
    for (name, address) in [("unix", &unix), ("TLS", &tls)] {
        let (connect, run) = rt.block_on(async {
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..CLIENTS {
                let address = address.clone();
                set.spawn(async move {
                    ClientBuilder::new()
                        .connect_timeout(Duration::from_secs(120))
                        .connect(&address)
                        .await
                        .unwrap()
                });
            }
            let clients = set.join_all().await;
            let connect = t.elapsed();
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for c in &clients {
                let c = c.clone();
                set.spawn(async move {
                    for _ in 0..10 {
                        c.execute("query-version", json!({})).await.unwrap();
                    }
                });
            }
            set.join_all().await;
            let run = t.elapsed();
            for c in clients {
                c.close().await;
            }
            (connect, run)
        });
        lines.push(format!(
            "| {name} | {:.2} s | {:.2} s | {:.0} |",
            connect.as_secs_f64(),
            run.as_secs_f64(),
            (CLIENTS * 10) as f64 / run.as_secs_f64()
        ));
    }
    println!("\n| {CLIENTS} clients at once | connect all | 10 commands each | commands/s |");
    println!("|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
}
