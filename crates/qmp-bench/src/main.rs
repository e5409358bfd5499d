//! Benchmarks for BENCHMARKS.md. Every mode runs in the same process run,
//! interleaved over several rounds, and medians are reported, so the
//! figures compare like with like on a noisy machine.
//!
//! `cargo run --release -p qmp-bench -- [--rounds N] [--commands N]`

mod proxy;
mod raw;
mod reader;
mod scale;
mod tls;

use raw::Raw;

use clap::Parser;
use qmp_client::{Client, ClientBuilder};
use qmp_testkit::{Qemu, QemuVersion};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
pub(crate) struct Opts {
    /// Rounds of every measurement (medians are reported)
    #[arg(long, default_value_t = 15)]
    pub(crate) rounds: usize,
    /// Commands per measurement against qemu-storage-daemon
    #[arg(long, default_value_t = 1000)]
    pub(crate) commands: usize,
    /// Commands per measurement against the in-process server
    #[arg(long, default_value_t = 100_000)]
    instant_commands: usize,
    /// Runs of the one-shot `qmp qom-list path=/`
    #[arg(long, default_value_t = 30)]
    oneshot_runs: usize,
    /// The qmp binary for the one-shot figure
    #[arg(long, default_value = "target/release/qmp")]
    pub(crate) qmp_binary: String,
    /// Only the QOM tools' figures
    #[arg(long)]
    qom_only: bool,
    /// Only the proxy's figures
    #[arg(long)]
    proxy_only: bool,
    /// Only the client's figures
    #[arg(long)]
    client_only: bool,
    /// Only the input reader's figures (ours, our server, qemu-storage-daemon)
    #[arg(long)]
    reader_only: bool,
    /// Only the scale figures (many connections at once)
    #[arg(long)]
    scale_only: bool,
    /// Only the TLS listener beside the unix one (proxy, 1,000 clients)
    #[arg(long)]
    tls_only: bool,
    /// Connections at once, for the scale figures
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// The QEMU versions to measure (7.2, 10.0, 11.1); all three unless given
    #[arg(long = "qemu", value_name = "VERSION")]
    qemu: Vec<QemuVersion>,
    /// Internal: be the byte relay the proxy figures compare with
    #[arg(long, num_args = 2, value_names = ["UPSTREAM", "LISTEN"], hide = true)]
    relay: Vec<String>,
}

/// CPU time of the whole process (user + system).
fn process_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime fills the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

#[derive(Clone, Copy)]
struct Sample {
    per_sec: f64,
    cpu_us: f64,
}

fn sample(n: usize, wall: Duration, cpu: Duration) -> Sample {
    Sample {
        per_sec: n as f64 / wall.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
    }
}

/// The value at quantile `p` (0.5 the median, 0.99 the p99) of sorted
/// samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The raw socket client, one at a time.
fn raw_sequential(path: &std::path::Path, n: usize) -> Sample {
    let mut raw = Raw::connect(path);
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    for _ in 0..n {
        raw.roundtrip();
    }
    sample(n, t0.elapsed(), process_cpu() - cpu0)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Our client with `in_flight` concurrent callers splitting `n` commands.
fn client_run(rt: &tokio::runtime::Runtime, address: &str, n: usize, in_flight: usize) -> Sample {
    rt.block_on(async {
        let client = ClientBuilder::new().connect(address).await.unwrap();
        assert!(client.oob_enabled());
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        run_callers(&client, n, in_flight).await;
        let s = sample(n, t0.elapsed(), process_cpu() - cpu0);
        client.close().await;
        s
    })
}

async fn run_callers(client: &Client, n: usize, in_flight: usize) {
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let c = client.clone();
        let count = n / in_flight + usize::from(w < n % in_flight);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                c.execute("query-version", Value::Null).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A server in this process that answers every request at once with
/// `{"return": {}, "id": ID}`, on its own thread with blocking I/O, so its
/// CPU can be measured apart from the client's.
fn instant_server(stream: UnixStream, oob: bool) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut s = stream;
        let caps = if oob { "[\"oob\"]" } else { "[]" };
        let greeting = format!("{{\"QMP\": {{\"version\": {{\"qemu\": {{\"micro\": 0, \"minor\": 0, \"major\": 10}}, \"package\": \"\"}}, \"capabilities\": {caps}}}}}\r\n");
        s.write_all(greeting.as_bytes()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut have = 0;
        let mut out = Vec::with_capacity(1 << 20);
        loop {
            let k = match s.read(&mut buf[have..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => k,
            };
            have += k;
            let mut start = 0;
            while let Some(nl) = buf[start..have].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl];
                // our encoder puts the id last: ...,"id":N}
                let id = line
                    .windows(5)
                    .rposition(|w| w == b"\"id\":")
                    .map(|p| &line[p + 5..line.len() - 1])
                    .unwrap_or(b"null");
                out.extend_from_slice(b"{\"return\": {}, \"id\": ");
                out.extend_from_slice(id);
                out.extend_from_slice(b"}\r\n");
                start += nl + 1;
            }
            buf.copy_within(start..have, 0);
            have -= start;
            if !out.is_empty() {
                if s.write_all(&out).is_err() {
                    break;
                }
                out.clear();
            }
        }
        thread_cpu()
    })
}

