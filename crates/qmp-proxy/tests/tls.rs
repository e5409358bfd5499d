//! TLS listeners of the proxy: clients identified by their certificates,
//! policies chosen by identity, audit lines that name it, and a thousand
//! TLS clients at once. Certificates are made at test time (openssl).

use qmp_client::{ClientBuilder, Error};
use qmp_proxy::{PolicyFile, Proxy};
use qmp_testkit::pki::Pki;
use qmp_testkit::{free_port, Qemu, QemuVersion, SYSTEM_X86};
use serde_json::{json, Value};
use std::time::Duration;

const POLICIES: &str = r#"
[[client]]
identity = "CN=viewer-*"
policy = "read-only"
"#;

/// Starts a proxy of `upstream` with one TLS listener requiring client
/// certificates of the PKI's CA; gives its port and the audit log's path.
async fn tls_proxy(
    upstream: &str,
    pki: &Pki,
    dir: &std::path::Path,
) -> (u16, std::path::PathBuf, qmp_proxy::ProxyHandle) {
    let listen = format!(
        "tls:127.0.0.1:0,cert={},key={},client-ca={}",
        pki.file("server-cert.pem").display(),
        pki.file("server-key.pem").display(),
        pki.ca_cert().display()
    );
    let audit = dir.join("audit.log");
    let proxy = Proxy::builder(upstream.parse().unwrap())
        .listen(listen.parse().unwrap())
        .policies(PolicyFile::parse(POLICIES).unwrap())
        .audit(&audit)
        .bind()
        .await
        .unwrap();
    let port = proxy.ports()[0].unwrap();
    let handle = proxy.handle();
    tokio::spawn(proxy.run());
    (port, audit, handle)
}

fn client_address(pki: &Pki, port: u16, name: &str) -> String {
    format!("tls:localhost:{port},{}", pki.client_options(name))
}

async fn connect(address: &str) -> Result<qmp_client::Client, Error> {
    ClientBuilder::new()
        .connect_timeout(Duration::from_secs(5))
        .connect(address)
        .await
}

/// The proxy's upstream is itself a TLS monitor (QEMU 7.2, which needs
/// the client's nudges), so TLS is on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_gives_each_certified_client_its_identitys_policy_and_refuses_the_rest() {
    let pki = Pki::new(&["operator", "viewer-1"]);
    let qemu_port = free_port();
    let _qemu = Qemu::tls_monitor(QemuVersion::V7_2, SYSTEM_X86, &pki, qemu_port);
    let upstream = format!(
        "tls:127.0.0.1:{qemu_port},{}",
        pki.client_options("operator")
    );
    let dir = qmp_testkit::test_dir();
    let (port, audit, handle) = tls_proxy(&upstream, &pki, dir.path()).await;

    // The operator may change the VM; the viewer only look.
    let operator = connect(&client_address(&pki, port, "operator"))
        .await
        .unwrap();
    let viewer = connect(&client_address(&pki, port, "viewer-1"))
        .await
        .unwrap();
    operator.execute("cont", json!({})).await.unwrap();
    let status = viewer.execute("query-status", json!({})).await.unwrap();
    assert_eq!(status["status"], "running");
    let refused = viewer.execute("stop", json!({})).await.unwrap_err();
    assert_eq!(refused.qmp().unwrap().class, "CommandNotFound");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    let status = operator.execute("query-status", json!({})).await.unwrap();
    assert_eq!(
        status["status"], "running",
        "the viewer's stop reached QEMU"
    );

    // No certificate, or one from another CA: nothing.
    let bare = format!("tls:localhost:{port},ca={}", pki.ca_cert().display());
    let Err(e) = connect(&bare).await else {
        panic!("a client without a certificate was served")
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    let stranger = format!(
        "tls:localhost:{port},ca={},cert={},key={}",
        pki.ca_cert().display(),
        pki.file("stranger-cert.pem").display(),
        pki.file("stranger-key.pem").display()
    );
    let Err(e) = connect(&stranger).await else {
        panic!("a stranger was served")
    };
    assert!(
        e.to_string().contains("certificate") || e.to_string().contains("TLS"),
        "{e}"
    );

    operator.close().await;
    viewer.close().await;
    handle.shutdown();

    // Every audit line names who sent it.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |command: &str, identity: &str| {
        lines
            .iter()
            .find(|l| l["command"] == command && l["identity"] == identity)
            .unwrap_or_else(|| panic!("no audit line for {command} by {identity}: {lines:#?}"))
    };
    assert_eq!(
        of("cont", "CN=operator,O=qmp-rs tests")["outcome"],
        "return"
    );
    assert_eq!(
        of("stop", "CN=viewer-1,O=qmp-rs tests")["outcome"],
        "denied"
    );
    assert_eq!(
        of("query-status", "CN=viewer-1,O=qmp-rs tests")["outcome"],
        "return"
    );
    assert!(
        lines.iter().all(|l| l["identity"].is_string()),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tls_clients_at_once_through_the_proxy_all_get_their_replies() {
    const CLIENTS: usize = 1000;
    qmp_testkit::scale::raise_fd_limit(4 * CLIENTS as u64 + 256);
    let pki = Pki::new(&["operator", "viewer-1"]);
    let qemu = Qemu::storage_daemon(QemuVersion::V10_0);
    let dir = qmp_testkit::test_dir();
    let (port, _audit, handle) = tls_proxy(&qemu.address(), &pki, dir.path()).await;
    let address = client_address(&pki, port, "viewer-1");

    // All connect, then all run their commands while all are connected.
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let address = address.clone();
        connecting.spawn(async move {
            ClientBuilder::new()
                .connect_timeout(Duration::from_secs(60))
                .connect(&address)
                .await
        });
    }
    let mut clients = Vec::new();
    while let Some(c) = connecting.join_next().await {
        clients.push(
            c.unwrap()
                .unwrap_or_else(|e| panic!("a client could not connect: {e}")),
        );
    }
    let mut running = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        running.spawn(async move {
            for _ in 0..3 {
                let v = client.execute("query-version", json!({})).await?;
                assert_eq!(v["qemu"]["major"], 10);
                let refused = client.execute("quit", json!({})).await.unwrap_err();
                assert_eq!(
                    refused.qmp().map(|e| e.class.clone()).as_deref(),
                    Some("CommandNotFound"),
                    "client {i}"
                );
            }
            Ok::<_, Error>(())
        });
    }
    let mut ok = 0;
    while let Some(r) = running.join_next().await {
        r.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, CLIENTS);
    for c in clients {
        c.close().await;
    }
    handle.shutdown();
}
