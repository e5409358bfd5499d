//! TLS over TCP, with rustls: what QEMU's socket chardev offers with
//! `tls-creds-x509`.
//!
//! The client checks the server's certificate against `ca=` (or the
//! system's CAs) and the server name (the host, or `server-name=`), and
//! shows its own certificate when given `cert=` and `key=`: QEMU asks for
//! one by default (`verify-peer=on`).
//!
//! Errors say which side is likely at fault, since rustls's own words
//! ("UnknownIssuer", "NotValidForName") do not say what to change.

use super::Stream;
use qmp_proto::TlsOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use rustls;

/// A TLS connection to a server.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

pub(super) async fn connect(host: &str, port: u16, options: &TlsOptions) -> io::Result<Stream> {
    let config = client_config(options)?;
    let name = options.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a valid TLS server name"),
        )
    })?;
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| explain_handshake(e, name, options))?;
    Ok(Stream::Tls(Box::new(tls)))
}

fn client_config(options: &TlsOptions) -> io::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca {
        Some(path) => {
            for cert in read_certs(path, "CA")? {
                roots.add(cert).map_err(|e| bad_file(path, "CA", e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no CA given (ca=FILE, --tls-ca) and none found on this system",
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots);
    match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "certificate")?;
            let key = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a client certificate needs both cert=FILE and key=FILE (--tls-cert, --tls-key)",
        )),
    }
}

/// Reads the PEM certificates in `path` (`what` names them in errors:
/// "CA", "certificate"); an error if there are none.
pub fn read_certs(path: &Path, what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad_file(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(path, what, e))?;
    if certs.is_empty() {
        return Err(bad_file(path, what, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Reads the PEM private key in `path`.
pub fn read_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad_file(path, "key", e))
}

fn bad_file(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("TLS {what} file {}: {e}", path.display()),
    )
}

/// Adds to a failed handshake what to check.
fn explain_handshake(e: io::Error, name: &str, options: &TlsOptions) -> io::Error {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let text = e.to_string();
    let hint = match e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()) {
        Some(Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. })) => format!(
            "the server's certificate is not for '{name}' (give the name it carries with --tls-server-name or server-name=)"
        ),
        Some(Tls::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature)) => match &options.ca {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in {}",
                ca.display()
            ),
            None => "the server's certificate is not signed by a CA this system trusts (give QEMU's CA with --tls-ca or ca=)".to_owned(),
        },
        Some(Tls::AlertReceived(Alert::CertificateRequired)) => {
            "the server wants a client certificate (give --tls-cert and --tls-key, or cert= and key=)"
                .to_owned()
        }
        Some(Tls::AlertReceived(_)) => {
            "the server refused this client's certificate or settings".to_owned()
        }
        _ => return io::Error::new(e.kind(), format!("TLS handshake failed: {text}")),
    };
    io::Error::new(e.kind(), format!("TLS handshake failed: {text}: {hint}"))
}