fn instant_run(rt: &tokio::runtime::Runtime, n: usize, in_flight: usize, oob: bool) -> Sample {
    let (a, b) = UnixStream::pair().unwrap();
    let server = instant_server(b, oob);
    a.set_nonblocking(true).unwrap();
    let s = rt.block_on(async {
        let stream = tokio::net::UnixStream::from_std(a).unwrap();
        let client = ClientBuilder::new().from_stream(stream).await.unwrap();
        assert_eq!(client.oob_enabled(), oob);
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        run_callers(&client, n, in_flight).await;
        let wall = t0.elapsed();
        let cpu = process_cpu() - cpu0;
        // Close inside the runtime: a client dropped outside it could not
        // run its tasks, and the server would never see EOF.
        client.close().await;
        (wall, cpu)
    });
    let server_cpu = server.join().unwrap();
    // the server thread's CPU over the run is all but its start-up
    sample(n, s.0, s.1.saturating_sub(server_cpu))
}

/// Runs the one-shot command once; wall time and the child's peak RSS.
fn oneshot(binary: &str, address: &str) -> (Duration, u64) {
    run_measured(binary, &["-s", address, "qom-list", "path=/"])
}

/// Runs a program once; wall time and the child's peak RSS. The child is
/// reaped with wait4 (for its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(binary: &str, args: &[&str]) -> (Duration, u64) {
    let t0 = Instant::now();
    let child = Command::new(binary)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {binary}: {e} (build it with cargo build --release -p qmp-cli)")
        });
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and fills the struct we own.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t0.elapsed();
    assert_eq!(pid, child.id() as i32);
    assert_eq!(status, 0, "{binary} {args:?} failed");
    (wall, ru.ru_maxrss as u64)
}

/// The whole QOM tree one call at a time, as QEMU's Python `qom tree`
/// walks it; returns the number of properties read.
async fn tree_one_at_a_time(client: &Client, path: &str) -> usize {
    let list = client
        .execute("qom-list", serde_json::json!({"path": path}))
        .await
        .unwrap();
    let mut count = 0;
    let mut children = Vec::new();
    for p in list.as_array().unwrap() {
        let (name, kind) = (p["name"].as_str().unwrap(), p["type"].as_str().unwrap());
        if kind.starts_with("child<") {
            children.push(format!("{}/{name}", path.trim_end_matches('/')));
        } else {
            let _ = client
                .execute(
                    "qom-get",
                    serde_json::json!({"path": path, "property": name}),
                )
                .await;
            count += 1;
        }
    }
    for c in children {
        count += Box::pin(tree_one_at_a_time(client, &c)).await;
    }
    count
}

const PYTHON_QOM_LIST: &str = "
import asyncio, sys
from qemu.qmp import QMPClient
async def main():
    q = QMPClient('bench')
    await q.connect(sys.argv[1])
    for p in await q.execute('qom-list', {'path': sys.argv[2]}):
        print(p['name'])
    await q.disconnect()
asyncio.run(main())
";

const PYTHON_QOM_GET: &str = "
import asyncio, sys
from qemu.qmp import QMPClient
async def main():
    q = QMPClient('bench')
    await q.connect(sys.argv[1])
    path, prop = sys.argv[2].rsplit('.', 1)
    print(await q.execute('qom-get', {'path': path, 'property': prop}))
    await q.disconnect()
