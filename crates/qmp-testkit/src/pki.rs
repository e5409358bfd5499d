//! Certificates made at test time with openssl, laid out as QEMU's
//! `tls-creds-x509` wants them, and a QEMU monitor that listens with them.
//!
//! QEMU checks what it loads: the CA's basicConstraints and keyUsage, the
//! server certificate's serverAuth purpose and its names, the client
//! certificate's clientAuth purpose. So every certificate here carries the
//! extensions a real deployment's would.

use crate::{tempdir, Qemu, QemuVersion, Ready};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A test PKI: one CA with a server certificate (for `localhost` and
/// 127.0.0.1) and client certificates, plus a second, unrelated CA with a
/// client certificate of its own.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the CA, the server certificate, and one client certificate
    /// per common name in `clients` (each `{dir}/NAME-cert.pem`,
    /// `{dir}/NAME-key.pem`), plus `stranger`, signed by another CA.
    pub fn new(clients: &[&str]) -> Pki {
        let dir = tempdir();
        let pki = Pki { dir };
        let server = pki.dir.path().join("server");
        std::fs::create_dir(&server).expect("mkdir server");
        pki.ca("ca");
        pki.ca("other-ca");
        pki.issue(
            "ca",
            "server",
            "/O=qmp-rs tests/CN=localhost",
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        for name in clients {
            pki.issue(
                "ca",
                name,
                &format!("/O=qmp-rs tests/CN={name}"),
                "extendedKeyUsage=clientAuth\n",
            );
        }
        pki.issue(
            "other-ca",
            "stranger",
            "/O=elsewhere/CN=stranger",
            "extendedKeyUsage=clientAuth\n",
        );
        // QEMU's layout: ca-cert.pem, server-cert.pem, server-key.pem.
        for (from, to) in [
            ("ca-cert.pem", "ca-cert.pem"),
            ("server-cert.pem", "server-cert.pem"),
            ("server-key.pem", "server-key.pem"),
        ] {
            std::fs::copy(pki.file(from), server.join(to)).expect("copy into server/");
        }
        pki
    }

    /// A file of the PKI by name (`ca-cert.pem`, `operator-key.pem`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory for QEMU's `tls-creds-x509,dir=`.
    pub fn server_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// The CA's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.file("ca-cert.pem")
    }

    /// `ca=..,cert=..,key=..` options for a client `name`.
    pub fn client_options(&self, name: &str) -> String {
        format!(
            "ca={},cert={},key={}",
            self.ca_cert().display(),
            self.file(&format!("{name}-cert.pem")).display(),
            self.file(&format!("{name}-key.pem")).display()
        )
    }

    fn ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}-cert.pem"),
                "-subj",
                &format!("/O=qmp-rs tests/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    fn issue(&self, ca: &str, name: &str, subject: &str, extensions: &str) {
        let ext = self.dir.path().join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{extensions}"
            ),
        )
        .expect("write extensions");
        let (key, csr, cert) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}-cert.pem"),
        );
        openssl(
            self.dir.path(),
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                subject,
            ],
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}-cert.pem"),
                "-CAkey",
                &format!("{ca}-key.pem"),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext.display().to_string(),
            ],
        );
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (install the openssl package): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Qemu {
    /// `program` (qemu-storage-daemon or qemu-system-x86_64) of version
    /// `v` with its only monitor on TLS at 127.0.0.1:`port`, requiring a
    /// client certificate signed by the PKI's CA (`verify-peer=on`).
    pub fn tls_monitor(v: QemuVersion, program: &str, pki: &Pki, port: u16) -> Qemu {
        let creds = format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=on",
            pki.server_dir().display()
        );
        let chardev =
            format!("socket,host=127.0.0.1,port={port},server=on,wait=off,id=m,tls-creds=tls0");
        let args: Vec<String> = if program == crate::STORAGE_DAEMON {
            vec![
                "--object".into(),
                creds,
                "--chardev".into(),
                chardev,
                "--monitor".into(),
                "chardev=m".into(),
            ]
        } else {
            crate::SYSTEM_MACHINE
                .iter()
                .map(|s| s.to_string())
                .chain([
                    "-object".into(),
                    creds,
                    "-chardev".into(),
                    chardev,
                    "-mon".into(),
                    "chardev=m,mode=control".into(),
                ])
                .collect()
        };
        Qemu::spawn_in(
            v,
            tempdir(),
            program,
            args,
            Ready::TcpNoProbe("127.0.0.1".into(), port),
        )
    }
}
