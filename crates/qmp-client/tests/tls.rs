//! `tls:` addresses against real QEMUs listening with `tls-creds-x509` and
//! `verify-peer=on` (all three versions, both binaries), with certificates
//! made at test time: the good client is served; a client without a
//! certificate, with one from another CA, or expecting another server
//! name gets an error that says what to check.

use qmp_client::{ClientBuilder, Error};
use qmp_testkit::pki::Pki;
use qmp_testkit::{free_port, Qemu, QemuVersion, STORAGE_DAEMON, SYSTEM_X86};
use serde_json::json;
use std::time::Duration;

async fn connect(address: &str) -> Result<qmp_client::Client, Error> {
    ClientBuilder::new()
        .connect_timeout(Duration::from_secs(3))
        .connect(address)
        .await
}

async fn check(v: QemuVersion, program: &str, pki: &Pki) {
    let port = free_port();
    let qemu = Qemu::tls_monitor(v, program, pki, port);
    let what = format!("{program} {}", v.label());
    // Another CA's client certificate: QEMU refuses it.
    let stranger = format!(
        "tls:127.0.0.1:{port},ca={},cert={},key={}",
        pki.ca_cert().display(),
        pki.file("stranger-cert.pem").display(),
        pki.file("stranger-key.pem").display()
    );
    let e = connect(&stranger)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: a stranger's certificate was accepted"));
    let text = e.to_string();
    assert!(
        text.contains("certificate") || text.contains("TLS"),
        "{what}: {text}"
    );

    // No certificate: refused, or (qsd 10.0 with TLS 1.3) left hanging,
    // which the client reports after its timeout with the likely cause.
    let bare = format!("tls:127.0.0.1:{port},ca={}", pki.ca_cert().display());
    let e = connect(&bare)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: no certificate, yet served"));
    let text = e.to_string();
    assert!(
        text.contains("certificate"),
        "{what}: the error does not point at the certificate: {text}"
    );

    // The server is localhost; expecting another name fails before any
    // certificate of ours is shown.
    let misnamed = format!(
        "tls:127.0.0.1:{port},{},server-name=qemu.example",
        pki.client_options("operator")
    );
    let e = connect(&misnamed)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: wrong server name accepted"));
    let text = e.to_string();
    assert!(
        text.contains("not for 'qemu.example'") && text.contains("server-name"),
        "{what}: {text}"
    );

    // Our CA missing: the server's certificate is not trusted.
    let untrusting = format!(
        "tls:127.0.0.1:{port},ca={},cert={},key={}",
        pki.file("other-ca-cert.pem").display(),
        pki.file("operator-cert.pem").display(),
        pki.file("operator-key.pem").display()
    );
    let e = connect(&untrusting)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: untrusted server accepted"));
    assert!(
        e.to_string().contains("not signed by the CA"),
        "{what}: {e}"
    );

    // The good client, by IP with the name from the certificate's SAN, and
    // by host name.
    for address in [
        format!("tls:127.0.0.1:{port},{}", pki.client_options("operator")),
        format!("tls:localhost:{port},{}", pki.client_options("operator")),
    ] {
        let client = connect(&address)
            .await
            .unwrap_or_else(|e| panic!("{what}: {address}: {e}\n{}", qemu.stderr()));
        // Several calls one after another, and several at once: QEMU 7.2
        // leaves a TLS request unread until more bytes come (rule T1).
        for _ in 0..3 {
            let version = client.execute("query-version", json!({})).await.unwrap();
            assert_eq!(version["qemu"]["major"], v.major_minor().0, "{what}");
        }
        let together: Vec<_> = (0..5)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.execute("query-version", json!({})).await })
            })
            .collect();
        for call in together {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(reply["qemu"]["major"], v.major_minor().0, "{what}");
        }
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_monitors_of_every_qemu_serve_the_certified_client_and_refuse_the_others() {
    let pki = Pki::new(&["operator"]);
    for v in QemuVersion::ALL {
        for program in [STORAGE_DAEMON, SYSTEM_X86] {
            check(v, program, &pki).await;
        }
    }
}