asyncio.run(main())
";

impl Opts {
    fn versions(&self) -> Vec<QemuVersion> {
        if self.qemu.is_empty() {
            QemuVersion::ALL.to_vec()
        } else {
            self.qemu.clone()
        }
    }
}

fn qom_figures(o: &Opts, v: QemuVersion) {
    let dir = std::path::Path::new(&o.qmp_binary)
        .parent()
        .unwrap()
        .to_owned();
    let bin = |name: &str| dir.join(name).display().to_string();
    let vm = Qemu::system(v);
    let address = vm.address();
    let rt = current_thread();
    // the tree: our qom-tree (pipelined) beside one call at a time
    let rounds = o.rounds.min(7);
    let mut ours = Vec::new();
    let mut sequential = Vec::new();
    let mut props = 0;
    for _ in 0..rounds {
        let (w, _) = run_measured(&bin("qom-tree"), &["-s", &address, "/"]);
        ours.push(w.as_secs_f64() * 1e3);
        let t0 = Instant::now();
        props = rt.block_on(async {
            let c = Client::connect(&address).await.unwrap();
            let n = tree_one_at_a_time(&c, "/").await;
            c.close().await;
            n
        });
        sequential.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (ours, sequential) = (median(ours), median(sequential));
    println!("\nqom-tree of a {v} qemu-system-x86_64 -M pc machine ({props} properties read), {rounds} rounds:");
    println!("| mode | median wall ms | vs one at a time |");
    println!("|---|---:|---:|");
    println!(
        "| qom-tree (values fetched concurrently, pipelined) | {ours:.1} | {:.1}× faster |",
        sequential / ours
    );
    println!(
        "| one qom-get at a time (how QEMU's Python qom tree works) | {sequential:.1} | 1.0× |"
    );
    // one-shot tools beside Python qemu.qmp, same daemon, same run
    let qsd = Qemu::storage_daemon(v);
    let qaddr = qsd.address();
    let cases: [(&str, String, Vec<String>); 4] = [
        (
            "qom-list /",
            bin("qom-list"),
            vec!["-s".into(), qaddr.clone(), "/".into()],
        ),
        (
            "Python qemu.qmp qom-list /",
            "python3".into(),
            vec![
                "-c".into(),
                PYTHON_QOM_LIST.into(),
                qaddr.clone(),
                "/".into(),
            ],
        ),
        (
            "qom-get /chardevs.type",
            bin("qom-get"),
            vec!["-s".into(), qaddr.clone(), "/chardevs.type".into()],
        ),
        (
            "Python qemu.qmp qom-get /chardevs.type",
            "python3".into(),
            vec![
                "-c".into(),
                PYTHON_QOM_GET.into(),
                qaddr.clone(),
                "/chardevs.type".into(),
            ],
        ),
    ];
    println!(
        "\nOne-shot tools against {v} qemu-storage-daemon, {} runs each, interleaved:",
        o.oneshot_runs
    );
    println!("| command | median wall ms | max peak RSS MiB |");
    println!("|---|---:|---:|");
    let mut walls: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut rss = vec![0u64; cases.len()];
    for _ in 0..o.oneshot_runs {
        for (i, (_, program, args)) in cases.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (w, r) = run_measured(program, &args);
            walls[i].push(w.as_secs_f64() * 1e3);
            rss[i] = rss[i].max(r);
        }
    }
    for (i, (name, _, _)) in cases.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} |",
            median(walls[i].clone()),
            rss[i] as f64 / 1024.0
        );
    }
}

fn main() {
    let o = Opts::parse();
    if let [upstream, listen] = &o.relay[..] {
        proxy::relay(upstream.as_ref(), listen.as_ref());
        return;
    }
    if o.reader_only {
        reader::reader_figures(&o);
        return;
    }
    if o.scale_only {
        scale::scale_figures(&o);
        return;
    }
    if o.tls_only {
        tls::tls_figures(&o);
        return;
    }
    for v in o.versions() {
        if o.qom_only {
            qom_figures(&o, v);
        } else if o.proxy_only {
            proxy::proxy_figures(&o, v);
        } else if o.client_only {
            client_figures(&o, v);
        } else {
            client_figures(&o, v);
            qom_figures(&o, v);
            proxy::proxy_figures(&o, v);
        }
    }
}

