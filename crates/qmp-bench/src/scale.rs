//! Scale figures: 10,000 connections at once on one proxy, on one server,
//! and from one client process. Memory per idle connection, latency of
//! one more client's commands with and without the crowd (side by side in
//! one run, so the ratio holds on a noisy machine), one command from each
//! of the crowd at once, and memory after they leave.

use crate::raw::Raw;
use crate::{median, percentile, Opts};
use qmp_testkit::scale::{idle_connections, query_version_on_each, raise_fd_limit, rss_kib};
use qmp_testkit::{Qemu, QemuVersion};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Latencies of `n` query-version round trips on a fresh connection, in
/// µs, sorted.
fn latencies(path: &Path, n: usize) -> Vec<f64> {
    let mut c = Raw::connect(path);
    let mut l: Vec<f64> = (0..n).map(|_| c.roundtrip().as_secs_f64() * 1e6).collect();
    l.sort_by(f64::total_cmp);
    l
}

struct Figures {
    per_idle_kib: f64,
    alone: (f64, f64),
    crowded: (f64, f64),
    burst_per_s: f64,
    rss: [u64; 4],
}

/// The figures for the server `pid` listening at `path`.
fn measure(pid: u32, path: &Path, at_once: usize, n: usize, rounds: usize) -> Figures {
    let start = rss_kib(pid);
    let (mut alone, mut crowded) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        alone.push(latencies(path, n));
    }
    let mut crowd = idle_connections(path, at_once);
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(pid);
    for _ in 0..rounds {
        crowded.push(latencies(path, n));
    }
    let t0 = Instant::now();
    query_version_on_each(&mut crowd).unwrap();
    let burst_per_s = at_once as f64 / t0.elapsed().as_secs_f64();
    let served = rss_kib(pid);
    drop(crowd);
    std::thread::sleep(Duration::from_millis(500));
    let closed = rss_kib(pid);
    let pct = |runs: &[Vec<f64>], q: f64| median(runs.iter().map(|l| percentile(l, q)).collect());
    Figures {
        per_idle_kib: (idle - start) as f64 / at_once as f64,
        alone: (pct(&alone, 0.5), pct(&alone, 0.99)),
        crowded: (pct(&crowded, 0.5), pct(&crowded, 0.99)),
        burst_per_s,
        rss: [start, idle, served, closed],
    }
}

fn serve(o: &Opts, args: &[&str], socket: &Path) -> Child {
    let child = Command::new(&o.qmp_binary)
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(socket);
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn scale_figures(o: &Opts) {
    let at_once = o.connections;
    raise_fd_limit(at_once as u64 + 1000);
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    let n = o.commands;
    let rounds = o.rounds.min(5);

    let qsd = Qemu::storage_daemon(QemuVersion::V10_0);
    let proxy = serve(
        o,
        &[
            "proxy",
            "--upstream",
            &qsd.address(),
            "--listen",
            &at("p.sock").display().to_string(),
        ],
        &at("p.sock"),
    );
    let via_proxy = measure(proxy.id(), &at("p.sock"), at_once, n, rounds);
    stop(proxy);
    let demo = serve(
        o,
        &["demo", "--listen", &at("d.sock").display().to_string()],
        &at("d.sock"),
    );
    let on_server = measure(demo.id(), &at("d.sock"), at_once, n, rounds);

    println!("\n{at_once} connections at once (each negotiated, then idle), query-version, medians of {rounds} rounds of {n}:");
    println!("| | proxy (QEMU 10.0 qemu-storage-daemon behind it) | server (`qmp demo`) |");
    println!("|---|---:|---:|");
    let row = |name: &str, f: &dyn Fn(&Figures) -> String| {
        println!("| {name} | {} | {} |", f(&via_proxy), f(&on_server));
    };
    row("memory per idle connection", &|f| {
        format!("{:.1} KiB", f.per_idle_kib)
    });
    row(
        "RSS: at first / with them idle / after a command each / once they left",
        &|f| {
            let [a, b, c, d] = f.rss.map(|k| k as f64 / 1024.0);
            format!("{a:.1} / {b:.1} / {c:.1} / {d:.1} MiB")
        },
    );
    row("another client's latency, p50 (p99), alone", &|f| {
        format!("{:.1} ({:.1}) µs", f.alone.0, f.alone.1)
    });
    row("the same with the crowd connected", &|f| {
        format!("{:.1} ({:.1}) µs", f.crowded.0, f.crowded.1)
    });
    row("ratio, p50 crowded / alone", &|f| {
        format!("{:.2}", f.crowded.0 / f.alone.0)
    });
    row("one command from each of the crowd at once", &|f| {
        format!("{:.0} commands/s", f.burst_per_s)
    });

    // One client process holding the crowd: library clients.
    let address = at("d.sock").display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let me = std::process::id();
    let (alone, crowded, per_client, connect_s, burst, left) = rt.block_on(async {
        let one = qmp_client::Client::connect(&address).await.unwrap();
        let timed = |c: qmp_client::Client| async move {
            let mut l = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                c.execute("query-version", serde_json::json!({}))
                    .await
                    .unwrap();
                l.push(t.elapsed().as_secs_f64() * 1e6);
            }
            l.sort_by(f64::total_cmp);
            l
        };
        let alone = timed(one.clone()).await;
        let start = rss_kib(me);
        let t0 = Instant::now();
        let mut crowd = Vec::with_capacity(at_once);
        for _ in 0..at_once {
            crowd.push(qmp_client::Client::connect(&address).await.unwrap());
        }
        let connect_s = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let per_client = (rss_kib(me) - start) as f64 / at_once as f64;
        let crowded = timed(one.clone()).await;
        let t0 = Instant::now();
        let calls: Vec<_> = crowd
            .iter()
            .map(|c| {
                let c = c.clone();
                tokio::spawn(async move { c.execute("query-version", serde_json::json!({})).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let burst = at_once as f64 / t0.elapsed().as_secs_f64();
        for c in crowd {
            c.close().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left = rss_kib(me) as f64 / 1024.0;
        (alone, crowded, per_client, connect_s, burst, left)
    });
    stop(demo);
    println!("\n{at_once} library clients (`qmp_client::Client`) in one process, connected to `qmp demo`:");
    println!("| | figure |");
    println!("|---|---:|");
    println!("| memory per connected client (this process) | {per_client:.1} KiB |");
    println!("| connecting them one after another | {connect_s:.1} s |");
    println!(
        "| one more client's latency p50 (p99), alone | {:.1} ({:.1}) µs |",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    );
    println!(
        "| the same with the crowd connected | {:.1} ({:.1}) µs |",
        percentile(&crowded, 0.5),
        percentile(&crowded, 0.99)
    );
    println!("| one command from each at once | {burst:.0} commands/s |");
    println!("| this process's RSS once they closed | {left:.1} MiB |");
}