/// The client beside a raw socket, and the one-shot tools, on one version.
fn client_figures(o: &Opts, v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let version = {
        let rt = current_thread();
        let c = rt.block_on(Client::connect(&qsd.address())).unwrap();
        c.greeting().unwrap().version.clone()
    };
    println!(
        "qemu-storage-daemon {} ({}), {} rounds, medians",
        version.qemu, version.package, o.rounds
    );
    let ct = current_thread();
    let mt = multi_thread();
    let names = [
        "raw socket, one at a time",
        "qmp-client, one at a time (current_thread)",
        "qmp-client, one at a time (multi_thread, 2 workers)",
        "qmp-client, 64 in flight (current_thread)",
        "qmp-client, 64 in flight (multi_thread, 2 workers)",
    ];
    let mut qsd_samples: Vec<Vec<Sample>> = vec![Vec::new(); names.len()];
    for _ in 0..o.rounds {
        qsd_samples[0].push(raw_sequential(&qsd.socket, o.commands));
        qsd_samples[1].push(client_run(&ct, &qsd.address(), o.commands, 1));
        qsd_samples[2].push(client_run(&mt, &qsd.address(), o.commands, 1));
        qsd_samples[3].push(client_run(&ct, &qsd.address(), o.commands, 64));
        qsd_samples[4].push(client_run(&mt, &qsd.address(), o.commands, 64));
    }
    println!(
        "\nAgainst qemu-storage-daemon, query-version, {} commands per round:",
        o.commands
    );
    println!("| mode | commands/s | vs raw (median of per-round ratios) | client CPU µs/cmd |");
    println!("|---|---:|---:|---:|");
    for (name, s) in names.iter().zip(&qsd_samples) {
        let rate = median(s.iter().map(|x| x.per_sec).collect());
        let cpu = median(s.iter().map(|x| x.cpu_us).collect());
        // each round's rate against the raw rate of the same round
        let ratio = median(
            s.iter()
                .zip(&qsd_samples[0])
                .map(|(x, raw)| x.per_sec / raw.per_sec)
                .collect(),
        );
        println!("| {name} | {rate:.0} | {ratio:.2}× | {cpu:.1} |");
    }

    let inames = [
        "1 at a time (current_thread)",
        "64 in flight, oob on: 8 on the wire (current_thread)",
        "64 in flight, oob on: 8 on the wire (multi_thread, 2 workers)",
        "64 in flight, no oob: 64 on the wire (current_thread)",
        "64 in flight, no oob: 64 on the wire (multi_thread, 2 workers)",
    ];
    let mut inst: Vec<Vec<Sample>> = vec![Vec::new(); inames.len()];
    for _ in 0..o.rounds {
        inst[0].push(instant_run(&ct, o.instant_commands / 4, 1, true));
        inst[1].push(instant_run(&ct, o.instant_commands, 64, true));
        inst[2].push(instant_run(&mt, o.instant_commands, 64, true));
        inst[3].push(instant_run(&ct, o.instant_commands, 64, false));
        inst[4].push(instant_run(&mt, o.instant_commands, 64, false));
    }
    println!("\nAgainst an in-process server that answers at once (own thread, CPU excluded):");
    println!("| mode | commands/s | client CPU µs/cmd |");
    println!("|---|---:|---:|");
    for (name, s) in inames.iter().zip(&inst) {
        let rate = median(s.iter().map(|x| x.per_sec).collect());
        let cpu = median(s.iter().map(|x| x.cpu_us).collect());
        println!("| {name} | {rate:.0} | {cpu:.2} |");
    }

    if std::path::Path::new(&o.qmp_binary).exists() {
        let mut walls = Vec::new();
        let mut rss = 0;
        oneshot(&o.qmp_binary, &qsd.address()); // warm the page cache
        for _ in 0..o.oneshot_runs {
            let (w, r) = oneshot(&o.qmp_binary, &qsd.address());
            walls.push(w.as_secs_f64() * 1e3);
            rss = rss.max(r);
        }
        println!(
            "\nOne-shot `qmp qom-list path=/` ({} runs): median wall {:.2} ms, max peak RSS {:.1} MiB",
            o.oneshot_runs,
            median(walls),
            rss as f64 / 1024.0
        );
    } else {
        println!("\n(one-shot figure skipped: {} not built)", o.qmp_binary);
    }
}
